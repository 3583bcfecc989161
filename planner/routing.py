"""Shortest-path trees on the CSR adjacency and sums of edge values along them."""

from __future__ import annotations

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
    data = weights[entry_edge]
    matrix = csr_matrix((base.shape[0], base.shape[1]))
    # Reusing indices/indptr skips scipy's format checks, which cost more than the search.
    matrix.data = data
    matrix.indices = base.indices
    matrix.indptr = base.indptr
    return matrix


def shortest_tree(matrix: csr_matrix, source: int, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """Run one Dijkstra from `source` up to cost `limit` and return (costs, predecessors)."""
    costs, predecessors = dijkstra(
        matrix, directed=True, indices=source, return_predecessors=True, limit=limit
    )
    return costs, predecessors


def entry_keys(network: Network, reverse: bool) -> np.ndarray:
    """Return row * n + column of every CSR entry, sorted, to find entries by node pair."""
    key = ("entry_keys", reverse)
    keys = network.cache.get(key)
    if keys is None:
        matrix = network.csr_reverse if reverse else network.csr
        rows = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))
        keys = rows * matrix.shape[0] + matrix.indices.astype(np.int64)
        network.cache[key] = keys
    return keys


def tree_edges(
    network: Network, predecessors: np.ndarray, nodes: np.ndarray, reverse: bool
) -> np.ndarray:
    """Return the edge index linking each node to its predecessor in a tree.

    The CSR keeps one edge per node pair, the one Dijkstra relaxed, so the pair identifies
    it. `reverse` trees come from the transposed matrix (paths walked towards the root).
    """
    keys = entry_keys(network, reverse)
    wanted = predecessors[nodes].astype(np.int64) * network.node_count + nodes
    entries = np.searchsorted(keys, wanted)
    entry_edge = network.csr_reverse_edge if reverse else network.csr_edge
    return entry_edge[entries]


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
    position = np.full(network.node_count, -1, dtype=np.int64)
    position[reached] = np.arange(count)
    parent_nodes = predecessors[reached]
    has_parent = parent_nodes >= 0
    parent = np.full(count, -1, dtype=np.int64)
    parent[has_parent] = position[parent_nodes[has_parent]]

    sums = np.zeros((count, values.shape[1]), dtype=np.float64)
    child = reached[has_parent]
    sums[has_parent] = values[tree_edges(network, predecessors, child, reverse)]

    active = np.flatnonzero(parent >= 0)
    while active.size:
        up = parent[active]
        sums[active] += sums[up]
        parent[active] = parent[up]
        active = active[parent[active] >= 0]
    return sums


def tree_path(predecessors: np.ndarray, node: int) -> list[int]:
    """Return the nodes from the tree root to `node` (root first)."""
    path = [node]
    current = node
    while True:
        current = int(predecessors[current])
        if current < 0:
            break
        path.append(current)
    path.reverse()
    return path


def path_edges(network: Network, nodes: list[int]) -> list[int]:
    """Return the edge index between each pair of consecutive nodes of a forward walk."""
    if len(nodes) < 2:
        return []
    array = np.asarray(nodes, dtype=np.int64)
    keys = entry_keys(network, reverse=False)
    wanted = array[:-1] * network.node_count + array[1:]
    entries = np.searchsorted(keys, wanted)
    return network.csr_edge[entries].tolist()
