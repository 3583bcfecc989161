"""Route quality of the planner on random starts, judged by an independent evaluator.

For each extract the planner's network is built the product's way (parse_extract, edge
features, Network.from_tables over the whole region). Starts are random points on the
walkable ways of the largest connected part of the extract, drawn by length. Every loop is
then measured from its coordinates alone by `evaluate.OsmReference`, which reads the
extract itself and applies its own access rules. No measure uses the planner's own
distance, edge ids, retrace or green shares.

Per start and target: plan_loops with 3 alternatives for the neutral ("") and the nature
("parks and water") preference, the first loop of 5 more seeds (neutral) for diversity,
and one step-by-step route per preference that always takes the best-scored candidate.
The output is Markdown: one table per region with a column per target, an overall table
and the worst cases found.

Run: /tmp/venv/bin/python benchmarks/bench_quality.py [--quick] [--regions monaco ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import math
import shlex
import sys
import time
import traceback
import warnings
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import common
import numpy as np
from evaluate import OsmReference, RouteMeasures, Start, count_distinct, haversine_m

from pipelines.features import compute_edge_features
from pipelines.osm import parse_extract
from planner import (
    Network,
    PlannerError,
    add_waypoint,
    finalize,
    plan_loops,
    start_route,
    suggest_candidates,
)
from tests.conftest import ANDORRA, HEIDELBERG, MONACO, VANCOUVER

log = logging.getLogger("benchmarks.quality")

REGIONS = {"monaco": MONACO, "andorra": ANDORRA, "heidelberg": HEIDELBERG, "vancouver": VANCOUVER}
DEFAULT_TARGETS_M = (3000.0, 5000.0, 8000.0)
NEUTRAL = ""
NATURE = "parks and water"
PREFERENCES = (NEUTRAL, NATURE)
ALTERNATIVES = 3
DIVERSITY_SEEDS = 5
# Step-by-step routes that the planner has not offered to close after this many waypoints
# are closed anyway and listed among the worst cases.
MAX_STEPS = 40
# Target of the timing bar (the design's figure is for 8 km loops).
TIMING_TARGET_M = 8000.0
# A failed request counts against the success rate only when the start's connected ways
# add up to at least this multiple of the target.
LOOP_ROOM_FACTOR = 1.5
WITHIN = 0.05
# Loops that begin further than this from the requested start are listed as worst cases.
SNAP_WARNING_M = 250.0


@dataclass
class Outcome:
    """One planner call from one start and what the evaluator measured of its routes."""

    region: str
    start: int
    lat: float
    lon: float
    component_m: float
    target_m: float
    preference: str
    seed: int
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    failure: str | None = None
    crashed: bool = False
    routes: list[RouteMeasures] = field(default_factory=list)
    # Planner-reported distance_m per route, only to check its bookkeeping against ours.
    reported_m: list[float] = field(default_factory=list)
    snap_m: float = float("nan")
    # (lon, lat) where the first route begins, and the OSM way the start was drawn on.
    routes_start: tuple[float, float] = (float("nan"), float("nan"))
    way_id: int = 0
    # Failed requests only: the evaluator's shortest cycle over the start's segment.
    cycle_m: float = float("nan")
    # Step-by-step routes only: waypoints added, suggestion timings, whether the step
    # limit closed the route instead of the planner's finalize suggestion.
    steps: int = 0
    suggest_seconds: list[float] = field(default_factory=list)
    suggest_cpu_seconds: list[float] = field(default_factory=list)
    step_limit_hit: bool = False

    def where(self) -> str:
        preference = self.preference or "neutral"
        return (
            f"{self.region} ({self.lat:.6f}, {self.lon:.6f}) {self.target_m / 1000:g} km "
            f"{preference!r} seed {self.seed}"
        )


@dataclass
class Diversity:
    region: str
    start: int
    lat: float
    lon: float
    target_m: float
    seeds: list[int]
    distinct: int
    failures: int


@dataclass
class Results:
    loops: list[Outcome] = field(default_factory=list)
    interactive: list[Outcome] = field(default_factory=list)
    diversity: list[Diversity] = field(default_factory=list)

    def select(self, keep: Callable[[object], bool]) -> Results:
        return Results(
            [item for item in self.loops if keep(item)],
            [item for item in self.interactive if keep(item)],
            [item for item in self.diversity if keep(item)],
        )


# Running the planner


def build_network(path: Path) -> Network:
    """Build the planner's network over the whole extract, as the cell pipeline does."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        region = parse_extract(path)
    for warning in caught:
        log.info("%s", warning.message)
    features = compute_edge_features(region.edges, region.areas, region.pois)
    return Network.from_tables(region.nodes, region.edges, features, region.areas)


