"""Warehouse snapshots: the manifest and every current Parquet file, with SHA-256 checksums.

A snapshot is a directory or an uncompressed `.tar` archive laid out like the warehouse::

    checksums.json        format name and version, then size and SHA-256 of every other file
    manifest.json         the regions and ready cells the snapshot contains
    regions/<region>/<version>/<table>.parquet
    cells/<cell>/<part>-<version>/<table>.parquet

Snapshots hold data only: JSON and Parquet, no pickle and nothing executable. An import
trusts nothing in the snapshot. It reads only regular files whose paths match the layout
above, checks every size and checksum, every manifest entry and every Parquet schema in a
staging folder, and only then moves the files into the warehouse and switches the manifest.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import re
import secrets
import shutil
import stat
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import h3
import pyarrow as pa
import pyarrow.parquet as pq

from warehouse import schema
from warehouse.store import CELL_PARTS, MANIFEST_FORMAT, Warehouse

log = logging.getLogger(__name__)

SNAPSHOT_FORMAT = "perfect10k-snapshot"
SNAPSHOT_VERSION = 1
CHECKSUMS_NAME = "checksums.json"
MANIFEST_NAME = "manifest.json"
DEFAULT_MAX_FILE_BYTES = 1 << 30
# The checksums and manifest files are parsed in memory, so they get a bound of their own.
MAX_JSON_BYTES = 64 << 20
MAX_MEMBERS = 500_000
CHUNK_BYTES = 1 << 20

REGION_ID = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}"
REGION_VERSION = r"[0-9a-f]{16}"
CELL_VERSION = r"[0-9a-f]{1,16}-[0-9a-f]{6}"
REGION_FILE = re.compile(
    rf"regions/(?P<region>{REGION_ID})/(?P<version>{REGION_VERSION})/(?P<table>\w+)\.parquet"
)
CELL_FILE = re.compile(
    rf"cells/(?P<cell>[0-9a-f]{{15}})/(?P<part>network|features)-(?P<version>{CELL_VERSION})"
    r"/(?P<table>\w+)\.parquet"
)
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class SnapshotError(ValueError):
    """A snapshot is invalid or cannot be written; the message names the file and the rule."""


@dataclass(frozen=True)
class SnapshotSummary:
    """Counts and size of one exported or imported snapshot."""

    path: Path
    regions: int
    cells: int
    files: int
    bytes: int
    skipped_cells: int = 0
    removed_dirs: int = 0


# Layout


def region_file(region: str, version: str, table: str) -> str:
    return f"regions/{region}/{version}/{table}.parquet"


def cell_file(cell: str, part: str, version: str, table: str) -> str:
    return f"cells/{cell}/{part}-{version}/{table}.parquet"


def expected_schema(relative: str) -> pa.Schema:
    """Return the Arrow schema a snapshot file must have; raise SnapshotError for other paths."""
    match = REGION_FILE.fullmatch(relative)
    if match is not None:
        tables = schema.REGION_TABLES
    else:
        match = CELL_FILE.fullmatch(relative)
        if match is None:
            raise SnapshotError(
                f"unexpected file {relative!r}: a snapshot contains only {MANIFEST_NAME}, "
                f"{CHECKSUMS_NAME}, regions/<region>/<version>/<table>.parquet and "
                "cells/<cell>/<part>-<version>/<table>.parquet"
            )
        tables = CELL_PARTS[match["part"]]
    if match["table"] not in tables:
        raise SnapshotError(f"unexpected table {match['table']!r} in {relative!r}")
    return tables[match["table"]]


def manifest_files(manifest: dict[str, Any]) -> set[str]:
    """Return the relative path of every Parquet file the manifest names."""
    files = set()
    for region, record in manifest.get("regions", {}).items():
        for table in schema.REGION_TABLES:
            files.add(region_file(region, record["version"], table))
    for cell, raw in manifest.get("cells", {}).items():
        for part, tables in CELL_PARTS.items():
            version = raw.get(f"{part}_version")
            if version is None:
                continue
            for table in tables:
                files.add(cell_file(cell, part, version, table))
    return files


def manifest_dirs(manifest: dict[str, Any]) -> set[str]:
    """Return the relative version folders the manifest names."""
    return {str(PurePosixPath(path).parent) for path in manifest_files(manifest)}


# Export


def current_manifest(warehouse: Warehouse) -> tuple[dict[str, Any], int]:
    """Return the warehouse manifest narrowed to ready, current cells, and the cells left out.

    A cell is left out when its features are missing or its region was re-imported since it
    was built, because an importer would only have to rebuild it.
    """
    manifest = warehouse.manifest()
    regions = manifest.get("regions", {})
    cells = {}
    for cell, entry in warehouse.cell_entries().items():
        record = regions.get(entry.region)
        if entry.ready and record is not None and entry.region_version == record["version"]:
            cells[cell] = manifest["cells"][cell]
    skipped = len(manifest.get("cells", {})) - len(cells)
    return {"format": MANIFEST_FORMAT, "regions": regions, "cells": cells}, skipped


def _sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def export_snapshot(warehouse: Warehouse, destination: Path) -> SnapshotSummary:
    """Write the warehouse's current files to `destination`, a new directory or a `.tar` file.

    The snapshot is written beside `destination` under a temporary name and renamed into
    place when complete. Parquet files are immutable, so the export is consistent with the
    manifest it started from while builds go on.
    """
    destination = Path(destination)
    as_tar = destination.name.endswith(".tar")
    if destination.exists() and not (destination.is_dir() and not any(destination.iterdir())):
        raise SnapshotError(f"{destination} already exists; choose a new path")
    manifest, skipped = current_manifest(warehouse)
    if not manifest["regions"]:
        raise SnapshotError(f"the warehouse at {warehouse.root} has no regions to export")
    sources = {relative: warehouse.root / relative for relative in sorted(manifest_files(manifest))}
    manifest_bytes = json.dumps(manifest, indent=1, sort_keys=True).encode()

    checksums: dict[str, dict[str, Any]] = {
        MANIFEST_NAME: {
            "sha256": hashlib.sha256(manifest_bytes).hexdigest(),
            "bytes": len(manifest_bytes),
        }
    }
    for relative, path in sources.items():
        try:
            digest, size = _sha256_file(path)
        except FileNotFoundError as error:
            raise SnapshotError(
                f"{relative} disappeared during the export (cleared or rebuilt); run it again"
            ) from error
        checksums[relative] = {"sha256": digest, "bytes": size}
    checksums_bytes = json.dumps(
        {
            "format": SNAPSHOT_FORMAT,
            "version": SNAPSHOT_VERSION,
            "created_at": time.time(),
            "files": checksums,
        },
        indent=1,
        sort_keys=True,
    ).encode()

    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.partial-{secrets.token_hex(4)}")
    try:
        if as_tar:
            _write_tar(partial, checksums_bytes, manifest_bytes, sources)
        else:
            _write_directory(partial, checksums_bytes, manifest_bytes, sources)
        os.replace(partial, destination)
    except BaseException:
        if partial.is_dir():
            shutil.rmtree(partial, ignore_errors=True)
        else:
            partial.unlink(missing_ok=True)
        raise
    total = sum(item["bytes"] for item in checksums.values())
    log.info("snapshot written to %s: %d files, %d bytes", destination, len(checksums), total)
    return SnapshotSummary(
        destination,
        len(manifest["regions"]),
        len(manifest["cells"]),
        len(checksums),
        total,
        skipped_cells=skipped,
    )


def _write_directory(
    target: Path, checksums: bytes, manifest: bytes, sources: dict[str, Path]
) -> None:
    target.mkdir()
    (target / CHECKSUMS_NAME).write_bytes(checksums)
    (target / MANIFEST_NAME).write_bytes(manifest)
    for relative, path in sources.items():
        copy = target / relative
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)


def _write_tar(target: Path, checksums: bytes, manifest: bytes, sources: dict[str, Path]) -> None:
    now = int(time.time())

    def member(name: str, size: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size = size
        info.mode = 0o644
        info.mtime = now
        return info

    with tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as archive:
        archive.addfile(member(CHECKSUMS_NAME, len(checksums)), io.BytesIO(checksums))
        archive.addfile(member(MANIFEST_NAME, len(manifest)), io.BytesIO(manifest))
        for relative, path in sources.items():
            with open(path, "rb") as handle:
                archive.addfile(member(relative, path.stat().st_size), handle)


# Reading a snapshot without trusting it


def _check_member_path(name: str) -> str:
    """Return `name` as a normalised relative path; raise SnapshotError for unsafe names."""
    if "\x00" in name or "\\" in name:
        raise SnapshotError(f"invalid path {name!r}: contains a NUL byte or a backslash")
    if name.startswith("/"):
        raise SnapshotError(f"invalid path {name!r}: absolute paths are not allowed")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise SnapshotError(f"invalid path {name!r}: '..' (path traversal) is not allowed")
    return "/".join(parts)


class _Source:
    """Regular files of a snapshot, by normalised relative path, with their sizes."""

    path: Path
    sizes: dict[str, int]

    def open(self, relative: str) -> BinaryIO:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _DirectorySource(_Source):
    def __init__(self, root: Path, max_file_bytes: int) -> None:
        self.path = root
        self.sizes = {}
        for directory, subdirs, names in os.walk(root, followlinks=False):
            for name in subdirs + names:
                full = Path(directory) / name
                relative = _check_member_path(full.relative_to(root).as_posix())
                info = full.lstat()
                if stat.S_ISLNK(info.st_mode):
                    raise SnapshotError(f"{relative}: symbolic links are not allowed")
                if stat.S_ISDIR(info.st_mode):
                    continue
                if not stat.S_ISREG(info.st_mode):
                    raise SnapshotError(f"{relative}: only regular files are allowed")
                if info.st_nlink > 1:
                    raise SnapshotError(f"{relative}: hard links are not allowed")
                _check_size(relative, info.st_size, max_file_bytes)
                self.sizes[relative] = info.st_size
                if len(self.sizes) > MAX_MEMBERS:
                    raise SnapshotError(f"the snapshot has more than {MAX_MEMBERS} files")

    def open(self, relative: str) -> BinaryIO:
        # O_NOFOLLOW: a file swapped for a link after the scan is still not followed.
        descriptor = os.open(self.path / relative, os.O_RDONLY | os.O_NOFOLLOW)
        return os.fdopen(descriptor, "rb")


class _TarSource(_Source):
    def __init__(self, path: Path, max_file_bytes: int) -> None:
        self.path = path
        self.sizes = {}
        self._members: dict[str, tarfile.TarInfo] = {}
        try:
            # Closed by close(): the archive stays open while its members are copied.
            self._archive = tarfile.open(path, "r:")  # noqa: SIM115
        except tarfile.TarError as error:
            raise SnapshotError(f"{path} is not an uncompressed tar archive: {error}") from error
        try:
            self._scan(max_file_bytes)
        except BaseException:
            self._archive.close()
            raise

    def _scan(self, max_file_bytes: int) -> None:
        for count, info in enumerate(self._archive, start=1):
            if count > MAX_MEMBERS:
                raise SnapshotError(f"the snapshot has more than {MAX_MEMBERS} members")
            relative = _check_member_path(info.name)
            if info.issym() or info.islnk():
                raise SnapshotError(
                    f"{info.name}: links are not allowed (link to {info.linkname!r})"
                )
            if info.isdir():
                continue
            if not info.isreg():
                raise SnapshotError(f"{info.name}: only regular files are allowed")
            if relative in self._members:
                raise SnapshotError(f"{relative} appears twice in the archive")
            _check_size(relative, info.size, max_file_bytes)
            self._members[relative] = info
            self.sizes[relative] = info.size

    def open(self, relative: str) -> BinaryIO:
        handle = self._archive.extractfile(self._members[relative])
        if handle is None:
            raise SnapshotError(f"{relative} cannot be read from the archive")
        return handle  # type: ignore[return-value]

    def close(self) -> None:
        self._archive.close()


def _check_size(relative: str, size: int, max_file_bytes: int) -> None:
    limit = MAX_JSON_BYTES if relative in (CHECKSUMS_NAME, MANIFEST_NAME) else max_file_bytes
    if size > limit:
        raise SnapshotError(
            f"{relative} has {size:,} bytes, more than the limit of {limit:,} bytes"
            + ("" if limit == MAX_JSON_BYTES else "; raise it with --max-file-mb")
        )


def _open_source(path: Path, max_file_bytes: int) -> _Source:
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise SnapshotError(f"{path} is a symbolic link; give the snapshot's real path")
    if stat.S_ISDIR(info.st_mode):
        return _DirectorySource(path, max_file_bytes)
    if stat.S_ISREG(info.st_mode):
        return _TarSource(path, max_file_bytes)
    raise SnapshotError(f"{path} is neither a directory nor a .tar file")


def _read_json(handle: BinaryIO, relative: str, size: int) -> Any:
    data = handle.read(size + 1)
    if len(data) != size:
        raise SnapshotError(f"{relative}: expected {size} bytes, read {len(data)}")
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SnapshotError(f"{relative} is not valid JSON: {error}") from error


def _parse_checksums(data: Any) -> dict[str, tuple[str, int]]:
    """Return the expected SHA-256 and size of every file the checksums file lists."""
    if not isinstance(data, dict) or data.get("format") != SNAPSHOT_FORMAT:
        raise SnapshotError(f"{CHECKSUMS_NAME} is not a {SNAPSHOT_FORMAT} checksums file")
    if data.get("version") != SNAPSHOT_VERSION:
        raise SnapshotError(
            f"snapshot format version {data.get('version')!r} is not supported "
            f"(expected {SNAPSHOT_VERSION})"
        )
    files = data.get("files")
    if not isinstance(files, dict):
        raise SnapshotError(f"{CHECKSUMS_NAME} has no 'files' object")
    expected = {}
    for name, item in files.items():
        relative = _check_member_path(str(name))
        if relative != name or relative == CHECKSUMS_NAME:
            raise SnapshotError(f"{CHECKSUMS_NAME} lists an invalid path {name!r}")
        if relative != MANIFEST_NAME:
            expected_schema(relative)
        valid = (
            isinstance(item, dict)
            and isinstance(item.get("sha256"), str)
            and SHA256_HEX.fullmatch(item["sha256"])
            and isinstance(item.get("bytes"), int)
            and item["bytes"] >= 0
        )
        if not valid:
            raise SnapshotError(f"{CHECKSUMS_NAME}: entry for {name} needs sha256 and bytes")
        expected[relative] = (item["sha256"], item["bytes"])
    return expected


def _copy_verified(
    source: BinaryIO, target: Path, relative: str, sha256: str, size: int
) -> None:
    digest = hashlib.sha256()
    written = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "xb") as output:
        while True:
            block = source.read(min(CHUNK_BYTES, size + 1 - written))
            if not block:
                break
            written += len(block)
            if written > size:
                raise SnapshotError(f"{relative} is longer than the {size} bytes listed")
            digest.update(block)
            output.write(block)
        output.flush()
        os.fsync(output.fileno())
    if written != size:
        raise SnapshotError(f"{relative}: {written} bytes, the checksums file lists {size}")
    if digest.hexdigest() != sha256:
        raise SnapshotError(f"{relative}: SHA-256 does not match the checksums file")


# Manifest validation


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _validate_manifest(manifest: Any, resolution: int) -> dict[str, Any]:
    """Return the snapshot's manifest after checking every entry; raise SnapshotError."""
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise SnapshotError(
            f"{MANIFEST_NAME} is not a warehouse manifest of format {MANIFEST_FORMAT}"
        )
    regions = manifest.get("regions")
    cells = manifest.get("cells")
    if not isinstance(regions, dict) or not isinstance(cells, dict):
        raise SnapshotError(f"{MANIFEST_NAME} needs 'regions' and 'cells' objects")
    for region, record in regions.items():
        where = f"{MANIFEST_NAME}: region {region!r}"
        if not re.fullmatch(REGION_ID, region):
            raise SnapshotError(f"{where}: invalid region id")
        if not isinstance(record, dict):
            raise SnapshotError(f"{where}: the entry is not an object")
        if not re.fullmatch(REGION_VERSION, str(record.get("version"))):
            raise SnapshotError(f"{where}: invalid version {record.get('version')!r}")
        if record.get("h3_resolution") != resolution:
            raise SnapshotError(
                f"{where}: H3 resolution {record.get('h3_resolution')!r} differs from this "
                f"warehouse's {resolution} (PERFECT10K_H3_RESOLUTION)"
            )
        bbox = record.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_is_number, bbox))):
            raise SnapshotError(f"{where}: bbox must be four numbers")
        region_cells = record.get("cells")
        if not isinstance(region_cells, dict) or not all(
            _is_cell(cell, resolution) and isinstance(count, int)
            for cell, count in region_cells.items()
        ):
            raise SnapshotError(f"{where}: 'cells' must map H3 cells to edge counts")
    for cell, raw in cells.items():
        where = f"{MANIFEST_NAME}: cell {cell!r}"
        if not _is_cell(cell, resolution):
            raise SnapshotError(f"{where}: not an H3 cell at resolution {resolution}")
        if not isinstance(raw, dict):
            raise SnapshotError(f"{where}: the entry is not an object")
        record = regions.get(raw.get("region"))
        if record is None:
            raise SnapshotError(f"{where}: region {raw.get('region')!r} is not in the snapshot")
        if raw.get("region_version") != record["version"]:
            raise SnapshotError(f"{where}: built from another version of its region")
        for key in ("network_version", "features_version"):
            if not re.fullmatch(CELL_VERSION, str(raw.get(key))):
                raise SnapshotError(f"{where}: invalid {key} {raw.get(key)!r}")
        if raw.get("features_network_version") != raw["network_version"]:
            raise SnapshotError(f"{where}: its features do not belong to its network")
        numbers = ("built_at", "nodes", "edges", "network_bytes", "features_bytes")
        if not all(_is_number(raw.get(key, 0)) for key in numbers):
            raise SnapshotError(f"{where}: {', '.join(numbers)} must be numbers")
    return {"format": MANIFEST_FORMAT, "regions": regions, "cells": cells}


