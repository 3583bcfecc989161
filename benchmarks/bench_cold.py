"""Cold areas: time from the first POST /api/loops to the first loop, with the Dagster timeline.

Each repetition starts from a fresh data directory. The extract (Heidelberg by default)
and a second region (Vancouver by default) are imported and no cell is built. The script
starts `perfect10k serve` with embedded Dagster and waits for a heartbeat of the Dagster
daemon and for the server to report Dagster ready. For each area it waits until no Dagster run is queued or running and posts an
8 km loop request, which must return 202 and a job id. It polls GET /api/job-status/{id}
every 100 ms until the job completes, then posts the same request again (expecting 200).

Areas are cells dense in edges whose loop cells lie inside the region. Within one
repetition they are far enough apart that the warming sensor, which builds the cells
within PERFECT10K_WARM_RADIUS_M of every requested start, cannot build the next area
before it is measured. The Dagster run of each request is read back from the instance
(`DagsterInstance`, run records and `all_logs`) to show where the time goes.

Run from the repository root:
python benchmarks/bench_cold.py [--repeat N] [--extract PATH]
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import common
import h3
import httpx
import pyarrow.compute as pc
import pyarrow.parquet as pq

TARGET_M = 8000.0
POLL_S = 0.1
JOB_TIMEOUT_S = 180.0
IDLE_TIMEOUT_S = 240.0
# Only the densest cells are tried as area centres.
CANDIDATE_AREAS = 40


@dataclass
class Area:
    """A cold start to request: its region, centre cell and a point on a way in that cell."""

    region: str
    cell: str
    lat: float
    lon: float
    edges_nearby: int


@dataclass
class ColdResult:
    """Client-side times (seconds after the POST) and the Dagster events of one request."""

    area: Area
    label: str
    post_s: float = float("nan")
    completed_s: float = float("nan")
    warm_post_s: float = float("nan")
    status: str = ""
    error: str = ""
    cells_needed: int = 0
    runs_in_flight_before: int = 0
    events: list[tuple[str, float]] = field(default_factory=list)


# Choosing areas


def _point_in_cell(warehouse, region: str, cell: str) -> tuple[float, float]:
    """Return the edge midpoint of `cell` closest to the cell's centre, as (lat, lon)."""
    path = warehouse.region_table_path(region, "edges")
    table = pq.read_table(
        path, columns=["mid_lat", "mid_lon", "cell"], filters=[("cell", "=", cell)]
    )
    centre_lat, centre_lon = h3.cell_to_latlng(cell)
    lat = table.column("mid_lat")
    lon = table.column("mid_lon")
    distance = pc.add(
        pc.power(pc.subtract(lat, centre_lat), 2), pc.power(pc.subtract(lon, centre_lon), 2)
    )
    row = pc.index(distance, pc.min(distance)).as_py()
    return float(lat[row].as_py()), float(lon[row].as_py())


def choose_areas(data_dir: Path, region: str, count: int, offset: int) -> list[Area]:
    """Pick `count` cold areas of `region` that are far apart and dense in edges.

    Any two areas are at least loop disk + warming disk + 1 cells apart, so that the
    warming run started by one request never builds cells the next request needs. Of the
    sets that qualify, ranked by the edges near their sparsest area, the `offset`-th is
    returned, so repetitions measure different areas.
    """
    from pipelines.warming import warm_radius_m
    from warehouse import Warehouse
    from warehouse.cells import disk_radius, reach_m

    warehouse = Warehouse(data_dir / "warehouse")
    record = warehouse.regions()[region]
    resolution = int(record["h3_resolution"])
    counts = record["cells"]
    loop_k = disk_radius(reach_m(TARGET_M), resolution)
    min_apart = loop_k + disk_radius(warm_radius_m(), resolution) + 1

    ranked, shares = [], []
    for cell in counts:
        disk = h3.grid_disk(cell, loop_k)
        inside = sum(1 for other in disk if other in counts)
        edges = sum(counts.get(other, 0) for other in disk)
        shares.append((inside / len(disk), edges, cell))
        # Loops near the region's edge may not close, so areas must lie mostly inside it.
        if inside >= 0.6 * len(disk):
            ranked.append((edges, cell))
    if not ranked:
        # An extract smaller than one loop's disk: take the cells whose disks it covers best.
        ranked = [(edges, cell) for _, edges, cell in sorted(shares, reverse=True)]
        common.log.warning("%s is smaller than an 8 km loop's cells; areas reach past it", region)
    ranked = sorted(ranked, reverse=True)[:CANDIDATE_AREAS]

    sets = []
    for size in range(min(count, len(ranked)), 0, -1):
        for combination in itertools.combinations(ranked, size):
            cells = [cell for _, cell in combination]
            if all(
                h3.grid_distance(a, b) >= min_apart for a, b in itertools.combinations(cells, 2)
            ):
                sets.append((min(edges for edges, _ in combination), combination))
        if sets:
            break
    sets.sort(key=lambda item: item[0], reverse=True)
    chosen = sets[offset % len(sets)][1]
    areas = []
    for edges, cell in chosen:
        lat, lon = _point_in_cell(warehouse, region, cell)
        areas.append(Area(region, cell, lat, lon, edges))
    return areas