def _call(outcome: Outcome, action: Callable[[], None]) -> None:
    """Run one planner call, recording a planner error or a crash in `outcome`."""
    try:
        action()
    except PlannerError as error:
        outcome.failure = f"{type(error).__name__}: {error}"
    except Exception as error:  # noqa: BLE001 - a crash is a finding, the run goes on
        log.error("planner crashed at %s:\n%s", outcome.where(), traceback.format_exc())
        outcome.failure = f"crash {type(error).__name__}: {error}"
        outcome.crashed = True


def _record_start(outcome: Outcome, start: Start, coordinates: Sequence[Sequence[float]]) -> None:
    lon, lat = coordinates[0]
    outcome.routes_start = (float(lon), float(lat))
    outcome.way_id = start.way_id
    outcome.snap_m = float(haversine_m(start.lon, start.lat, lon, lat))


def run_loops(network: Network, reference: OsmReference, outcome: Outcome, start: Start) -> None:
    def action() -> None:
        began, began_cpu = time.perf_counter(), time.thread_time()
        loops = plan_loops(
            network,
            start.lat,
            start.lon,
            outcome.target_m,
            outcome.preference,
            seed=outcome.seed,
            alternatives=ALTERNATIVES,
        )
        outcome.seconds = time.perf_counter() - began
        outcome.cpu_seconds = time.thread_time() - began_cpu
        for rank, loop in enumerate(loops):
            route = reference.measure(loop.coordinates)
            if rank > 0:
                route.segments = {}  # only the first loop takes part in the diversity check
            outcome.routes.append(route)
            outcome.reported_m.append(loop.distance_m)
        _record_start(outcome, start, loops[0].coordinates)

    _call(outcome, action)


def run_interactive(
    network: Network, reference: OsmReference, outcome: Outcome, start: Start, pick: str
) -> None:
    """Build a route step by step, taking the best-scored candidate or, with `pick`
    "random", any offered candidate as a user might (drawn with the outcome's seed).

    The seed of each suggestion is the outcome's seed plus the waypoints added so far, as
    the server does it.
    """
    choice = np.random.default_rng(outcome.seed)

    def action() -> None:
        state = start_route(network, start.lat, start.lon, outcome.target_m)
        while True:
            began, began_cpu = time.perf_counter(), time.thread_time()
            candidates = suggest_candidates(
                network,
                state,
                outcome.preference,
                seed=outcome.seed + len(state.waypoint_node_ids),
            )
            outcome.suggest_seconds.append(time.perf_counter() - began)
            outcome.suggest_cpu_seconds.append(time.thread_time() - began_cpu)
            if state.finalize_suggested or not candidates:
                break
            if outcome.steps >= MAX_STEPS:
                outcome.step_limit_hit = True
                break
            if pick == "random":
                chosen = candidates[int(choice.integers(len(candidates)))]
            else:
                chosen = max(candidates, key=lambda candidate: candidate.score)
            state = add_waypoint(network, state, chosen.id)
            outcome.steps += 1
        route = finalize(network, state)
        measured = reference.measure(route.coordinates)
        measured.segments = {}
        outcome.routes.append(measured)
        outcome.reported_m.append(route.distance_m)
        _record_start(outcome, start, route.coordinates)

    _call(outcome, action)


