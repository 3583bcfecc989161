"""Warm latency of loops and interactive steps, in process and over HTTP, and server memory.

The extract is imported and every cell built before anything is timed. Starts are random
vertices of the largest strong component of the merged network, new ones each repetition.

In process, after one untimed call that fills the network's caches, each start is timed
once with `planner.plan_loops` (8 km, 3 alternatives, neutral preference), once with
`planner.start_route` + `planner.suggest_candidates`, and for one step with
`planner.add_waypoint` + `suggest_candidates`.

Over HTTP, against `perfect10k serve` with one worker, every start is requested once
untimed. Then POST /api/loops is timed per start, followed by POST /api/start-route-async
and up to two POST /api/routes/{id}/waypoints steps per start. The server's CPU time per
request comes from /proc/<pid>/stat, so it stays meaningful when other work shares the
cores. Finally one loop is requested from a vertex in every cell, and the serving
process's VmRSS is read.

Run from the repository root:
python benchmarks/bench_warm.py [--repeat N] [--extract PATH] [--starts N]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import common
import h3
import httpx
import numpy as np

import planner

TARGET_M = 8000.0
ALTERNATIVES = 3


def measure_in_process(
    network: planner.Network, starts: list[tuple[float, float]]
) -> dict[str, list[float]]:
    preference = planner.parse_preference("")
    planner.plan_loops(network, *starts[0], TARGET_M, preference, alternatives=ALTERNATIVES)
    out: dict[str, list[float]] = {
        "loops": [], "loops_cpu": [], "start": [], "step": [], "step_cpu": [], "failures": []
    }
    for lat, lon in starts:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            planner.plan_loops(network, lat, lon, TARGET_M, preference, alternatives=ALTERNATIVES)
        except planner.PlannerError:
            out["failures"].append(1)
            continue
        out["loops"].append(time.perf_counter() - wall)
        out["loops_cpu"].append(time.process_time() - cpu)

    for index, (lat, lon) in enumerate(starts):
        started = time.perf_counter()
        try:
            state = planner.start_route(network, lat, lon, TARGET_M)
            candidates = planner.suggest_candidates(network, state, preference, seed=index)
        except planner.PlannerError:
            continue
        out["start"].append(time.perf_counter() - started)
        if not candidates:
            continue
        wall, cpu = time.perf_counter(), time.process_time()
        state = planner.add_waypoint(network, state, candidates[0].id)
        planner.suggest_candidates(network, state, preference, seed=index + 1)
        out["step"].append(time.perf_counter() - wall)
        out["step_cpu"].append(time.process_time() - cpu)
    return out


def _loop_body(lat: float, lon: float) -> dict:
    return {"lat": lat, "lon": lon, "target_distance": TARGET_M, "alternatives": ALTERNATIVES}


def measure_http(
    client: httpx.Client, pid: int, starts: list[tuple[float, float]]
) -> tuple[dict[str, list[float]], Counter[int]]:
    """Time loops, route starts and steps over HTTP; also return the timed loops' statuses."""
    for lat, lon in starts:
        client.post("/api/loops", json=_loop_body(lat, lon))

    out: dict[str, list[float]] = {
        "loops": [], "start": [], "step": [], "cpu_per_loop": [], "step_cpu": []
    }
    statuses: Counter[int] = Counter()
    cpu_before = common.process_cpu_seconds(pid)
    for lat, lon in starts:
        started = time.perf_counter()
        response = client.post("/api/loops", json=_loop_body(lat, lon))
        elapsed = time.perf_counter() - started
        statuses[response.status_code] += 1
        if response.status_code == 200:
            out["loops"].append(elapsed)
    out["cpu_per_loop"].append((common.process_cpu_seconds(pid) - cpu_before) / len(starts))

    for lat, lon in starts:
        body = {"lat": lat, "lon": lon, "target_distance": TARGET_M}
        started = time.perf_counter()
        response = client.post("/api/start-route-async", json=body)
        if response.status_code != 200:
            continue
        out["start"].append(time.perf_counter() - started)
        route = response.json()
        candidates = route["candidates"]
        for _ in range(2):
            if not candidates:
                break
            cpu = common.process_cpu_seconds(pid)
            started = time.perf_counter()
            step = client.post(
                f"/api/routes/{route['route_id']}/waypoints",
                json={"candidate_id": candidates[0]["candidate_id"]},
            )
            if step.status_code != 200:
                break
            out["step"].append(time.perf_counter() - started)
            # One request spans a few clock ticks of CPU time, so only the mean is meaningful.
            out["step_cpu"].append(common.process_cpu_seconds(pid) - cpu)
            candidates = step.json()["candidates"]
    return out, statuses