# Dagster instance


def _instance(data_dir: Path):
    from dagster import DagsterInstance

    os.environ["DAGSTER_HOME"] = str(data_dir / "dagster")
    return DagsterInstance.get()


def runs_in_flight(instance) -> int:
    from dagster import RunsFilter

    from pipelines.tags import BUILD_CELLS_JOB
    from pipelines.warming import IN_FLIGHT

    return len(
        instance.get_run_records(filters=RunsFilter(job_name=BUILD_CELLS_JOB, statuses=IN_FLIGHT))
    )


def wait_for_daemon(instance, timeout_s: float = 120.0) -> float:
    """Wait until the daemon's run queue has sent a heartbeat and return the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        heartbeats = instance.get_daemon_heartbeats()
        if "QUEUED_RUN_COORDINATOR" in heartbeats and "SENSOR" in heartbeats:
            return time.monotonic() - started
        time.sleep(0.5)
    raise TimeoutError(f"the Dagster daemon sent no heartbeat within {timeout_s:.0f} s")


def wait_for_dagster_ok(client: httpx.Client, timeout_s: float = 60.0) -> float:
    """Wait until the server reports Dagster ready in /api/health; return the seconds waited.

    The server caches Dagster's health for a few seconds, so a status read while the daemon
    was still starting would otherwise turn the first requests away with 503.
    """
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if client.get("/api/health").json().get("dagster") == "ok":
            return time.monotonic() - started
        time.sleep(0.5)
    raise TimeoutError(f"the server did not report Dagster ready within {timeout_s:.0f} s")


def wait_until_idle(instance, timeout_s: float) -> int:
    """Wait until no build run is queued or running, and return how many still are then."""
    deadline = time.monotonic() + timeout_s
    while True:
        busy = runs_in_flight(instance)
        if busy == 0 or time.monotonic() > deadline:
            return busy
        time.sleep(1.0)


def request_run_events(instance, posted_at: float) -> list[tuple[str, float]]:
    """Return (event, epoch seconds) of the request run created after `posted_at`."""
    from dagster import DagsterEventType, RunsFilter

    from pipelines.tags import BUILD_CELLS_JOB, ORIGIN_REQUEST, ORIGIN_TAG

    records = instance.get_run_records(
        filters=RunsFilter(
            job_name=BUILD_CELLS_JOB,
            tags={ORIGIN_TAG: ORIGIN_REQUEST},
            created_after=dt.datetime.fromtimestamp(posted_at - 1, tz=dt.UTC),
        ),
        limit=1,
    )
    if not records:
        return []
    record = records[0]
    events = [("run created", record.create_timestamp.timestamp())]
    labels = {
        DagsterEventType.RUN_ENQUEUED: "enqueued",
        DagsterEventType.RUN_DEQUEUED: "dequeued",
        DagsterEventType.RUN_STARTING: "starting (launching run worker)",
        DagsterEventType.RUN_START: "started (run worker up)",
        DagsterEventType.STEP_START: "step start",
        DagsterEventType.STEP_SUCCESS: "step success",
        DagsterEventType.STEP_FAILURE: "step failure",
        DagsterEventType.RUN_SUCCESS: "run success",
        DagsterEventType.RUN_FAILURE: "run failure",
    }
    for entry in instance.all_logs(record.dagster_run.run_id):
        event = entry.dagster_event
        if event is None or event.event_type not in labels:
            continue
        name = labels[event.event_type]
        if event.step_key:
            name = f"{name} {event.step_key}"
        events.append((name, entry.timestamp))
    return events


# One cold request


def measure_area(
    client: httpx.Client, instance, area: Area, label: str, wait_idle: bool
) -> ColdResult:
    result = ColdResult(area, label)
    if wait_idle:
        result.runs_in_flight_before = wait_until_idle(instance, IDLE_TIMEOUT_S)

    body = {"lat": area.lat, "lon": area.lon, "target_distance": TARGET_M, "alternatives": 3}
    posted_at = time.time()
    started = time.perf_counter()
    response = client.post("/api/loops", json=body)
    result.post_s = time.perf_counter() - started
    if response.status_code != 202:
        result.status = f"HTTP {response.status_code} instead of 202"
        result.error = response.text[:200]
        return result
    job = response.json()
    result.cells_needed = job["cells_needed"]

    while time.perf_counter() - started < JOB_TIMEOUT_S:
        status = client.get(f"/api/job-status/{job['job_id']}").json()
        if status["status"] in ("completed", "failed"):
            result.completed_s = time.perf_counter() - started
            result.status = status["status"]
            result.error = status.get("error") or ""
            break
        time.sleep(POLL_S)
    else:
        result.status = f"timed out after {JOB_TIMEOUT_S:.0f} s"

    if result.status == "completed":
        warm_started = time.perf_counter()
        warm = client.post("/api/loops", json=body)
        result.warm_post_s = time.perf_counter() - warm_started
        if warm.status_code != 200:
            result.status = f"completed, then HTTP {warm.status_code} on the next request"

    # Dagster writes the run's last events shortly after the cells are ready.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        result.events = request_run_events(instance, posted_at)
        if any(name.startswith("run ") and name != "run created" for name, _ in result.events):
            break
        time.sleep(0.5)
    result.events = [(name, at - posted_at) for name, at in result.events]
    return result


def time_launch_calls(server: common.LiveServer, cells: list[str]) -> dict[str, float]:
    """Time, in ms, each Dagster GraphQL call the server makes when it launches a build.

    The calls go through the server's own client class to its Dagster webserver. The
    launched run covers cells that are already built, so it skips them.
    """
    from pipelines.tags import CELLS_TAG, ORIGIN_TAG, RANGE_END_TAG, RANGE_START_TAG
    from serving.dagster_client import DagsterClient

    port = server.env["PERFECT10K_DAGSTER_PORT"]
    client = DagsterClient(f"http://127.0.0.1:{port}")
    timings = {}
    try:
        calls = {
            "daemon health query": client.unhealthy_reason,
            "runs in flight query": client.runs_in_flight,
            f"add {len(cells)} partitions": lambda: client.add_partitions(cells, replace=cells),
            "launchRun mutation": lambda: client.launch_build(
                {
                    CELLS_TAG: ",".join(cells),
                    ORIGIN_TAG: "benchmark",
                    RANGE_START_TAG: cells[0],
                    RANGE_END_TAG: cells[-1],
                }
            ),
        }
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            timings[name] = (time.perf_counter() - started) * 1000
    finally:
        client.close()
    return timings


# Report


def _first(events: list[tuple[str, float]], prefix: str, last: bool = False) -> float:
    times = [at for name, at in events if name.startswith(prefix)]
    if not times:
        return float("nan")
    return max(times) if last else min(times)


def print_timeline(result: ColdResult) -> None:
    area = result.area
    print(
        f"{result.label}: cell {area.cell} ({area.lat:.5f}, {area.lon:.5f}), "
        f"{result.cells_needed} cells needed, runs in flight before: "
        f"{result.runs_in_flight_before}, outcome: {result.status} {result.error}".rstrip()
    )
    rows = [("POST /api/loops answered 202", result.post_s)]
    rows += result.events
    rows.append(("job-status reports completed", result.completed_s))
    for name, at in sorted(rows, key=lambda row: (row[1] != row[1], row[1])):
        print(f"    {at * 1000:8.0f} ms  {name}")
    print(f"    next POST /api/loops (warm): {result.warm_post_s * 1000:.0f} ms")
    print()


def _step_seconds(events: list[tuple[str, float]]) -> dict[str, float]:
    """Return each step's seconds from its start to its success event."""
    starts = {name.removeprefix("step start "): at for name, at in events if "step start" in name}
    return {
        name.removeprefix("step success "): at - starts[name.removeprefix("step success ")]
        for name, at in events
        if name.startswith("step success") and name.removeprefix("step success ") in starts
    }


