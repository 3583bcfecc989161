"""Step-by-step route building: suggest three waypoints, add one, close back to the start.

Where a complete loop from the start is known, candidates lie one step along it and carry
the rest of it as their plan, so that a route following them closes without walking its
ways twice. Other candidates are the best-scored ends about one step away. Beside planned
candidates, those with a way back of their own (their plan) come before the rest.

The route state is a msgspec Struct of JSON types with OSM node and edge ids, so a server
can store it between requests (`msgspec.to_builtins(state)`, `RouteState.from_dict`) and
any process holding the same network can continue it.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable, Iterator

import msgspec
import numpy as np
from scipy.sparse import csr_matrix

from planner.closing import ClosingContext, Walk, close_walk, join_walk, measure, stem_edges
from planner.closing import context as closing_context
from planner.errors import (
    EmptyRoute,
    InvalidWaypoint,
    NoLoopFound,
    PlannerError,
    RouteFinalized,
)
from planner.loops import plan_loops
from planner.network import FEATURE_NAMES, Network
from planner.preferences import Preference, parse_preference
from planner.routing import (
    USED_EDGE_FACTOR,
    cost_matrix,
    edge_costs,
    edge_scores,
    path_edges,
    shortest_tree,
    tree_edges,
    tree_path,
    tree_sums,
)
from planner.snap import snap_start
from planner.walks import (
    Segment,
    feature_shares,
    retrace_length,
    walk_coordinates,
    walk_segments,
)

CANDIDATE_COUNT = 3
MIN_SEPARATION_DEG = 60.0
# Separations in degrees tried in turn when candidates that far apart leave an offer short.
SEPARATION_STEPS = (MIN_SEPARATION_DEG, 40.0, 0.0)

# Planned step length is the target divided by this, within the metre bounds below.
STEPS_PER_ROUTE = 6.0
MIN_STEP_M = 200.0
MAX_STEP_M = 1500.0

# The predicted way back ignores the step about to be added, which finalize also avoids, so
# the real way back can run a little longer.
RETURN_ALLOWANCE = 1.02

# In the closing step, candidate + way back must match the remaining distance to this
# share of the target.
CLOSING_TOLERANCE = 0.03

# Finalizing is suggested once the remaining distance exceeds the shortest way back by less
# than this share of a step: finalize then closes the route with a detour of that length.
FINALIZE_SLACK_STEPS = 0.6

# Finalizing is suggested when the closed route would land within this share of the target.
FINALIZE_ERROR = 0.03

# The closing step begins once the remaining distance exceeds the shortest way back by less
# than this many steps.
CLOSING_ZONE_STEPS = 1.5

# Best-scored ends graded per step band, because grading walks the path to each.
GRADE_CHECKS = 60

# Score taken off a candidate from which no way back of the right length was found.
UNSURE_RETURN_PENALTY = 0.15

# Outside the closing step, candidates lie at least this many steps from the start.
NEAR_START_STEPS = 0.25

# Searches run on the network within this share of the target around the start (straight
# line), plus the margin: a route of about the target length never leaves that circle.
LOCAL_RADIUS_SHARE = 0.55
LOCAL_MARGIN_M = 300.0

# Searches per suggestion for the ways back from an end once the path to it is walked: as
# many as cover this many network nodes in all, and at least RETURN_CHECKS.
RETURN_SEARCH_NODES = 40_000
RETURN_CHECKS = 6
# NOTE: ends past this budget count as having no way back, so in a large local network a
# usable end may go unoffered. Suggestions cost about 3 times the CPU time they did without
# these searches.

WALK_STEP_M = 0.8

# Multiples of the step length tried in turn when no end about one step away qualifies.
STEP_SCALES = (1.0, 3.0)

# Complete loops from the start (plan_loops, PLANNED_LOOPS alternatives) guide the first
# step when they come within this share of the target. Candidates with a plan score this
# much more than others, because a way back of the right length is known from them.
PLANNED_LOOPS = 3
PLANNED_MAX_ERROR = 0.03
PLANNED_BONUS = 0.2
# NOTE: the first suggestion runs plan_loops, so it costs several times what later ones
# do. With bench_quality --only-interactive at 8 km on 2 shared cores, the CPU p99 of
# suggestions rose from 18-33 ms to 42-114 ms per region, and the p50 from 4-11 to 4-14 ms.

# An end gets a plan of its own where a way back from it closes the route within
# PLANNED_MAX_ERROR of the target and walks at most this share of it twice, the stem at
# the start excluded.
PLAN_MAX_RETRACE = 0.05

# Steps along a plan, as shares of the planned step. The planned one comes first. A shorter
# and a longer one fill the offer where other ends leave it short of CANDIDATE_COUNT, as at
# a start in a valley, where every loop leaves the same way.
PLANNED_STEP_SHARES = (1.0, 0.6, 1.5)

# A route that follows its plan is offered to finalize once the rest of the plan is at
# most this many steps long.
PLANNED_FINAL_STEPS = 1.5


class Candidate(msgspec.Struct, frozen=True):
    """A suggested next waypoint and the path that leads to it."""

    id: str
    node_id: int
    lat: float
    lon: float
    distance_m: float
    bearing_deg: float
    score: float
    features: dict[str, float]
    reason: str
    path_node_ids: list[int]
    path_edge_ids: list[int]
    # The rest of a planned loop from this waypoint back to the start (empty: none).
    plan_node_ids: list[int] = msgspec.field(default_factory=list)
    plan_edge_ids: list[int] = msgspec.field(default_factory=list)


class RouteState(msgspec.Struct):
    """A route under construction; node_ids/edge_ids are the walk so far from the start."""

    start_node_id: int
    target_m: float
    snap_distance_m: float
    node_ids: list[int]
    edge_ids: list[int] = msgspec.field(default_factory=list)
    distance_m: float = 0.0
    waypoint_node_ids: list[int] = msgspec.field(default_factory=list)
    candidates: list[Candidate] = msgspec.field(default_factory=list)
    finalize_suggested: bool = False
    finalized: bool = False
    # The plan of the last waypoint added: the rest of its loop back to the start.
    plan_node_ids: list[int] = msgspec.field(default_factory=list)
    plan_edge_ids: list[int] = msgspec.field(default_factory=list)

    def to_dict(self) -> dict:
        return msgspec.to_builtins(self)

    @classmethod
    def from_dict(cls, data: dict) -> RouteState:
        return msgspec.convert(data, cls)

    @property
    def remaining_m(self) -> float:
        return self.target_m - self.distance_m


class FinalRoute(msgspec.Struct, frozen=True):
    """A closed step-by-step route; coordinates are (lon, lat), first equal to last."""

    coordinates: list[tuple[float, float]]
    distance_m: float
    steps: int
    node_ids: list[int]
    edge_ids: list[int]
    segments: list[Segment]
    green_share: float
    water_share: float
    quiet_share: float
    retrace_share: float
    snap_distance_m: float


def start_route(network: Network, lat: float, lon: float, target_m: float) -> RouteState:
    """Snap the start and return an empty route state; raises StartNotFound."""
    if not (math.isfinite(target_m) and target_m > 0):
        raise ValueError(f"target_m must be a positive number of metres, got {target_m!r}")
    start = snap_start(network, lat, lon, min_component_m=0.5 * target_m)
    return RouteState(
        start_node_id=start.node_id,
        target_m=float(target_m),
        snap_distance_m=round(start.distance_m, 1),
        node_ids=[start.node_id],
    )


def suggest_candidates(
    network: Network,
    state: RouteState,
    preference: Preference | str | None = None,
    seed: int | None = None,
) -> list[Candidate]:
    """Suggest up to three next waypoints in different directions from the route's end.

    Stores the offer and `finalize_suggested` in `state` (it is updated in place), because
    add_waypoint accepts only offered candidates. Where any exist, only ends are offered
    from which, with the path to them walked too, a way back makes up the rest of the
    target, so that the route closes near it whichever candidate the user takes. At the
    first step, and while the route follows a planned loop, the waypoints one step along
    such loops come first (see _planned_candidates). Returns no candidates when finalize
    would now land within FINALIZE_ERROR of the target.
    """
    _check_open(state)
    if not isinstance(preference, Preference):
        preference = parse_preference(preference)
    whole_network = network
    network = _local_network(network, state)
    start = _node(network, state.start_node_id)
    current = _node(network, state.node_ids[-1])
    walked = _edge_indices(network, state.edge_ids)
    remaining = state.remaining_m
    step = _step_length(state.target_m)
    values = _path_values(network, preference, walked)
    seed_here = seed if seed is not None else len(state.waypoint_node_ids)
    planned, planned_more = _planned_candidates(
        whole_network, network, state, preference, seed_here, values
    )
    # At the first step, three planned candidates in clearly different directions make the
    # offer, and the search for other ends would only cost time. `planned` is merged already.
    spread = all(
        _bearing_gap(candidate, planned[:index]) >= MIN_SEPARATION_DEG
        for index, candidate in enumerate(planned)
    )
    if not state.waypoint_node_ids and len(planned) == CANDIDATE_COUNT and spread:
        state.finalize_suggested = False
        state.candidates = _numbered(planned, state)
        return state.candidates
    back, back_tree = _way_back(network, start, walked, max(remaining, step) * 2.5)

    back_here = float(back[current])
    state.finalize_suggested = _finalize_now(network, state, back_here)
    if state.finalize_suggested:
        state.candidates = []
        return []
    closing_zone = remaining <= back_here + CLOSING_ZONE_STEPS * step

    # Shortest paths from the route's end, with walked edges made expensive. Where ways are
    # longer than a step (mountain paths), longer steps are tried before giving up.
    factor = np.ones(network.edge_count)
    factor[walked] = USED_EDGE_FACTOR
    costs = edge_costs(network, preference)
    matrix = cost_matrix(network, costs, factor)
    tolerance_m = CLOSING_TOLERANCE * state.target_m
    found: _Offer | None = None
    fallback: _Offer | None = None
    # Ways back that avoid the route come first. Where no end leaves one of the right
    # length, ways back that walk the route again follow (a stem out and back, as in a
    # mountain valley), because finalize also takes those when they rank better.
    for penalty in (USED_EDGE_FACTOR, 1.0):
        if found is not None and found.level == 0:
            break
        if penalty == USED_EDGE_FACTOR:
            back_pass, back_tree_pass = back, back_tree
            matrix_pass = matrix
        else:
            back_pass, back_tree_pass = _way_back(
                network, start, walked[:0], max(remaining, step) * 2.5
            )
            # When the first pass offered only last-resort ends or none, the route's end may
            # be the tip of a walked dead end, where only ends back along the route lead on.
            # Walked edges then keep their plain cost in the search for ends too.
            matrix_pass = matrix
            if found is None or found.level >= 2:
                matrix_pass = cost_matrix(network, costs)
        returns = _Returns(network, start, walked, back_pass, back_tree_pass, tolerance_m, penalty)
        for step_scale in STEP_SCALES:
            step_here = step * step_scale
            reach = max(remaining, step_here) * 1.5 if closing_zone else step_here * 1.5
            ends = _reached_ends(
                network, matrix_pass, values, current, reach, preference, seed_here
            )
            if ends is None:
                continue
            tree, reached, length, retrace, shares, base, bearings = ends
            back_reached = back_pass[reached] * RETURN_ALLOWANCE
            for eligible, closing, tolerance, floor in _tiers(
                length, back_reached, retrace, remaining, step_here, closing_zone, state.target_m
            ):
                if not closing:
                    # A step that ends back at the start leaves nothing to close the loop with.
                    eligible &= back_pass[reached] >= NEAR_START_STEPS * step
                if not eligible.any():
                    continue
                score = base if closing else base - 0.1 * np.abs(length - step_here) / step_here
                score = np.clip(score, 0.0, 1.0)
                order = np.flatnonzero(eligible)
                order = order[np.argsort(-score[order], kind="stable")]
                offer = _Offer(tree, reached, length, retrace, shares, score, bearings, closing, [])
                if fallback is None:
                    # The fallback's ends are spread only when it is used, because spreading
                    # walks the whole order.
                    fallback = dataclasses.replace(offer, chosen=order.tolist())

                grade = functools.partial(_grade, returns, offer, remaining, tolerance, floor)
                offer.chosen, offer.levels = _spread(order[:GRADE_CHECKS], bearings, grade)
                if offer.chosen and (found is None or offer.rank() < found.rank()):
                    found = offer
                if _search_done(found, bool(planned)):
                    break
            # Ends that only retrace (dead-end tips) or leave no way back of the right length
            # make longer steps worth a try.
            if _search_done(found, bool(planned)):
                break
    if found is None and not state.waypoint_node_ids and fallback is not None:
        # No end keeps a way back of the right length (a start deep in a dead end), so the
        # best ends are offered anyway and the route can begin.
        # NOTE: such a route, like a complete loop from there, may end far off the target.
        found = fallback
        found.chosen = _spread(np.asarray(found.chosen), found.bearings, lambda position: 1)[0]
    if found is None:
        state.finalize_suggested = bool(state.waypoint_node_ids) and not planned
        state.candidates = _numbered(_merge(planned + planned_more, []), state)
        return state.candidates
    tree, reached, length, retrace, shares = (
        found.tree,
        found.reached,
        found.length,
        found.retrace,
        found.shares,
    )
    score, bearings, closing, chosen = found.score, found.bearings, found.closing, found.chosen
    # Ends with no way back of the right length found rank below the others.
    grades = dict(zip(chosen, found.levels or [0] * len(chosen)))

    candidates = []
    for position in chosen:
        node = int(reached[position])
        path = tree_path(tree, node)
        edges = path_edges(network, path)
        features = {
            name: round(float(shares[position, 1 + index]), 3)
            for index, name in enumerate(FEATURE_NAMES)
        }
        features["retrace"] = round(float(retrace[position]), 3)
        unsure = grades[position] > 0
        if planned and (unsure or features["retrace"] > 0.1):
            # A planned candidate is known to lead back walking little twice, so ends that
            # may not, or that retrace already, are left out beside it.
            continue
        candidates.append(
            Candidate(
                id="",
                node_id=int(network.node_ids[node]),
                lat=float(network.lat[node]),
                lon=float(network.lon[node]),
                distance_m=round(float(length[position]), 1),
                bearing_deg=round(float(bearings[position]), 1),
                score=round(max(float(score[position]) - UNSURE_RETURN_PENALTY * unsure, 0.0), 3),
                features=features,
                reason=_reason(features, float(length[position]), closing, unsure),
                path_node_ids=network.node_ids[path].tolist(),
                path_edge_ids=network.edge_ids[edges].tolist(),
            )
        )
    if planned or state.waypoint_node_ids:
        offer = _with_plans(network, state, planned, planned_more, candidates, closing)
    else:
        offer = candidates
    state.candidates = _numbered(offer, state)
    return state.candidates


def _search_done(found: _Offer | None, planned: bool) -> bool:
    """Return whether the search for ends can stop: at a perfect offer, or beside planned
    candidates at any offer with a good end, because ends then only fill the offer up."""
    if found is None:
        return False
    return found.rank() == (0, 0, False) or (planned and found.level == 0)


def add_waypoint(network: Network, state: RouteState, candidate_id: str) -> RouteState:
    """Return a new state with the offered candidate's path appended.

    Raises InvalidWaypoint for an id that the last suggestion did not offer and
    RouteFinalized once the route is closed.
    """
    _check_open(state)
    offered = {candidate.id: candidate for candidate in state.candidates}
    candidate = offered.get(candidate_id)
    if candidate is None:
        raise InvalidWaypoint(
            f"Waypoint {candidate_id!r} was not offered; choose one of "
            f"{sorted(offered) or 'the candidates of a new suggestion'}."
        )
    edge_ids = state.edge_ids + candidate.path_edge_ids
    distance = float(network.length[_edge_indices(network, edge_ids)].sum())
    new_state = RouteState(
        start_node_id=state.start_node_id,
        target_m=state.target_m,
        snap_distance_m=state.snap_distance_m,
        node_ids=state.node_ids + candidate.path_node_ids[1:],
        edge_ids=edge_ids,
        distance_m=round(distance, 1),
        waypoint_node_ids=state.waypoint_node_ids + [candidate.node_id],
        plan_node_ids=candidate.plan_node_ids,
        plan_edge_ids=candidate.plan_edge_ids,
    )
    network = _local_network(network, new_state)
    start = _node(network, state.start_node_id)
    walked = _edge_indices(network, edge_ids)
    back, _ = _way_back(network, start, walked, max(new_state.remaining_m, 0.0) * 1.5 + 1000.0)
    here = float(back[_node(network, candidate.node_id)])
    new_state.finalize_suggested = _finalize_now(network, new_state, here)
    return new_state


def finalize(network: Network, state: RouteState) -> FinalRoute:
    """Close the route back to the start so that it reaches the target where it can.

    When the remaining distance exceeds the shortest way back, the way back makes a detour
    of about the difference. Walked edges are avoided where possible. Marks `state`
    finalized (in place). Raises RouteFinalized when it already is, EmptyRoute when no
    waypoint was added and NoLoopFound when the start cannot be reached.
    """
    _check_open(state)
    if not state.waypoint_node_ids:
        raise EmptyRoute("Add at least one waypoint before closing the route.")
    network = _local_network(network, state)
    best = _closing_walk(network, state)
    nodes, edges = best.nodes, best.edges
    distance = best.length
    coordinates = walk_coordinates(network, nodes, edges)
    coordinates[-1] = coordinates[0]
    shares = feature_shares(network, edges)
    state.finalized = True
    state.finalize_suggested = False
    state.candidates = []
    return FinalRoute(
        coordinates=coordinates,
        distance_m=round(distance, 1),
        steps=round(distance / WALK_STEP_M),
        node_ids=network.node_ids[nodes].tolist(),
        edge_ids=network.edge_ids[edges].tolist(),
        segments=walk_segments(network, edges),
        green_share=round(shares["green"], 4),
        water_share=round(shares["water"], 4),
        quiet_share=round(shares["quiet"], 4),
        retrace_share=round(best.retrace, 4),
        snap_distance_m=state.snap_distance_m,
    )


def _reached_ends(
    network: Network,
    matrix: csr_matrix,
    values: np.ndarray,
    current: int,
    reach: float,
    preference: Preference,
    seed: int,
) -> tuple | None:
    """Search the ends within cost `reach` of the route's end and measure the way to each.

    Returns (tree, reached, length, retrace, shares, score, bearings) with one row per
    reached node; the score leaves out the step length. None when nothing is reached.
    """
    _, tree = shortest_tree(matrix, current, reach)
    reached = np.flatnonzero(tree >= 0)
    if reached.size == 0:
        # The end is in a walked dead end, so the way out costs USED_EDGE_FACTOR times more.
        _, tree = shortest_tree(matrix, current, reach * USED_EDGE_FACTOR)
        reached = np.flatnonzero(tree >= 0)
    if reached.size == 0:
        return None
    sums = tree_sums(network, tree, reached, values)
    length = sums[:, 0]
    shares = sums[:, 1:] / np.maximum(length, 1.0)[:, None]
    retrace = shares[:, -1]
    # A dead-end tip as waypoint forces walking back the same way, so offer it only as a
    # last resort by treating its path as retraced.
    dead_end = np.diff(network.csr.indptr)[reached] <= 1
    retrace = np.where(dead_end, np.maximum(retrace, 0.5), retrace)
    if preference.groups:
        score = 0.25 + 0.6 * shares[:, 0] - 0.8 * retrace
    else:
        score = 0.8 - 1.5 * retrace
    score = score + np.random.default_rng(seed).uniform(0.0, 0.02, size=reached.shape[0])
    bearings = (
        np.degrees(
            np.arctan2(
                network.x[reached] - network.x[current], network.y[reached] - network.y[current]
            )
        )
        % 360.0
    )
    return tree, reached, length, retrace, shares, score, bearings


def _planned_candidates(
    whole_network: Network,
    network: Network,
    state: RouteState,
    preference: Preference,
    seed: int,
    values: np.ndarray,
) -> tuple[list[Candidate], list[Candidate]]:
    """Build the candidates one step along the route's plan or, at the first step, along
    complete loops from the start (both ways round), spread in direction.

    Each candidate carries the rest of its loop as its plan. Returns the planned steps,
    then the shorter and longer steps (PLANNED_STEP_SHARES) that may fill the offer up.
    Both are empty past the first step when the route has no plan, when the rest of the
    plan is short enough to finalize along it, and when no loop from the start comes
    within PLANNED_MAX_ERROR of the target.
    """
    plans = []
    if state.plan_edge_ids:
        plans.append(
            (
                [_node(network, node_id) for node_id in state.plan_node_ids],
                _edge_indices(network, state.plan_edge_ids).tolist(),
            )
        )
    elif not state.waypoint_node_ids:
        plans = _start_loops(whole_network, network, state, preference, seed)
    step = _step_length(state.target_m)
    walked = _edge_indices(network, state.edge_ids).tolist()
    walked_set = set(walked)
    current = _node(network, state.node_ids[-1])
    seen: set[int] = set()
    ranked: list[tuple[int, Candidate]] = []
    for (share_rank, share), (nodes, edges) in itertools.product(
        enumerate(PLANNED_STEP_SHARES), plans
    ):
        lengths = network.length[edges]
        rest = float(lengths.sum())
        if rest <= PLANNED_FINAL_STEPS * step or len(edges) < 2:
            continue
        # Equal steps along the rest, of about the planned step length, so that no last
        # step is left much shorter than the others.
        aim = share * rest / max(round(rest / step), 2)
        along = np.cumsum(lengths)
        cut = int(np.argmin(np.abs(along[:-1] - aim))) + 1
        node = nodes[cut]
        if node in seen:
            continue
        seen.add(node)
        path_nodes, path_edges_here = nodes[: cut + 1], edges[:cut]
        sums = values[path_edges_here].sum(axis=0)
        length = float(sums[0])
        shares = sums[1:] / max(length, 1.0)
        features = {
            name: round(float(shares[1 + index]), 3) for index, name in enumerate(FEATURE_NAMES)
        }
        repeated, seen_edges = 0.0, set(walked_set)
        for edge, edge_length in zip(path_edges_here, lengths[:cut].tolist()):
            if edge in seen_edges:
                repeated += edge_length
            seen_edges.add(edge)
        features["retrace"] = round(repeated / max(length, 1.0), 3)
        # The whole walk, plan included, counts: walking back down a stem is no retrace.
        whole = walked + edges
        whole_length = float(network.length[whole].sum())
        retrace = retrace_length(network, whole) / max(whole_length, 1.0)
        if preference.groups:
            liked = float(values[whole, 1].sum()) / max(whole_length, 1.0)
            score = 0.25 + 0.6 * liked - 0.8 * retrace
        else:
            score = 0.8 - 1.5 * retrace
        bearing = (
            math.degrees(
                math.atan2(
                    float(network.x[node] - network.x[current]),
                    float(network.y[node] - network.y[current]),
                )
            )
            % 360.0
        )
        candidate = Candidate(
            id="",
            node_id=int(network.node_ids[node]),
            lat=float(network.lat[node]),
            lon=float(network.lon[node]),
            distance_m=round(length, 1),
            bearing_deg=round(bearing, 1),
            score=round(float(np.clip(score + PLANNED_BONUS, 0.0, 1.0)), 3),
            features=features,
            reason=_reason(features, length, False, False, planned=True),
            path_node_ids=network.node_ids[path_nodes].tolist(),
            path_edge_ids=network.edge_ids[path_edges_here].tolist(),
            plan_node_ids=network.node_ids[nodes[cut:]].tolist(),
            plan_edge_ids=network.edge_ids[edges[cut:]].tolist(),
        )
        ranked.append((share_rank, candidate))
    ranked.sort(key=lambda item: (item[0], -item[1].score))
    planned = _merge([candidate for share_rank, candidate in ranked if share_rank == 0], [])
    more = [candidate for share_rank, candidate in ranked if share_rank > 0]
    return planned, more


def _with_plans(
    network: Network,
    state: RouteState,
    planned: list[Candidate],
    planned_more: list[Candidate],
    others: list[Candidate],
    closing: bool,
) -> list[Candidate]:
    """Return the offer, spread in direction: `planned` first, then candidates of `others`
    with a plan of their own, then `planned_more`, then the rest of `others`.

    A candidate of `others` gets a plan where a way back from it closes the route near its
    target walking little twice (see _completion). Where too few do, candidates without
    a plan fill the offer up, so that the user still has a choice.
    """
    start = _node(network, state.start_node_id)
    route_nodes = [_node(network, node_id) for node_id in state.node_ids]
    route_edges = _edge_indices(network, state.edge_ids).tolist()
    costs = edge_costs(network, parse_preference(""))
    ctx = closing_context(network, start, costs, np.zeros(network.edge_count))
    offer = _merge(planned, [])
    plans: dict[int, tuple[list[int], list[int]] | None] = {}
    for separation in SEPARATION_STEPS:
        for candidate in others:
            if len(offer) == CANDIDATE_COUNT:
                return offer
            if _bearing_gap(candidate, offer) < separation:
                continue
            if candidate.node_id not in plans:
                # Each search costs two shortest-path trees, so it runs only for ends that
                # the offer has room for.
                path = [_node(network, node_id) for node_id in candidate.path_node_ids]
                edges = _edge_indices(network, candidate.path_edge_ids).tolist()
                plans[candidate.node_id] = _completion(
                    ctx, state, route_nodes + path[1:], route_edges + edges
                )
            plan = plans[candidate.node_id]
            if plan is None:
                continue
            offer.append(
                msgspec.structs.replace(
                    candidate,
                    score=round(min(candidate.score + PLANNED_BONUS, 1.0), 3),
                    reason=_reason(candidate.features, candidate.distance_m, closing, False, True),
                    plan_node_ids=network.node_ids[plan[0]].tolist(),
                    plan_edge_ids=network.edge_ids[plan[1]].tolist(),
                )
            )
    # Shorter and longer steps along the plans come next. Ends without a plan come last and
    # score as ends with no known way back of the right length.
    unsure = [
        msgspec.structs.replace(
            candidate, score=round(max(candidate.score - UNSURE_RETURN_PENALTY, 0.0), 3)
        )
        for candidate in others
    ]
    for group in (planned_more, unsure):
        _fill(offer, group, SEPARATION_STEPS)
    return offer


def _completion(
    ctx: ClosingContext, state: RouteState, route_nodes: list[int], route_edges: list[int]
) -> tuple[list[int], list[int]] | None:
    """Return a way from the end of a route back to the start (node and edge indices) that
    closes it near its target walking little twice, or None when none is found."""
    network = ctx.network
    factor = np.ones(network.edge_count)
    factor[route_edges] = USED_EDGE_FACTOR
    factor[stem_edges(network, ctx.start)] = 1.0
    rest = state.target_m - float(network.length[route_edges].sum())
    walk, _ = close_walk(
        ctx,
        route_nodes,
        route_edges,
        state.target_m,
        factor,
        (1.0 + PLANNED_MAX_ERROR) * max(rest, 0.0) + 100.0,
        None,
        True,
        short_rounds=1,
    )
    if (
        walk is None
        or walk.error(state.target_m) > PLANNED_MAX_ERROR
        or walk.retrace > PLAN_MAX_RETRACE
    ):
        return None
    return walk.nodes[len(route_nodes) - 1 :], walk.edges[len(route_edges) :]


def _start_loops(
    whole_network: Network,
    network: Network,
    state: RouteState,
    preference: Preference,
    seed: int,
) -> list[tuple[list[int], list[int]]]:
    """Return complete loops from the start near the target, each both ways round, as node
    and edge indices of `network`."""
    start = _node(network, state.start_node_id)
    try:
        loops = plan_loops(
            whole_network,
            float(network.lat[start]),
            float(network.lon[start]),
            state.target_m,
            preference,
            seed=seed,
            alternatives=PLANNED_LOOPS,
        )
    except PlannerError:
        return []
    plans = []
    for loop in loops:
        if abs(loop.distance_m - state.target_m) > PLANNED_MAX_ERROR * state.target_m:
            continue
        if loop.node_ids[0] != state.start_node_id:
            continue
        nodes = [network.node_index(node_id) for node_id in loop.node_ids]
        edges = [network.edge_index(edge_id) for edge_id in loop.edge_ids]
        if min(nodes) < 0 or min(edges) < 0:
            continue
        plans.append((nodes, edges))
        try:
            # The way round the other way, where every edge can be walked backwards.
            plans.append((nodes[::-1], path_edges(network, nodes[::-1])))
        except ValueError:
            pass
    return plans


def _merge(first: list[Candidate], others: list[Candidate]) -> list[Candidate]:
    """Return up to CANDIDATE_COUNT candidates, `first` before `others`, spread in direction.

    Candidates of `first` lie at least MIN_SEPARATION_DEG apart where enough of them do,
    and closer otherwise. Candidates of `others` fill up only where they lie at least
    MIN_SEPARATION_DEG from every candidate chosen.
    """
    chosen: list[Candidate] = []
    _fill(chosen, first, SEPARATION_STEPS)
    _fill(chosen, others, (MIN_SEPARATION_DEG,))
    return chosen


def _fill(offer: list[Candidate], group: list[Candidate], separations: tuple[float, ...]) -> None:
    """Append candidates of `group` to `offer` up to CANDIDATE_COUNT, in order.

    Each pass takes the candidates at least that many degrees from every one in the offer,
    so a smaller separation applies only where the larger ones leave the offer short.
    """
    for separation in separations:
        for candidate in group:
            if len(offer) == CANDIDATE_COUNT:
                return
            chosen = {offered.node_id for offered in offer}
            if candidate.node_id in chosen or _bearing_gap(candidate, offer) < separation:
                continue
            offer.append(candidate)


def _bearing_gap(candidate: Candidate, chosen: list[Candidate]) -> float:
    """Return the smallest angle in degrees between the candidate's bearing and a chosen one."""
    angles = [abs(other.bearing_deg - candidate.bearing_deg) % 360.0 for other in chosen]
    return min((min(angle, 360.0 - angle) for angle in angles), default=360.0)