def starts_per_cell(network: planner.Network, resolution: int) -> list[tuple[float, float]]:
    """Return one vertex of the largest component in every cell that has one."""
    chosen: dict[str, tuple[float, float]] = {}
    for node in np.flatnonzero(network.component == network.largest_component):
        lat, lon = float(network.lat[node]), float(network.lon[node])
        chosen.setdefault(h3.latlng_to_cell(lat, lon, resolution), (lat, lon))
    return list(chosen.values())


def rss_of(server: common.LiveServer) -> tuple[float, float]:
    """Return the summed VmRSS and VmHWM of the processes that serve HTTP, in MB."""
    rss = hwm = 0.0
    for pid in common.serving_pids(server):
        status = common.memory_status_mb(pid)
        rss += status.get("VmRSS", 0.0)
        hwm += status.get("VmHWM", 0.0)
    return rss, hwm


def dagster_rss(server: common.LiveServer) -> float:
    serving = set(common.serving_pids(server)) | {server.process.pid}
    return sum(
        common.memory_status_mb(pid).get("VmRSS", 0.0)
        for pid in common.descendants(server.process.pid)
        if pid not in serving
    )


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--starts", type=int, default=120, help="random starts per repetition (default 120)"
    )
    parser.add_argument(
        "--result-cache", type=int, default=None, metavar="ENTRIES",
        help="PERFECT10K_RESULT_CACHE_ENTRIES of the server. The timed pass repeats the "
        "untimed one, so with the cache on it measures cached results; 0 plans every "
        "request again (default: the server's default)",
    )


