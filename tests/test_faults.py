"""Faults on real components: killed and failing builds, corrupt files, Dagster down, races.

Each test breaks one thing, on a warehouse of its own or on the shared sample data without
writing to it. It checks that nothing partial becomes visible, that the failure is reported
with its cause, and that the system recovers.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from pipelines.cells import RegionFeatureSource, build_cell_features, build_cell_network
from serving.web import cell_bounds
from tests.conftest import (
    ANDORRA,
    ANDORRA_START,
    MONACO,
    MONACO_START,
    REPOSITORY,
    LiveServer,
    perfect10k_env,
    run_cli,
    start_server,
)
from warehouse import Warehouse
from warehouse.cells import cell_of, cells_for_loop
from warehouse.store import CellEntry

pytestmark = pytest.mark.slow

# Canillo, Andorra: far enough from Andorra la Vella that their 3 km loops share no cell.
CANILLO = (42.5667, 1.5997)
COLD_DISTANCE_M = 3000
JOB_TIMEOUT_S = 240


# Helpers


def import_extracts(data_dir: Path, *extracts: Path) -> dict[str, str]:
    env = perfect10k_env(data_dir)
    for extract in extracts:
        run_cli(env, "import", str(extract))
    return env


def cli_process(env: dict[str, str], *args: str, **popen: object) -> subprocess.Popen:
    """Start the `perfect10k` command in its own process group, so it can be killed whole."""
    return subprocess.Popen(
        [sys.executable, "-m", "perfect10k.cli", *args],
        env=env,
        cwd=REPOSITORY,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **popen,
    )


def staging_dirs(warehouse_dir: Path) -> set[str]:
    """Return the partial writes (staging folders) in the warehouse's tmp folder."""
    try:
        return {entry.name for entry in os.scandir(warehouse_dir / "tmp") if entry.is_dir()}
    except FileNotFoundError:
        return set()


def assert_manifest_consistent(warehouse_dir: Path) -> Warehouse:
    """Check that every file the manifest names exists, reads, and lies outside tmp/."""
    manifest = json.loads((warehouse_dir / "manifest.json").read_text())
    warehouse = Warehouse(warehouse_dir)
    for cell, entry in warehouse.cell_entries().items():
        parts = {"network": entry.network_version}
        if entry.features_version is not None:
            parts["features"] = entry.features_version
        for part, version in parts.items():
            directory = warehouse.cell_dir(cell, part, version)
            assert directory.is_dir(), f"manifest names missing {directory}"
            for path in directory.glob("*.parquet"):
                pq.ParquetFile(path).read()
        if entry.ready:
            assert warehouse.validate_cell(entry) is None
    assert "tmp" not in json.dumps(manifest["cells"])
    ready = [entry for entry in warehouse.cell_entries().values() if entry.ready]
    if ready:
        warehouse.read_cells(ready)
    return warehouse


def poll_job(client: httpx.Client, job_id: str, timeout_s: float = JOB_TIMEOUT_S) -> dict:
    deadline = time.monotonic() + timeout_s
    seen = []
    while time.monotonic() < deadline:
        response = client.get(f"/api/job-status/{job_id}")
        assert response.status_code == 200, response.text
        body = response.json()
        seen.append(body["status"])
        if body["status"] in {"completed", "failed"}:
            body["seen"] = seen
            return body
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish within {timeout_s} s; saw {set(seen)}")


def start_on_region_way(warehouse: Warehouse, region: str, lat: float, lon: float) -> tuple:
    """Return the midpoint of the region's walkable edge nearest to (lat, lon)."""
    edges = pq.read_table(
        warehouse.region_table_path(region, "edges"), columns=["mid_lat", "mid_lon"]
    ).to_pydict()
    points = zip(edges["mid_lat"], edges["mid_lon"], strict=True)
    return min(points, key=lambda point: (point[0] - lat) ** 2 + (point[1] - lon) ** 2)


def cold_start(warehouse: Warehouse, region: str) -> tuple[float, float]:
    """Return a start on a walkable edge whose cell is not built."""
    ready = {cell for cell, entry in warehouse.cell_entries().items() if entry.ready}
    edges = pq.read_table(
        warehouse.region_table_path(region, "edges"), columns=["mid_lat", "mid_lon", "cell"]
    ).to_pydict()
    for lat, lon, cell in zip(edges["mid_lat"], edges["mid_lon"], edges["cell"], strict=True):
        if cell not in ready:
            return lat, lon
    pytest.skip(f"every cell of {region} is built")