def _numbered(candidates: list[Candidate], state: RouteState) -> list[Candidate]:
    """Give each candidate its id: step number, rank and node id."""
    step = len(state.waypoint_node_ids) + 1
    return [
        msgspec.structs.replace(candidate, id=f"{step}-{rank + 1}-{candidate.node_id}")
        for rank, candidate in enumerate(candidates)
    ]


def _finalize_now(network: Network, state: RouteState, back_here: float) -> bool:
    """Return whether finalize would now close the route near its target, or never nearer.

    Once the remaining distance exceeds the shortest way back avoiding the route by less
    than FINALIZE_SLACK_STEPS steps, or the rest of the route's plan is at most
    PLANNED_FINAL_STEPS steps long, this tries finalize. Finalizing is suggested when the
    closed route lands within FINALIZE_ERROR or already runs over the target.
    """
    if not state.waypoint_node_ids:
        return False
    remaining = state.remaining_m
    step = _step_length(state.target_m)
    if state.plan_edge_ids:
        # A route on its plan closes along the rest of it, which may be longer than the
        # shortest way back.
        plan_length = float(network.length[_edge_indices(network, state.plan_edge_ids)].sum())
        if plan_length > PLANNED_FINAL_STEPS * step:
            return False
    elif remaining > back_here + FINALIZE_SLACK_STEPS * step:
        return False
    try:
        walk = _closing_walk(network, state)
    except NoLoopFound:
        return True
    return walk.error(state.target_m) <= FINALIZE_ERROR or walk.length > state.target_m


