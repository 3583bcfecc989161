"""Print loop quality and timing on a real extract: `python -m planner._quick_eval heidelberg`.

Starts are random vertices of the largest component. Timings are the process CPU time of
`plan_loops` and `suggest_candidates` after the Network is built, so other load on the
machine does not inflate them.
The region is an extract name prefix in ../shared/osm or a path to any .osm.pbf file.
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.features import compute_edge_features
from pipelines.osm import parse_extract
from pipelines.walkability import is_walkable_way
from planner.errors import PlannerError
from planner.interactive import add_waypoint, finalize, start_route, suggest_candidates
from planner.loops import plan_loops
from planner.network import Network
from planner.preferences import parse_preference
from planner.walks import edge_jaccard

EXTRACTS = Path(__file__).resolve().parents[1].parent / "shared" / "osm"
TABLE_NAMES = ("nodes", "edges", "areas", "features")

# Starts whose seeds are compared for distinct loops, and seeds per start.
DISTINCT_STARTS = 20
DISTINCT_SEEDS = 5


def extract_path(name: str) -> Path:
    path = Path(name)
    if path.suffix == ".pbf" and path.is_file():
        return path
    return min(EXTRACTS.glob(f"{name}*.osm.pbf"))


@functools.lru_cache(maxsize=4)
def load_tables(name: str, cache_dir: Path | None = None) -> dict[str, pa.Table]:
    """Parse an extract and compute edge features, reusing Parquet copies in `cache_dir`."""
    path = extract_path(name)
    folder = cache_dir / path.name if cache_dir is not None else None
    if folder is not None and (folder / "features.parquet").is_file():
        return {table: pq.read_table(folder / f"{table}.parquet") for table in TABLE_NAMES}
    region = parse_extract(path)
    features = compute_edge_features(region.edges, region.areas, region.pois)
    tables = {
        "nodes": region.nodes,
        "edges": region.edges,
        "areas": region.areas,
        "features": features,
    }
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        for table, content in tables.items():
            pq.write_table(content, folder / f"{table}.parquet")
    return tables


@functools.lru_cache(maxsize=4)
def load_network(name: str, cache_dir: Path | None = None) -> Network:
    """Return the network of an extract; one parse per name and process."""
    tables = load_tables(name, cache_dir)
    return Network.from_tables(
        tables["nodes"], tables["edges"], tables["features"], tables["areas"]
    )


def forbidden_edges(edges: pa.Table) -> set[int]:
    """Return ids of edges whose tags no pedestrian may use (should be none after parsing)."""
    keys = ("highway", "access", "foot")
    columns = {key: edges.column(key).to_pylist() for key in keys}
    ids = edges.column("edge_id").to_pylist()
    forbidden = set()
    for row, edge_id in enumerate(ids):
        tags = {key: columns[key][row] for key in keys if columns[key][row] is not None}
        if not is_walkable_way(tags):
            forbidden.add(edge_id)
    return forbidden


def random_starts(network: Network, count: int, seed: int) -> list[tuple[float, float]]:
    rng = np.random.default_rng(seed)
    nodes = np.flatnonzero(network.component == network.largest_component)
    chosen = rng.choice(nodes, size=min(count, nodes.shape[0]), replace=False)
    return [(float(network.lat[node]), float(network.lon[node])) for node in chosen]


def evaluate_loops(
    network: Network,
    starts: list,
    target: float,
    preference: str,
    forbidden: set[int],
) -> dict[str, float]:
    errors, retraces, timings, nature = [], [], [], []
    failures = 0
    forbidden_m = 0.0
    parsed = parse_preference(preference)
    for index, (lat, lon) in enumerate(starts):
        began = time.process_time()
        try:
            loops = plan_loops(network, lat, lon, target, parsed, seed=index, alternatives=3)
        except PlannerError:
            failures += 1
            continue
        timings.append(time.process_time() - began)
        best = loops[0]
        errors.append((best.distance_m - target) / target)
        retraces.append(best.retrace_share)
        nature.append(best.green_share + best.water_share)
        for loop in loops:
            forbidden_m += sum(s.length_m for s in loop.segments if s.edge_id in forbidden)
    error = np.abs(np.array(errors))
    ms = np.array(timings) * 1000
    print(
        f"{target / 1000:4.0f} km {preference or 'neutral':>16}: "
        f"within 5% {np.mean(error <= 0.05):6.1%}  mean |err| {error.mean():5.2%}  "
        f"retrace p50 {np.median(retraces):5.2%} p90 {np.percentile(retraces, 90):5.2%}  "
        f"green+water {np.mean(nature):5.1%}  forbidden {forbidden_m:.0f} m  "
        f"failed {failures}  ms p50 {np.median(ms):5.1f} p99 {np.percentile(ms, 99):6.1f}",
        flush=True,
    )
    return {"nature": float(np.mean(nature))}


def evaluate_distinct(network: Network, starts: list, target: float) -> None:
    """Print how many of DISTINCT_SEEDS seeds give loops with edge Jaccard < 0.5 to the rest."""
    counts = []
    for lat, lon in starts[:DISTINCT_STARTS]:
        loops = []
        for seed in range(DISTINCT_SEEDS):
            try:
                loops.append(
                    plan_loops(network, lat, lon, target, "", seed=seed, alternatives=1)[0]
                )
            except PlannerError:
                continue
        distinct: list = []
        for loop in loops:
            if all(edge_jaccard(loop.edge_ids, other.edge_ids) < 0.5 for other in distinct):
                distinct.append(loop)
        counts.append(len(distinct))
    counts_array = np.array(counts)
    print(
        f"{target / 1000:4.0f} km distinct of {DISTINCT_SEEDS} seeds: "
        f"mean {counts_array.mean():.2f}  share with >= 4 {np.mean(counts_array >= 4):6.1%}",
        flush=True,
    )


def evaluate_steps(network: Network, starts: list, target: float) -> None:
    errors, timings, retraces = [], [], []
    failures = 0
    preference = parse_preference("parks and water")
    for index, (lat, lon) in enumerate(starts):
        try:
            state = start_route(network, lat, lon, target)
            for _ in range(40):
                began = time.process_time()
                candidates = suggest_candidates(network, state, preference, seed=index)
                timings.append(time.process_time() - began)
                if state.finalize_suggested or not candidates:
                    break
                state = add_waypoint(network, state, candidates[0].id)
            route = finalize(network, state)
        except PlannerError:
            failures += 1
            continue
        errors.append((route.distance_m - target) / target)
        retraces.append(route.retrace_share)
    error = np.abs(np.array(errors))
    ms = np.array(timings) * 1000
    print(
        f"{target / 1000:4.0f} km step-by-step: within 5% {np.mean(error <= 0.05):6.1%}  "
        f"mean |err| {error.mean():5.2%}  retrace p50 {np.median(retraces):5.2%} "
        f"p90 {np.percentile(retraces, 90):5.2%}  failed {failures}  "
        f"suggest ms p50 {np.median(ms):5.1f} p99 {np.percentile(ms, 99):6.1f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("region", help="extract name prefix (heidelberg) or .osm.pbf path")
    parser.add_argument("--starts", type=int, default=100, help="random starts per target")
    parser.add_argument("--targets", default="3000,5000,8000", help="targets in metres")
    parser.add_argument("--steps", action="store_true", help="also run step-by-step routes")
    parser.add_argument("--no-loops", action="store_true", help="skip complete loops")
    parser.add_argument("--cache", type=Path, help="folder for parsed tables (Parquet)")
    args = parser.parse_args()

    network = load_network(args.region, args.cache)
    forbidden = forbidden_edges(load_tables(args.region, args.cache)["edges"])
    starts = random_starts(network, args.starts, seed=7)
    targets = [float(value) for value in args.targets.split(",")]
    try:
        plan_loops(network, *starts[0], targets[-1])  # fills the per-network caches
    except PlannerError:
        pass
    if not args.no_loops:
        for target in targets:
            neutral = evaluate_loops(network, starts, target, "", forbidden)
        nature = evaluate_loops(network, starts, targets[-1], "parks and water", forbidden)
        print(f"nature / neutral green+water: {nature['nature'] / neutral['nature']:.2f}")
        evaluate_distinct(network, starts, targets[-1])
    if args.steps:
        for target in targets:
            evaluate_steps(network, starts, target)


if __name__ == "__main__":
    main()