def _is_cell(value: Any, resolution: int) -> bool:
    try:
        return (
            isinstance(value, str)
            and h3.is_valid_cell(value)
            and h3.get_resolution(value) == resolution
        )
    except (TypeError, ValueError):
        return False


def _check_parquet(path: Path, relative: str) -> None:
    expected = expected_schema(relative)
    try:
        actual = pq.read_schema(path)
        pq.read_table(path)
    except (OSError, pa.ArrowException) as error:
        raise SnapshotError(f"{relative} is not a readable Parquet file: {error}") from error
    if not actual.equals(expected):
        raise SnapshotError(
            f"{relative} has schema ({actual.to_string(show_schema_metadata=False)}), "
            f"expected ({expected.to_string(show_schema_metadata=False)})".replace("\n", ", ")
        )


# Import


def warehouse_is_empty(warehouse: Warehouse) -> bool:
    """Return True when the warehouse has no regions, no cells and no region or cell files."""
    manifest = warehouse.manifest()
    if manifest.get("regions") or manifest.get("cells"):
        return False
    for sub in ("regions", "cells"):
        folder = warehouse.root / sub
        if folder.exists() and any(folder.iterdir()):
            return False
    return True


def import_snapshot(
    warehouse: Warehouse,
    source_path: Path,
    resolution: int,
    overwrite: bool = False,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> SnapshotSummary:
    """Validate the snapshot at `source_path` completely, then install it into `warehouse`.

    Raises SnapshotError on the first violation, leaving the warehouse unchanged. With
    `overwrite`, the snapshot replaces the warehouse's regions and cells, and the folders
    only the old manifest named are deleted after the switch.
    """
    if not overwrite and not warehouse_is_empty(warehouse):
        raise SnapshotError(
            f"the warehouse at {warehouse.root} is not empty; pass --overwrite to replace it"
        )
    source = _open_source(Path(source_path), max_file_bytes)
    warehouse.ensure_layout()
    staging = warehouse.root / "tmp" / f"import-{secrets.token_hex(6)}"
    staging.mkdir()
    try:
        manifest, total = _stage(source, staging, resolution)
        removed = _install(warehouse, staging, manifest, overwrite)
    finally:
        source.close()
        shutil.rmtree(staging, ignore_errors=True)
    log.info(
        "snapshot %s imported: %d regions, %d cells, %d bytes",
        source_path, len(manifest["regions"]), len(manifest["cells"]), total,
    )
    return SnapshotSummary(
        Path(source_path),
        len(manifest["regions"]),
        len(manifest["cells"]),
        len(source.sizes) - 1,
        total,
        removed_dirs=removed,
    )


def _stage(source: _Source, staging: Path, resolution: int) -> tuple[dict[str, Any], int]:
    """Copy and verify every file of `source` into `staging`; return the manifest and bytes."""
    if CHECKSUMS_NAME not in source.sizes:
        raise SnapshotError(f"{source.path} has no {CHECKSUMS_NAME}; it is not a snapshot")
    with source.open(CHECKSUMS_NAME) as handle:
        expected = _parse_checksums(
            _read_json(handle, CHECKSUMS_NAME, source.sizes[CHECKSUMS_NAME])
        )
    present = set(source.sizes) - {CHECKSUMS_NAME}
    unlisted = sorted(present - set(expected))
    if unlisted:
        raise SnapshotError(f"{unlisted[0]} is not listed in {CHECKSUMS_NAME} (unknown file)")
    missing = sorted(set(expected) - present)
    if missing:
        raise SnapshotError(f"{missing[0]} is listed in {CHECKSUMS_NAME} but missing")
    if MANIFEST_NAME not in expected:
        raise SnapshotError(f"the snapshot has no {MANIFEST_NAME}")

    for relative in sorted(expected):
        digest, size = expected[relative]
        if source.sizes[relative] != size:
            raise SnapshotError(
                f"{relative}: {source.sizes[relative]} bytes, the checksums file lists {size}"
            )
        with source.open(relative) as handle:
            _copy_verified(handle, staging / relative, relative, digest, size)

    with open(staging / MANIFEST_NAME, "rb") as handle:
        manifest = _validate_manifest(
            _read_json(handle, MANIFEST_NAME, expected[MANIFEST_NAME][1]), resolution
        )
    named = manifest_files(manifest)
    parquet = set(expected) - {MANIFEST_NAME}
    if parquet - named:
        raise SnapshotError(f"{min(parquet - named)} is not named by {MANIFEST_NAME}")
    if named - parquet:
        raise SnapshotError(f"{MANIFEST_NAME} names {min(named - parquet)}, which is missing")
    for relative in sorted(parquet):
        _check_parquet(staging / relative, relative)
    return manifest, sum(size for _, size in expected.values())


def _install(
    warehouse: Warehouse, staging: Path, manifest: dict[str, Any], overwrite: bool
) -> int:
    """Move the staged folders into place, switch the manifest, and return folders deleted."""
    for relative in sorted(manifest_dirs(manifest)):
        target = warehouse.root / relative
        if target.exists():
            _check_same_files(staging / relative, target, relative)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / relative, target)

    with warehouse.update_manifest() as current:
        if not overwrite and (current.get("regions") or current.get("cells")):
            raise SnapshotError(
                f"the warehouse at {warehouse.root} was written to during the import; "
                "pass --overwrite to replace it"
            )
        old_dirs = manifest_dirs(current)
        current["regions"] = manifest["regions"]
        current["cells"] = manifest["cells"]

    # NOTE: a server that loaded the old manifest may still read a deleted folder. It then
    # treats that cell as corrupt until it reads the new manifest.
    removed = 0
    for relative in sorted(old_dirs - manifest_dirs(manifest)):
        shutil.rmtree(warehouse.root / relative, ignore_errors=True)
        removed += 1
    return removed


def _check_same_files(staged: Path, existing: Path, relative: str) -> None:
    for path in staged.iterdir():
        other = existing / path.name
        if not other.is_file() or _sha256_file(other) != _sha256_file(path):
            raise SnapshotError(
                f"{relative} exists in the warehouse with different content; "
                "clear the warehouse or import into an empty one"
            )