def _ms(values: list[float], q: float) -> float:
    return common.percentile([value * 1000 for value in values], q)


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0], 3, _add_arguments)
    common.print_header("warm loops and steps, in process and over HTTP", args)
    metric = common.Metric
    m = {
        "load": metric("merged network load (all cells)", "ms", note="read + build arrays"),
        "ip50": metric("in process: plan_loops p50", "ms", bar=("<=", 50.0)),
        "ip99": metric("in process: plan_loops p99", "ms", bar=("<=", 200.0)),
        "ipcpu": metric("in process: plan_loops CPU p50", "ms"),
        "ipstart": metric("in process: start_route + suggest p50", "ms", bar=("<=", 20.0)),
        "ipstep": metric("in process: add_waypoint + suggest p50", "ms", bar=("<=", 20.0)),
        "ipstepcpu": metric("in process: add_waypoint + suggest CPU p50", "ms"),
        "ipfail": metric("in process: starts without a loop", "count"),
        "h50": metric("HTTP: POST /api/loops p50", "ms", bar=("<=", 50.0)),
        "h99": metric("HTTP: POST /api/loops p99", "ms", bar=("<=", 200.0)),
        "hcpu": metric("HTTP: server CPU per loop request, mean", "ms", note="from /proc"),
        "hstart": metric("HTTP: POST /api/start-route-async p50", "ms"),
        "hstep": metric("HTTP: POST .../waypoints p50", "ms", bar=("<=", 20.0)),
        "hstep99": metric("HTTP: POST .../waypoints p99", "ms"),
        "hstepcpu": metric("HTTP: server CPU per step, mean", "ms"),
        "ratio": metric("HTTP / in-process loops p50", "x", note="HTTP, JSON, state overhead"),
        "ratio_step": metric("HTTP / in-process step p50", "x"),
        "rss": metric("server VmRSS, every cell touched", "MB", bar=("<=", 400.0)),
        "hwm": metric("server VmHWM (peak RSS)", "MB"),
    }
    idle_rss = metric("server VmRSS just after start", "MB")
    dagster_mem = metric("Dagster webserver + daemon + code servers RSS", "MB", note="not serving")
    statuses: Counter[str] = Counter()

    with common.temp_data_dir("warm", args.keep) as data_dir:
        started = time.perf_counter()
        region = common.import_extract(data_dir, args.extract)
        cells = common.build_region_cells(data_dir, region)
        print(f"imported {region} and built {cells} cells in {time.perf_counter() - started:.1f} s")
        network = common.load_region_network(data_dir, region)
        print(f"merged network: {network.node_count:,} vertices, {network.edge_count:,} edges")
        cell_starts = starts_per_cell(network, 7)

        server_env = {}
        if args.result_cache is not None:
            server_env["PERFECT10K_RESULT_CACHE_ENTRIES"] = str(args.result_cache)
        with common.running_server(data_dir, workers=1, **server_env) as server:
            idle_rss.add(rss_of(server)[0])
            client = server.client(timeout=60)
            for repetition in range(args.repeat):
                started = time.perf_counter()
                network = common.load_region_network(data_dir, region)
                m["load"].add((time.perf_counter() - started) * 1000)
                starts = common.random_starts(network, args.starts, seed=1000 + repetition)

                local = measure_in_process(network, starts)
                m["ip50"].add(_ms(local["loops"], 50))
                m["ip99"].add(_ms(local["loops"], 99))
                m["ipcpu"].add(_ms(local["loops_cpu"], 50))
                m["ipstart"].add(_ms(local["start"], 50))
                m["ipstep"].add(_ms(local["step"], 50))
                m["ipstepcpu"].add(_ms(local["step_cpu"], 50))
                m["ipfail"].add(len(local["failures"]))

                remote, codes = measure_http(client, common.serving_pids(server)[0], starts)
                statuses.update({f"HTTP {code}": count for code, count in codes.items()})
                m["h50"].add(_ms(remote["loops"], 50))
                m["h99"].add(_ms(remote["loops"], 99))
                m["hcpu"].add(remote["cpu_per_loop"][0] * 1000)
                m["hstart"].add(_ms(remote["start"], 50))
                m["hstep"].add(_ms(remote["step"], 50))
                m["hstep99"].add(_ms(remote["step"], 99))
                m["hstepcpu"].add(1000 * sum(remote["step_cpu"]) / max(len(remote["step_cpu"]), 1))
                m["ratio"].add(_ms(remote["loops"], 50) / _ms(local["loops"], 50))
                m["ratio_step"].add(_ms(remote["step"], 50) / _ms(local["step"], 50))

                for lat, lon in cell_starts:
                    client.post("/api/loops", json=_loop_body(lat, lon))
                rss, hwm = rss_of(server)
                m["rss"].add(rss)
                m["hwm"].add(hwm)
                dagster_mem.add(dagster_rss(server))
                common.log.info(
                    "repetition %d: in process p50 %.1f ms, HTTP p50 %.1f ms, RSS %.0f MB",
                    repetition + 1, m["ip50"].values[-1], m["h50"].values[-1], rss,
                )
            client.close()

    print(
        f"{args.starts} starts per repetition; timed loop responses: "
        + ", ".join(f"{key} x{count}" for key, count in sorted(statuses.items()))
        + f"; {len(cell_starts)} cells touched for the memory figure"
    )
    print()
    common.print_table("warm requests", [*m.values(), idle_rss, dagster_mem])
    common.print_footer()


if __name__ == "__main__":
    main()
