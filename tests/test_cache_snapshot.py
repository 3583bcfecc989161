"""The `perfect10k cache` commands: snapshots out and in, tampered snapshots, clear, warm."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import planner
from pipelines.regions import import_region
from tests.conftest import MONACO, MONACO_START, REPOSITORY, LiveServer, perfect10k_env, run_cli
from warehouse import Warehouse
from warehouse.snapshot import (
    CHECKSUMS_NAME,
    SNAPSHOT_FORMAT,
    SNAPSHOT_VERSION,
    SnapshotError,
    export_snapshot,
    import_snapshot,
)


def run_cli_status(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """Run `perfect10k` and return its result whatever the exit status."""
    return subprocess.run(
        [sys.executable, "-m", "perfect10k.cli", *args],
        check=False,
        env=env,
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def snapshot_dir(sample_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory snapshot of the sample warehouse (Monaco built, Andorra imported)."""
    target = tmp_path_factory.mktemp("snapshots") / "sample"
    export_snapshot(Warehouse(sample_data / "warehouse"), target)
    return target


def monaco_loops(store: Warehouse, seeds: range) -> list[list[tuple[float, float]]]:
    """Plan loops from the Monaco start on the merged Monaco cells of `store`."""
    entries = [e for e in store.cell_entries().values() if e.region == "monaco" and e.ready]
    tables = store.read_cells(entries)
    network = planner.Network.from_tables(
        tables["nodes"], tables["edges"], tables["edge_features"], tables["areas"]
    )
    loops = []
    for seed in seeds:
        for loop in planner.plan_loops(network, *MONACO_START, 5000, "parks", seed=seed):
            loops.append([tuple(point) for point in loop.coordinates])
    return loops


def assert_empty(store: Warehouse) -> None:
    assert not store.manifest_path.exists(), "a rejected import must not write a manifest"
    for sub in ("regions", "cells"):
        folder = store.root / sub
        assert not folder.exists() or not any(folder.iterdir()), f"{sub}/ has files"
    tmp = store.root / "tmp"
    assert not tmp.exists() or not any(tmp.iterdir()), "the staging folder was left behind"


# Round trip


def test_snapshot_round_trip_serves_same_loops(sample_data: Path, tmp_path: Path):
    source_env = perfect10k_env(sample_data)
    archive = tmp_path / "cache.tar"
    exported = run_cli(source_env, "cache", "export", str(archive))
    assert f"snapshot {archive}" in exported.stdout
    assert archive.is_file()

    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        checksums = json.load(tar.extractfile(CHECKSUMS_NAME))
    assert all(member.isreg() and member.mode == 0o644 for member in members)
    assert checksums["format"] == SNAPSHOT_FORMAT
    assert checksums["version"] == SNAPSHOT_VERSION
    assert {m.name for m in members} == set(checksums["files"]) | {CHECKSUMS_NAME}
    assert not any(name.endswith((".pkl", ".pickle", ".py")) for name in checksums["files"])

    target_env = perfect10k_env(tmp_path / "imported")
    imported = run_cli(target_env, "cache", "import", str(archive))
    assert "imported snapshot" in imported.stdout

    source = Warehouse(sample_data / "warehouse")
    target = Warehouse(tmp_path / "imported" / "warehouse")
    assert set(target.regions()) == {"monaco", "andorra"}
    monaco = {c: e for c, e in source.cell_entries().items() if e.region == "monaco"}
    copied = {c: e for c, e in target.cell_entries().items() if e.region == "monaco"}
    assert copied == monaco, "cells keep their versions"
    for entry in copied.values():
        assert target.validate_cell(entry) is None
    assert monaco_loops(target, range(1, 4)) == monaco_loops(source, range(1, 4))

    info = run_cli(target_env, "cache", "info")
    assert f"monaco version {source.regions()['monaco']['version']}" in info.stdout


def test_directory_snapshot_imports(snapshot_dir: Path, tmp_path: Path):
    target = Warehouse(tmp_path / "warehouse")
    summary = import_snapshot(target, snapshot_dir, 7)
    assert summary.regions == 2
    assert summary.cells == len(target.cell_entries())
    checksums = json.loads((snapshot_dir / CHECKSUMS_NAME).read_text())
    assert summary.files == len(checksums["files"])