def _closing_walk(network: Network, state: RouteState) -> Walk:
    """Return the walk that finalize makes of `state`: the route so far and the way back.

    The way back is the shortest one avoiding walked edges, the plain shortest one or the
    rest of the route's plan, whichever ranks better. The plain one may retrace part of the route but is the shorter
    when the route ran into a dead end. When the walk falls short of the target, a detour
    of the missing length replaces the way back if it ranks better still. Raises
    NoLoopFound when the start is out of reach.
    """
    start = _node(network, state.start_node_id)
    current = _node(network, state.node_ids[-1])
    walked = _edge_indices(network, state.edge_ids)
    nodes = [_node(network, node_id) for node_id in state.node_ids]
    factor = np.ones(network.edge_count)
    factor[walked] = USED_EDGE_FACTOR
    factor[stem_edges(network, start)] = 1.0
    costs = edge_costs(network, parse_preference(""))
    ctx = closing_context(network, start, costs, np.zeros(network.edge_count))

    target = state.target_m
    best: Walk | None = None
    shortest = np.inf
    for edge_factor in (factor, None):
        _, tree = shortest_tree(cost_matrix(network, costs, edge_factor), current, np.inf)
        if current != start and tree[start] < 0:
            raise NoLoopFound("The start cannot be reached from the last waypoint.")
        way_back = tree_path(tree, start) if current != start else [current]
        walk = measure(ctx, *join_walk(network, nodes, walked.tolist(), way_back, True))
        shortest = min(shortest, walk.length)
        if best is None or walk.rank(target) < best.rank(target):
            best = walk
    if state.plan_edge_ids:
        plan_nodes = [_node(network, node_id) for node_id in state.plan_node_ids]
        plan_edges = _edge_indices(network, state.plan_edge_ids).tolist()
        walk = measure(ctx, nodes + plan_nodes[1:], walked.tolist() + plan_edges)
        if walk.rank(target) < best.rank(target):
            best = walk
    # The way back that avoids the route may run far over the target where the plain one,
    # which retraces it, falls short. A detour then may land between the two.
    if shortest < (1.0 - CLOSING_TOLERANCE) * target:
        detour, _ = close_walk(
            ctx,
            nodes,
            walked.tolist(),
            target,
            factor,
            2.0 * max(state.remaining_m, 0.0) + 500.0,
            None,
            True,
        )
        if detour is not None and detour.rank(target) < best.rank(target):
            best = detour
    return best


