"""Estimate how far a region lets the diversity and nature measures go.

For random starts, plan loops with many seeds and judge them with the evaluator:

- distinct: the first loops of 5 seeds, as `bench_quality.py` counts them, against all loops
  within 5% of the target from every seed (each request's alternatives included), counted
  the same way, once at most 5 and once in full. Five seeds that each pick one of k loops
  at random give k * (1 - (1 - 1/k) ** 5) distinct loops on average, which reaches 4 only
  from k = 10. So the first loops are also reported for starts whose loops hold at least
  RICH_POOL distinct ones;
- nature: the green/water share of the first "parks and water" loop and of the greenest
  nature loop within 5% from every seed, each over the first neutral loop's share.

The planner's own search finds the loops, so the figures are a lower bound of what the
network offers, not a proof of what no planner could find.
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

import common  # noqa: F401 - puts the repository root on sys.path
from bench_quality import NATURE, REGIONS, build_network
from evaluate import OsmReference, RouteMeasures, Start, count_distinct

from planner import Network, PlannerError, plan_loops

DIVERSITY_SEEDS = 5
WITHIN = 0.05
RICH_POOL = 10


def plan(network: Network, start: Start, target: float, preference: str, seed: int) -> list:
    try:
        return plan_loops(network, start.lat, start.lon, target, preference, seed=seed)
    except PlannerError:
        return []


def measure_start(
    network: Network, reference: OsmReference, start: Start, target: float, seeds: int
) -> dict:
    """Return the measures of one start, or an empty dict without a neutral and a nature loop."""
    firsts: list[RouteMeasures] = []
    within: list[RouteMeasures] = []
    neutral_share = nature_share = None
    # Green/water shares of every nature loop within WITHIN of the target.
    nature_within: list[float] = []
    for seed in range(1, seeds + 1):
        neutral = [
            reference.measure(loop.coordinates) for loop in plan(network, start, target, "", seed)
        ]
        nature = [
            reference.measure(loop.coordinates)
            for loop in plan(network, start, target, NATURE, seed)
        ]
        if neutral and seed <= DIVERSITY_SEEDS:
            firsts.append(neutral[0])
        if neutral and neutral_share is None:
            neutral_share = neutral[0].green_water_share
        if nature and nature_share is None:
            nature_share = nature[0].green_water_share
        within += [route for route in neutral if route.error(target) <= WITHIN]
        nature_within += [
            route.green_water_share for route in nature if route.error(target) <= WITHIN
        ]
    if not firsts or neutral_share is None or nature_share is None:
        return {}
    return {
        "first_distinct": count_distinct(firsts),
        "pool_distinct": count_distinct(within),
        "neutral": neutral_share,
        "nature": nature_share,
        "best_nature": max([nature_share, *nature_within]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regions", nargs="+", choices=sorted(REGIONS), default=["andorra"])
    parser.add_argument("--extract", type=Path, action="append", default=[])
    parser.add_argument("--starts", type=int, default=30, help="random starts per region")
    parser.add_argument("--seeds", type=int, default=40, help="planner seeds per start")
    parser.add_argument("--target", type=float, default=8000.0, help="target in metres")
    args = parser.parse_args()

    regions = {name: REGIONS[name] for name in args.regions}
    regions.update({path.name.split(".")[0]: path for path in args.extract})
    print(
        "| region | starts | distinct of 5 seeds | distinct in all loops (at most 5) "
        f"| distinct in all loops | starts with ≥ {RICH_POOL} / ≤ 3 of them "
        f"| distinct of 5 seeds, starts with ≥ {RICH_POOL} "
        "| nature / neutral, first loop | greenest nature loop / neutral |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, path in regions.items():
        reference = OsmReference.read(path)
        network = build_network(path)
        rows = []
        for start in reference.random_starts(args.starts, 7):
            row = measure_start(network, reference, start, args.target, args.seeds)
            if row:
                rows.append(row)
        if not rows:
            print(f"| {name} | 0 | | | | | | | |")
            continue
        neutral = statistics.fmean(row["neutral"] for row in rows)
        pools = [row["pool_distinct"] for row in rows]
        rich = [row["first_distinct"] for row in rows if row["pool_distinct"] >= RICH_POOL]
        print(
            f"| {name} | {len(rows)} "
            f"| {statistics.fmean(row['first_distinct'] for row in rows):.2f} "
            f"| {statistics.fmean(min(pool, DIVERSITY_SEEDS) for pool in pools):.2f} "
            f"| {statistics.fmean(pools):.1f} "
            f"| {len(rich)} / {sum(pool <= 3 for pool in pools)} "
            f"| {statistics.fmean(rich) if rich else math.nan:.2f} "
            f"| {statistics.fmean(row['nature'] for row in rows) / neutral:.2f}× "
            f"| {statistics.fmean(row['best_nature'] for row in rows) / neutral:.2f}× |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
