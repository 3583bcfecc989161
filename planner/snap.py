"""Snapping a requested start to a network vertex that can carry a loop."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from planner.errors import StartNotFound
from planner.network import BoundedCache, Network, project

# Candidate edges examined per snap, nearest first.
SNAP_CANDIDATES = 32

# Snapped starts remembered per network, so a caller that snaps before planning does not
# make the planner snap the same start again.
SNAP_ENTRIES = 64

# Water a straight line from the start to its vertex may cross, in metres, so that a path
# drawn slightly inside a riverbank polygon still counts as on land.
WATER_TOLERANCE_M = 10.0


@dataclass(frozen=True)
class SnappedStart:
    node: int
    node_id: int
    distance_m: float


def snap_start(
    network: Network,
    lat: float,
    lon: float,
    max_distance_m: float = 250.0,
    min_component_m: float = 0.0,
) -> SnappedStart:
    """Snap (lat, lon) to the nearer end of the nearest usable edge within `max_distance_m`.

    Edges are ranked by the distance from the start to the nearest point on their geometry,
    so a start beside the middle of a long way finds that way. An edge is usable when its
    strongly connected component is the largest one or holds at least `min_component_m`
    metres of ways, and the straight line from the start to its nearest point crosses no
    water (polygons, waterway lines or coastline). `distance_m` is the straight-line
    distance to the chosen vertex. Raises StartNotFound naming the distance to the nearest
    walkable way. Results are remembered per network, failures are not.
    """
    key = (float(lat), float(lon), float(max_distance_m), float(min_component_m))
    snaps = network.cache.get_or_build("snaps", lambda: BoundedCache(SNAP_ENTRIES))
    snapped = snaps.get(key)
    if snapped is None:
        snapped = _snap(network, lat, lon, max_distance_m, min_component_m)
        snaps[key] = snapped
    return snapped


def _snap(
    network: Network, lat: float, lon: float, max_distance_m: float, min_component_m: float
) -> SnappedStart:
    if network.kdtree is None:
        raise StartNotFound("No walkable way is loaded around the start.")
    x, y = project(lat, lon, network.lat0, network.lon0)
    point = shapely.Point(float(x), float(y))
    lines = _edge_lines(network)
    edges, distances = _nearest_edges(network, lines, point, max_distance_m)
    if edges.size == 0 or distances[0] > max_distance_m:
        nearest_m = _nearest_way_m(network, point)
        raise StartNotFound(
            f"No walkable way within {max_distance_m:.0f} m of the start "
            f"({lat:.6f}, {lon:.6f}); the nearest is {nearest_m:.0f} m away. "
            "Pick a start on or next to a street or path."
        )

    rejected_water = False
    for edge, distance in zip(edges.tolist(), distances.tolist()):
        if distance > max_distance_m:
            break
        line = lines[edge]
        along = shapely.line_locate_point(line, point)
        node = int(network.edge_u[edge] if along <= 0.5 * line.length else network.edge_v[edge])
        component = network.component[node]
        big_enough = (
            component == network.largest_component
            or network.component_length_m[component] >= min_component_m > 0
        )
        if not big_enough:
            continue
        # NOTE: the loop starts at the nearer end vertex, not at the nearest point of the edge
        # (no virtual split). Edges are at most about 200 m, so that walk is up to ~100 m.
        landing = shapely.line_interpolate_point(line, along)
        if _crosses_water(network, (point.x, point.y), (landing.x, landing.y)):
            rejected_water = True
            continue
        node_distance = float(np.hypot(network.x[node] - point.x, network.y[node] - point.y))
        return SnappedStart(
            node=node, node_id=int(network.node_ids[node]), distance_m=node_distance
        )

    if rejected_water:
        raise StartNotFound(
            f"The start ({lat:.6f}, {lon:.6f}) lies across water from every walkable way "
            f"within {max_distance_m:.0f} m (the nearest is {float(distances[0]):.0f} m "
            "away). Pick a start on land next to a street or path."
        )
    raise StartNotFound(
        f"No usable walkable way within {max_distance_m:.0f} m of the start "
        f"({lat:.6f}, {lon:.6f}): the ways within reach belong to a small network that is "
        f"not connected to the rest. The nearest is {float(distances[0]):.0f} m away."
    )


def _edge_lines(network: Network) -> np.ndarray:
    """Return every edge geometry as a line in local metres, built once per network."""

    def build() -> np.ndarray:
        x, y = project(network.geom_lat, network.geom_lon, network.lat0, network.lon0)
        index = np.repeat(np.arange(network.edge_count), np.diff(network.geom_offsets))
        lines = shapely.linestrings(np.column_stack([x, y]), indices=index)
        return lines

    return network.cache.get_or_build("edge_lines", build)


def _edge_tree(network: Network, lines: np.ndarray) -> shapely.STRtree:
    return network.cache.get_or_build("edge_tree", lambda: shapely.STRtree(lines))


def _nearest_edges(
    network: Network, lines: np.ndarray, point: shapely.Point, max_distance_m: float
) -> tuple[np.ndarray, np.ndarray]:
    """Return up to SNAP_CANDIDATES edges within `max_distance_m`, nearest first."""
    tree = _edge_tree(network, lines)
    edges = tree.query(point, predicate="dwithin", distance=max_distance_m)
    if edges.size == 0:
        return edges, np.zeros(0)
    distances = shapely.distance(lines[edges], point)
    order = np.argsort(distances, kind="stable")[:SNAP_CANDIDATES]
    return edges[order], distances[order]


def _nearest_way_m(network: Network, point: shapely.Point) -> float:
    lines = _edge_lines(network)
    nearest = _edge_tree(network, lines).query_nearest(point, return_distance=True)
    return float(nearest[1][0]) if nearest[1].size else float("inf")


def _crosses_water(network: Network, start: tuple[float, float], end: tuple[float, float]) -> bool:
    """Tell whether the segment crosses more than WATER_TOLERANCE_M of water.

    Water that contains the start itself (a click on a river) is not counted, so the nearest
    bank stays reachable.
    """
    if network.water_tree is None or start == end:
        return False
    line = shapely.LineString([start, end])
    hits = network.water_tree.query(line, predicate="intersects")
    start_point = shapely.Point(start)
    for geom in network.water_geoms[hits]:
        if shapely.get_type_id(geom) in (3, 6):
            crossing = shapely.intersection(line, geom)
            parts = shapely.get_parts(crossing)
            wet = sum(part.length for part in parts if part.distance(start_point) > 1e-6)
            if wet > WATER_TOLERANCE_M:
                return True
        else:
            # A coastline or waterway is a line: crossing it means leaving the land or
            # wading through water. Touching it at the start itself does not count.
            crossing = shapely.intersection(line, geom)
            if any(part.distance(start_point) > 1.0 for part in shapely.get_parts(crossing)):
                return True
    return False