# A build killed mid-write


def test_killed_build_leaves_no_partial_cell(tmp_path: Path):
    env = import_extracts(tmp_path, MONACO)
    warehouse_dir = tmp_path / "warehouse"
    cells = len(Warehouse(warehouse_dir).regions()["monaco"]["cells"])
    kills_mid_write = 0
    # Kill at the first and fifth partial write seen (two per cell: network, features).
    for target in (1, 5):
        process = cli_process(env, "materialize", "--region", "monaco")
        seen: set[str] = set()
        while process.poll() is None and len(seen) < target:
            seen |= staging_dirs(warehouse_dir)
            time.sleep(0.001)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate(timeout=60)
        if process.returncode == -signal.SIGKILL:
            # The staging folder the process was writing is left behind in tmp/.
            kills_mid_write += bool(seen & staging_dirs(warehouse_dir))
        assert_manifest_consistent(warehouse_dir)
    assert kills_mid_write >= 2, "the builds ended before they could be killed mid-write"

    run_cli(env, "materialize", "--region", "monaco")
    warehouse = assert_manifest_consistent(warehouse_dir)
    entries = warehouse.cell_entries()
    assert len(entries) == cells
    assert all(entry.ready for entry in entries.values())


# A full disk during a build


def test_full_disk_build_fails_cleanly(tmp_path: Path):
    env = import_extracts(tmp_path, MONACO)
    warehouse_dir = tmp_path / "warehouse"
    cell = cell_of(*MONACO_START, 7)
    build = (
        "import sys\n"
        "from pipelines.cells import build_cell_network\n"
        "from warehouse import Warehouse\n"
        "build_cell_network(Warehouse(sys.argv[1]), sys.argv[2])\n"
    )

    def small_disk() -> None:
        # Writes past 4 KB fail with EFBIG (errno 27) as on a full disk; SIGXFSZ would kill.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    full = subprocess.run(
        [sys.executable, "-c", build, str(warehouse_dir), cell],
        env=env, cwd=REPOSITORY, capture_output=True, text=True, timeout=120, check=False,
        preexec_fn=small_disk,
    )
    assert full.returncode != 0
    assert "File too large" in full.stderr
    assert Warehouse(warehouse_dir).cell_entry(cell) is None
    assert staging_dirs(warehouse_dir) == set(), "a partial write was left behind"
    assert not (warehouse_dir / "cells" / cell).exists()

    retry = subprocess.run(
        [sys.executable, "-c", build, str(warehouse_dir), cell],
        env=env, cwd=REPOSITORY, capture_output=True, text=True, timeout=120, check=False,
    )
    assert retry.returncode == 0, retry.stderr
    assert Warehouse(warehouse_dir).cell_entry(cell) is not None
    assert_manifest_consistent(warehouse_dir)


# Two builds of the same cells while readers read them


