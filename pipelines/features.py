"""Per-cell edge features and area clipping, computed from region tables without I/O.

Distances are measured in an equirectangular projection around the centre of the edges,
which is accurate to well under 1% within the few kilometres of one H3 cell.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import shapely

from pipelines.walkability import quietness
from warehouse.schema import CELL_AREAS, CELL_EDGE_FEATURES

EARTH_RADIUS_M = 6_371_008.8
METRES_PER_DEGREE = EARTH_RADIUS_M * np.pi / 180

# Spacing of the sample points along an edge. Every edge has at least 3 samples
# (start, middle and end).
SAMPLE_SPACING_M = 25.0
MIN_SAMPLES = 3

GREEN_DISTANCE_M = 30.0
WATER_DISTANCE_M = 50.0
POI_DISTANCE_M = 60.0
# Number of POIs within POI_DISTANCE_M that gives the maximum poi feature of 1.
POIS_FOR_FULL_SCORE = 3

# Geometries with more coordinates than this are cut into tiles before distance queries,
# because a GEOS distance test against a large forest or lake costs time in its number of
# vertices for every sample point.
MAX_COORDINATES_UNCUT = 64
TILE_SIZE_M = 250.0

GREEN_KINDS = ("park", "green", "forest")
PARK_KINDS = ("park",)
WATER_KINDS = ("water", "waterway", "coastline")
LINE_KINDS = frozenset({"waterway", "coastline"})


class _Projection:
    """Equirectangular projection to metres around a centre point."""

    def __init__(self, lon0: float, lat0: float) -> None:
        self.lon0 = lon0
        self.lat0 = lat0
        self.x_scale = METRES_PER_DEGREE * np.cos(np.radians(lat0))

    def xy(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (lon - self.lon0) * self.x_scale, (lat - self.lat0) * METRES_PER_DEGREE

    def geometries(self, geometries: np.ndarray) -> np.ndarray:
        def project(coords: np.ndarray) -> np.ndarray:
            x, y = self.xy(coords[:, 0], coords[:, 1])
            return np.column_stack((x, y))

        return shapely.transform(geometries, project)


def _valid_geometries(wkb: pa.Array) -> np.ndarray:
    """Decode WKB and repair invalid geometries. WKB that cannot be decoded becomes None."""
    geometries = shapely.from_wkb(wkb.to_numpy(zero_copy_only=False), on_invalid="ignore")
    invalid = ~shapely.is_valid(geometries) & ~shapely.is_missing(geometries)
    if invalid.any():
        geometries[invalid] = shapely.make_valid(geometries[invalid])
    return geometries


def _areas_near(areas: pa.Table, bounds: tuple[float, float, float, float]) -> pa.Table:
    """Return the areas whose bbox intersects `bounds` (min_lon, min_lat, max_lon, max_lat)."""
    min_lon, min_lat, max_lon, max_lat = bounds
    mask = pc.and_(
        pc.and_(
            pc.less_equal(areas["min_lon"], max_lon), pc.greater_equal(areas["max_lon"], min_lon)
        ),
        pc.and_(
            pc.less_equal(areas["min_lat"], max_lat), pc.greater_equal(areas["max_lat"], min_lat)
        ),
    )
    return areas.filter(mask)


def _sample_points(
    x: np.ndarray, y: np.ndarray, offsets: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return sample x, y, the edge of each sample and the sample count per edge.

    `x` and `y` are the projected vertices of all edges concatenated, and `offsets` the
    start of each edge in them (with the total as the last entry).
    """
    n_edges = len(offsets) - 1
    segment = np.hypot(np.diff(x), np.diff(y))
    # Segments that join one edge to the next get length 1 m, so each edge occupies its
    # own interval of the cumulative distance and no sample lands between two edges.
    segment[offsets[1:-1] - 1] = 1.0
    cumulative = np.concatenate(([0.0], np.cumsum(segment)))
    edge_start = cumulative[offsets[:-1]]
    edge_length = cumulative[offsets[1:] - 1] - edge_start

    # The small tolerance keeps a 200.0000001 m edge at 9 samples, not 10.
    intervals = np.ceil(edge_length / SAMPLE_SPACING_M - 1e-6).astype(np.int64)
    samples = np.maximum(MIN_SAMPLES, intervals + 1)
    sample_edge = np.repeat(np.arange(n_edges), samples)
    first_sample = np.concatenate(([0], np.cumsum(samples)[:-1]))
    step = np.arange(len(sample_edge)) - first_sample[sample_edge]
    fraction = step / (samples[sample_edge] - 1)
    position = edge_start[sample_edge] + fraction * edge_length[sample_edge]
    return (
        np.interp(position, cumulative, x),
        np.interp(position, cumulative, y),
        sample_edge,
        samples,
    )