def _step_length(target: float) -> float:
    return float(np.clip(target / STEPS_PER_ROUTE, MIN_STEP_M, MAX_STEP_M))


def _local_network(network: Network, state: RouteState) -> Network:
    """Return the part of `network` around the route's start that holds the whole route.

    Falls back to the whole network when the walk so far leaves that part.
    """
    if network.parent_nodes is not None:
        return network
    start = network.node_index(state.start_node_id)
    if start < 0:
        return network
    radius = LOCAL_RADIUS_SHARE * max(state.target_m, state.distance_m) + LOCAL_MARGIN_M
    local = network.around(start, radius)
    if any(local.node_index(node_id) < 0 for node_id in state.node_ids[-1:]) or any(
        local.edge_index(edge_id) < 0 for edge_id in state.edge_ids
    ):
        return network
    return local


def _check_open(state: RouteState) -> None:
    if state.finalized:
        raise RouteFinalized("The route is already closed. Start a new route to change it.")


def _node(network: Network, node_id: int) -> int:
    node = network.node_index(node_id)
    if node < 0:
        raise InvalidWaypoint(f"Node {node_id} is not part of the loaded network.")
    return node


def _edge_indices(network: Network, edge_ids: list[int]) -> np.ndarray:
    indices = np.array([network.edge_index(edge_id) for edge_id in edge_ids], dtype=np.int64)
    if (indices < 0).any():
        raise InvalidWaypoint("The route contains edges that are not in the loaded network.")
    return indices


