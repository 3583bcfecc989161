"""Load test on loopback: many clients over warm cells, then a burst of cold-area requests.

Warm phase: --clients threads, each with its own keep-alive client, send POST /api/loops
(8 km, 3 alternatives) from random vertices of the warm region for --duration seconds.
Every response other than 200 counts as an error. Latency is measured per request in the
load generator, which shares the machine's cores with the server.

Cold burst: --burst requests for distinct starts on walkable edges of a region whose cells
are not built, sent by --clients threads at once. The server accepts at most
PERFECT10K_MAX_PENDING_JOBS build runs in flight and answers the rest 503 with Retry-After;
a start whose cells an earlier job built meanwhile gets 200. Every accepted job is then
polled until it completes or fails. The RSS of the serving processes (not Dagster's) is
read before and after each phase.

By default the script starts its own server (two workers, embedded Dagster, no rate limit)
over a temporary data directory with the warm extract imported and built and the cold
extract imported. With --url it loads a running server instead; --data-dir must then be
that server's data directory (read for starts only) and --pid its process id for RSS.

Run: /tmp/venv/bin/python benchmarks/load_test.py [--clients 64] [--duration 60] [--burst 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import common
import httpx
import numpy as np
import pyarrow.parquet as pq

from tests.conftest import ANDORRA, MONACO, LiveServer

log = logging.getLogger("benchmarks.load_test")

TARGET_M = 8000.0
ALTERNATIVES = 3
COLD_TARGET_M = 3000.0
MAX_DURATION_S = 600.0
MAX_BURST = 5000
MAX_CLIENTS = 256


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients (default 64)")
    parser.add_argument(
        "--duration", type=float, default=60.0, help="seconds of warm load (default 60)"
    )
    parser.add_argument(
        "--burst", type=int, default=1000, help="cold-area requests in the burst (default 1000)"
    )
    parser.add_argument(
        "--starts", type=int, default=300, help="distinct warm starts (default 300)"
    )
    parser.add_argument(
        "--warm-extract", type=Path, default=MONACO, help=f"built region (default {MONACO.name})"
    )
    parser.add_argument(
        "--cold-extract", type=Path, default=ANDORRA,
        help=f"imported, unbuilt region for the burst (default {ANDORRA.name})",
    )
    parser.add_argument(
        "--job-timeout", type=float, default=600.0,
        help="seconds to wait for every accepted job to finish (default 600)",
    )
    parser.add_argument("--workers", type=int, default=2, help="server workers (default 2)")
    parser.add_argument("--url", help="load this running server instead of starting one")
    parser.add_argument("--data-dir", type=Path, help="data directory of the --url server")
    parser.add_argument("--pid", type=int, help="process id of the --url server, for RSS")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    args = parser.parse_args()
    if not 1 <= args.clients <= MAX_CLIENTS:
        parser.error(f"--clients must be 1 to {MAX_CLIENTS}, got {args.clients}")
    if not 0 < args.duration <= MAX_DURATION_S:
        parser.error(f"--duration must be above 0 and at most {MAX_DURATION_S:.0f} s")
    if not 0 <= args.burst <= MAX_BURST:
        parser.error(f"--burst must be 0 to {MAX_BURST}, got {args.burst}")
    if args.url is not None:
        host = httpx.URL(args.url).host
        if not (host == "localhost" or host.startswith("127.") or host == "::1"):
            parser.error(f"--url must be a loopback address, got {args.url}")
        if args.data_dir is None:
            parser.error("--url needs --data-dir, the server's data directory")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for name in ("pipelines", "warehouse", "serving", "dagster", "httpx", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return args


# Set-up


@contextlib.contextmanager
def target_server(args: argparse.Namespace) -> Iterator[tuple[str, Path, int | None, str]]:
    """Yield the base URL, data directory, serving pid and region names of the server."""
    if args.url is not None:
        yield args.url.rstrip("/"), args.data_dir, args.pid, ""
        return
    with common.temp_data_dir("load", keep=args.keep) as data_dir:
        started = time.perf_counter()
        warm_region = common.import_extract(data_dir, args.warm_extract)
        cold_region = common.import_extract(data_dir, args.cold_extract)
        built = common.build_region_cells(data_dir, warm_region)
        log.info(
            "imported %s and %s, built %d cells of %s in %.1f s",
            warm_region, cold_region, built, warm_region, time.perf_counter() - started,
        )
        server: LiveServer = common.start_benchmark_server(data_dir, args.workers)
        try:
            yield server.base_url, data_dir, server.process.pid, warm_region
        finally:
            server.stop()


def serving_rss_mb(server_pid: int | None) -> float:
    """Return the summed RSS of the processes that serve HTTP, in megabytes.

    These are the uvicorn worker children of `perfect10k serve`, or the process itself
    when it runs one worker; Dagster's processes are not counted.
    """
    if server_pid is None:
        return float("nan")
    # Dagster's run workers are also spawned processes, but grandchildren of the server.
    workers = [
        pid
        for pid, parent in common._parent_pids().items()
        if parent == server_pid and "spawn_main" in common.command_line(pid)
    ]
    pids = workers or [server_pid]
    return sum(common.memory_status_mb(pid).get("VmRSS", 0.0) for pid in pids)


def region_starts(data_dir: Path, warm_region: str, count: int) -> tuple[list, str]:
    """Return random warm starts on the largest network of the built region, and its name."""
    from warehouse import Warehouse

    warehouse = Warehouse(data_dir / "warehouse")
    if not warm_region:
        ready = Counter(e.region for e in warehouse.cell_entries().values() if e.ready)
        if not ready:
            raise SystemExit(f"no built cells in {data_dir}; build a region first")
        warm_region = ready.most_common(1)[0][0]
    network = common.load_region_network(data_dir, warm_region)
    return common.random_starts(network, count, seed=1), warm_region


def cold_starts(data_dir: Path, count: int) -> list[tuple[float, float]]:
    """Return `count` distinct edge midpoints in cells that are not built, in random order."""
    from warehouse import Warehouse

    warehouse = Warehouse(data_dir / "warehouse")
    ready = {cell for cell, entry in warehouse.cell_entries().items() if entry.ready}
    points: list[tuple[float, float]] = []
    for region in warehouse.regions():
        table = pq.read_table(
            warehouse.region_table_path(region, "edges"), columns=["mid_lat", "mid_lon", "cell"]
        ).to_pydict()
        points += [
            (lat, lon)
            for lat, lon, cell in zip(
                table["mid_lat"], table["mid_lon"], table["cell"], strict=True
            )
            if cell not in ready
        ]
    unique = list(dict.fromkeys(points))
    rng = np.random.default_rng(2)
    order = rng.permutation(len(unique))[:count]
    return [unique[index] for index in order]


# Phases


def request_each_once(base_url: str, starts: list, clients: int) -> None:
    """Request a loop from every start once, so each worker has loaded the network."""
    common.post_loops_concurrently(
        base_url, starts, clients, {"target_distance": TARGET_M}, None, timeout_s=120
    )


def warm_load(base_url: str, starts: list, clients: int, duration_s: float) -> dict:
    """Send loop requests from `clients` threads for `duration_s`; return counts and latency."""
    load = common.post_loops_concurrently(
        base_url,
        starts,
        clients,
        {"target_distance": TARGET_M, "alternatives": ALTERNATIVES},
        duration_s,
        timeout_s=120,
    )
    return {
        "elapsed": load.elapsed_s,
        "ok": len(load.latencies_s),
        "errors": dict(load.errors),
        "latency": common.latency_summary(load.latencies_s),
    }


def cold_burst(base_url: str, starts: list, clients: int) -> dict:
    """Send one cold request per start from `clients` threads; count the responses by status."""
    lock = threading.Lock()
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    job_ids: list[str] = []
    retry_after_missing = 0
    pending = iter(starts)

    def client_loop() -> None:
        nonlocal retry_after_missing
        with httpx.Client(base_url=base_url, timeout=120) as client:
            while True:
                with lock:
                    start = next(pending, None)
                if start is None:
                    return
                body = {"lat": start[0], "lon": start[1], "target_distance": COLD_TARGET_M}
                try:
                    response = client.post("/api/loops", json=body)
                except httpx.HTTPError as error:
                    with lock:
                        errors[type(error).__name__] += 1
                    continue
                with lock:
                    statuses[response.status_code] += 1
                    if response.status_code == 202:
                        job_ids.append(response.json()["job_id"])
                    elif response.status_code == 503 and "retry-after" not in response.headers:
                        retry_after_missing += 1

    elapsed = common.run_threads(client_loop, clients)
    return {
        "elapsed": elapsed,
        "statuses": dict(statuses),
        "errors": dict(errors),
        "jobs": sorted(set(job_ids)),
        "retry_after_missing": retry_after_missing,
    }


def wait_for_jobs(base_url: str, job_ids: list[str], timeout_s: float) -> dict:
    """Poll every job until it completes or fails; return counts by final status."""
    outcome: dict[str, str] = {}
    reasons: Counter[str] = Counter()
    started = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=base_url, timeout=120) as client:
        while len(outcome) < len(job_ids) and time.monotonic() < deadline:
            for job_id in job_ids:
                if job_id in outcome:
                    continue
                body = client.get(f"/api/job-status/{job_id}").json()
                if body["status"] in {"completed", "failed"}:
                    outcome[job_id] = body["status"]
                    if body["status"] == "failed":
                        reasons[str(body.get("error"))[:120]] += 1
            time.sleep(1.0)
    counts = Counter(outcome.values())
    counts["unfinished"] = len(job_ids) - len(outcome)
    return {
        "counts": dict(counts),
        "reasons": dict(reasons),
        "seconds": time.perf_counter() - started,
    }


# Report


def main() -> int:
    args = parse_args()
    print("== load test")
    for line in common.machine_lines():
        print(line)
    print(flush=True)
    with target_server(args) as (base_url, data_dir, pid, warm_region):
        starts, warm_region = region_starts(data_dir, warm_region, args.starts)
        log.info("warm region %s: %d starts; requesting each once", warm_region, len(starts))
        request_each_once(base_url, starts, clients=8)
        rss_before = serving_rss_mb(pid)

        log.info("warm load: %d clients for %.0f s", args.clients, args.duration)
        warm = warm_load(base_url, starts, args.clients, args.duration)
        rss_after_warm = serving_rss_mb(pid)
        total_errors = sum(warm["errors"].values())
        latency = warm["latency"]
        print(f"-- warm: {args.clients} clients, {warm['elapsed']:.1f} s, region {warm_region}")
        print(f"requests ok: {warm['ok']}, errors: {total_errors} {warm['errors'] or ''}")
        rate = warm["ok"] / warm["elapsed"]
        print(f"throughput: {rate:.1f} requests/s, {rate * ALTERNATIVES:.1f} loops/s "
              f"({ALTERNATIVES} loops of {TARGET_M / 1000:.0f} km per request)")
        print(f"latency ms: p50 {latency['p50']:.0f}, p90 {latency['p90']:.0f}, "
              f"p99 {latency['p99']:.0f}, max {latency['max']:.0f}")
        print(f"serving RSS MB: before {rss_before:.0f}, after {rss_after_warm:.0f}", flush=True)

        cold = cold_starts(data_dir, args.burst)
        log.info("cold burst: %d requests from %d clients", len(cold), args.clients)
        burst = cold_burst(base_url, cold, args.clients)
        rss_after_burst = serving_rss_mb(pid)
        print(f"-- cold burst: {len(cold)} requests for distinct starts in {burst['elapsed']:.1f} s")
        print(f"answers: {dict(sorted(burst['statuses'].items()))}, "
              f"transport errors: {burst['errors'] or 0}")
        print(f"distinct jobs accepted: {len(burst['jobs'])}, "
              f"503 without Retry-After: {burst['retry_after_missing']}")
        print(f"serving RSS MB: before {rss_after_warm:.0f}, after {rss_after_burst:.0f}",
              flush=True)

        jobs = wait_for_jobs(base_url, burst["jobs"], args.job_timeout)
        print(f"-- accepted jobs after {jobs['seconds']:.0f} s: {jobs['counts']}")
        for reason, count in jobs["reasons"].items():
            print(f"failed x{count}: {reason}")
        print(f"serving RSS MB at end: {serving_rss_mb(pid):.0f}")
    common.print_footer()
    # A start whose cells an earlier job of the burst built gets 200 at once.
    unexpected = set(burst["statuses"]) - {200, 202, 503}
    ok = (
        total_errors == 0
        and not burst["errors"]
        and not unexpected
        and burst["retry_after_missing"] == 0
        and jobs["counts"].get("unfinished", 0) == 0
    )
    print("result:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