def _cut_into_tiles(geometries: np.ndarray, points: np.ndarray, distance: float) -> np.ndarray:
    """Replace large geometries by their parts near the sample points.

    Each part is the geometry clipped to a tile that contains sample points, grown by
    `distance`, so every geometry within `distance` of a sample keeps a part within it.
    """
    large = shapely.get_num_coordinates(geometries) > MAX_COORDINATES_UNCUT
    if not large.any():
        return geometries
    # Tile indices need far fewer than 31 bits because projected coordinates lie within a
    # few thousand kilometres of the centre, so one int64 key stores both. The offset keeps
    # the low half non-negative.
    offset = 1 << 31
    tile_x = np.floor(shapely.get_x(points) / TILE_SIZE_M).astype(np.int64)
    tile_y = np.floor(shapely.get_y(points) / TILE_SIZE_M).astype(np.int64)
    keys = np.unique((tile_x << 32) + tile_y + offset)
    tiles_x = (keys >> 32).astype(np.float64)
    tiles_y = ((keys & 0xFFFFFFFF) - offset).astype(np.float64)
    boxes = shapely.box(
        tiles_x * TILE_SIZE_M - distance,
        tiles_y * TILE_SIZE_M - distance,
        (tiles_x + 1) * TILE_SIZE_M + distance,
        (tiles_y + 1) * TILE_SIZE_M + distance,
    )
    pairs = shapely.STRtree(boxes).query(geometries[large], predicate="intersects")
    parts = shapely.intersection(geometries[large][pairs[0]], boxes[pairs[1]])
    parts = parts[~shapely.is_empty(parts)]
    return np.concatenate((geometries[~large], parts))


def _share_within(
    points: np.ndarray,
    sample_edge: np.ndarray,
    samples: np.ndarray,
    geometries: np.ndarray,
    distance: float,
) -> np.ndarray:
    """Return, per edge, the share of its samples within `distance` of any geometry."""
    if len(geometries) == 0 or len(points) == 0:
        return np.zeros(len(samples))
    tree = shapely.STRtree(_cut_into_tiles(geometries, points, distance))
    hits = tree.query(points, predicate="dwithin", distance=distance)
    is_hit = np.zeros(len(points), dtype=bool)
    is_hit[hits[0]] = True
    counts = np.bincount(sample_edge[is_hit], minlength=len(samples))
    return counts / samples


def compute_edge_features(edges: pa.Table, areas: pa.Table, pois: pa.Table) -> pa.Table:
    """Compute green, water, park, quiet and poi features in [0, 1] for each edge.

    Samples lie every ~25 m along each edge, with at least its start, middle and end.
    green is the share of samples within 30 m of a park, green or forest polygon, and park
    the share within 30 m of a park. water is the share within 50 m of water, a waterway
    or the coastline. quiet comes from the highway kind, and poi is
    min(1, POIs within 60 m of the edge / 3).
    """
    n_edges = edges.num_rows
    if n_edges == 0:
        return CELL_EDGE_FEATURES.empty_table()

    lon_column = pc.list_flatten(edges["lon"]).to_numpy()
    lat_column = pc.list_flatten(edges["lat"]).to_numpy()
    sizes = pc.list_value_length(edges["lon"]).to_numpy()
    offsets = np.concatenate(([0], np.cumsum(sizes)))

    projection = _Projection(
        (float(lon_column.min()) + float(lon_column.max())) / 2,
        (float(lat_column.min()) + float(lat_column.max())) / 2,
    )
    x, y = projection.xy(lon_column, lat_column)
    sample_x, sample_y, sample_edge, samples = _sample_points(x, y, offsets)
    points = shapely.points(sample_x, sample_y)

    # Areas beyond the largest feature distance of every edge cannot count.
    margin_lat = max(WATER_DISTANCE_M, POI_DISTANCE_M) / METRES_PER_DEGREE
    margin_lon = margin_lat * METRES_PER_DEGREE / projection.x_scale
    bounds = (
        float(lon_column.min()) - margin_lon,
        float(lat_column.min()) - margin_lat,
        float(lon_column.max()) + margin_lon,
        float(lat_column.max()) + margin_lat,
    )
    near = _areas_near(areas, bounds)
    geometries = projection.geometries(_valid_geometries(near["wkb"]))
    kinds = np.asarray(near["kind"].to_pylist(), dtype=object)
    present = ~shapely.is_missing(geometries)

    def geometries_of(kind_names: Sequence[str]) -> np.ndarray:
        return geometries[np.isin(kinds, kind_names) & present]

    green = _share_within(
        points, sample_edge, samples, geometries_of(GREEN_KINDS), GREEN_DISTANCE_M
    )
    park = _share_within(points, sample_edge, samples, geometries_of(PARK_KINDS), GREEN_DISTANCE_M)
    water = _share_within(
        points, sample_edge, samples, geometries_of(WATER_KINDS), WATER_DISTANCE_M
    )

    poi = np.zeros(n_edges)
    if pois.num_rows:
        poi_x, poi_y = projection.xy(pois["lon"].to_numpy(), pois["lat"].to_numpy())
        lines = shapely.linestrings(
            np.column_stack((x, y)), indices=np.repeat(np.arange(n_edges), sizes)
        )
        tree = shapely.STRtree(shapely.points(poi_x, poi_y))
        hits = tree.query(lines, predicate="dwithin", distance=POI_DISTANCE_M)
        poi = np.minimum(1.0, np.bincount(hits[0], minlength=n_edges) / POIS_FOR_FULL_SCORE)

    highways = edges["highway"].to_pylist()
    quiet_by_kind = {kind: quietness(kind) for kind in set(highways)}
    quiet = np.fromiter((quiet_by_kind[kind] for kind in highways), np.float64, n_edges)

    return pa.Table.from_pydict(
        {
            "edge_id": edges["edge_id"],
            "green": pa.array(green, pa.float32()),
            "water": pa.array(water, pa.float32()),
            "park": pa.array(park, pa.float32()),
            "quiet": pa.array(quiet, pa.float32()),
            "poi": pa.array(poi, pa.float32()),
        },
        schema=CELL_EDGE_FEATURES,
    )