def test_import_into_nonempty_needs_overwrite(snapshot_dir: Path, tmp_path: Path):
    target = Warehouse(tmp_path / "warehouse")
    import_snapshot(target, snapshot_dir, 7)
    with pytest.raises(SnapshotError, match="not empty; pass --overwrite"):
        import_snapshot(target, snapshot_dir, 7)
    before = target.cell_entries()
    summary = import_snapshot(target, snapshot_dir, 7, overwrite=True)
    assert target.cell_entries() == before
    assert summary.removed_dirs == 0


def test_cli_reports_rejection(snapshot_dir: Path, tmp_path: Path):
    tampered = tmp_path / "tampered"
    shutil.copytree(snapshot_dir, tampered)
    (tampered / "notes.txt").write_text("hello")
    result = run_cli_status(perfect10k_env(tmp_path / "data"), "cache", "import", str(tampered))
    assert result.returncode == 1
    assert "error: notes.txt" in result.stderr
    assert "unknown file" in result.stderr


# Tampered directory snapshots


def first_file(root: Path, pattern: str) -> Path:
    return min(root.glob(pattern))


def rewrite_checksums(root: Path, edit: Callable[[dict], None]) -> None:
    path = root / CHECKSUMS_NAME
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def relist(root: Path, relative: str) -> None:
    """Record the current size and SHA-256 of `relative`, as a careful forger would."""
    import hashlib

    content = (root / relative).read_bytes()

    def edit(data: dict) -> None:
        data["files"][relative] = {
            "sha256": hashlib.sha256(content).hexdigest(),
            "bytes": len(content),
        }

    rewrite_checksums(root, edit)


def flip_byte(root: Path) -> None:
    path = first_file(root, "cells/*/network-*/edges.parquet")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(root: Path) -> None:
    path = first_file(root, "regions/monaco/*/nodes.parquet")
    path.write_bytes(path.read_bytes()[:-10])


def extra_unlisted(root: Path) -> None:
    folder = first_file(root, "cells/*/network-*")
    shutil.copy(folder / "edges.parquet", folder / "extra.parquet")


def extra_listed(root: Path) -> None:
    source = first_file(root, "cells/*/network-*")
    clone = root / "cells" / "873969a46ffffff" / source.name
    clone.mkdir(parents=True)
    shutil.copy(source / "edges.parquet", clone / "edges.parquet")
    relist(root, clone.relative_to(root).as_posix() + "/edges.parquet")


def symlink(root: Path) -> None:
    path = first_file(root, "cells/*/features-*/areas.parquet")
    path.unlink()
    path.symlink_to("/etc/passwd")


def symlinked_folder(root: Path) -> None:
    (root / "regions" / "elsewhere").symlink_to("/etc", target_is_directory=True)


def hardlink(root: Path) -> None:
    path = first_file(root, "cells/*/features-*/areas.parquet")
    os.link(path, root / "linked.parquet")


def wrong_schema(root: Path) -> None:
    path = first_file(root, "cells/*/network-*/nodes.parquet")
    table = pa.table({"node_id": pa.array([1], pa.int64()), "lat": pa.array(["x"])})
    pq.write_table(table, path)
    relist(root, path.relative_to(root).as_posix())


def not_parquet(root: Path) -> None:
    path = first_file(root, "cells/*/network-*/nodes.parquet")
    path.write_bytes(b"import os; os.system('echo owned')\n")
    relist(root, path.relative_to(root).as_posix())


def future_format(root: Path) -> None:
    rewrite_checksums(root, lambda data: data.update(version=SNAPSHOT_VERSION + 1))


def missing_file(root: Path) -> None:
    first_file(root, "cells/*/features-*/edge_features.parquet").unlink()


def unlisted_manifest_entry(root: Path) -> None:
    relative = first_file(root, "cells/*/features-*/edge_features.parquet").relative_to(root)
    (root / relative).unlink()
    rewrite_checksums(root, lambda data: data["files"].pop(relative.as_posix()))


def other_resolution(root: Path) -> None:
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["regions"]["monaco"]["h3_resolution"] = 8
    (root / "manifest.json").write_text(json.dumps(manifest))
    relist(root, "manifest.json")


