"""Closed walking loops of a target length from one start, via two waypoints."""

from __future__ import annotations

import math
from dataclasses import dataclass

import msgspec
import numpy as np

from planner.errors import NoLoopFound
from planner.network import Network
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
    edge_jaccard,
    feature_shares,
    retrace_length,
    trim_spurs,
    walk_coordinates,
    walk_segments,
)

DEFAULT_SEED = 10_000

# A loop within this relative error ends the search early; beyond the max it is rejected.
GOOD_ERROR = 0.03
MAX_ERROR = 0.25

# Loops of one answer must share less than this edge Jaccard index.
MAX_JACCARD = 0.5

# Edges of earlier alternatives cost this much more, so later loops look elsewhere.
EARLIER_LOOP_FACTOR = 3.0

# The first waypoint A lies this share of the target from the start along the network, and
# the second waypoint B about this many degrees further round (clockwise or not, by seed).
FIRST_LEG_SHARE = 0.3
SECOND_WAYPOINT_TURN = 75.0

# Waypoint pairs tried per round, best estimate first, and rounds of length correction.
CANDIDATES_PER_ROUND = 4
CORRECTION_ROUNDS = 3
FIRST_WAYPOINT_TRIES = 3


class Loop(msgspec.Struct, frozen=True):
    """A closed walk: coordinates are (lon, lat) with the first point equal to the last."""

    coordinates: list[tuple[float, float]]
    distance_m: float
    node_ids: list[int]
    edge_ids: list[int]
    segments: list[Segment]
    green_share: float
    water_share: float
    quiet_share: float
    retrace_share: float
    snap_distance_m: float


@dataclass
class _Walk:
    nodes: list[int]
    edges: list[int]
    length: float
    retrace: float
    preference_share: float

    def error(self, target: float) -> float:
        return abs(self.length - target) / target

    def rank(self, target: float) -> float:
        """Lower is better: distance error first, then retracing, then the preference."""
        error = self.error(target)
        over = max(error - GOOD_ERROR, 0.0)
        return error + 10.0 * over + 1.5 * self.retrace - 0.15 * self.preference_share


def plan_loops(
    network: Network,
    lat: float,
    lon: float,
    target_m: float,
    preference: Preference | str | None = None,
    seed: int | None = None,
    alternatives: int = 3,
) -> list[Loop]:
    """Plan up to `alternatives` distinct closed loops of about `target_m` from (lat, lon).

    The same seed gives the same loops; None means DEFAULT_SEED. Raises StartNotFound
    when no usable way is near the start, NoLoopFound when no loop comes within
    MAX_ERROR of the target. Fewer loops than asked are returned when the network has no
    more that differ enough.
    """
    if not (math.isfinite(target_m) and target_m > 0):
        raise ValueError(f"target_m must be a positive number of metres, got {target_m!r}")
    if not isinstance(preference, Preference):
        preference = parse_preference(preference)
    alternatives = max(int(alternatives), 1)
    start = snap_start(network, lat, lon, min_component_m=0.5 * target_m)
    rng = np.random.default_rng(DEFAULT_SEED if seed is None else seed)
    search = _LoopSearch(network, preference, start.node, target_m)

    first_bearing = float(rng.uniform(0.0, 360.0))
    turn = SECOND_WAYPOINT_TURN * float(rng.choice([-1.0, 1.0]))
    walks: list[_Walk] = []
    earlier = np.ones(network.edge_count, dtype=np.float64)
    # Extra bearings are tried when an alternative turns out too close to an earlier one.
    offsets = [index * 360.0 / alternatives for index in range(alternatives)]
    offsets += [offset + 180.0 / alternatives for offset in offsets]
    for offset in offsets:
        if len(walks) >= alternatives:
            break
        walk = search.find(first_bearing + offset, turn, earlier)
        if walk is None or walk.error(target_m) > MAX_ERROR:
            continue
        if any(edge_jaccard(walk.edges, other.edges) >= MAX_JACCARD for other in walks):
            continue
        walks.append(walk)
        earlier[walk.edges] = EARLIER_LOOP_FACTOR

    if not walks:
        raise NoLoopFound(
            f"No loop of about {target_m:.0f} m found from the start: the walkable network "
            f"reachable there is too small or too broken up. Try a shorter distance or "
            "another start."
        )
    walks.sort(key=lambda walk: walk.rank(target_m))
    return [_to_loop(network, walk, start.distance_m) for walk in walks]