def _keep_dimension(geometries: np.ndarray, dimension: int) -> np.ndarray:
    """Keep only the parts of each geometry with the given dimension, else None.

    Clipping a polygon can leave a line or point where it only touches the cell border.
    """
    result = geometries.copy()
    collections = shapely.get_type_id(geometries) == shapely.GeometryType.GEOMETRYCOLLECTION
    result[~collections & (shapely.get_dimensions(geometries) != dimension)] = None
    for index in np.flatnonzero(collections):
        parts = shapely.get_parts(geometries[index])
        parts = parts[shapely.get_dimensions(parts) == dimension]
        if len(parts) == 0:
            result[index] = None
        elif dimension == 2:
            result[index] = shapely.multipolygons(shapely.get_parts(parts))
        else:
            result[index] = shapely.multilinestrings(shapely.get_parts(parts))
    return result


def clip_areas(
    areas: pa.Table, cell_polygon_lonlat: shapely.Geometry | Sequence[tuple[float, float]]
) -> pa.Table:
    """Clip the areas that intersect a cell polygon to it and recompute their bbox.

    `cell_polygon_lonlat` is a shapely polygon or a ring of (lon, lat) pairs. Note that
    `h3.cell_to_boundary` returns (lat, lng) pairs, which must be swapped first.
    Geometries that are invalid even after `shapely.make_valid` are skipped.
    """
    if isinstance(cell_polygon_lonlat, shapely.Geometry):
        cell = cell_polygon_lonlat
    else:
        cell = shapely.Polygon(cell_polygon_lonlat)
    min_lon, min_lat, max_lon, max_lat = cell.bounds
    near = _areas_near(areas, (min_lon, min_lat, max_lon, max_lat))
    if near.num_rows == 0:
        return CELL_AREAS.empty_table()

    geometries = _valid_geometries(near["wkb"])
    usable = ~shapely.is_missing(geometries) & shapely.is_valid(geometries)
    shapely.prepare(cell)
    usable &= shapely.intersects(cell, geometries)
    near = near.filter(pa.array(usable))
    clipped = shapely.intersection(geometries[usable], cell)

    is_line = np.isin(np.asarray(near["kind"].to_pylist(), dtype=object), list(LINE_KINDS))
    clipped[is_line] = _keep_dimension(clipped[is_line], 1)
    clipped[~is_line] = _keep_dimension(clipped[~is_line], 2)
    non_empty = ~shapely.is_missing(clipped) & ~shapely.is_empty(clipped)
    near = near.filter(pa.array(non_empty))
    clipped = clipped[non_empty]

    bounds = shapely.bounds(clipped).reshape(-1, 4)
    return pa.Table.from_pydict(
        {
            "kind": near["kind"],
            "name": near["name"],
            "wkb": pa.array(shapely.to_wkb(clipped), pa.binary()),
            "min_lon": pa.array(bounds[:, 0], pa.float64()),
            "min_lat": pa.array(bounds[:, 1], pa.float64()),
            "max_lon": pa.array(bounds[:, 2], pa.float64()),
            "max_lat": pa.array(bounds[:, 3], pa.float64()),
        },
        schema=CELL_AREAS,
    )
