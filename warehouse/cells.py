"""H3 cell arithmetic shared by the pipelines and the server.

The default resolution 7 has cells with a 1.41 km edge (4.6 km²). An 8 km loop stays within
about 3 km of its start, which `grid_disk(k=2)` (19 cells) covers from any start in the
centre cell. So one request touches few enough files to read in milliseconds while a cold
area stays small enough to build in about a second.
"""

from __future__ import annotations

import math

import h3
import numpy as np

# Share of the target distance a loop may reach away from its start. Loops from the
# planner stay within about a third of their length; the margin covers elongated loops.
LOOP_REACH_SHARE = 0.4
MIN_REACH_M = 1500.0


def cell_of(lat: float, lon: float, resolution: int) -> str:
    return h3.latlng_to_cell(lat, lon, resolution)


def cells_of(lats: np.ndarray, lons: np.ndarray, resolution: int) -> np.ndarray:
    """Return the cell of each point as an array of strings."""
    return np.array(
        [h3.latlng_to_cell(lat, lon, resolution) for lat, lon in zip(lats, lons, strict=True)],
        dtype=object,
    )


def apothem_m(resolution: int) -> float:
    """Distance from a cell centre to the middle of its edge, in metres."""
    return h3.average_hexagon_edge_length(resolution, unit="m") * math.sqrt(3) / 2


def reach_m(target_m: float) -> float:
    """Return how far from the start a loop of `target_m` may go, in metres."""
    return max(MIN_REACH_M, LOOP_REACH_SHARE * target_m)


def disk_radius(radius_m: float, resolution: int) -> int:
    """Return the `grid_disk` k that covers `radius_m` around any point of the centre cell.

    A point may sit on the edge of its cell, so the disk must reach (2k - 1) apothems.
    """
    return max(1, math.ceil((radius_m / apothem_m(resolution) + 1) / 2))


def cells_for_loop(lat: float, lon: float, target_m: float, resolution: int) -> list[str]:
    """Return every cell a loop of `target_m` from (lat, lon) may need, centre cell first."""
    return cells_around(lat, lon, reach_m(target_m), resolution)


def cells_around(lat: float, lon: float, radius_m: float, resolution: int) -> list[str]:
    """Return the cells that come within `radius_m` of (lat, lon), centre cell first.

    A cell is kept when its centre is less than `radius_m` plus the cell's circumradius
    away, which keeps every cell the circle touches and drops the corners of the disk.
    """
    centre = cell_of(lat, lon, resolution)
    disk = h3.grid_disk(centre, disk_radius(radius_m, resolution))
    circumradius = h3.average_hexagon_edge_length(resolution, unit="m") * 1.1
    kept = []
    for cell in disk:
        if cell == centre:
            continue
        cell_lat, cell_lon = h3.cell_to_latlng(cell)
        distance = h3.great_circle_distance((lat, lon), (cell_lat, cell_lon), unit="m")
        if distance <= radius_m + circumradius:
            kept.append(cell)
    return [centre] + sorted(kept)


def cell_polygon_lonlat(cell: str) -> list[tuple[float, float]]:
    """Return the cell's boundary as a closed ring of (lon, lat) pairs."""
    ring = [(lon, lat) for lat, lon in h3.cell_to_boundary(cell)]
    return ring + [ring[0]]


def is_valid_cell(value: str, resolution: int | None = None) -> bool:
    """Check whether `value` is an H3 cell id (at `resolution`, when given)."""
    try:
        valid = h3.is_valid_cell(value)
    except (TypeError, ValueError):
        return False
    return valid and (resolution is None or h3.get_resolution(value) == resolution)