def _way_back(
    network: Network, start: int, walked: np.ndarray, limit: float
) -> tuple[np.ndarray, np.ndarray]:
    """Return the length of the way from every node back to the start, and its tree.

    Lengths are inf where the search did not reach. The way back avoids walked edges as
    finalize does, so this predicts its length. `limit` is a length: walked edges cost
    more, so the search runs to USED_EDGE_FACTOR times it and a way back that has to
    retrace the route is still found.
    """
    limit *= USED_EDGE_FACTOR
    factor = np.ones(network.edge_count)
    factor[walked] = USED_EDGE_FACTOR
    costs = edge_costs(network, parse_preference(""))
    matrix = cost_matrix(network, costs, factor, reverse=True)
    _, tree = shortest_tree(matrix, start, limit)
    reached = np.concatenate([[start], np.flatnonzero(tree >= 0)])
    lengths = np.full(network.node_count, np.inf)
    lengths[reached] = tree_sums(network, tree, reached, network.length[:, None], True)[:, 0]
    return lengths, tree


def _path_values(network: Network, preference: Preference, walked: np.ndarray) -> np.ndarray:
    """Return per-edge length, liked length, length per feature and walked length."""
    length = network.length
    used = np.zeros(network.edge_count)
    used[walked] = 1.0
    columns = [length, length * edge_scores(network, preference)]
    columns += [length * network.features[:, index] for index in range(len(FEATURE_NAMES))]
    columns.append(length * used)
    return np.column_stack(columns)