def test_concurrent_builds_no_torn_reads(tmp_path: Path):
    env = import_extracts(tmp_path, MONACO)
    warehouse_dir = tmp_path / "warehouse"
    # The first build runs in this process, without Dagster, to save a run's start-up.
    warehouse = Warehouse(warehouse_dir)
    source = RegionFeatureSource(warehouse)
    for cell in warehouse.regions()["monaco"]["cells"]:
        build_cell_network(warehouse, cell)
        build_cell_features(warehouse, cell, source)
    # Mark every cell as built from an older extract, so both builds redo all of them.
    with Warehouse(warehouse_dir).update_manifest() as manifest:
        for raw in manifest["cells"].values():
            raw["region_version"] = "older"

    stop = threading.Event()
    errors: list[str] = []
    reads: list[int] = []
    versions: set[str] = set()

    def read_loop() -> None:
        warehouse = Warehouse(warehouse_dir)
        count = 0
        while not stop.is_set():
            try:
                ready = [entry for entry in warehouse.cell_entries().values() if entry.ready]
                if not ready:
                    # Every cell is being rebuilt at this moment; there is nothing to read.
                    continue
                tables = warehouse.read_cells(ready)
                rows = sum(entry.edges for entry in ready)
                assert tables["edges"].num_rows == rows, (tables["edges"].num_rows, rows)
                versions.update(entry.network_version for entry in ready)
                count += 1
            except Exception as error:  # noqa: BLE001 - every failed read is a finding
                errors.append(repr(error))
        reads.append(count)

    readers = [threading.Thread(target=read_loop) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        builds = [cli_process(env, "materialize", "--region", "monaco") for _ in range(2)]
        outputs = [build.communicate(timeout=300) for build in builds]
    finally:
        stop.set()
        for reader in readers:
            reader.join(timeout=60)
    for build, (_, stderr) in zip(builds, outputs, strict=True):
        assert build.returncode == 0, stderr[-3000:]
    assert errors == [], errors[:5]
    assert sum(reads) > 0
    cells = len(Warehouse(warehouse_dir).regions()["monaco"]["cells"])
    assert len(versions) > cells, "the readers never saw a rebuilt cell"
    warehouse = assert_manifest_consistent(warehouse_dir)
    entries = warehouse.cell_entries().values()
    assert all(entry.ready and entry.region_version != "older" for entry in entries)


# Dagster unreachable, or its daemon stopped


def dagster_webserver(data_dir: Path, port: str) -> subprocess.Popen:
    """Start a Dagster webserver without a daemon on `port`, with its own empty instance."""
    home = data_dir / "dagster-no-daemon"
    home.mkdir(exist_ok=True)
    env = {**perfect10k_env(data_dir), "DAGSTER_HOME": str(home)}
    with open(data_dir / "dagster-no-daemon.log", "ab") as log:
        return subprocess.Popen(
            [
                str(Path(sys.executable).parent / "dagster-webserver"),
                "-w", str(REPOSITORY / "workspace.yaml"), "-h", "127.0.0.1", "-p", port,
            ],
            env=env, cwd=REPOSITORY, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.fixture(scope="module")
def server_without_dagster(sample_data: Path) -> Iterator[LiveServer]:
    """The server over the sample data, with no Dagster webserver on its configured port."""
    live = start_server(sample_data, "no-dagster.log", PERFECT10K_DAGSTER_EMBEDDED="0")
    yield live
    live.stop()


def test_dagster_down_warm_still_served(server_without_dagster: LiveServer, sample_data: Path):
    lat, lon = MONACO_START
    warehouse = Warehouse(sample_data / "warehouse")
    cold_lat, cold_lon = cold_start(warehouse, "andorra")
    with server_without_dagster.client() as client:
        warm = client.post("/api/loops", json={"lat": lat, "lon": lon, "target_distance": 3000})
        cold = client.post("/api/loops", json={"lat": cold_lat, "lon": cold_lon})
        health = client.get("/api/health")
        head = client.head("/api/health")
    assert warm.status_code == 200, warm.text
    assert cold.status_code == 503, cold.text
    assert int(cold.headers["Retry-After"]) > 0
    detail = cold.json()["detail"]
    assert "not built yet" in detail
    assert "Dagster webserver" in detail
    # Built areas are still served, so the server stays live and reports itself degraded.
    assert health.status_code == 200
    assert health.json()["status"] == "degraded"
    assert health.json()["dagster"].startswith("unavailable")
    assert head.status_code == 200
    assert head.content == b""


def test_dagster_down_rejection_logged(server_without_dagster: LiveServer, sample_data: Path):
    warehouse = Warehouse(sample_data / "warehouse")
    lat, lon = cold_start(warehouse, "andorra")
    missing = cell_of(lat, lon, 7)
    log_path = sample_data / "no-dagster.log"
    logged_before = log_path.stat().st_size
    with server_without_dagster.client() as client:
        cold = client.post("/api/loops", json={"lat": lat, "lon": lon})
    assert cold.status_code == 503, cold.text
    with open(log_path, encoding="utf-8") as log:
        log.seek(logged_before)
        added = log.read()
    lines = [
        line
        for line in added.splitlines()
        if "miss rejected with 503" in line and f"{lat:.5f},{lon:.5f}" in line
    ]
    assert len(lines) == 1, lines
    assert "region andorra" in lines[0]
    assert missing in lines[0]
    assert "Dagster webserver" in lines[0]


def test_dagster_daemon_down_is_503(server_without_dagster: LiveServer, sample_data: Path):
    port = server_without_dagster.env["PERFECT10K_DAGSTER_PORT"]
    webserver = dagster_webserver(sample_data, port)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=2).is_success:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("the Dagster webserver did not start")
        cold_lat, cold_lon = cold_start(Warehouse(sample_data / "warehouse"), "andorra")
        with server_without_dagster.client() as client:
            # The server caches Dagster's health for a few seconds.
            deadline = time.monotonic() + 30
            while True:
                cold = client.post("/api/loops", json={"lat": cold_lat, "lon": cold_lon})
                if "daemon" in cold.text or time.monotonic() > deadline:
                    break
                time.sleep(1)
            warm = client.post("/api/loops", json={"lat": MONACO_START[0], "lon": MONACO_START[1]})
    finally:
        os.killpg(webserver.pid, signal.SIGTERM)
        webserver.wait(timeout=30)
    assert cold.status_code == 503, cold.text
    assert "Retry-After" in cold.headers
    assert "daemon is not running" in cold.json()["detail"]
    assert warm.status_code == 200, warm.text


def process_state(pid: int) -> str | None:
    """Return the state letter of a process (Z for a zombie), or None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return None
    return next(line.split()[1] for line in status.splitlines() if line.startswith("State:"))


def test_dagster_child_exit_logged_and_reaped(tmp_path: Path):
    import_extracts(tmp_path, MONACO)
    server = start_server(tmp_path, "child-exit.log")
    log_path = tmp_path / "child-exit.log"
    try:
        started = [
            line for line in log_path.read_text().splitlines() if "started Dagster daemon" in line
        ]
        assert len(started) == 1, started
        pid = int(started[0].split("(pid ")[1].split(")")[0])
        assert process_state(pid) not in {None, "Z"}

        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if f"Dagster daemon (pid {pid}) was killed by signal 9" in log_path.read_text():
                break
            time.sleep(0.2)
        state = process_state(pid)

        with server.client() as client:
            health = client.get("/api/health")
            cold = client.post(
                "/api/loops", json={"lat": MONACO_START[0], "lon": MONACO_START[1]}
            )
    finally:
        server.stop()

    log = log_path.read_text()
    assert f"Dagster daemon (pid {pid}) was killed by signal 9 while the server runs" in log
    assert state is None, f"the daemon (pid {pid}) is left in state {state}"

    assert health.status_code == 200
    assert "restart the server" in health.json()["dagster"]
    assert cold.status_code == 503, cold.text
    assert f"Dagster daemon (pid {pid}) was killed by signal 9" in cold.json()["detail"]
    assert "restart the server" in cold.json()["detail"]
    # Retrying does not help until the server restarts, so the 503 names no retry time.
    assert "Retry-After" not in cold.headers


# Corrupt files, an unwritable warehouse path and a restart, on one server


@pytest.fixture(scope="module")
def fault_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory of this module: Monaco and Andorra imported, Monaco built."""
    data_dir = tmp_path_factory.mktemp("perfect10k-faults")
    env = import_extracts(data_dir, MONACO, ANDORRA)
    run_cli(env, "materialize", "--region", "monaco")
    return data_dir


@pytest.fixture(scope="module")
def fault_servers(fault_data: Path) -> Iterator[list[LiveServer]]:
    """The live servers over `fault_data`; the last one is running, a test may replace it."""
    servers = [start_server(fault_data, "faults-server.log")]
    yield servers
    servers[-1].stop()


def test_corrupt_files_are_set_aside_and_rebuilt(fault_servers: list[LiveServer]):
    server = fault_servers[-1]
    warehouse = Warehouse(server.data_dir / "warehouse")
    start_cell = cell_of(*MONACO_START, 7)
    truncated = warehouse.cell_entry(start_cell)
    other = next(
        e for e in warehouse.cell_entries().values()
        if e.region == "monaco" and e.cell != start_cell
    )
    edges = warehouse.cell_files(truncated)["edges"]
    edges.write_bytes(edges.read_bytes()[: edges.stat().st_size // 2])
    warehouse.cell_files(other)["edge_features"].write_bytes(b"not parquet" * 100)

    request = {"lat": MONACO_START[0], "lon": MONACO_START[1], "target_distance": 3000}
    with server.client() as client:
        first = client.post("/api/loops", json=request)
        assert first.status_code in {200, 202}, first.text
        if first.status_code == 202:
            status = poll_job(client, first.json()["job_id"])
            assert status["status"] == "completed", status
        again = client.post("/api/loops", json=request)
    assert again.status_code == 200, again.text
    assert first.status_code == 202, "the corrupt files were not detected"
    quarantined = {path.name for path in (warehouse.root / "quarantine").iterdir()}
    assert f"{start_cell}-network-{truncated.network_version}" in quarantined
    assert f"{other.cell}-features-{other.features_version}" in quarantined
    assert (warehouse.root / "quarantine" / f"{start_cell}-network-{truncated.network_version}"
            / "REASON.txt").read_text().strip()
    rebuilt = warehouse.cell_entry(start_cell)
    assert rebuilt.network_version != truncated.network_version
    assert_manifest_consistent(warehouse.root)


def overwrite_middle(path: Path, size: int = 4096) -> None:
    """Overwrite `size` bytes in the middle of a file with random bytes, keeping its length."""
    with open(path, "r+b") as handle:
        handle.seek(max(path.stat().st_size // 2 - size // 2, 0))
        handle.write(os.urandom(size))


def start_cell(server: LiveServer) -> tuple[Warehouse, str, CellEntry, str]:
    """Return the server's warehouse, the cell of the Monaco start, its entry and its bbox."""
    warehouse = Warehouse(server.data_dir / "warehouse")
    cell = cell_of(*MONACO_START, 7)
    entry = warehouse.cell_entry(cell)
    assert entry is not None
    min_lon, min_lat, max_lon, max_lat = cell_bounds(cell)
    return warehouse, cell, entry, f"{min_lon},{min_lat},{max_lon},{max_lat}"


def test_corrupt_cell_left_out_of_overlays(fault_servers: list[LiveServer]):
    server = fault_servers[-1]
    warehouse, cell, corrupt, bbox = start_cell(server)
    with server.client() as client:
        before = client.get("/api/overlays", params={"bbox": bbox})
        built_before = client.get("/api/health").json()["cells_built"]
        files = warehouse.cell_files(corrupt)
        overwrite_middle(files["edges"])
        overwrite_middle(files["areas"])
        first = client.get("/api/overlays", params={"bbox": bbox})
        again = client.get("/api/overlays", params={"bbox": bbox})
        built_after = client.get("/api/health").json()["cells_built"]
        regions = {view["region"]: view for view in client.get("/api/regions").json()}

        # The loop path shares the set of corrupt cells, so it rebuilds this one.
        request = {"lat": MONACO_START[0], "lon": MONACO_START[1], "target_distance": 3000}
        loops = client.post("/api/loops", json=request)
        assert loops.status_code == 202, loops.text
        status = poll_job(client, loops.json()["job_id"])
        rebuilt = client.get("/api/overlays", params={"bbox": bbox})
        built_rebuilt = client.get("/api/health").json()["cells_built"]

    assert before.status_code == 200, before.text
    cells = before.json()["cells"]
    assert cells >= 2, "the box must reach a neighbouring cell"
    assert first.status_code == 200, first.text
    assert first.json()["cells"] == cells - 1
    assert first.json()["features"], "the other cells of the box must still be drawn"
    assert again.status_code == 200, again.text
    assert again.json()["cells"] == cells - 1
    assert built_after == built_before - 1
    assert regions["monaco"]["cells_built"] == built_after
    assert status["status"] == "completed", status
    assert f"{cell}-network-{corrupt.network_version}" in {
        path.name for path in (warehouse.root / "quarantine").iterdir()
    }
    assert rebuilt.status_code == 200, rebuilt.text
    assert rebuilt.json()["cells"] == cells
    assert built_rebuilt == built_before
    log = (server.data_dir / "faults-server.log").read_text()
    assert f"cell {cell} version {corrupt.network_version}" in log


def test_route_step_rebuilds_corrupt_cell(fault_servers: list[LiveServer]):
    server = fault_servers[-1]
    warehouse, cell, corrupt, bbox = start_cell(server)
    request = {"lat": MONACO_START[0], "lon": MONACO_START[1], "target_distance": 3000}
    with server.client() as client:
        started = client.post("/api/start-route-async", json=request)
        assert started.status_code == 200, started.text
        route_id = started.json()["route_id"]
        step = {"candidate_id": started.json()["candidates"][0]["candidate_id"]}
        url = f"/api/routes/{route_id}/waypoints"
        files = warehouse.cell_files(corrupt)
        overwrite_middle(files["edges"])
        overwrite_middle(files["areas"])
        # Reading the overlays of the cell finds its corrupt files and sets them aside.
        assert client.get("/api/overlays", params={"bbox": bbox}).status_code == 200
        first = client.post(url, json=step)
        deadline = time.monotonic() + JOB_TIMEOUT_S
        walked = first
        while walked.status_code == 503 and time.monotonic() < deadline:
            time.sleep(1)
            walked = client.post(url, json=step)
    assert first.status_code == 503, first.text
    assert "being rebuilt" in first.json()["detail"]
    assert int(first.headers["Retry-After"]) > 0
    assert walked.status_code == 200, walked.text
    assert walked.json()["waypoints"], walked.text
    assert warehouse.cell_entry(cell).network_version != corrupt.network_version
    log = (server.data_dir / "faults-server.log").read_text()
    assert f"miss (route {route_id}) in region monaco" in log


def test_unwritable_path_fails_job_with_reason(fault_servers: list[LiveServer]):
    server = fault_servers[-1]
    lat, lon = ANDORRA_START
    cell = cell_of(lat, lon, 7)
    # A file where the cell's folder belongs makes every write of that cell fail.
    blocker = server.data_dir / "warehouse" / "cells" / cell
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("in the way\n")
    try:
        with server.client() as client:
            response = client.post(
                "/api/loops", json={"lat": lat, "lon": lon, "target_distance": COLD_DISTANCE_M}
            )
            assert response.status_code == 202, response.text
            # Another target needs the same cells. While the first run builds them, this
            # job launches no run of its own, and it must still fail when that run fails.
            sharing = client.post(
                "/api/loops", json={"lat": lat, "lon": lon, "target_distance": 2000}
            )
            assert sharing.status_code == 202, sharing.text
            status = poll_job(client, response.json()["job_id"])
            sharing_status = poll_job(client, sharing.json()["job_id"], timeout_s=120)
            health = client.get("/api/health")
    finally:
        blocker.unlink()
    assert sharing_status["status"] == "failed", sharing_status
    assert cell in sharing_status["error"], sharing_status["error"]
    assert status["status"] == "failed", status
    assert "FAILURE" in status["error"]
    assert cell in status["error"], status["error"]
    assert "File exists" in status["error"] or "Not a directory" in status["error"]
    assert Warehouse(server.data_dir / "warehouse").cell_entry(cell) is None
    assert health.status_code == 200


def test_job_survives_restart(fault_servers: list[LiveServer]):
    server = fault_servers[-1]
    warehouse = Warehouse(server.data_dir / "warehouse")
    lat, lon = start_on_region_way(warehouse, "andorra", *CANILLO)
    assert not set(cells_for_loop(lat, lon, COLD_DISTANCE_M, 7)) & set(
        cells_for_loop(*ANDORRA_START, COLD_DISTANCE_M, 7)
    )
    request = {"lat": lat, "lon": lon, "target_distance": COLD_DISTANCE_M, "seed": 5}
    with server.client() as client:
        response = client.post("/api/loops", json=request)
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        # Stop once Dagster works on the job, or after 20 s in the queue.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            before = client.get(f"/api/job-status/{job_id}").json()
            if before["status"] != "pending":
                break
            time.sleep(0.3)
    server.stop()

    restarted = start_server(server.data_dir, "faults-server-2.log")
    fault_servers.append(restarted)
    with restarted.client() as client:
        status = poll_job(client, job_id)
        again = client.post("/api/loops", json=request)
    assert status["status"] == "completed", status
    assert set(status["seen"]) <= {"pending", "running", "completed"}
    assert status["result"]["loops"]
    assert again.status_code == 200, again.text
