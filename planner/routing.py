"""Shortest-path trees on the CSR adjacency and sums of edge values along them."""

from __future__ import annotations

import copy

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from planner.network import FEATURE_NAMES, MIN_COST_M, Network
from planner.preferences import LIKE_DISCOUNT, Preference

# Cost factor of an edge already walked, so a later leg takes another way where one exists.
USED_EDGE_FACTOR = 8.0

NO_PREDECESSOR = -9999


def edge_costs(network: Network, preference: Preference) -> np.ndarray:
    """Return the cost of every edge under a preference, cached per network.

    cost = length * (1 - LIKE_DISCOUNT * score) * (1 + penalty); never below MIN_COST_M.
    Distances are always measured on `network.length`, never on these costs.
    """
    key = ("edge_costs", preference.key)
    cached = network.cache.get(key)
    if cached is not None:
        return cached
    factor = 1.0 - LIKE_DISCOUNT * preference.edge_scores(network.features, FEATURE_NAMES)
    penalties = preference.highway_penalties()
    if penalties:
        per_code = np.zeros(len(network.highway_names), dtype=np.float64)
        for code, name in enumerate(network.highway_names):
            per_code[code] = penalties.get(name, 0.0)
        factor = factor * (1.0 + per_code[network.highway_codes])
    costs = np.maximum(network.length * factor, MIN_COST_M)
    network.cache[key] = costs
    return costs


def edge_scores(network: Network, preference: Preference) -> np.ndarray:
    key = ("edge_scores", preference.key)
    cached = network.cache.get(key)
    if cached is None:
        cached = preference.edge_scores(network.features, FEATURE_NAMES).astype(np.float64)
        network.cache[key] = cached
    return cached


def cost_matrix(
    network: Network,
    costs: np.ndarray,
    edge_factor: np.ndarray | None = None,
    reverse: bool = False,
) -> csr_matrix:
    """Return the adjacency weighted by `costs * edge_factor`, sharing the network's index arrays."""
    base = network.csr_reverse if reverse else network.csr
    entry_edge = network.csr_reverse_edge if reverse else network.csr_edge
    weights = costs if edge_factor is None else costs * edge_factor
    # A shallow copy shares indices and indptr with `base` and skips the constructor's
    # checks, which cost more than the gather. Only the copy gets the new data array.
    matrix = copy.copy(base)
    matrix.data = weights[entry_edge]
    return matrix


def shortest_tree(matrix: csr_matrix, source: int, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """Run one Dijkstra from `source` up to cost `limit` and return (costs, predecessors)."""
    costs, predecessors = dijkstra(
        matrix, directed=True, indices=source, return_predecessors=True, limit=limit
    )
    return costs, predecessors


def pair_entries(matrix: csr_matrix, sources: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Return the CSR entry of each (source, target) node pair.

    The scan starts at each source's row and moves one entry per pass, only for the pairs
    not found yet. Rows hold a few entries each, so this takes a few vectorised passes and
    needs no index of all pairs. A scan for a missing pair runs past its row, so the check
    at the end, or the end of the array, raises ValueError naming the first such pair.
    """
    position = matrix.indptr[sources].astype(np.int64)
    indices = matrix.indices
    try:
        remaining = np.flatnonzero(indices[position] != targets)
        while remaining.size:
            position[remaining] += 1
            remaining = remaining[indices[position[remaining]] != targets[remaining]]
    except IndexError:
        position = np.minimum(position, indices.shape[0])
    outside = np.flatnonzero(position >= matrix.indptr[sources + 1])
    if outside.size:
        raise ValueError(
            f"no edge from node {int(sources[outside[0]])} to node {int(targets[outside[0]])}"
        )
    return position


def tree_edges(
    network: Network, predecessors: np.ndarray, nodes: np.ndarray, reverse: bool
) -> np.ndarray:
    """Return the edge index linking each node to its predecessor in a tree.

    The CSR keeps one edge per node pair, the one Dijkstra relaxed, so the pair identifies
    it. `reverse` trees come from the transposed matrix (paths walked towards the root).
    """
    matrix = network.csr_reverse if reverse else network.csr
    entry_edge = network.csr_reverse_edge if reverse else network.csr_edge
    return entry_edge[pair_entries(matrix, predecessors[nodes], nodes)]


def tree_sums(
    network: Network,
    predecessors: np.ndarray,
    reached: np.ndarray,
    values: np.ndarray,
    reverse: bool = False,
) -> np.ndarray:
    """Sum per-edge values along the tree path of every reached node.

    `values` is (edges, k); returns (len(reached), k). Pointer jumping takes log2(depth)
    vectorised passes instead of one Python step per node.
    """
    count = reached.shape[0]
    width = values.shape[1]
    position = np.full(network.node_count, -1, dtype=np.int64)
    position[reached] = np.arange(count)
    parent_nodes = predecessors[reached]
    has_parent = parent_nodes >= 0
    parent = np.full(count, -1, dtype=np.int64)
    parent[has_parent] = position[parent_nodes[has_parent]]

    # Two columns travel as one complex number, so each pass gathers and adds once.
    # Complex addition adds the real and imaginary parts on their own, so the sums are
    # the same floats as column by column.
    if width == 2:
        packed = np.ascontiguousarray(values, dtype=np.float64).view(np.complex128).T
    else:
        packed = values.T
    sums = np.zeros((packed.shape[0], count), dtype=np.complex128 if width == 2 else np.float64)
    child = reached[has_parent]
    sums[:, has_parent] = packed[:, tree_edges(network, predecessors, child, reverse)]

    active = np.flatnonzero(parent >= 0)
    while active.size:
        up = parent[active]
        for column in sums:
            column[active] += column[up]
        up_parent = parent[up]
        parent[active] = up_parent
        active = active[up_parent >= 0]
    if width == 2:
        return sums[0].view(np.float64).reshape(count, 2)
    return sums.T


def tree_path(predecessors: np.ndarray, node: int) -> list[int]:
    """Return the nodes from the tree root to `node` (root first)."""
    path = [node]
    # ndarray.item returns a Python int, faster than indexing and int() per step.
    item = predecessors.item
    current = item(node)
    while current >= 0:
        path.append(current)
        current = item(current)
    path.reverse()
    return path


def path_edges(network: Network, nodes: list[int]) -> list[int]:
    """Return the edge index between each pair of consecutive nodes of a forward walk."""
    if len(nodes) < 2:
        return []
    array = np.array(nodes, dtype=np.int64)
    return network.csr_edge[pair_entries(network.csr, array[:-1], array[1:])].tolist()
