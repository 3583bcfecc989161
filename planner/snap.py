"""Snapping a requested start to a network vertex that can carry a loop."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from planner.errors import StartNotFound
from planner.network import Network, project

# Candidate vertices examined per snap, nearest first.
SNAP_CANDIDATES = 32

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
    """Snap (lat, lon) to the nearest usable vertex within `max_distance_m`.

    A vertex is usable when its strongly connected component is the largest one or holds
    at least `min_component_m` metres of ways, and the straight line to it does not cross
    water. Raises StartNotFound naming the distance to the nearest walkable way.
    """
    if network.kdtree is None:
        raise StartNotFound("No walkable way is loaded around the start.")
    x, y = project(lat, lon, network.lat0, network.lon0)
    point = (float(x), float(y))
    count = min(SNAP_CANDIDATES, network.node_count)
    distances, nodes = network.kdtree.query(point, k=count)
    distances = np.atleast_1d(distances)
    nodes = np.atleast_1d(nodes)
    nearest_m = float(distances[0])
    if nearest_m > max_distance_m:
        raise StartNotFound(
            f"No walkable way within {max_distance_m:.0f} m of the start "
            f"({lat:.6f}, {lon:.6f}); the nearest is {nearest_m:.0f} m away. "
            "Pick a start on or next to a street or path."
        )

    rejected_water = False
    for distance, node in zip(distances.tolist(), nodes.tolist()):
        if distance > max_distance_m:
            break
        component = network.component[node]
        big_enough = (
            component == network.largest_component
            or network.component_length_m[component] >= min_component_m > 0
        )
        if not big_enough:
            continue
        if _crosses_water(network, point, (float(network.x[node]), float(network.y[node]))):
            rejected_water = True
            continue
        return SnappedStart(node=node, node_id=int(network.node_ids[node]), distance_m=distance)

    reason = (
        "every way within reach lies across water"
        if rejected_water
        else "the ways within reach belong to a small network that is not connected to the rest"
    )
    raise StartNotFound(
        f"No usable walkable way within {max_distance_m:.0f} m of the start "
        f"({lat:.6f}, {lon:.6f}): {reason}. The nearest walkable way is {nearest_m:.0f} m away."
    )


def _crosses_water(
    network: Network, start: tuple[float, float], end: tuple[float, float]
) -> bool:
    """Tell whether the segment crosses more than WATER_TOLERANCE_M of water.

    Water the start itself stands in (a click on a river) is not counted, so the nearest
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
            wet = sum(
                part.length for part in parts if part.distance(start_point) > 1e-6
            )
            if wet > WATER_TOLERANCE_M:
                return True
        else:
            # A coastline is a line: crossing it means leaving the land.
            return True
    return False