def summarise(results: list[ColdResult]) -> list[common.Metric]:
    metric = common.Metric
    m = {
        "total": metric("POST to completed job (first loop)", "s", bar=("<=", 5.0)),
        "post": metric("POST answered with 202", "ms", note="GraphQL calls to Dagster inside"),
        "created": metric("POST to run created", "ms"),
        "to_starting": metric(
            "run created to starting", "ms", note="planned events; queue wait if queued"
        ),
        "enqueued": metric("run created to enqueued", "ms", note="queued runs only"),
        "queued": metric("enqueued to starting", "ms", note="the daemon dequeues every 1 s"),
        "launch": metric("starting to run worker started", "ms", note="run worker start-up"),
        "first_step": metric("run worker started to first step", "ms"),
    }
    steps: dict[str, common.Metric] = {}
    after = metric("last step success to run success", "ms")
    success = metric("POST to run success", "s", note="the job completes once cells are ready")
    warm = metric("next POST /api/loops (warm)", "ms")
    for result in results:
        if result.status != "completed":
            continue
        events = result.events
        created = _first(events, "run created")
        enqueued = _first(events, "enqueued")
        starting = _first(events, "starting")
        started = _first(events, "started")
        m["total"].add(result.completed_s)
        m["post"].add(result.post_s * 1000)
        m["created"].add(created * 1000)
        m["to_starting"].add((starting - created) * 1000)
        # A request run that the coordinator launched at once was never enqueued.
        if not math.isnan(enqueued):
            m["enqueued"].add((enqueued - created) * 1000)
            m["queued"].add((starting - enqueued) * 1000)
        m["launch"].add((started - starting) * 1000)
        m["first_step"].add((_first(events, "step start") - started) * 1000)
        for step, seconds in _step_seconds(events).items():
            steps.setdefault(step, metric(f"step {step}", "ms")).add(seconds * 1000)
        run_success = _first(events, "run success")
        after.add((run_success - _first(events, "step success", last=True)) * 1000)
        success.add(run_success)
        warm.add(result.warm_post_s * 1000)
    return [*m.values(), *steps.values(), after, success, warm]