def run_diversity(
    network: Network,
    reference: OsmReference,
    neutral: Outcome,
    start: Start,
    seeds: list[int],
) -> Diversity:
    """Count distinct first loops of the neutral request and of more seeds."""
    region, index, target_m = neutral.region, neutral.start, neutral.target_m
    routes: list[RouteMeasures] = neutral.routes[:1]
    failures = int(not neutral.routes)
    for seed in seeds:
        outcome = Outcome(
            region, index, start.lat, start.lon, start.component_m, target_m, NEUTRAL, seed
        )

        def action(seed: int = seed) -> None:
            loops = plan_loops(
                network,
                start.lat,
                start.lon,
                target_m,
                NEUTRAL,
                seed=seed,
                alternatives=ALTERNATIVES,
            )
            routes.append(reference.measure(loops[0].coordinates))

        _call(outcome, action)
        failures += outcome.failure is not None
    distinct = count_distinct(routes)
    for route in routes:
        route.segments = {}
    return Diversity(
        region, index, start.lat, start.lon, target_m, [neutral.seed, *seeds], distinct, failures
    )


def run_region(
    name: str,
    path: Path,
    starts_count: int,
    targets: Sequence[float],
    seed: int,
    interactive: bool,
    loops: bool = True,
    pick: str = "best",
) -> Results:
    began = time.perf_counter()
    reference = OsmReference.read(path)
    read_s = time.perf_counter() - began
    began = time.perf_counter()
    network = build_network(path)
    log.info(
        "%s: evaluator read %.1f s, planner network %.1f s (%d vertices, %d edges)",
        name,
        read_s,
        time.perf_counter() - began,
        network.node_count,
        network.edge_count,
    )
    region_seed = seed * 1_000_003 + zlib.crc32(name.encode())
    starts = reference.random_starts(starts_count, region_seed)
    rng = np.random.default_rng(region_seed + 1)
    results = Results()
    if not starts:
        log.error("%s: the extract has no walkable way to start from", name)
        return results

    # The first request fills per-network caches, so it is not timed.
    _call(
        Outcome(name, -1, starts[0].lat, starts[0].lon, 0.0, max(targets), NEUTRAL, 0),
        lambda: plan_loops(network, starts[0].lat, starts[0].lon, max(targets)),
    )

    for index, start in enumerate(starts):
        if index and index % 25 == 0:
            log.info("%s: %d of %d starts done", name, index, len(starts))
        for target in targets:
            request_seed = int(rng.integers(1, 1 << 30))
            # Drawn whether or not loops run, so that every request keeps its seed.
            seeds = [int(value) for value in rng.integers(1, 1 << 30, size=DIVERSITY_SEEDS - 1)]
            # The outcome of one request from this start and target, given its preference.
            new_outcome = functools.partial(
                Outcome, name, index, start.lat, start.lon, start.component_m, target
            )

            outcomes = {}
            for preference in PREFERENCES if loops else ():
                outcome = new_outcome(preference, request_seed)
                run_loops(network, reference, outcome, start)
                results.loops.append(outcome)
                outcomes[preference] = outcome
            if loops:
                results.diversity.append(
                    run_diversity(network, reference, outcomes[NEUTRAL], start, seeds)
                )
            if interactive:
                # One step-by-step route per start and target, the preference alternating
                # by start, because each costs about as much as several loop requests.
                outcome = new_outcome(PREFERENCES[index % len(PREFERENCES)], request_seed)
                run_interactive(network, reference, outcome, start, pick)
                results.interactive.append(outcome)
    cycles: dict[int, float] = {}
    for outcome in results.loops + results.interactive:
        if outcome.failure:
            if outcome.start not in cycles:
                cycles[outcome.start] = reference.shortest_cycle_m(starts[outcome.start])
            outcome.cycle_m = cycles[outcome.start]
    log.info("%s: %d starts in %.0f s", name, len(starts), time.perf_counter() - began)
    return results


# Summaries


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1%}"


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def _routes(outcomes: Iterable[Outcome]) -> list[tuple[Outcome, RouteMeasures]]:
    return [(outcome, route) for outcome in outcomes for route in outcome.routes]