class _LoopSearch:
    """Shared state of one request: the start's shortest-path tree and edge costs."""

    def __init__(self, network: Network, preference: Preference, start: int, target: float):
        self.network = network
        self.start = start
        self.target = target
        self.costs = edge_costs(network, preference)
        scores = edge_scores(network, preference)
        self.values = np.column_stack([network.length, network.length * scores])
        self.limit = 0.75 * target * (1.5 if preference.avoid else 1.0)

        matrix = cost_matrix(network, self.costs)
        _, self.start_tree = shortest_tree(matrix, start, self.limit)
        self.start_reached = np.flatnonzero(self.start_tree >= 0)
        sums = tree_sums(network, self.start_tree, self.start_reached, self.values)
        self.start_real = sums[:, 0]
        self.start_liked = sums[:, 1]
        self.stem = _stem_edges(network, start)
        self.bearing = _bearings(network, start)
        self.crow = np.hypot(network.x - network.x[start], network.y - network.y[start])

    def find(self, bearing: float, turn: float, earlier: np.ndarray) -> _Walk | None:
        """Search loops whose first waypoint lies near `bearing`; return the best one."""
        best: _Walk | None = None
        leg_share = FIRST_LEG_SHARE
        for _ in range(FIRST_WAYPOINT_TRIES):
            first = self._first_waypoint(bearing, leg_share * self.target)
            if first is None:
                return best
            walk, estimate_ratio = self._close_loop(first, bearing + turn, earlier)
            if walk is not None and (best is None or walk.rank(self.target) < best.rank(
                self.target
            )):
                best = walk
            if best is not None and best.error(self.target) <= GOOD_ERROR:
                return best
            # The reachable loops were all too short or too long: move A out or in.
            leg_share = float(np.clip(leg_share / max(estimate_ratio, 0.3), 0.12, 0.45))
        return best

    def _first_waypoint(self, bearing: float, distance: float) -> int | None:
        nodes = self.start_reached
        real = self.start_real
        angle = _angle_between(self.bearing[nodes], bearing)
        for window in (35.0, 70.0, 180.0):
            ring = (np.abs(real - distance) <= 0.2 * distance) & (angle <= window)
            if ring.any():
                candidates = np.flatnonzero(ring)
                liked = self.start_liked[candidates] / np.maximum(real[candidates], 1.0)
                score = (
                    angle[candidates] / window
                    + np.abs(real[candidates] - distance) / distance
                    - 0.5 * liked
                )
                return int(nodes[candidates[np.argmin(score)]])
        return None

    def _close_loop(
        self, first: int, bearing: float, earlier: np.ndarray
    ) -> tuple[_Walk | None, float]:
        """Choose the second waypoint B so that start -> A -> B -> start hits the target.

        Returns the best walk and the ratio of the longest estimate to the target.
        """
        network = self.network
        first_path = tree_path(self.start_tree, first)
        first_edges = path_edges(network, first_path)
        first_length = float(network.length[first_edges].sum())

        factor = earlier.copy()
        factor[first_edges] *= USED_EDGE_FACTOR
        # The stem of a dead-end start is the only way back, so it keeps its normal cost.
        factor[self.stem] = earlier[self.stem]
        _, out_tree = shortest_tree(cost_matrix(network, self.costs, factor), first, self.limit)
        _, back_tree = shortest_tree(
            cost_matrix(network, self.costs, factor, reverse=True), self.start, self.limit
        )

        # Nodes reached by both trees, in the sector where B should lie.
        both = np.flatnonzero((out_tree >= 0) & (back_tree >= 0))
        both = both[(both != first) & (both != self.start)]
        if both.size == 0:
            return None, 0.0
        out_sums = _sums_for(network, out_tree, first, both, self.values, reverse=False)
        back_sums = _sums_for(network, back_tree, self.start, both, self.values, reverse=True)
        estimate = first_length + out_sums[:, 0] + back_sums[:, 0]
        ratio = float(estimate.max()) / self.target
        crow_first = np.hypot(network.x[both] - network.x[first], network.y[both] - network.y[first])
        detour = (out_sums[:, 0] + back_sums[:, 0]) / (crow_first + self.crow[both] + 1.0)
        liked = (out_sums[:, 1] + back_sums[:, 1]) / np.maximum(
            out_sums[:, 0] + back_sums[:, 0], 1.0
        )
        angle = _angle_between(self.bearing[both], bearing)

        best: _Walk | None = None
        goal = self.target
        tried: set[int] = set()
        for _ in range(CORRECTION_ROUNDS):
            error = np.abs(estimate - goal) / self.target
            rank = (
                error * 4.0
                + np.maximum(detour - 1.4, 0.0)
                + np.maximum(angle - 45.0, 0.0) / 90.0
                - 0.3 * liked
            )
            order = np.argsort(rank)[: CANDIDATES_PER_ROUND * 3]
            checked = 0
            for position in order.tolist():
                second = int(both[position])
                if second in tried:
                    continue
                tried.add(second)
                walk = self._build(first_path, out_tree, back_tree, second)
                checked += 1
                if walk is not None and (best is None or walk.rank(self.target) < best.rank(
                    self.target
                )):
                    best = walk
                if checked >= CANDIDATES_PER_ROUND:
                    break
            if best is None or best.error(self.target) <= GOOD_ERROR:
                break
            # Spur trimming and shared stretches make real loops differ from the estimate.
            goal += self.target - best.length
        return best, ratio

    def _build(
        self,
        first_path: list[int],
        out_tree: np.ndarray,
        back_tree: np.ndarray,
        second: int,
    ) -> _Walk | None:
        network = self.network
        middle = tree_path(out_tree, second)
        back = tree_path(back_tree, second)[::-1]
        nodes = first_path + middle[1:] + back[1:]
        edges = path_edges(network, nodes)
        nodes, edges = trim_spurs(nodes, edges)
        if len(edges) < 3:
            return None
        index = np.asarray(edges, dtype=np.int64)
        length = float(network.length[index].sum())
        liked = float(self.values[index, 1].sum()) / max(length, 1.0)
        retrace = retrace_length(network, edges) / max(length, 1.0)
        return _Walk(nodes, edges, length, retrace, liked)


