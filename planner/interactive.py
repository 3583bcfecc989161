"""Step-by-step route building: suggest three waypoints, add one, close back to the start.

The route state is a msgspec Struct of JSON types with OSM node and edge ids, so a server
can store it between requests (`msgspec.to_builtins(state)`, `RouteState.from_dict`) and
any process holding the same network can continue it.
"""

from __future__ import annotations

import math

import msgspec
import numpy as np

from planner.closing import Walk, close_walk, join_walk, measure, stem_edges
from planner.closing import context as closing_context
from planner.errors import InvalidWaypoint, NoLoopFound, RouteFinalized
from planner.network import FEATURE_NAMES, Network
from planner.preferences import Preference, parse_preference
from planner.routing import (
    USED_EDGE_FACTOR,
    cost_matrix,
    edge_costs,
    edge_scores,
    path_edges,
    shortest_tree,
    tree_path,
    tree_sums,
)
from planner.snap import snap_start
from planner.walks import (
    Segment,
    feature_shares,
    walk_coordinates,
    walk_segments,
)

CANDIDATE_COUNT = 3
MIN_SEPARATION_DEG = 60.0

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

# Outside the closing step, candidates lie at least this many steps from the start.
NEAR_START_STEPS = 0.25

# Searches run on the network within this share of the target around the start (straight
# line), plus the margin: a route of about the target length never leaves that circle.
LOCAL_RADIUS_SHARE = 0.55
LOCAL_MARGIN_M = 300.0

# Best-scored ends checked for a way back that reuses their own path.
OVERLAP_CHECKS = 40

WALK_STEP_M = 0.8