Cell = tuple[str, bool | None]


def _within(outcomes: list[Outcome]) -> Cell:
    routes = _routes(outcomes)
    if not routes:
        return "no loops", False
    share = float(np.mean([abs(r.error(o.target_m)) <= WITHIN for o, r in routes]))
    return f"{_percent(share)} of {len(routes)}", share >= 0.95


def _first_within(outcomes: list[Outcome]) -> Cell:
    firsts = [(o, o.routes[0]) for o in outcomes if o.routes]
    if not firsts:
        return "no loops", None
    share = float(np.mean([abs(r.error(o.target_m)) <= WITHIN for o, r in firsts]))
    return f"{_percent(share)} of {len(firsts)}", None


def _mean_error(outcomes: list[Outcome]) -> Cell:
    errors = [abs(r.error(o.target_m)) for o, r in _routes(outcomes)]
    if not errors:
        return "n/a", False
    mean = float(np.mean(errors))
    return _percent(mean), mean <= 0.025


def _retrace(outcomes: list[Outcome]) -> Cell:
    shares = [r.retrace_share for _, r in _routes(outcomes)]
    if not shares:
        return "n/a", False
    median, p90 = _percentile(shares, 50), _percentile(shares, 90)
    return f"{_percent(median)} / {_percent(p90)}", median <= 0.03 and p90 <= 0.10


def _forbidden(outcomes: list[Outcome]) -> Cell:
    routes = _routes(outcomes)
    total = sum(r.forbidden_m for _, r in routes)
    count = sum(r.forbidden_m > 0 for _, r in routes)
    return f"{total:.0f} m ({count} loops)", total == 0 and bool(routes)


def _success(outcomes: list[Outcome]) -> Cell:
    eligible = [o for o in outcomes if o.component_m >= LOOP_ROOM_FACTOR * o.target_m]
    if not eligible:
        return "no eligible starts", None
    succeeded = sum(bool(o.routes) for o in eligible)
    share = succeeded / len(eligible)
    return f"{_percent(share)} ({succeeded}/{len(eligible)})", share >= 0.98


def _distinct(records: list[Diversity]) -> Cell:
    if not records:
        return "n/a", False
    mean = float(np.mean([record.distinct for record in records]))
    return f"{mean:.2f} of {DIVERSITY_SEEDS}", mean >= 4


def _nature_pairs(outcomes: list[Outcome]) -> list[tuple[Outcome, Outcome]]:
    """Pair the neutral and nature requests of each start and target that both succeeded."""
    neutral = {(o.region, o.start, o.target_m): o for o in outcomes if o.preference == NEUTRAL}
    pairs = []
    for outcome in outcomes:
        other = neutral.get((outcome.region, outcome.start, outcome.target_m))
        if outcome.preference == NATURE and other and other.routes and outcome.routes:
            pairs.append((other, outcome))
    return pairs


def _nature(outcomes: list[Outcome]) -> Cell:
    """Compare the first loops' green/water shares. The nature loops must also meet ±5%."""
    pairs = _nature_pairs(outcomes)
    if not pairs:
        return "n/a", False
    neutral = float(np.mean([a.routes[0].green_water_share for a, _ in pairs]))
    nature = float(np.mean([b.routes[0].green_water_share for _, b in pairs]))
    text, within_ok = _within([o for o in outcomes if o.preference == NATURE])
    detail = f"{nature:.0%} vs {neutral:.0%}; nature loops ±5%: {text.split(' of ')[0]}"
    if neutral == 0:
        return f"n/a ({detail})", None
    ratio = nature / neutral
    # A share cannot pass 100%, so a green neutral loop caps the ratio at 1 / neutral.
    detail += f"; ceiling {1 / neutral:.2f}×"
    return f"{ratio:.2f}× ({detail})", ratio >= 1.5 and bool(within_ok)


