"""Walks as node/edge index sequences: spur trimming, retrace measures and result records."""

from __future__ import annotations

import operator

import msgspec
import numpy as np

from planner.network import Network


class Segment(msgspec.Struct, frozen=True):
    """One edge of a route, in walking order."""

    edge_id: int
    length_m: float
    highway: str
    surface: str
    green: float
    water: float


def trim_spurs(nodes: list[int], edges: list[int]) -> tuple[list[int], list[int]]:
    """Cut every out-and-back on one edge (a -> b -> a) until none is left.

    The first and last edge are never paired, so the stem of a start in a cul-de-sac stays.
    """
    # The first cut needs a node equal to the node two steps later, which most walks lack.
    # map() compares in C, several times faster than the loop below.
    if len(nodes) == len(edges) + 1 and not any(map(operator.eq, nodes, nodes[2:])):
        return list(nodes), list(edges)
    kept_nodes = [nodes[0]]
    kept_edges: list[int] = []
    for edge, node in zip(edges, nodes[1:]):
        if kept_edges and kept_edges[-1] == edge and kept_nodes[-2] == node:
            kept_edges.pop()
            kept_nodes.pop()
        else:
            kept_edges.append(edge)
            kept_nodes.append(node)
    return kept_nodes, kept_edges


def stem_length(network: Network, edges: list[int]) -> float:
    """Return the length of the shared start and end of a closed walk (out and back)."""
    count = len(edges)
    steps = 0
    while steps < count // 2 and edges[steps] == edges[count - 1 - steps]:
        steps += 1
    return float(network.length[edges[:steps]].sum()) if steps else 0.0


def retrace_length(network: Network, edges: list[int], closed: bool = True) -> float:
    """Return the length walked more than once, minus the stem of a closed walk."""
    if not edges:
        return 0.0
    # Without a repeated edge nothing is walked twice and a closed walk has no stem.
    if len(set(edges)) == len(edges):
        return 0.0
    unique, counts = np.unique(np.asarray(edges, dtype=np.int64), return_counts=True)
    repeated = float((network.length[unique] * (counts - 1)).sum())
    if closed:
        repeated -= stem_length(network, edges)
    return max(repeated, 0.0)


def walk_coordinates(
    network: Network, nodes: list[int], edges: list[int]
) -> list[tuple[float, float]]:
    """Return the (lon, lat) line of a walk, joining edge geometries at shared points."""
    if not edges:
        node = nodes[0]
        return [(float(network.lon[node]), float(network.lat[node]))]
    count = min(len(edges), len(nodes) - 1)
    if count <= 0:
        return []
    edge_array = np.array(edges[:count], dtype=np.int64)
    forward = network.edge_u[edge_array] == np.array(nodes[:count], dtype=np.int64)
    starts = network.geom_offsets[edge_array]
    sizes = network.geom_offsets[edge_array + 1] - starts
    # Point t of an edge in walking direction: start + t forward, stop - 1 - t backward.
    # Every edge after the first drops its first point, which the previous edge ends on.
    step = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    first = np.repeat(np.where(forward, starts, starts + sizes - 1), sizes)
    points = first + np.repeat(np.where(forward, 1, -1), sizes) * step
    points = points[(step > 0) | (np.arange(points.shape[0]) < sizes[0])]
    return list(zip(network.geom_lon[points].tolist(), network.geom_lat[points].tolist()))


def walk_segments(network: Network, edges: list[int]) -> list[Segment]:
    index = np.array(edges, dtype=np.int64)
    water = network.feature("water")[index]
    green = np.maximum(network.feature("green")[index], network.feature("park")[index])
    highway_codes = network.highway_codes[index].tolist()
    surface_codes = network.surface_codes[index].tolist()
    return [
        Segment(
            edge_id=edge_id,
            length_m=round(length, 1),
            highway=network.highway_names[highway],
            surface=network.surface_names[surface],
            green=round(green_value, 3),
            water=round(water_value, 3),
        )
        for edge_id, length, highway, surface, green_value, water_value in zip(
            network.edge_ids[index].tolist(),
            network.length[index].tolist(),
            highway_codes,
            surface_codes,
            green.tolist(),
            water.tolist(),
        )
    ]


def feature_shares(network: Network, edges: list[int]) -> dict[str, float]:
    """Return the length shares in green, beside water and on quiet ways."""
    if not edges:
        return {"green": 0.0, "water": 0.0, "quiet": 0.0}
    index = np.asarray(edges, dtype=np.int64)
    length = network.length[index]
    total = float(length.sum()) or 1.0
    green = (network.feature("green")[index] > 0.5) | (network.feature("park")[index] > 0.5)
    water = network.feature("water")[index] > 0.5
    quiet = network.feature("quiet")[index] >= 0.7
    return {
        "green": float(length[green].sum() / total),
        "water": float(length[water].sum() / total),
        "quiet": float(length[quiet].sum() / total),
    }


def edge_jaccard(first: list[int], second: list[int]) -> float:
    a, b = set(first), set(second)
    union = len(a | b)
    return len(a & b) / union if union else 1.0