def traversal_in_manifest(root: Path) -> None:
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["regions"]["../../etc"] = manifest["regions"].pop("andorra")
    (root / "manifest.json").write_text(json.dumps(manifest))
    relist(root, "manifest.json")


def traversal_in_checksums(root: Path) -> None:
    forged = {"../outside.parquet": {"sha256": "0" * 64, "bytes": 1}}
    rewrite_checksums(root, lambda data: data["files"].update(forged))


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (flip_byte, "SHA-256 does not match"),
        (truncate, "the checksums file lists"),
        (extra_unlisted, "is not listed in checksums.json (unknown file)"),
        (extra_listed, "is not named by manifest.json"),
        (symlink, "symbolic links are not allowed"),
        (symlinked_folder, "symbolic links are not allowed"),
        (hardlink, "hard links are not allowed"),
        (wrong_schema, "has schema"),
        (not_parquet, "is not a readable Parquet file"),
        (future_format, "snapshot format version 2 is not supported"),
        (missing_file, "is listed in checksums.json but missing"),
        (unlisted_manifest_entry, "which is missing"),
        (other_resolution, "H3 resolution 8 differs"),
        (traversal_in_manifest, "invalid region id"),
        (traversal_in_checksums, "path traversal"),
    ],
    ids=lambda value: getattr(value, "__name__", "message"),
)
def test_tampered_directory_rejected(snapshot_dir: Path, tmp_path: Path, tamper, message):
    copy = tmp_path / "snapshot"
    shutil.copytree(snapshot_dir, copy, symlinks=True)
    tamper(copy)
    target = Warehouse(tmp_path / "warehouse")
    with pytest.raises(SnapshotError) as raised:
        import_snapshot(target, copy, 7)
    assert message in str(raised.value)
    assert_empty(target)


# Tampered archives


def archive_of(snapshot: Path, path: Path, extra: Callable[[tarfile.TarFile], None]) -> Path:
    """Write `snapshot` as a tar archive at `path`, then let `extra` add members."""
    with tarfile.open(path, "w") as tar:
        for file in sorted(snapshot.rglob("*")):
            if file.is_file():
                tar.add(file, arcname=file.relative_to(snapshot).as_posix())
        extra(tar)
    return path


def add_member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = ""):
    def extra(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.size = len(data) if kind == tarfile.REGTYPE else 0
        info.linkname = link
        tar.addfile(info, io.BytesIO(data) if data else None)

    return extra


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (add_member("../evil.parquet", data=b"x"), "path traversal"),
        (add_member("cells/../../evil", data=b"x"), "path traversal"),
        (add_member("/tmp/evil.parquet", data=b"x"), "absolute paths are not allowed"),
        (add_member("cells/link", tarfile.SYMTYPE, link="/etc/passwd"), "links are not allowed"),
        (add_member("cells/hard", tarfile.LNKTYPE, link="manifest.json"), "links are not allowed"),
        (add_member("cells/tty", tarfile.CHRTYPE), "only regular files are allowed"),
        (add_member("cells/fifo", tarfile.FIFOTYPE), "only regular files are allowed"),
        (add_member("manifest.json", data=b"{}"), "appears twice"),
        (add_member("regions/x/readme.txt", data=b"x"), "unknown file"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink", "hardlink", "device", "fifo",
         "duplicate", "unknown"],
)
def test_tampered_archive_rejected(snapshot_dir: Path, tmp_path: Path, extra, message):
    archive = archive_of(snapshot_dir, tmp_path / "snapshot.tar", extra)
    target = Warehouse(tmp_path / "warehouse")
    with pytest.raises(SnapshotError) as raised:
        import_snapshot(target, archive, 7)
    assert message in str(raised.value)
    assert_empty(target)
    assert not (tmp_path / "evil.parquet").exists()


def test_oversized_member_rejected(snapshot_dir: Path, tmp_path: Path):
    archive = archive_of(snapshot_dir, tmp_path / "snapshot.tar", lambda tar: None)
    target = Warehouse(tmp_path / "warehouse")
    with pytest.raises(SnapshotError, match="more than the limit of 1,000 bytes"):
        import_snapshot(target, archive, 7, max_file_bytes=1000)
    assert_empty(target)
    # The same archive passes under the default limit.
    assert import_snapshot(target, archive, 7).cells > 0