def _tiers(
    length: np.ndarray,
    back: np.ndarray,
    retrace: np.ndarray,
    remaining: float,
    step: float,
    closing_zone: bool,
    target: float,
) -> Iterator[tuple[np.ndarray, bool, float, int]]:
    """Yield which reached nodes may be offered, best first, until one set proves usable.

    Each item is (eligible, closing, tolerance in metres, best grade). A closing end
    qualifies when the way back from it makes up the rest of the target within the
    tolerance. Otherwise an end must lie about one step away and still allow the way back.
    Limits relax in turn (retracing allowed last, for starts in a dead end). Ends of the
    last resort grade 2 at best, so that ways back over the route walked are tried first.
    """
    for max_retrace in (0.35, 1.0):
        usable = np.isfinite(back) & (retrace <= max_retrace)
        if closing_zone:
            mismatch = np.abs(length + back - remaining)
            long_enough = length >= 0.3 * min(step, remaining)
            for tolerance in (CLOSING_TOLERANCE, 1.5 * CLOSING_TOLERANCE):
                yield (
                    usable & long_enough & (mismatch <= tolerance * target),
                    True,
                    (tolerance * target),
                    0,
                )
        for low, high in ((0.6, 1.4), (0.3, 2.0)):
            eligible = usable & (length >= low * step) & (length <= high * step)
            yield eligible & (length + back <= remaining), False, 0.0, 0
    # Last resort: the ends whose way back comes closest to the rest of the target. A step
    # much shorter than planned changes nothing, and taking one after another stalls a route.
    long_enough = length >= 0.3 * min(step, remaining)
    mismatch = np.where(np.isfinite(back) & long_enough, np.abs(length + back - remaining), np.inf)
    best = float(mismatch.min(initial=np.inf))
    if best <= 0.25 * target:
        tolerance = best + CLOSING_TOLERANCE * target
        yield mismatch <= tolerance, True, tolerance, 2