def _built_cells(data_dir: Path, region: str, count: int = 12) -> list[str]:
    from warehouse import Warehouse

    entries = Warehouse(data_dir / "warehouse").cell_entries().values()
    return sorted(entry.cell for entry in entries if entry.region == region and entry.ready)[:count]


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--second-extract", default=str(common.VANCOUVER),
        help="another region measured once per repetition; empty to skip (default Vancouver)",
    )
    parser.add_argument(
        "--areas", type=int, default=2, help="cold areas of --extract per repetition (default 2)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="server worker processes (default 1)"
    )


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0], 3, _add_arguments)
    common.print_header("cold areas through Dagster", args)
    second = Path(args.second_extract) if args.second_extract else None
    if second is not None and not second.is_file():
        raise SystemExit(f"--second-extract {second} does not exist")
    results: list[ColdResult] = []
    graphql: dict[str, common.Metric] = {}

    for repetition in range(args.repeat):
        with common.temp_data_dir(f"cold-{repetition}", args.keep) as data_dir:
            region = common.import_extract(data_dir, args.extract)
            areas = [
                (f"{region} #{index + 1}", area)
                for index, area in enumerate(choose_areas(data_dir, region, args.areas, repetition))
            ]
            if second is not None:
                other = common.import_extract(data_dir, second)
                areas += [(other, area) for area in choose_areas(data_dir, other, 1, repetition)]

            with common.running_server(data_dir, workers=args.workers) as server:
                instance = _instance(data_dir)
                waited = wait_for_daemon(instance)
                common.log.info("Dagster daemon heartbeat after %.1f s", waited)
                with server.client(timeout=60) as client:
                    waited = wait_for_dagster_ok(client)
                    common.log.info("server reported Dagster ready after %.1f s", waited)
                    for index, (label, area) in enumerate(areas):
                        result = measure_area(
                            client, instance, area, f"repetition {repetition + 1}, {label}",
                            wait_idle=index > 0,
                        )
                        results.append(result)
                        print_timeline(result)
                wait_until_idle(instance, IDLE_TIMEOUT_S)
                for name, ms in time_launch_calls(server, _built_cells(data_dir, region)).items():
                    graphql.setdefault(name, common.Metric(f"GraphQL: {name}", "ms")).add(ms)
                instance.dispose()

    failed = [result for result in results if result.status != "completed"]
    print(f"{len(results)} cold requests, {len(failed)} not completed")
    for result in failed:
        print(f"  {result.label}: {result.status} {result.error}")
    print()
    by_region: dict[str, list[ColdResult]] = {}
    for result in results:
        by_region.setdefault(result.area.region, []).append(result)
    for region, region_results in by_region.items():
        common.print_table(f"cold area, {region}", summarise(region_results))
    common.print_table(
        "Dagster GraphQL calls of the launch path, timed from a client", list(graphql.values())
    )
    common.print_footer()


if __name__ == "__main__":
    main()
