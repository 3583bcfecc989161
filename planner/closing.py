"""Closing a walk back to its start so that the whole walk reaches a target length.

Both complete loops (start -> A, then close) and step-by-step routes (the walk so far, then
close) end with the same search: pick a via node B so that walk + (end -> B) + (B -> start)
matches the target, with edges already walked made expensive so the way back differs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.network import Network
from planner.routing import (
    cost_matrix,
    path_edges,
    shortest_tree,
    tree_path,
    tree_sums,
)
from planner.walks import retrace_length, stem_length, trim_spurs

# A walk within this relative error ends the search early.
GOOD_ERROR = 0.03

# Weight of the liked share of a walk against its relative distance error in rankings.
PREFERENCE_WEIGHT = 0.3

# Via nodes built and measured per round, and rounds of length correction.
CANDIDATES_PER_ROUND = 4
CORRECTION_ROUNDS = 3


@dataclass
class Walk:
    """A closed walk as node and edge indices of one network, with its measures."""

    nodes: list[int]
    edges: list[int]
    length: float
    retrace: float
    preference_share: float
    # Share of the length in the stem: the shared start and end walked out and back.
    stem: float = 0.0

    def error(self, target: float) -> float:
        return abs(self.length - target) / target

    def rank(self, target: float) -> float:
        """Lower is better: distance error first, then retracing, then the preference."""
        error = self.error(target)
        over = max(error - GOOD_ERROR, 0.0)
        return error + 10.0 * over + 1.5 * self.retrace - PREFERENCE_WEIGHT * self.preference_share


@dataclass
class ClosingContext:
    """Per-request inputs shared by every closing search from one start."""

    network: Network
    start: int
    costs: np.ndarray
    # Columns: edge length, and edge length times the preference score.
    values: np.ndarray
    # Straight-line distance of every node to the start, in metres.
    crow: np.ndarray
    # Compass bearing of every node seen from the start, in degrees.
    bearing: np.ndarray


def context(network: Network, start: int, costs: np.ndarray, scores: np.ndarray) -> ClosingContext:
    dx = network.x - network.x[start]
    dy = network.y - network.y[start]
    return ClosingContext(
        network=network,
        start=start,
        costs=costs,
        values=np.column_stack([network.length, network.length * scores]),
        crow=np.hypot(dx, dy),
        bearing=np.degrees(np.arctan2(dx, dy)) % 360.0,
    )


def angle_between(bearings: np.ndarray, bearing: float) -> np.ndarray:
    difference = np.abs((bearings - bearing) % 360.0)
    return np.minimum(difference, 360.0 - difference)


def close_walk(
    ctx: ClosingContext,
    prefix_nodes: list[int],
    prefix_edges: list[int],
    goal: float,
    factor: np.ndarray,
    limit: float,
    bearing: float | None = None,
    keep_prefix: bool = False,
    min_length: float = 0.0,
    out_tree: np.ndarray | None = None,
    short_rounds: int = CORRECTION_ROUNDS,
) -> tuple[Walk | None, float]:
    """Close `prefix` (a walk from the start) back to the start with total length `goal`.

    `factor` multiplies edge costs (edges already walked cost more). B is searched within
    cost `limit` of the walk's end and of the start. With `bearing`, B near that compass
    direction from the start is preferred. With `keep_prefix`, spur trimming never cuts into
    the prefix (a route the user chose). Returns the best walk and the ratio of the longest
    estimated closed walk to `goal` (0 when no B was reachable). The walk is None when no B
    was reachable or when even the longest estimate is shorter than `min_length`: spur
    trimming only shortens a walk, so no walk built then would reach it. `out_tree` is
    the predecessor array of the search from the walk's end under `factor` and `limit`,
    when the caller has already run it. When even the longest estimate misses `goal` by
    more than GOOD_ERROR, no walk can come within it, and only `short_rounds` rounds of
    candidates are built.
    """
    network = ctx.network
    end = prefix_nodes[-1]
    prefix_length = float(network.length[prefix_edges].sum()) if prefix_edges else 0.0
    if out_tree is None:
        _, out_tree = shortest_tree(cost_matrix(network, ctx.costs, factor), end, limit)
    _, back_tree = shortest_tree(
        cost_matrix(network, ctx.costs, factor, reverse=True), ctx.start, limit
    )

    # Nodes reached by both trees. When the way back from B starts where the way to B came
    # from, the walk turns back at B and spur trimming cuts it short, so such B are skipped.
    both = np.flatnonzero((out_tree >= 0) & (back_tree >= 0))
    both = both[(both != end) & (both != ctx.start)]
    both = both[out_tree[both] != back_tree[both]]
    if both.size == 0:
        return None, 0.0
    out_sums = _sums_for(network, out_tree, end, both, ctx.values, reverse=False)
    back_sums = _sums_for(network, back_tree, ctx.start, both, ctx.values, reverse=True)
    closing = out_sums[:, 0] + back_sums[:, 0]
    estimate = prefix_length + closing
    ratio = float(estimate.max()) / goal
    if estimate.max() < min_length:
        return None, ratio
    crow_end = np.hypot(network.x[both] - network.x[end], network.y[both] - network.y[end])
    detour = closing / (crow_end + ctx.crow[both] + 1.0)
    liked = (out_sums[:, 1] + back_sums[:, 1]) / np.maximum(closing, 1.0)
    turn = (
        np.maximum(angle_between(ctx.bearing[both], bearing) - 45.0, 0.0) / 90.0
        if bearing is not None
        else 0.0
    )

    best: Walk | None = None
    aim = goal
    tried: set[int] = set()
    rounds = short_rounds if ratio < 1.0 - GOOD_ERROR else CORRECTION_ROUNDS
    for _ in range(rounds):
        error = np.abs(estimate - aim) / goal
        rank = error * 4.0 + np.maximum(detour - 1.4, 0.0) + turn - 2.0 * PREFERENCE_WEIGHT * liked
        order = np.argsort(rank)[: CANDIDATES_PER_ROUND * 3]
        checked = 0
        for position in order.tolist():
            via = int(both[position])
            if via in tried:
                continue
            tried.add(via)
            walk = _build(ctx, prefix_nodes, prefix_edges, out_tree, back_tree, via, keep_prefix)
            checked += 1
            if walk is not None and (best is None or walk.rank(goal) < best.rank(goal)):
                best = walk
            if checked >= CANDIDATES_PER_ROUND:
                break
        if best is None or best.error(goal) <= GOOD_ERROR:
            break
        # Spur trimming and shared stretches make real walks differ from the estimate.
        aim += goal - best.length
    return best, ratio


def _build(
    ctx: ClosingContext,
    prefix_nodes: list[int],
    prefix_edges: list[int],
    out_tree: np.ndarray,
    back_tree: np.ndarray,
    via: int,
    keep_prefix: bool,
) -> Walk | None:
    middle = tree_path(out_tree, via)
    back = tree_path(back_tree, via)[::-1]
    nodes, edges = join_walk(
        ctx.network, prefix_nodes, prefix_edges, middle + back[1:], keep_prefix
    )
    if len(edges) < 3:
        return None
    return measure(ctx, nodes, edges)


def join_walk(
    network: Network,
    prefix_nodes: list[int],
    prefix_edges: list[int],
    tail: list[int],
    keep_prefix: bool,
) -> tuple[list[int], list[int]]:
    """Append the node path `tail` (starting at the prefix's end) and trim spurs."""
    tail_edges = path_edges(network, tail)
    if keep_prefix:
        tail, tail_edges = trim_spurs(tail, tail_edges)
        return prefix_nodes + tail[1:], list(prefix_edges) + tail_edges
    return trim_spurs(prefix_nodes + tail[1:], list(prefix_edges) + tail_edges)


def measure(ctx: ClosingContext, nodes: list[int], edges: list[int]) -> Walk:
    index = np.asarray(edges, dtype=np.int64)
    length = float(ctx.network.length[index].sum())
    liked = float(ctx.values[index, 1].sum()) / max(length, 1.0)
    retrace = retrace_length(ctx.network, edges) / max(length, 1.0)
    stem = stem_length(ctx.network, edges) / max(length, 1.0)
    return Walk(nodes, edges, length, retrace, liked, stem)


def stem_edges(network: Network, start: int) -> np.ndarray:
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