def _sums_for(
    network: Network,
    tree: np.ndarray,
    root: int,
    nodes: np.ndarray,
    values: np.ndarray,
    reverse: bool,
) -> np.ndarray:
    reached = np.flatnonzero(tree >= 0)
    reached = np.concatenate([[root], reached])
    sums = tree_sums(network, tree, reached, values, reverse=reverse)
    position = np.full(network.node_count, -1, dtype=np.int64)
    position[reached] = np.arange(reached.shape[0])
    return sums[position[nodes]]


def _stem_edges(network: Network, start: int) -> np.ndarray:
    """Return the edges from a dead-end start to the first junction (none otherwise)."""
    neighbours = network.cache.get("undirected_degree")
    if neighbours is None:
        neighbours = np.maximum(np.diff(network.csr.indptr), np.diff(network.csr_reverse.indptr))
        network.cache["undirected_degree"] = neighbours
    stem: list[int] = []
    previous, current = -1, start
    if neighbours[current] != 1:
        return np.zeros(0, dtype=np.int64)
    while len(stem) < network.node_count:
        row = slice(network.csr.indptr[current], network.csr.indptr[current + 1])
        following = [
            (int(node), int(edge))
            for node, edge in zip(network.csr.indices[row], network.csr_edge[row])
            if node != previous
        ]
        if len(following) != 1:
            break
        previous, (current, edge) = current, following[0]
        stem.append(edge)
        if neighbours[current] > 2:
            break
    return np.asarray(stem, dtype=np.int64)


def _bearings(network: Network, origin: int) -> np.ndarray:
    """Return the compass bearing in degrees from `origin` to every node."""
    dx = network.x - network.x[origin]
    dy = network.y - network.y[origin]
    return np.degrees(np.arctan2(dx, dy)) % 360.0


def _angle_between(bearings: np.ndarray, bearing: float) -> np.ndarray:
    difference = np.abs((bearings - bearing) % 360.0)
    return np.minimum(difference, 360.0 - difference)


def _to_loop(network: Network, walk: _Walk, snap_distance_m: float) -> Loop:
    coordinates = walk_coordinates(network, walk.nodes, walk.edges)
    coordinates[-1] = coordinates[0]
    shares = feature_shares(network, walk.edges)
    return Loop(
        coordinates=coordinates,
        distance_m=round(walk.length, 1),
        node_ids=network.node_ids[walk.nodes].tolist(),
        edge_ids=network.edge_ids[walk.edges].tolist(),
        segments=walk_segments(network, walk.edges),
        green_share=round(shares["green"], 4),
        water_share=round(shares["water"], 4),
        quiet_share=round(shares["quiet"], 4),
        retrace_share=round(walk.retrace, 4),
        snap_distance_m=round(snap_distance_m, 1),
    )