def _timing(outcomes: list[Outcome]) -> Cell:
    """Time the 8 km requests where there are any (the bar's case), else all of them.

    The bar is judged on wall time. CPU time of the calling thread is shown beside it
    because other work on a shared machine inflates wall time.
    """
    judged = [o for o in outcomes if o.target_m == TIMING_TARGET_M]
    timed = [o for o in judged or outcomes if o.routes]
    if not timed:
        return "n/a", None
    wall = [o.seconds * 1000 for o in timed]
    cpu = [o.cpu_seconds * 1000 for o in timed]
    p50, p99 = _percentile(wall, 50), _percentile(wall, 99)
    text = (
        f"{p50:.0f} / {p99:.0f} ms (CPU {_percentile(cpu, 50):.0f} / {_percentile(cpu, 99):.0f} ms)"
    )
    return text, (p50 <= 50 and p99 <= 200) if judged else None


def _interactive_within(outcomes: list[Outcome]) -> Cell:
    if not outcomes:
        return "not run", None
    routes = _routes(outcomes)
    share = sum(abs(r.error(o.target_m)) <= WITHIN for o, r in routes) / len(outcomes)
    return f"{_percent(share)} of {len(outcomes)}", share >= 0.95


def _interactive_detail(outcomes: list[Outcome]) -> Cell:
    routes = _routes(outcomes)
    if not routes:
        return "n/a", None
    error = float(np.mean([abs(r.error(o.target_m)) for o, r in routes]))
    retrace = [r.retrace_share for _, r in routes]
    failed = sum(o.failure is not None for o in outcomes)
    limit = sum(o.step_limit_hit for o in outcomes)
    text = (
        f"mean err {_percent(error)}, walked twice {_percent(_percentile(retrace, 50))} / "
        f"{_percent(_percentile(retrace, 90))}, failed {failed}, step limit {limit}"
    )
    return text, None


def _suggest_timing(outcomes: list[Outcome]) -> Cell:
    wall = [value * 1000 for o in outcomes for value in o.suggest_seconds]
    cpu = [value * 1000 for o in outcomes for value in o.suggest_cpu_seconds]
    if not wall:
        return "n/a", None
    p50, p99 = _percentile(wall, 50), _percentile(wall, 99)
    text = (
        f"{p50:.0f} / {p99:.0f} ms (CPU {_percentile(cpu, 50):.0f} / {_percentile(cpu, 99):.0f} ms)"
    )
    return text, p50 <= 20


def _checks(outcomes: list[Outcome]) -> Cell:
    """Off-network length, unclosed loops, start snap and the planner's own distance."""
    routes = _routes(outcomes)
    if not routes:
        return "n/a", None
    off = sum(r.off_network_m for _, r in routes)
    unclosed = sum(not r.closed for _, r in routes)
    snaps = [o.snap_m for o in outcomes if o.routes]
    stems = [r.stem_share for _, r in routes]
    reported = [
        abs(reported - route.length_m)
        for outcome in outcomes
        for reported, route in zip(outcome.reported_m, outcome.routes)
    ]
    text = (
        f"off network {off:.0f} m, unclosed {unclosed}, snap p50/p90 "
        f"{_percentile(snaps, 50):.0f}/{_percentile(snaps, 90):.0f} m, stem p90 "
        f"{_percent(_percentile(stems, 90))}, reported vs measured max "
        f"{max(reported):.1f} m"
    )
    return text, off == 0 and unclosed == 0


@dataclass(frozen=True)
class Row:
    measure: str
    bar: str
    cell: Callable[[Results], Cell]