@dataclasses.dataclass
class _Offer:
    """The ends reached from the route's end in one search, and the positions offered."""

    tree: np.ndarray
    reached: np.ndarray
    length: np.ndarray
    retrace: np.ndarray
    shares: np.ndarray
    score: np.ndarray
    bearings: np.ndarray
    closing: bool
    chosen: list[int]
    # Grade of each offered position (see _grade); one entry per position in `chosen`.
    levels: list[int] = dataclasses.field(default_factory=list)

    @property
    def level(self) -> int:
        return min(self.levels, default=3)

    def rank(self) -> tuple[int, int, bool]:
        """Lower is better: the best grade offered, how many ends fall short of it, then
        whether all are dead ends."""
        short = sum(level > self.level for level in self.levels)
        return self.level, short, bool((self.retrace[self.chosen] >= 0.5).all())


def _grade(
    returns: _Returns,
    offer: _Offer,
    remaining: float,
    tolerance: float,
    floor: int,
    position: int,
) -> int:
    """Rate an end by the ways back it leaves once its path is walked: 0 best, 3 unusable.

    A closing end must make up the rest of the target with its shortest way back, within
    `tolerance` metres, and then grades `floor`. Any other end is good (0) when some way
    back makes up the rest, so that finalize could land near the target from there. It is
    usable (1) when it leaves room for the shortest way back. It is a last resort (2) when
    that runs over by less than 1.5 times the closing tolerance, as at a start whose
    shortest loop is a little too long.
    """
    node = int(offer.reached[position])
    length = float(offer.length[position])
    way_back = returns.shortest(offer.tree, node, remaining - length)
    if offer.closing:
        return floor if abs(length + way_back - remaining) <= tolerance else 3
    over = length + way_back * RETURN_ALLOWANCE - remaining
    if over > 1.5 * returns.tolerance:
        return 3
    if over > 0.0:
        return 2
    return 0 if returns.closes(offer.tree, node, remaining - length) else 1


