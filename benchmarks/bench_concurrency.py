"""Throughput of warm loop requests under 32 concurrent clients, against one client.

The extract is imported and every cell built first. The server is `perfect10k serve`
with PERFECT10K_WORKERS=2 (the default; --workers changes it). Starts are random vertices
spread over the merged network. A separate load-generator process runs one thread and
one keep-alive httpx client per simulated user. It first requests every start once, so
each worker has its network loaded. Then, per repetition, it runs one client alone for
--baseline-duration seconds and 32 clients for --duration seconds. Each request is an 8 km
loop with 3 alternatives (--alternatives changes it). Any status other than 200 and any
transport error counts as an error. The server's CPU time per request comes from /proc, which stays meaningful when
the load generator and other work share the cores.

Run from the repository root:
python benchmarks/bench_concurrency.py [--repeat N] [--extract PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import common

SCRIPT = Path(__file__).resolve()
TARGET_M = 8000.0


def _server_cpu(pids: list[int]) -> list[float]:
    """Return the CPU seconds of each server process; 0 for one that ended."""
    seconds = []
    for pid in pids:
        try:
            seconds.append(common.process_cpu_seconds(pid))
        except OSError:
            seconds.append(0.0)
    return seconds


def run_clients(
    base_url: str, starts: list[list[float]], clients: int, duration_s: float, pids: list[int],
    alternatives: int, each_once: bool = False,
) -> dict:
    """Send loop requests from `clients` threads for `duration_s` (or each start once)."""
    cpu_before = _server_cpu(pids)
    own_cpu = time.process_time()
    load = common.post_loops_concurrently(
        base_url,
        starts,
        clients,
        {"target_distance": TARGET_M, "alternatives": alternatives},
        None if each_once else duration_s,
    )
    return {
        "elapsed": load.elapsed_s,
        "ok": len(load.latencies_s),
        "loops": load.loops,
        "errors": dict(load.errors),
        "latency": common.latency_summary(load.latencies_s),
        "server_cpu": sum(_server_cpu(pids)) - sum(cpu_before),
        "worker_cpu": [
            after - before for after, before in zip(_server_cpu(pids), cpu_before, strict=True)
        ],
        "client_cpu": time.process_time() - own_cpu,
        "answered": sorted(set(load.answered)) if each_once else [],
    }


def child_load(
    base_url: str, starts_file: str, pids: str, phases: str, alternatives: str = "3"
) -> None:
    """Run the phases named in `phases` (warmup, baseline:SECONDS, load:CLIENTS:SECONDS)."""
    starts = json.loads(Path(starts_file).read_text())
    server_pids = [int(pid) for pid in pids.split(",")]
    count = int(alternatives)
    results = {}
    for phase in phases.split(","):
        kind, *values = phase.split(":")
        if kind == "warmup":
            results[kind] = run_clients(
                base_url, starts, 8, 0, server_pids, count, each_once=True
            )
        elif kind == "baseline":
            results[kind] = run_clients(base_url, starts, 1, float(values[0]), server_pids, count)
        else:
            results[kind] = run_clients(
                base_url, starts, int(values[0]), float(values[1]), server_pids, count
            )
    print(json.dumps(results))


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument(
        "--duration", type=float, default=30.0, help="seconds of load per repetition (default 30)"
    )
    parser.add_argument(
        "--baseline-duration", type=float, default=10.0,
        help="seconds of the one-client run (default 10)",
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="server worker processes (default 2)"
    )
    parser.add_argument(
        "--starts", type=int, default=200, help="distinct random starts (default 200)"
    )
    parser.add_argument(
        "--alternatives", type=int, default=3, help="loops asked for per request (default 3)"
    )
    parser.add_argument(
        "--result-cache", type=int, default=None, metavar="ENTRIES",
        help="PERFECT10K_RESULT_CACHE_ENTRIES of the server; 0 makes every request plan "
        "again (default: the server's default)",
    )


def _run_load_generator(
    server: common.LiveServer, starts_file: Path, phases: str, timeout_s: float,
    alternatives: int,
) -> tuple[dict, int]:
    """Run the load generator; also return how many worker processes were replaced meanwhile.

    uvicorn's supervisor kills and restarts a worker that misses its 5 s health check, and
    the CPU time of a replaced worker is lost to the figures.
    """
    before = common.serving_pids(server)
    child = common.run_measured(
        common.python_child(
            SCRIPT, "--child", server.base_url, str(starts_file), ",".join(map(str, before)),
            phases, str(alternatives),
        ),
        timeout_s=timeout_s,
    )
    if child.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{child.stderr[-3000:]}")
    replaced = len(set(before) - set(common.serving_pids(server)))
    return child.json(), replaced


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0], 3, _add_arguments)
    common.print_header(f"{args.clients} concurrent clients, warm loops", args)
    metric = common.Metric
    m = {
        "rate": metric(f"{args.clients} clients: loop requests per second", "req/s"),
        "loops": metric(f"{args.clients} clients: loops returned per second", "loops/s",
                        bar=(">=", 100.0), note=f"up to {args.alternatives} per request"),
        "errors": metric(f"{args.clients} clients: errors", "count", bar=("<=", 0.0)),
        "p50": metric(f"{args.clients} clients: latency p50", "ms"),
        "p90": metric(f"{args.clients} clients: latency p90", "ms"),
        "p99": metric(f"{args.clients} clients: latency p99", "ms"),
        "max": metric(f"{args.clients} clients: latency max", "ms"),
        "cpu": metric("server CPU per request", "ms", note="all worker processes"),
        "busy": metric("server cores busy", "cores", note="server CPU s / wall s"),
        "client_cpu": metric("load generator cores busy", "cores"),
        "ceiling": metric(
            "CPU-bound ceiling, every core serving", "req/s",
            note="usable cores / server CPU per request",
        ),
        "busiest": metric(
            "busiest worker's share of server CPU", "share",
            note="1.0: one worker does all the work",
        ),
        "ratio": metric(f"throughput ratio {args.clients} clients / 1 client", "x"),
        "replaced": metric("worker processes replaced", "count", note="killed by uvicorn"),
    }
    baseline = {
        "rate": metric("1 client: loop requests per second", "req/s"),
        "p50": metric("1 client: latency p50", "ms"),
        "cpu": metric("1 client: server CPU per request", "ms"),
    }
    errors: Counter[str] = Counter()
    rss = metric("worker VmRSS after the load, summed", "MB")

    with common.temp_data_dir("concurrency", args.keep) as data_dir:
        started = time.perf_counter()
        region = common.import_extract(data_dir, args.extract)
        cells = common.build_region_cells(data_dir, region)
        print(f"imported {region} and built {cells} cells in {time.perf_counter() - started:.1f} s")
        network = common.load_region_network(data_dir, region)
        starts = common.random_starts(network, args.starts, seed=2024)
        del network
        starts_file = data_dir / "starts.json"
        starts_file.write_text(json.dumps(starts))

        server_env = {}
        if args.result_cache is not None:
            server_env["PERFECT10K_RESULT_CACHE_ENTRIES"] = str(args.result_cache)
        with common.running_server(data_dir, workers=args.workers, **server_env) as server:
            print(f"serving pids: {common.serving_pids(server)}")
            print(
                f"{args.alternatives} alternatives per request, result cache "
                f"{server_env.get('PERFECT10K_RESULT_CACHE_ENTRIES', 'server default')}"
            )
            warm, replaced = _run_load_generator(
                server, starts_file, "warmup", 900, args.alternatives
            )
            warm = warm["warmup"]
            print(
                f"warm-up: {warm['ok']} of {len(starts)} starts answered 200 in "
                f"{warm['elapsed']:.1f} s, other answers {warm['errors'] or 'none'}, "
                f"workers replaced: {replaced}"
            )
            # A start without a loop (422) is a planner result, not a server error, so the
            # timed phases use only the starts that returned 200 here.
            starts = [starts[index] for index in warm["answered"]]
            starts_file.write_text(json.dumps(starts))
            print(f"{len(starts)} starts used under load")
            for repetition in range(args.repeat):
                phases = f"baseline:{args.baseline_duration},load:{args.clients}:{args.duration}"
                result, replaced = _run_load_generator(
                    server, starts_file, phases, args.duration + args.baseline_duration + 300,
                    args.alternatives,
                )
                m["replaced"].add(replaced)
                one, load = result["baseline"], result["load"]
                baseline["rate"].add(one["ok"] / one["elapsed"])
                baseline["p50"].add(one["latency"]["p50"])
                baseline["cpu"].add(one["server_cpu"] / max(one["ok"], 1) * 1000)
                requests = load["ok"] + sum(load["errors"].values())
                m["rate"].add(load["ok"] / load["elapsed"])
                m["loops"].add(load["loops"] / load["elapsed"])
                m["errors"].add(sum(load["errors"].values()))
                for key in ("p50", "p90", "p99", "max"):
                    m[key].add(load["latency"][key])
                m["cpu"].add(load["server_cpu"] / max(requests, 1) * 1000)
                m["busy"].add(load["server_cpu"] / load["elapsed"])
                cores = len(os.sched_getaffinity(0))
                m["ceiling"].add(cores * max(requests, 1) / load["server_cpu"])
                m["busiest"].add(max(load["worker_cpu"]) / max(load["server_cpu"], 1e-9))
                m["client_cpu"].add(load["client_cpu"] / load["elapsed"])
                m["ratio"].add((load["ok"] / load["elapsed"]) / (one["ok"] / one["elapsed"]))
                errors.update(load["errors"])
                common.log.info(
                    "repetition %d: %.1f requests/s with %d clients, %.1f with one",
                    repetition + 1, m["rate"].values[-1], args.clients,
                    baseline["rate"].values[-1],
                )
            rss.add(
                sum(
                    common.memory_status_mb(pid).get("VmRSS", 0.0)
                    for pid in common.serving_pids(server)
                )
            )

    print(f"errors under load: {dict(errors) or 'none'}")
    print()
    common.print_table(
        f"warm loops, {args.clients} clients, {args.workers} workers",
        [*m.values(), *baseline.values(), rss],
    )
    common.print_footer()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_load(*sys.argv[2:])
    else:
        main()