ROWS = (
    Row("loops within ±5% of target", "≥ 95%", lambda r: _within(r.loops)),
    Row("first loop of each request within ±5%", "", lambda r: _first_within(r.loops)),
    Row("mean absolute distance error", "≤ 2.5%", lambda r: _mean_error(r.loops)),
    Row(
        "share walked twice, median / p90 (stem excluded)",
        "≤ 3% / ≤ 10%",
        lambda r: _retrace(r.loops),
    ),
    Row("forbidden length (ways and blocking barriers)", "0 m", lambda r: _forbidden(r.loops)),
    Row("success where the network allows a loop", "≥ 98%", lambda r: _success(r.loops)),
    Row(
        "distinct first loops from 5 seeds (Jaccard < 0.5), mean per start",
        "≥ 4",
        lambda r: _distinct(r.diversity),
    ),
    Row(
        "green/water share, nature vs neutral first loop",
        "≥ 1.5×, nature ±5% ≥ 95%",
        lambda r: _nature(r.loops),
    ),
    Row(
        "plan_loops p50 / p99, 3 alternatives (8 km where run)",
        "≤ 50 / ≤ 200 ms at 8 km",
        lambda r: _timing(r.loops),
    ),
    Row(
        "step-by-step routes within ±5% of target",
        "≥ 95% (loop bar)",
        lambda r: _interactive_within(r.interactive),
    ),
    Row(
        "step-by-step suggest_candidates p50 / p99",
        "p50 ≤ 20 ms",
        lambda r: _suggest_timing(r.interactive),
    ),
    Row("step-by-step detail", "", lambda r: _interactive_detail(r.interactive)),
    Row("checks on all loops", "0 off network, 0 unclosed", lambda r: _checks(r.loops)),
)


STEP_ROWS = tuple(row for row in ROWS if row.measure.startswith("step-by-step"))


def _mark(cell: Cell) -> str:
    text, met = cell
    return f"{text} **✗**" if met is False else text


def print_table(
    title: str,
    columns: dict[str, Results],
    verdict_column: str,
    rows: Sequence[Row] = ROWS,
) -> None:
    """Print one Markdown table. A cell that misses its bar ends in ✗."""
    print(f"### {title}\n")
    print("| measure | bar | " + " | ".join(columns) + " | verdict |")
    print("|---|---|" + "---|" * len(columns) + "---|")
    for row in rows:
        cells = {name: row.cell(results) for name, results in columns.items()}
        judged = cells[verdict_column][1]
        verdict = {True: "meets", False: "MISSES", None: ""}[judged]
        print(
            f"| {row.measure} | {row.bar} | "
            + " | ".join(_mark(cell) for cell in cells.values())
            + f" | {verdict} |"
        )
    print()


def region_columns(results: Results, targets: Sequence[float]) -> dict[str, Results]:
    columns = {
        f"{target / 1000:g} km": results.select(lambda item, target=target: item.target_m == target)
        for target in targets
    }
    columns["all"] = results
    return columns


# Worst cases