class _Returns:
    """The ways back from an end once the path to it is walked too.

    Where the shortest way back shares no edge with the path to the end, it stays the
    shortest and `back_tree` gives its length. Otherwise a search from the end finds it.
    The same search shows whether a way back of a given length exists through some node B. The number of searches is bounded (RETURN_SEARCH_NODES); ends beyond that
    count as having no way back.
    """

    def __init__(
        self,
        network: Network,
        start: int,
        walked: np.ndarray,
        back_lengths: np.ndarray,
        back_tree: np.ndarray,
        tolerance: float,
        penalty: float = USED_EDGE_FACTOR,
    ) -> None:
        self.network = network
        self.penalty = penalty
        self.start = start
        self.walked = walked
        self.back_lengths = back_lengths
        self.back_tree = back_tree
        self.back_edges = self._edges_to_parent(back_tree, reverse=True)
        # Edge to the parent of every node, per tree of ends searched from the route's end.
        # The key is the tree's id, and the tree itself is kept to check that id.
        self.out_edges: dict[int, tuple[np.ndarray, list[int]]] = {}
        self.tolerance = tolerance
        self.costs = edge_costs(network, parse_preference(""))
        self.searches = 0
        self.max_searches = max(RETURN_CHECKS, RETURN_SEARCH_NODES // network.node_count)
        self.found: dict[int, tuple | None] = {}
        self.shortest_known: dict[int, float] = {}

    def shortest(self, tree: np.ndarray, node: int, rest: float) -> float:
        """Return the length of the shortest way back from `node` (inf: none found).

        `rest` is the length the way back should have; much longer ways count as none.
        """
        if node in self.shortest_known:
            return self.shortest_known[node]
        self.shortest_known[node] = self._shortest(tree, node, rest)
        return self.shortest_known[node]

    def _shortest(self, tree: np.ndarray, node: int, rest: float) -> float:
        if not np.isfinite(self.back_lengths[node]):
            return np.inf
        if self.penalty == USED_EDGE_FACTOR and not self._shares_edge(tree, node):
            return float(self.back_lengths[node])
        found = self._search(tree, node, rest)
        return np.inf if found is None else found[0]

    def _edges_to_parent(self, tree: np.ndarray, reverse: bool) -> list[int]:
        """Return, per node, the edge to its parent in `tree` (-1 for the root and unreached)."""
        reached = np.flatnonzero(tree >= 0)
        edges = np.full(self.network.node_count, -1, dtype=np.int64)
        edges[reached] = tree_edges(self.network, tree, reached, reverse)
        return edges.tolist()

    def _shares_edge(self, tree: np.ndarray, node: int) -> bool:
        """Tell whether the shortest way back from `node` uses an edge of the path to it."""
        known = self.out_edges.get(id(tree))
        if known is None or known[0] is not tree:
            known = (tree, self._edges_to_parent(tree, reverse=False))
            self.out_edges[id(tree)] = known
        out_edges = known[1]
        on_path: set[int] = set()
        item = tree.item
        current = node
        while item(current) >= 0:
            on_path.add(out_edges[current])
            current = item(current)
        back_edges = self.back_edges
        item = self.back_tree.item
        current = node
        while item(current) >= 0:
            if back_edges[current] in on_path:
                return True
            current = item(current)
        return False

    def closes(self, tree: np.ndarray, node: int, rest: float) -> bool:
        """Return whether a way back from `node` of `rest` metres (within the tolerance) exists.

        It is the shortest way back or one through a node B, measured as the shortest
        path to B plus the shortest way back from B, both avoiding the path to `node`,
        where B is no place to turn back.
        """
        found = self._search(tree, node, rest)
        if found is None:
            return False
        shortest, out_cost, out_tree, back_cost, back_tree = found
        if abs(shortest - rest) <= self.tolerance:
            return True
        via = np.flatnonzero((out_tree >= 0) & (back_tree >= 0))
        via = via[out_tree[via] != back_tree[via]]
        # Costs equal lengths on ways not walked before and exceed them on walked ones, so
        # a way through B that walks the route again counts as longer than it is.
        total = out_cost[via] + back_cost[via]
        return bool((np.abs(total - rest) <= self.tolerance).any())

    def _search(self, tree: np.ndarray, node: int, rest: float) -> tuple | None:
        """Search from `node` and back to the start with the path to `node` walked too.

        Returns the length of the shortest way back, then the costs and tree of paths from
        `node` and of ways back to the start; None when the searches ran out.
        """
        if node in self.found:
            return self.found[node]
        if self.searches >= self.max_searches:
            return None
        self.searches += 1
        network = self.network
        factor = np.ones(network.edge_count)
        factor[self.walked] = self.penalty
        factor[path_edges(network, tree_path(tree, node))] = self.penalty
        factor[stem_edges(network, self.start)] = 1.0
        # Ways back much longer than the rest of the target are of no use; walked edges
        # cost `penalty` times their length.
        limit = max(rest, 0.0) * self.penalty + 10.0 * self.tolerance
        found: list = []
        for root, reverse in ((node, False), (self.start, True)):
            matrix = cost_matrix(network, self.costs, factor, reverse=reverse)
            found += shortest_tree(matrix, root, limit)
        out_tree = found[1]
        shortest = np.inf
        if node == self.start or out_tree[self.start] >= 0:
            shortest = float(
                network.length[path_edges(network, tree_path(out_tree, self.start))].sum()
            )
        self.found[node] = (shortest, *found)
        return self.found[node]


def _spread(
    order: np.ndarray, bearings: np.ndarray, grade: Callable[[int], int]
) -> tuple[list[int], list[int]]:
    """Pick up to CANDIDATE_COUNT positions of `order`, best grade first, spread in direction.

    `grade` rates a position from 0 (good) to 2 (usable), or 3 (not usable). Positions of
    the best grade found come first, at least MIN_SEPARATION_DEG apart where possible.
    Positions of the next grades fill the offer up, but only grades 0 and 1 mix.
    Returns the positions and their grades. `grade` runs at most once per position.
    """
    known: dict[int, int] = {}

    def check(position: int) -> int:
        if position not in known:
            known[position] = grade(position)
        return known[position]

    # Bearings as plain floats by position, in the given order, because numpy is slower on
    # a few values.
    bearing = dict(zip(order.tolist(), bearings[order].tolist()))
    chosen: list[int] = []

    def apart(position: int) -> float:
        """Return the smallest angle between the position's bearing and a chosen one."""
        angles = [abs(bearing[other] - bearing[position]) % 360.0 for other in chosen]
        return min((min(angle, 360.0 - angle) for angle in angles), default=360.0)

    levels: list[int] = []
    for level in (0, 1, 2):
        if levels and (levels[0] > 0 or level > 1):
            break
        for separation in SEPARATION_STEPS:
            for position in bearing:
                if position in chosen:
                    continue
                if apart(position) < separation:
                    continue
                if check(position) != level:
                    continue
                chosen.append(position)
                levels.append(level)
                if len(chosen) == CANDIDATE_COUNT:
                    return chosen, levels
    return chosen, levels


def _reason(
    features: dict[str, float], length: float, closing: bool, unsure: bool, planned: bool = False
) -> str:
    green = max(features["green"], features["park"])
    if green > 0.5:
        parts = ["mostly through parks"]
    elif green > 0.2:
        parts = ["partly through parks"]
    elif features["quiet"] >= 0.6:
        parts = ["on quiet streets"]
    else:
        parts = ["along streets"]
    parts.append(f"{length:.0f} m")
    if features["water"] > 0.15:
        parts.append("passes water")
    if features["poi"] > 0.2:
        parts.append("passes sights")
    if features["retrace"] > 0.1:
        parts.append("partly retraces your route")
    if closing:
        parts.append("then about the right distance back to the start")
    elif planned:
        parts.append("on a loop that returns to the start at about your distance")
    elif unsure:
        parts.append("the way back from there may not fit your distance")
    return ", ".join(parts)