def test_compressed_or_foreign_file_rejected(tmp_path: Path):
    fake = tmp_path / "snapshot.tar"
    fake.write_bytes(b"#!/bin/sh\necho owned\n")
    with pytest.raises(SnapshotError, match="not an uncompressed tar archive"):
        import_snapshot(Warehouse(tmp_path / "warehouse"), fake, 7)


def test_export_refuses_existing_path(sample_data: Path, tmp_path: Path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(SnapshotError, match="already exists"):
        export_snapshot(Warehouse(sample_data / "warehouse"), tmp_path / "taken")


# clear, warm, monitor, info


def test_clear_cells_then_regions(snapshot_dir: Path, tmp_path: Path):
    env = perfect10k_env(tmp_path / "data")
    store = Warehouse(tmp_path / "data" / "warehouse")
    import_snapshot(store, snapshot_dir, 7)
    cells = store.cell_entries()
    assert cells

    kept = run_cli(env, "cache", "clear", "--kind", "cells", "--older-than-days", "1")
    assert "removed 0 regions, 0 cells" in kept.stdout, "cells built today are kept"
    assert store.cell_entries() == cells

    run_cli(env, "cache", "clear", "--kind", "cells")
    assert store.cell_entries() == {}
    assert not any((store.root / "cells").iterdir())
    assert set(store.regions()) == {"monaco", "andorra"}

    run_cli(env, "cache", "clear", "--kind", "regions")
    assert store.regions() == {}
    assert not any((store.root / "regions").iterdir())


def test_clear_orphans_keeps_current_files(snapshot_dir: Path, tmp_path: Path):
    env = perfect10k_env(tmp_path / "data")
    store = Warehouse(tmp_path / "data" / "warehouse")
    import_snapshot(store, snapshot_dir, 7)
    entry = next(iter(store.cell_entries().values()))
    replaced = store.root / "cells" / entry.cell / "network-0-000000"
    shutil.copytree(store.cell_dir(entry.cell, "network", entry.network_version), replaced)
    old = 1_000_000_000
    os.utime(replaced, (old, old))

    result = run_cli(env, "cache", "clear", "--kind", "orphans")
    assert "1 unreferenced folders" in result.stdout
    assert not replaced.exists()
    for current in store.cell_entries().values():
        assert store.validate_cell(current) is None


def test_cache_warm_builds_through_dagster(tmp_path: Path):
    env = perfect10k_env(tmp_path)
    import_region(Warehouse(tmp_path / "warehouse"), MONACO, 7)
    result = run_cli(
        env, "cache", "warm", "--locations", f"{MONACO_START[0]},{MONACO_START[1]}",
        "--radius-m", "1500",
    )
    assert "built" in result.stdout
    assert "Dagster run" in result.stdout
    store = Warehouse(tmp_path / "warehouse")
    assert store.cell_entries()
    assert all(entry.ready for entry in store.cell_entries().values())

    monitor = run_cli(env, "cache", "monitor", "--once")
    assert "runs in flight: 0" in monitor.stdout
    run_id = result.stdout.split("Dagster run ")[1].split()[0]
    assert f"{run_id[:8]} build_cells  SUCCESS" in monitor.stdout
    assert f"cells: {len(store.cell_entries())} ready" in monitor.stdout


def test_cache_warm_rejects_bad_location(tmp_path: Path):
    result = run_cli_status(perfect10k_env(tmp_path), "cache", "warm", "--locations", "95,7")
    assert result.returncode == 2
    assert "latitude must be within -90..90, got 95" in result.stderr


def test_cache_info_shows_server_hit_rate(server: LiveServer):
    with server.client() as client:
        response = client.post(
            "/api/loops",
            json={"lat": MONACO_START[0], "lon": MONACO_START[1], "target_distance": 5000},
        )
    assert response.status_code == 200
    result = run_cli(server.env, "cache", "info", "--server", server.base_url)
    assert "hit rate" in result.stdout
    assert "requests from cache" in result.stdout
    assert "monaco version" in result.stdout