def print_worst(results: Results, count: int) -> None:
    print(f"### Worst cases (up to {count} each)\n")
    crashes = [o for o in results.loops + results.interactive if o.crashed]
    failures = [
        o
        for o in results.loops
        if o.failure and not o.crashed and o.component_m >= LOOP_ROOM_FACTOR * o.target_m
    ]
    _print_list("Crashes", [f"{o.where()}: {o.failure}" for o in crashes[:count]])
    # One line per start: a start that fails usually fails at every target.
    by_start: dict[tuple[str, int], list[Outcome]] = {}
    for outcome in failures:
        by_start.setdefault((outcome.region, outcome.start), []).append(outcome)
    lines = []
    for group in list(by_start.values())[:count]:
        first = group[0]
        cycle = (
            f"{first.cycle_m / 1000:.1f} km" if math.isfinite(first.cycle_m) else "none (dead end)"
        )
        lines.append(
            f"{first.region} ({first.lat:.6f}, {first.lon:.6f}), connected ways "
            f"{first.component_m / 1000:.0f} km, shortest cycle over the start's segment "
            f"{cycle}: failed "
            + ", ".join(f"{o.target_m / 1000:g} km {o.preference or 'neutral'!r}" for o in group)
            + f" (seeds {', '.join(str(o.seed) for o in group)}): {group[0].failure}"
        )
    _print_list("Failures where the network allows a loop", lines)

    routes = _routes(results.loops)
    by_error = sorted(routes, key=lambda item: -abs(item[1].error(item[0].target_m)))
    _print_list(
        "Largest distance errors",
        [
            f"{o.where()}: {r.length_m:.0f} m ({r.error(o.target_m):+.1%}), "
            f"alternative {o.routes.index(r) + 1} of {len(o.routes)}"
            for o, r in by_error[:count]
            if abs(r.error(o.target_m)) > WITHIN
        ],
    )
    by_retrace = sorted(routes, key=lambda item: -item[1].retrace_share)
    _print_list(
        "Most walked twice",
        [
            f"{o.where()}: {r.retrace_share:.1%} of {r.length_m:.0f} m walked twice "
            f"(stem {r.stem_m:.0f} m excluded)"
            for o, r in by_retrace[:count]
            if r.retrace_share > 0.10
        ],
    )
    forbidden = sorted(
        (item for item in routes if item[1].forbidden_m > 0), key=lambda item: -item[1].forbidden_m
    )
    _print_list(
        "Forbidden stretches",
        [
            f"{o.where()}: {r.forbidden_m:.0f} m on " + "; ".join(r.forbidden[:4])
            for o, r in forbidden[:count]
        ],
    )
    off = sorted(
        (item for item in routes if item[1].off_network_m > 0),
        key=lambda item: -item[1].off_network_m,
    )
    _print_list(
        "Off the OSM ways",
        [f"{o.where()}: {r.off_network_m:.0f} m between no way's nodes" for o, r in off[:count]],
    )
    # Starts where every seed failed are listed with the failures above.
    same = sorted(
        (record for record in results.diversity if record.failures < DIVERSITY_SEEDS),
        key=lambda record: (record.distinct, -record.failures),
    )
    _print_list(
        "Least distinct over 5 seeds",
        [
            f"{d.region} ({d.lat:.6f}, {d.lon:.6f}) {d.target_m / 1000:g} km neutral seeds "
            f"{d.seeds}: {d.distinct} distinct, {d.failures} failed"
            for d in same[:count]
            if d.distinct < 3
        ],
    )
    pairs = sorted(
        _nature_pairs(results.loops),
        key=lambda pair: pair[1].routes[0].green_water_share - pair[0].routes[0].green_water_share,
    )
    _print_list(
        "Nature preference with the least green/water gain",
        [
            f"{b.where()}: {b.routes[0].green_water_share:.0%} against "
            f"{a.routes[0].green_water_share:.0%} neutral"
            for a, b in pairs[:count]
            if b.routes[0].green_water_share <= a.routes[0].green_water_share
        ],
    )
    far = sorted(
        (o for o in results.loops if o.routes and o.snap_m > SNAP_WARNING_M),
        key=lambda o: -o.snap_m,
    )
    far_starts = {(o.region, o.start): o for o in far}
    _print_list(
        f"Loops that begin over {SNAP_WARNING_M:.0f} m from the requested start "
        f"({len(far)} requests, {len(far_starts)} starts)",
        [
            f"{o.region} ({o.lat:.6f}, {o.lon:.6f}) on way {o.way_id}: the loop begins at "
            f"({o.routes_start[1]:.6f}, {o.routes_start[0]:.6f}), {o.snap_m:.0f} m away"
            for o in list(far_starts.values())[:count]
        ],
    )
    failed_steps = [o for o in results.interactive if o.failure]
    _print_list(
        "Step-by-step failures",
        [f"{o.where()}: {o.failure}" for o in failed_steps[:count]],
    )
    closed = sorted(
        (o for o in results.interactive if o.routes),
        key=lambda o: -abs(o.routes[0].error(o.target_m)),
    )
    _print_list(
        "Step-by-step routes furthest from target",
        [
            f"{o.where()}: {o.routes[0].length_m:.0f} m ({o.routes[0].error(o.target_m):+.1%}) "
            f"after {o.steps} waypoints" + (", step limit reached" if o.step_limit_hit else "")
            for o in closed[:count]
            if o.step_limit_hit or abs(o.routes[0].error(o.target_m)) > WITHIN
        ],
    )


def _print_list(title: str, lines: list[str]) -> None:
    print(f"{title}:" + ("" if lines else " none"))
    for line in lines:
        print(f"- {line}")
    print()