# Multiples of the step length tried in turn when no end about one step away qualifies.
STEP_SCALES = (1.0, 3.0)


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
    add_waypoint accepts only offered candidates. Returns no candidates when the remaining
    distance is about the way back to the start.
    """
    _check_open(state)
    if not isinstance(preference, Preference):
        preference = parse_preference(preference)
    network = _local_network(network, state)
    start = _node(network, state.start_node_id)
    current = _node(network, state.node_ids[-1])
    walked = _edge_indices(network, state.edge_ids)
    remaining = state.remaining_m
    step = _step_length(state.target_m)
    back, back_tree = _way_back(network, start, walked, max(remaining, step) * 2.5)

    back_here = float(back[current])
    state.finalize_suggested = bool(
        state.waypoint_node_ids and remaining <= back_here + FINALIZE_SLACK_STEPS * step
    )
    if state.finalize_suggested:
        state.candidates = []
        return []
    closing = remaining <= back_here + 1.5 * step

    # Shortest paths from the route's end, with walked edges made expensive. Where ways are
    # longer than a step (mountain paths), longer steps are tried before giving up.
    factor = np.ones(network.edge_count)
    factor[walked] = USED_EDGE_FACTOR
    costs = edge_costs(network, preference)
    matrix = cost_matrix(network, costs, factor)
    values = _path_values(network, preference, walked)
    was_closing = closing
    found = None
    for step_scale in STEP_SCALES:
        step_here = step * step_scale
        closing = was_closing
        reach = max(remaining, step_here) * 1.5 if closing else step_here * 1.5
        _, tree = shortest_tree(matrix, current, reach)
        reached = np.flatnonzero(tree >= 0)
        if reached.size == 0:
            # The end is in a walked dead end, so the way out costs USED_EDGE_FACTOR times
            # more.
            _, tree = shortest_tree(matrix, current, reach * USED_EDGE_FACTOR)
            reached = np.flatnonzero(tree >= 0)
        if reached.size == 0:
            continue
        sums = tree_sums(network, tree, reached, values)
        length = sums[:, 0]
        shares = sums[:, 1:] / np.maximum(length, 1.0)[:, None]
        back_reached = back[reached] * RETURN_ALLOWANCE
        retrace = shares[:, -1]
        # A dead-end tip as waypoint forces walking back the same way, so offer it only as a
        # last resort by treating its path as retraced.
        dead_end = np.diff(network.csr.indptr)[reached] <= 1
        retrace = np.where(dead_end, np.maximum(retrace, 0.5), retrace)
        eligible, closing = _eligible(
            length, back_reached, retrace, remaining, step_here, closing, state.target_m
        )
        if not closing:
            # A step that ends back at the start leaves nothing to close the loop with.
            eligible &= back[reached] >= NEAR_START_STEPS * step
        if not eligible.any():
            continue
        if found is None or (found[5][found[4]] >= 0.5).all():
            found = (step_here, tree, reached, length, eligible, retrace, shares, closing)
        # Ends that only retrace (dead-end tips) make longer steps worth a try.
        if (retrace[eligible] < 0.5).any():
            break
    if found is None:
        state.finalize_suggested = bool(state.waypoint_node_ids)
        state.candidates = []
        return []
    step, tree, reached, length, eligible, retrace, shares, closing = found

    liked = shares[:, 0]
    rng = np.random.default_rng(seed if seed is not None else len(state.waypoint_node_ids))
    score = 0.25 + 0.6 * liked - 0.8 * retrace if preference.groups else 0.8 - 1.5 * retrace
    if not closing:
        score -= 0.1 * np.abs(length - step) / step
    score = np.clip(score + rng.uniform(0.0, 0.02, size=score.shape[0]), 0.0, 1.0)

    bearings = (
        np.degrees(
            np.arctan2(
                network.x[reached] - network.x[current], network.y[reached] - network.y[current]
            )
        )
        % 360.0
    )
    offered = _without_overlap(
        network, np.flatnonzero(eligible), score, reached, tree, back_tree, start
    )
    chosen = _spread(offered, score, bearings)

    candidates = []
    for rank, position in enumerate(chosen):
        node = int(reached[position])
        path = tree_path(tree, node)
        edges = path_edges(network, path)
        features = {
            name: round(float(shares[position, 1 + index]), 3)
            for index, name in enumerate(FEATURE_NAMES)
        }
        features["retrace"] = round(float(retrace[position]), 3)
        candidates.append(
            Candidate(
                id=f"{len(state.waypoint_node_ids) + 1}-{rank + 1}-{network.node_ids[node]}",
                node_id=int(network.node_ids[node]),
                lat=float(network.lat[node]),
                lon=float(network.lon[node]),
                distance_m=round(float(length[position]), 1),
                bearing_deg=round(float(bearings[position]), 1),
                score=round(float(score[position]), 3),
                features=features,
                reason=_reason(features, float(length[position]), closing),
                path_node_ids=network.node_ids[path].tolist(),
                path_edge_ids=network.edge_ids[edges].tolist(),
            )
        )
    state.candidates = candidates
    return candidates


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
    )
    network = _local_network(network, new_state)
    start = _node(network, state.start_node_id)
    walked = _edge_indices(network, edge_ids)
    back, _ = _way_back(network, start, walked, new_state.remaining_m * 1.5 + 1000.0)
    here = float(back[_node(network, candidate.node_id)])
    step = _step_length(state.target_m)
    new_state.finalize_suggested = bool(new_state.remaining_m <= here + FINALIZE_SLACK_STEPS * step)
    return new_state


def finalize(network: Network, state: RouteState) -> FinalRoute:
    """Close the route back to the start so that it reaches the target where it can.

    When the remaining distance exceeds the shortest way back, the way back makes a detour
    of about the difference. Walked edges are avoided where possible. Marks `state`
    finalized (in place). Raises RouteFinalized when it already is and NoLoopFound when no
    waypoint was added or the start cannot be reached.
    """
    _check_open(state)
    if not state.waypoint_node_ids:
        raise NoLoopFound("Add at least one waypoint before closing the route.")
    network = _local_network(network, state)
    start = _node(network, state.start_node_id)
    current = _node(network, state.node_ids[-1])
    walked = _edge_indices(network, state.edge_ids)
    nodes = [_node(network, node_id) for node_id in state.node_ids]
    factor = np.ones(network.edge_count)
    factor[walked] = USED_EDGE_FACTOR
    factor[stem_edges(network, start)] = 1.0
    costs = edge_costs(network, parse_preference(""))
    ctx = closing_context(network, start, costs, np.zeros(network.edge_count))

    # The shortest way back avoiding walked edges, and the plain shortest one, which may
    # retrace part of the route but is the shorter when the route ran into a dead end.
    target = state.target_m
    best: Walk | None = None
    for edge_factor in (factor, None):
        _, tree = shortest_tree(cost_matrix(network, costs, edge_factor), current, np.inf)
        if current != start and tree[start] < 0:
            raise NoLoopFound("The start cannot be reached from the last waypoint.")
        way_back = tree_path(tree, start) if current != start else [current]
        walk = measure(ctx, *join_walk(network, nodes, walked.tolist(), way_back, True))
        if best is None or walk.rank(target) < best.rank(target):
            best = walk
    if best.length < (1.0 - CLOSING_TOLERANCE) * target:
        detour, _ = close_walk(
            ctx, nodes, walked.tolist(), target, factor, 2.0 * state.remaining_m + 500.0, None, True
        )
        if detour is not None and detour.rank(target) < best.rank(target):
            best = detour

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


def _eligible(
    length: np.ndarray,
    back: np.ndarray,
    retrace: np.ndarray,
    remaining: float,
    step: float,
    closing: bool,
    target: float,
) -> tuple[np.ndarray, bool]:
    """Return which reached nodes may be offered, and whether they close the route.

    In the closing step an end qualifies when the way back from it makes up the rest of
    the target. Otherwise it must lie about one step away and still allow the way back.
    Limits relax in turn (retracing allowed last, for starts in a dead end) until some
    node qualifies.
    """
    for max_retrace in (0.35, 1.0):
        usable = np.isfinite(back) & (retrace <= max_retrace)
        if closing:
            mismatch = np.abs(length + back - remaining)
            long_enough = length >= 0.3 * min(step, remaining)
            for tolerance in (CLOSING_TOLERANCE, 2 * CLOSING_TOLERANCE):
                eligible = usable & long_enough & (mismatch <= tolerance * target)
                if eligible.any():
                    return eligible, True
        for low, high in ((0.6, 1.4), (0.3, 2.0)):
            eligible = usable & (length >= low * step) & (length <= high * step)
            eligible &= length + back <= remaining
            if eligible.any():
                return eligible, False
    # Last resort: the ends whose way back comes closest to the rest of the target.
    mismatch = np.where(np.isfinite(back), np.abs(length + back - remaining), np.inf)
    best = float(mismatch.min(initial=np.inf))
    if best <= 0.25 * target:
        return mismatch <= best + CLOSING_TOLERANCE * target, True
    return np.zeros(length.shape[0], dtype=bool), False


def _without_overlap(
    network: Network,
    eligible: np.ndarray,
    score: np.ndarray,
    reached: np.ndarray,
    tree: np.ndarray,
    back_tree: np.ndarray,
    start: int,
) -> np.ndarray:
    """Keep the best eligible ends whose path does not share edges with their way back.

    When the two share no edge, adding the step leaves the predicted way back unchanged,
    so the length estimate holds. Only the OVERLAP_CHECKS best are examined.
    """
    order = eligible[np.argsort(-score[eligible], kind="stable")][:OVERLAP_CHECKS]
    kept = []
    for position in order.tolist():
        node = int(reached[position])
        out_edges = path_edges(network, tree_path(tree, node))
        back_edges = path_edges(network, tree_path(back_tree, node)[::-1])
        if not set(out_edges) & set(back_edges):
            kept.append(position)
    return np.asarray(kept if kept else order, dtype=np.int64)


def _spread(eligible: np.ndarray, score: np.ndarray, bearings: np.ndarray) -> list[int]:
    """Pick the best-scored positions that lie at least MIN_SEPARATION_DEG apart."""
    order = eligible[np.argsort(-score[eligible], kind="stable")]
    for separation in (MIN_SEPARATION_DEG, 40.0, 0.0):
        chosen: list[int] = []
        for position in order.tolist():
            difference = np.abs((bearings[chosen] - bearings[position]) % 360.0)
            if chosen and np.minimum(difference, 360.0 - difference).min() < separation:
                continue
            chosen.append(position)
            if len(chosen) == CANDIDATE_COUNT:
                return chosen
        if len(chosen) == min(CANDIDATE_COUNT, order.shape[0]) and separation == 0.0:
            return chosen
    return chosen


def _reason(features: dict[str, float], length: float, closing: bool) -> str:
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
    return ", ".join(parts)
