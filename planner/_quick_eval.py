"""Print loop quality and timing on a real extract: `python -m planner._quick_eval heidelberg`.

Starts are random vertices of the largest component. Timings cover `plan_loops` and
`suggest_candidates` after the Network is built, on whatever machine runs the script.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from pipelines.features import compute_edge_features
from pipelines.osm import parse_extract
from planner.errors import PlannerError
from planner.interactive import add_waypoint, finalize, start_route, suggest_candidates
from planner.loops import plan_loops
from planner.network import Network
from planner.preferences import parse_preference

EXTRACTS = Path(__file__).resolve().parents[1].parent / "shared" / "osm"


def load_network(name: str) -> Network:
    path = sorted(EXTRACTS.glob(f"{name}*.osm.pbf"))[0]
    region = parse_extract(path)
    features = compute_edge_features(region.edges, region.areas, region.pois)
    return Network.from_tables(region.nodes, region.edges, features, region.areas)


def random_starts(network: Network, count: int, seed: int) -> list[tuple[float, float]]:
    rng = np.random.default_rng(seed)
    nodes = np.flatnonzero(network.component == network.largest_component)
    chosen = rng.choice(nodes, size=count, replace=False)
    return [(float(network.lat[node]), float(network.lon[node])) for node in chosen]


def evaluate_loops(network: Network, starts: list, target: float, preference: str) -> None:
    errors, retraces, timings, green = [], [], [], []
    failures = 0
    parsed = parse_preference(preference)
    for index, (lat, lon) in enumerate(starts):
        began = time.perf_counter()
        try:
            loops = plan_loops(network, lat, lon, target, parsed, seed=index, alternatives=3)
        except PlannerError:
            failures += 1
            continue
        timings.append(time.perf_counter() - began)
        best = loops[0]
        errors.append((best.distance_m - target) / target)
        retraces.append(best.retrace_share)
        green.append(best.green_share + best.water_share)
    error = np.abs(np.array(errors))
    ms = np.array(timings) * 1000
    print(
        f"{target / 1000:4.0f} km {preference or 'neutral':>16}: "
        f"within 5% {np.mean(error <= 0.05):6.1%}  mean |err| {error.mean():5.2%}  "
        f"retrace p50 {np.median(retraces):5.2%} p90 {np.percentile(retraces, 90):5.2%}  "
        f"green+water {np.mean(green):5.1%}  failed {failures}  "
        f"ms p50 {np.median(ms):5.1f} p99 {np.percentile(ms, 99):6.1f}"
    )


def evaluate_steps(network: Network, starts: list, target: float) -> None:
    errors, timings = [], []
    failures = 0
    preference = parse_preference("parks and water")
    for index, (lat, lon) in enumerate(starts):
        try:
            state = start_route(network, lat, lon, target)
            for _ in range(40):
                began = time.perf_counter()
                candidates = suggest_candidates(network, state, preference, seed=index)
                timings.append(time.perf_counter() - began)
                if state.finalize_suggested or not candidates:
                    break
                state = add_waypoint(network, state, candidates[0].id)
            route = finalize(network, state)
        except PlannerError:
            failures += 1
            continue
        errors.append((route.distance_m - target) / target)
    error = np.abs(np.array(errors))
    ms = np.array(timings) * 1000
    print(
        f"{target / 1000:4.0f} km step-by-step: within 5% {np.mean(error <= 0.05):6.1%}  "
        f"mean |err| {error.mean():5.2%}  failed {failures}  "
        f"suggest ms p50 {np.median(ms):5.1f} p99 {np.percentile(ms, 99):6.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("region", help="extract name prefix, e.g. heidelberg or monaco")
    parser.add_argument("--starts", type=int, default=100, help="random starts per target")
    parser.add_argument("--steps", action="store_true", help="also run step-by-step routes")
    args = parser.parse_args()

    network = load_network(args.region)
    starts = random_starts(network, args.starts, seed=7)
    plan_loops(network, *starts[0], 8000.0)  # fills the per-network caches
    for target in (3000.0, 5000.0, 8000.0):
        evaluate_loops(network, starts, target, "")
    evaluate_loops(network, starts, 8000.0, "parks and water")
    if args.steps:
        for target in (3000.0, 5000.0, 8000.0):
            evaluate_steps(network, starts, target)


if __name__ == "__main__":
    main()