def write_json(path: Path, results: Results) -> None:
    def plain(item: object) -> dict:
        data = dataclasses.asdict(item)
        for route in data.get("routes", []):
            route.pop("segments", None)
        return data

    payload = {
        "loops": [plain(o) for o in results.loops],
        "interactive": [plain(o) for o in results.interactive],
        "diversity": [plain(d) for d in results.diversity],
    }
    path.write_text(json.dumps(payload, indent=1))
    log.info("wrote every outcome to %s", path)


# Command line


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])

    parser.add_argument(
        "--regions",
        nargs="+",
        choices=sorted(REGIONS),
        help="shared extracts to measure (default: all four, or none with --extract)",
    )
    parser.add_argument(
        "--extract",
        type=Path,
        action="append",
        default=[],
        help="another .osm.pbf extract to measure; may be repeated",
    )
    parser.add_argument("--starts", type=int, help="random starts per region (default 100)")
    parser.add_argument("--quick", action="store_true", help="20 starts per region")
    parser.add_argument(
        "--targets",
        type=float,
        nargs="+",
        default=list(DEFAULT_TARGETS_M),
        help="target distances in metres (default 3000 5000 8000)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of starts and planner seeds")
    parser.add_argument(
        "--no-interactive", action="store_true", help="skip the step-by-step routes"
    )
    parser.add_argument(
        "--only-interactive",
        action="store_true",
        help="run only the step-by-step routes (no complete loops)",
    )
    parser.add_argument(
        "--pick",
        choices=("best", "random"),
        default="best",
        help="candidate a step-by-step route takes: the best-scored or a random one",
    )
    parser.add_argument("--worst", type=int, default=6, help="worst cases listed per kind")
    parser.add_argument("--json", type=Path, help="write every outcome to this JSON file")
    args = parser.parse_args()

    if args.starts is None:
        args.starts = 20 if args.quick else 100
    if args.only_interactive and args.no_interactive:
        parser.error("--only-interactive and --no-interactive exclude each other")
    if args.starts < 1:
        parser.error(f"--starts must be at least 1, got {args.starts}")
    for path in args.extract:
        if not path.is_file():
            parser.error(f"--extract {path} does not exist; pass the path of an .osm.pbf file")
    if any(target <= 0 for target in args.targets):
        parser.error(f"--targets must be positive metres, got {args.targets}")
    return args


def main() -> int:
    args = parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    for name in ("pipelines", "warehouse", "planner"):
        logging.getLogger(name).setLevel(logging.WARNING)

    regions = {name: REGIONS[name] for name in (args.regions or [])}
    for path in args.extract:
        regions[path.name.split(".")[0]] = path
    if not regions:
        regions = dict(REGIONS)
    targets = sorted(args.targets)

    print("## Route quality\n")
    for line in common.machine_lines():
        print(f"- {line}")
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    print(f"- command: `{command}`")
    print(
        f"- {args.starts} starts per region, targets {', '.join(f'{t:g}' for t in targets)} m, "
        f"seed {args.seed}\n",
        flush=True,
    )

    rows = STEP_ROWS if args.only_interactive else ROWS
    began = time.perf_counter()
    everything = Results()
    per_region: dict[str, Results] = {}
    for name, path in regions.items():
        results = run_region(
            name,
            path,
            args.starts,
            targets,
            args.seed,
            not args.no_interactive,
            loops=not args.only_interactive,
            pick=args.pick,
        )
        per_region[name] = results
        everything.loops += results.loops
        everything.interactive += results.interactive
        everything.diversity += results.diversity
        print_table(f"{name} ({path.name})", region_columns(results, targets), "all", rows)
        sys.stdout.flush()

    if len(per_region) > 1:
        columns = dict(per_region)
        columns["all"] = everything
        print_table("Overall (all targets)", columns, "all", rows)
    print_worst(everything, args.worst)
    print(
        f"Total run time {time.perf_counter() - began:.0f} s wall, {time.process_time():.0f} s CPU."
    )
    if args.json:
        write_json(args.json, everything)
    return 0


if __name__ == "__main__":
    sys.exit(main())
