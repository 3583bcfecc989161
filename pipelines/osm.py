"""Parse an OpenStreetMap extract into the region tables of the warehouse.

`parse_extract` reads the file with pyosmium, keeps the walkable ways and splits them into
edges between graph vertices, and collects green and water geometries and points of
interest. The output tables match `warehouse.schema.REGION_*` exactly.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import osmium
import pyarrow as pa
import shapely

from pipelines.walkability import foot_direction, is_blocking_node, is_walkable_way
from warehouse.schema import REGION_AREAS, REGION_EDGES, REGION_NODES, REGION_POIS

EARTH_RADIUS_M = 6_371_008.8

# Fixed-point scale of osmium coordinates and the value osmium stores for a node whose
# location is missing from the file.
COORDINATE_PRECISION = 10_000_000
UNDEFINED_COORDINATE = 2_147_483_647

# edge_id = way_id * EDGE_ID_FACTOR + piece index. A way has at most 2,000 nodes (OSM API
# limit), so its pieces stay far below EDGE_ID_FACTOR unless its segments run thousands of
# kilometres, and way ids stay far below 2**63 / EDGE_ID_FACTOR.
EDGE_ID_FACTOR = 10_000

# Edges longer than this are cut at inner nodes, so that a start beside a long track snaps
# close by. A single segment longer than this is cut into equal pieces at added points.
MAX_EDGE_M = 200.0

# Id of a point added inside a long segment: -(way_id * POINT_ID_WAY_FACTOR + position *
# POINT_ID_POSITION_FACTOR + k). Here position is the index of the segment's first node in
# the way as the file lists it, and k = 1, 2, ... counts the points along the segment. OSM
# node ids are positive, so no added id equals one. Every extract that contains the same
# version of the way gives its points the same ids, so cells of overlapping extracts join.
POINT_ID_POSITION_FACTOR = 10_000
POINT_ID_WAY_FACTOR = 10_000 * POINT_ID_POSITION_FACTOR

# Version of the edges the parser builds from a file. It goes up whenever they change, so
# that imports of older formats get a new region version.
NETWORK_FORMAT = 4

EDGE_TAG_KEYS = ("highway", "access", "foot", "surface", "lit", "name")

WATERWAY_LINES = frozenset({"river", "stream", "canal", "brook"})

POI_VALUES = {
    "tourism": frozenset({"viewpoint", "attraction", "artwork", "picnic_site"}),
    "amenity": frozenset({"drinking_water", "bench", "cafe", "toilets", "fountain", "shelter"}),
    "natural": frozenset({"peak", "spring"}),
}

PARK_LEISURE = frozenset({"park", "garden", "nature_reserve"})
GREEN_LANDUSE = frozenset({"grass", "meadow", "recreation_ground", "village_green", "allotments"})
GREEN_LEISURE = frozenset({"common", "recreation_ground"})
GREEN_NATURAL = frozenset({"grassland", "heath", "scrub"})
WATER_LANDUSE = frozenset({"reservoir", "basin"})

ProgressCallback = Callable[[str], None]


@dataclass
class ParseStats:
    """Counts from one parse. Counts of missing nodes are node references, not unique ids.

    `ways_read` counts only ways with a highway, waterway or natural key, because the
    osmium filters keep every other way out of Python. The trim and drop counts cover
    walkable ways and waterway and coastline lines.
    """

    ways_read: int = 0
    walkable_ways: int = 0
    edges: int = 0
    vertices: int = 0
    ways_trimmed: int = 0
    ways_dropped: int = 0
    missing_node_refs: int = 0
    ways_with_missing_nodes: int = 0
    blocked_edges: int = 0
    areas: int = 0
    pois: int = 0
    # (min_lon, min_lat, max_lon, max_lat) of the walkable vertices, None without edges.
    bbox: tuple[float, float, float, float] | None = None
    seconds: float = 0.0


@dataclass
class ParsedRegion:
    """Region tables of one extract, each matching its `warehouse.schema` schema."""

    edges: pa.Table
    nodes: pa.Table
    areas: pa.Table
    pois: pa.Table
    stats: ParseStats = field(default_factory=ParseStats)


@dataclass
class _WayNodes:
    """Node ids and fixed-point coordinates of many ways, concatenated in way order."""

    ids: list[int] = field(default_factory=list)
    x: list[int] = field(default_factory=list)
    y: list[int] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)

    def add(self, way: osmium.osm.Way) -> None:
        ids_append = self.ids.append
        x_append = self.x.append
        y_append = self.y.append
        count = 0
        for node in way.nodes:
            location = node.location
            ids_append(node.ref)
            x_append(location.x)
            y_append(location.y)
            count += 1
        self.counts.append(count)


@dataclass
class _Collected:
    """Everything the single pass over the file keeps for the vectorized steps."""

    walk_nodes: _WayNodes = field(default_factory=_WayNodes)
    walk_way_ids: list[int] = field(default_factory=list)
    walk_tags: dict[str, list[str | None]] = field(
        default_factory=lambda: {key: [] for key in EDGE_TAG_KEYS}
    )
    walk_oneway: list[int] = field(default_factory=list)
    line_nodes: _WayNodes = field(default_factory=_WayNodes)
    line_kinds: list[str] = field(default_factory=list)
    line_names: list[str | None] = field(default_factory=list)
    area_kinds: list[str] = field(default_factory=list)
    area_names: list[str | None] = field(default_factory=list)
    area_wkb: list[str] = field(default_factory=list)
    blocking: list[int] = field(default_factory=list)
    poi_ids: list[int] = field(default_factory=list)
    poi_lat: list[float] = field(default_factory=list)
    poi_lon: list[float] = field(default_factory=list)
    poi_kinds: list[str] = field(default_factory=list)
    poi_names: list[str | None] = field(default_factory=list)
    ways_read: int = 0


def classify_area(tags: osmium.osm.TagList) -> str | None:
    """Return the area kind (park, forest, water, green) of a polygon's tags, or None."""
    leisure = tags.get("leisure")
    landuse = tags.get("landuse")
    natural = tags.get("natural")
    if leisure in PARK_LEISURE:
        return "park"
    if landuse == "forest" or natural == "wood":
        return "forest"
    if (
        natural == "water"
        or tags.get("waterway") == "riverbank"
        or landuse in WATER_LANDUSE
        or "water" in tags
    ):
        return "water"
    if landuse in GREEN_LANDUSE or leisure in GREEN_LEISURE or natural in GREEN_NATURAL:
        return "green"
    return None


def classify_poi(tags: osmium.osm.TagList) -> str | None:
    """Return the point-of-interest kind of a node's tags (the tag value), or None."""
    for key, values in POI_VALUES.items():
        value = tags.get(key)
        if value in values:
            return value
    historic = tags.get("historic")
    if historic is not None:
        return "historic" if historic == "yes" else historic
    return None


def _make_processor(path: Path) -> osmium.FileProcessor:
    # Only objects with a key the parser reads reach Python. Node locations are stored
    # before the filters run, so untagged nodes still give ways their geometry.
    node_filter = osmium.filter.KeyFilter("barrier", "tourism", "amenity", "historic", "natural")
    node_filter.enable_for(osmium.osm.NODE)
    way_filter = osmium.filter.KeyFilter("highway", "waterway", "natural")
    way_filter.enable_for(osmium.osm.WAY)
    area_keys = ("leisure", "landuse", "natural", "waterway", "water")
    area_filter = osmium.filter.KeyFilter(*area_keys)
    area_filter.enable_for(osmium.osm.AREA)
    relation_filter = osmium.filter.KeyFilter(*area_keys)
    relation_filter.enable_for(osmium.osm.RELATION)
    return (
        osmium.FileProcessor(str(path))
        .with_locations()
        .with_areas(relation_filter)
        .with_filter(osmium.filter.EntityFilter(osmium.osm.NODE | osmium.osm.WAY | osmium.osm.AREA))
        .with_filter(node_filter)
        .with_filter(way_filter)
        .with_filter(area_filter)
    )


def _read_file(path: Path) -> _Collected:
    collected = _Collected()
    wkb_factory = osmium.geom.WKBFactory()
    for obj in _make_processor(path):
        if isinstance(obj, osmium.osm.Way):
            collected.ways_read += 1
            _read_way(obj, collected)
        elif isinstance(obj, osmium.osm.Node):
            _read_node(obj, collected)
        elif isinstance(obj, osmium.osm.Area):
            _read_area(obj, collected, wkb_factory)
    return collected


def _read_way(way: osmium.osm.Way, collected: _Collected) -> None:
    tags = way.tags
    if "highway" in tags:
        tag_dict = dict(tags)
        if is_walkable_way(tag_dict):
            collected.walk_way_ids.append(way.id)
            for key, values in collected.walk_tags.items():
                values.append(tag_dict.get(key))
            collected.walk_oneway.append(foot_direction(tag_dict))
            collected.walk_nodes.add(way)
        return
    waterway = tags.get("waterway")
    if waterway in WATERWAY_LINES:
        kind = "waterway"
    elif tags.get("natural") == "coastline":
        kind = "coastline"
    else:
        return
    collected.line_kinds.append(kind)
    collected.line_names.append(tags.get("name"))
    collected.line_nodes.add(way)


def _read_node(node: osmium.osm.Node, collected: _Collected) -> None:
    tags = node.tags
    if "barrier" in tags and is_blocking_node(dict(tags)):
        collected.blocking.append(node.id)
    kind = classify_poi(tags)
    if kind is None:
        return
    location = node.location
    collected.poi_ids.append(node.id)
    collected.poi_lat.append(location.lat)
    collected.poi_lon.append(location.lon)
    collected.poi_kinds.append(kind)
    collected.poi_names.append(tags.get("name"))


def _read_area(
    area: osmium.osm.Area, collected: _Collected, wkb_factory: osmium.geom.WKBFactory
) -> None:
    tags = area.tags
    kind = classify_area(tags)
    if kind is None:
        return
    try:
        wkb = wkb_factory.create_multipolygon(area)
    except (RuntimeError, osmium.InvalidLocationError):
        # osmium could not build a valid ring, for example from a clipped outline.
        return
    collected.area_kinds.append(kind)
    collected.area_names.append(tags.get("name"))
    collected.area_wkb.append(wkb)


@dataclass
class _FlatWays:
    """Node arrays of the kept ways, concatenated, with way boundaries in `offsets`."""

    ids: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    offsets: np.ndarray
    kept_ways: np.ndarray  # indices into the collected ways
    positions: np.ndarray  # index of each node in its way as the file lists it


@dataclass
class _TrimCounts:
    ways_with_missing: int = 0
    missing_refs: int = 0
    trimmed: int = 0
    dropped: int = 0


def _longest_valid_run(valid: np.ndarray) -> tuple[int, int]:
    """Return [start, stop) of the longest run of True in `valid`."""
    padded = np.concatenate(([False], valid, [False])).astype(np.int8)
    changes = np.flatnonzero(np.diff(padded))
    starts, stops = changes[0::2], changes[1::2]
    if len(starts) == 0:
        return 0, 0
    best = int(np.argmax(stops - starts))
    return int(starts[best]), int(stops[best])


def _flatten_ways(nodes: _WayNodes, counts_out: _TrimCounts) -> _FlatWays:
    """Concatenate way nodes, keeping each way's longest run of nodes with a location.

    Ways left with fewer than 2 nodes are dropped.
    """
    ids = np.asarray(nodes.ids, dtype=np.int64)
    x = np.asarray(nodes.x, dtype=np.int64)
    y = np.asarray(nodes.y, dtype=np.int64)
    counts = np.asarray(nodes.counts, dtype=np.int64)
    offsets = np.concatenate(([0], np.cumsum(counts)))
    way_index = np.repeat(np.arange(len(counts)), counts)

    keep = np.ones(len(ids), dtype=bool)
    invalid = (x == UNDEFINED_COORDINATE) | (y == UNDEFINED_COORDINATE)
    if invalid.any():
        bad_ways = np.unique(way_index[invalid])
        counts_out.ways_with_missing += len(bad_ways)
        counts_out.missing_refs += int(invalid.sum())
        for way in bad_ways:
            start, stop = offsets[way], offsets[way + 1]
            run_start, run_stop = _longest_valid_run(~invalid[start:stop])
            keep[start:stop] = False
            keep[start + run_start : start + run_stop] = True
            if run_stop - run_start >= 2:
                counts_out.trimmed += 1
            else:
                counts_out.dropped += 1

    kept_counts = np.bincount(way_index[keep], minlength=len(counts))
    long_enough = kept_counts >= 2
    keep &= long_enough[way_index]
    kept_ways = np.flatnonzero(long_enough)
    kept_offsets = np.concatenate(([0], np.cumsum(kept_counts[kept_ways])))
    positions = np.arange(len(ids)) - offsets[way_index]
    return _FlatWays(
        ids=ids[keep],
        lon=x[keep] / COORDINATE_PRECISION,
        lat=y[keep] / COORDINATE_PRECISION,
        offsets=kept_offsets,
        kept_ways=kept_ways,
        positions=positions[keep],
    )


def haversine_m(
    lon1: np.ndarray, lat1: np.ndarray, lon2: np.ndarray, lat2: np.ndarray
) -> np.ndarray:
    """Return great-circle distances in metres on a sphere of the mean Earth radius."""
    lon1, lat1, lon2, lat2 = (np.radians(a) for a in (lon1, lat1, lon2, lat2))
    half_dlat = np.sin((lat2 - lat1) / 2)
    half_dlon = np.sin((lon2 - lon1) / 2)
    a = half_dlat**2 + np.cos(lat1) * np.cos(lat2) * half_dlon**2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def _list_array(values: np.ndarray, offsets: np.ndarray) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, pa.float64()))


def _split_points(is_vertex: np.ndarray, cumulative: np.ndarray) -> np.ndarray:
    """Mark inner nodes that cut edges into pieces of at most MAX_EDGE_M where nodes allow.

    From each vertex or cut, the next cut falls at the last node before the piece would
    exceed MAX_EDGE_M by over a metre, so only a single segment longer than that makes a
    longer piece. The metre keeps ways of exactly MAX_EDGE_M whole despite rounding.
    """
    cuts = np.zeros(len(is_vertex), dtype=bool)
    vertex_pos = np.flatnonzero(is_vertex)
    starts, stops = vertex_pos[:-1], vertex_pos[1:]
    long_runs = (cumulative[stops] - cumulative[starts] > MAX_EDGE_M) & (stops - starts > 1)
    lengths = cumulative.tolist()
    for first, stop in zip(starts[long_runs].tolist(), stops[long_runs].tolist()):
        last = first
        for point in range(first + 1, stop):
            if lengths[point + 1] - lengths[last] > MAX_EDGE_M + 1.0:
                cuts[point] = True
                last = point
    return cuts


def _segment_lengths(flat: _FlatWays) -> np.ndarray:
    """Return the length of segment i, which joins point i and i + 1.

    Segments across way boundaries get length 0 and are never inside an edge, so the
    cumulative length is monotonic.
    """
    if len(flat.ids) < 2:
        return np.zeros(0)
    segment = haversine_m(flat.lon[:-1], flat.lat[:-1], flat.lon[1:], flat.lat[1:])
    segment[flat.offsets[1:-1] - 1] = 0.0
    return segment


def _add_long_segment_points(
    flat: _FlatWays, way_ids: np.ndarray
) -> tuple[_FlatWays, np.ndarray, np.ndarray]:
    """Cut each segment longer than MAX_EDGE_M into equal pieces at added points.

    An added point lies on the straight lon/lat line of its segment, so edge geometry keeps
    its course. As in `_split_points`, a segment up to a metre over MAX_EDGE_M stays whole.
    So does a segment that the id scheme of POINT_ID_WAY_FACTOR cannot number: a way id
    that is not positive or too large, a position of 10,000 or more, or 10,000 pieces or
    more. Returns the ways with the added points, their segment lengths, and a mask of the
    added points.
    """
    segment = _segment_lengths(flat)
    long = np.flatnonzero(segment > MAX_EDGE_M + 1.0)
    if len(long) == 0:
        return flat, segment, np.zeros(len(flat.ids), dtype=bool)
    pieces = np.ceil(segment[long] / MAX_EDGE_M).astype(np.int64)
    way_of_long = flat.kept_ways[np.searchsorted(flat.offsets, long, side="right") - 1]
    way_id = way_ids[way_of_long]
    position = flat.positions[long]
    numbered = (
        (way_id > 0)
        & (way_id <= np.iinfo(np.int64).max // POINT_ID_WAY_FACTOR - 1)
        & (position < POINT_ID_WAY_FACTOR // POINT_ID_POSITION_FACTOR)
        & (pieces < POINT_ID_POSITION_FACTOR)
    )
    long, pieces, way_id, position = (a[numbered] for a in (long, pieces, way_id, position))
    if len(long) == 0:
        return flat, segment, np.zeros(len(flat.ids), dtype=bool)

    # Point i moves up by the number of points added before it. The points added in
    # segment i follow point i.
    extra = np.zeros(len(flat.ids), dtype=np.int64)
    extra[long] = pieces - 1
    shift = np.concatenate(([0], np.cumsum(extra)))
    old_to_new = np.arange(len(flat.ids)) + shift[:-1]
    total = len(flat.ids) + int(shift[-1])

    per_segment = pieces - 1
    k = np.arange(int(per_segment.sum())) + 1
    k -= np.repeat(np.cumsum(per_segment) - per_segment, per_segment)
    before = np.repeat(long, per_segment)
    fraction = k / np.repeat(pieces, per_segment)
    at = old_to_new[before] + k

    ids = np.empty(total, dtype=np.int64)
    lon = np.empty(total)
    lat = np.empty(total)
    positions = np.empty(total, dtype=np.int64)
    ids[old_to_new], lon[old_to_new], lat[old_to_new] = flat.ids, flat.lon, flat.lat
    positions[old_to_new] = flat.positions
    ids[at] = -(
        np.repeat(way_id, per_segment) * POINT_ID_WAY_FACTOR
        + np.repeat(position, per_segment) * POINT_ID_POSITION_FACTOR
        + k
    )
    lon[at] = flat.lon[before] + fraction * (flat.lon[before + 1] - flat.lon[before])
    lat[at] = flat.lat[before] + fraction * (flat.lat[before + 1] - flat.lat[before])
    positions[at] = flat.positions[before]
    added = np.zeros(total, dtype=bool)
    added[at] = True

    new_segment = np.zeros(total - 1)
    new_segment[old_to_new[:-1]] = segment
    piece_start = np.repeat(old_to_new[long], pieces)
    piece_start += np.arange(len(piece_start)) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    new_segment[piece_start] = haversine_m(
        lon[piece_start], lat[piece_start], lon[piece_start + 1], lat[piece_start + 1]
    )
    dense = _FlatWays(
        ids=ids,
        lon=lon,
        lat=lat,
        offsets=flat.offsets + shift[flat.offsets],
        kept_ways=flat.kept_ways,
        positions=positions,
    )
    return dense, new_segment, added


def _build_network(
    collected: _Collected, stats: ParseStats, trim: _TrimCounts
) -> tuple[pa.Table, pa.Table]:
    flat = _flatten_ways(collected.walk_nodes, trim)
    walk_way_ids = np.asarray(collected.walk_way_ids, dtype=np.int64)
    flat, segment, added = _add_long_segment_points(flat, walk_way_ids)
    n_ways = len(flat.kept_ways)
    counts = np.diff(flat.offsets)
    way_index = np.repeat(np.arange(n_ways), counts)

    # A vertex is a node used twice or more (by two ways, or twice by one way), a way end,
    # or a blocking barrier.
    _, inverse, uses = np.unique(flat.ids, return_inverse=True, return_counts=True)
    is_vertex = uses[inverse] >= 2
    is_vertex[flat.offsets[:-1]] = True
    is_vertex[flat.offsets[1:] - 1] = True
    blocking = np.asarray(collected.blocking, dtype=np.int64)
    is_blocking = np.isin(flat.ids, blocking)
    is_vertex |= is_blocking | added
    cumulative = np.concatenate(([0.0], np.cumsum(segment)))
    is_vertex |= _split_points(is_vertex, cumulative)

    vertex_pos = np.flatnonzero(is_vertex)
    same_way = way_index[vertex_pos[:-1]] == way_index[vertex_pos[1:]]
    start = vertex_pos[:-1][same_way]
    stop = vertex_pos[1:][same_way]
    edge_way = way_index[start]
    first_edge_of_way = np.searchsorted(edge_way, np.arange(n_ways))
    piece = np.arange(len(start)) - first_edge_of_way[edge_way]
    if len(piece) and piece.max() >= EDGE_ID_FACTOR:
        raise ValueError(f"a way has {piece.max() + 1} edges, more than edge_id can number")

    u = flat.ids[start]
    v = flat.ids[stop]
    length = cumulative[stop] - cumulative[start]
    touches_barrier = is_blocking[start] | is_blocking[stop]
    degenerate = (u == v) & (length <= 0.0)
    keep = ~touches_barrier & ~degenerate
    stats.blocked_edges = int(touches_barrier.sum())
    start, stop, u, v, length, edge_way, piece = (
        a[keep] for a in (start, stop, u, v, length, edge_way, piece)
    )

    mid_lon, mid_lat = _interpolate_midpoints(flat, cumulative, segment, start, stop, length)

    sizes = stop - start + 1
    geometry_offsets = np.concatenate(([0], np.cumsum(sizes)))
    geometry_index = np.repeat(start - geometry_offsets[:-1], sizes) + np.arange(
        geometry_offsets[-1]
    )

    source_way = flat.kept_ways[edge_way]
    way_ids = walk_way_ids[source_way]
    take = pa.array(source_way)
    columns = {
        "edge_id": pa.array(way_ids * EDGE_ID_FACTOR + piece, pa.int64()),
        "way_id": pa.array(way_ids, pa.int64()),
        "u": pa.array(u, pa.int64()),
        "v": pa.array(v, pa.int64()),
        "length_m": pa.array(length, pa.float64()),
        "lon": _list_array(flat.lon[geometry_index], geometry_offsets),
        "lat": _list_array(flat.lat[geometry_index], geometry_offsets),
    }
    for key in EDGE_TAG_KEYS:
        columns[key] = pa.array(collected.walk_tags[key], pa.string()).take(take)
    oneway = np.asarray(collected.walk_oneway, dtype=np.int8)
    columns["oneway_foot"] = pa.array(oneway[source_way], pa.int8())
    columns["mid_lat"] = pa.array(mid_lat, pa.float64())
    columns["mid_lon"] = pa.array(mid_lon, pa.float64())
    edges = pa.Table.from_pydict(columns, schema=REGION_EDGES)

    endpoint_ids = np.concatenate((u, v))
    endpoint_pos = np.concatenate((start, stop))
    node_ids, first = np.unique(endpoint_ids, return_index=True)
    node_pos = endpoint_pos[first]
    nodes = pa.Table.from_pydict(
        {
            "node_id": pa.array(node_ids, pa.int64()),
            "lat": pa.array(flat.lat[node_pos], pa.float64()),
            "lon": pa.array(flat.lon[node_pos], pa.float64()),
        },
        schema=REGION_NODES,
    )

    stats.walkable_ways = len(collected.walk_way_ids)
    stats.edges = edges.num_rows
    stats.vertices = nodes.num_rows
    if len(node_pos):
        lons, lats = flat.lon[node_pos], flat.lat[node_pos]
        stats.bbox = (float(lons.min()), float(lats.min()), float(lons.max()), float(lats.max()))
    return edges, nodes


def _interpolate_midpoints(
    flat: _FlatWays,
    cumulative: np.ndarray,
    segment: np.ndarray,
    start: np.ndarray,
    stop: np.ndarray,
    length: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Return the lon/lat halfway along each edge, interpolated on its segment."""
    target = cumulative[start] + length / 2
    after = np.searchsorted(cumulative, target, side="left")
    after = np.clip(after, start + 1, stop)
    before = after - 1
    seg_length = segment[before] if len(before) else np.zeros(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.where(seg_length > 0, (target - cumulative[before]) / seg_length, 0.0)
    fraction = np.clip(fraction, 0.0, 1.0)
    mid_lon = flat.lon[before] + fraction * (flat.lon[after] - flat.lon[before])
    mid_lat = flat.lat[before] + fraction * (flat.lat[after] - flat.lat[before])
    return mid_lon, mid_lat


def _build_areas(collected: _Collected, trim: _TrimCounts) -> pa.Table:
    polygons = shapely.from_wkb(np.asarray(collected.area_wkb, dtype=object))
    kinds = list(collected.area_kinds)
    names = list(collected.area_names)

    flat = _flatten_ways(collected.line_nodes, trim)
    lines = np.empty(0, dtype=object)
    if len(flat.kept_ways):
        coords = np.column_stack((flat.lon, flat.lat))
        line_index = np.repeat(np.arange(len(flat.kept_ways)), np.diff(flat.offsets))
        lines = shapely.linestrings(coords, indices=line_index)
        kinds += [collected.line_kinds[i] for i in flat.kept_ways]
        names += [collected.line_names[i] for i in flat.kept_ways]

    geometries = np.concatenate((polygons, lines)) if len(lines) else polygons
    bounds = shapely.bounds(geometries) if len(geometries) else np.zeros((0, 4))
    return pa.Table.from_pydict(
        {
            "kind": pa.array(kinds, pa.string()),
            "name": pa.array(names, pa.string()),
            "wkb": pa.array(shapely.to_wkb(geometries) if len(geometries) else [], pa.binary()),
            "min_lon": pa.array(bounds[:, 0], pa.float64()),
            "min_lat": pa.array(bounds[:, 1], pa.float64()),
            "max_lon": pa.array(bounds[:, 2], pa.float64()),
            "max_lat": pa.array(bounds[:, 3], pa.float64()),
        },
        schema=REGION_AREAS,
    )


def _build_pois(collected: _Collected) -> pa.Table:
    return pa.Table.from_pydict(
        {
            "node_id": pa.array(collected.poi_ids, pa.int64()),
            "lat": pa.array(collected.poi_lat, pa.float64()),
            "lon": pa.array(collected.poi_lon, pa.float64()),
            "kind": pa.array(collected.poi_kinds, pa.string()),
            "name": pa.array(collected.poi_names, pa.string()),
        },
        schema=REGION_POIS,
    )


def parse_extract(path: str | Path, progress: ProgressCallback | None = None) -> ParsedRegion:
    """Parse a .osm.pbf, .osm or .osm.bz2 extract into edges, nodes, areas and POIs.

    Ways that reference nodes missing from the file (extracts cut at a bounding box) keep
    their longest run of nodes that have a location, and are dropped when fewer than 2
    nodes remain. One UserWarning then reports the counts. Edges that end at a blocking
    barrier are dropped, so the barrier cannot be passed.

    Raises
    ------
    FileNotFoundError
        When `path` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"OSM extract not found: {path}")

    def report(message: str) -> None:
        if progress is not None:
            progress(message)

    began = time.perf_counter()
    report(f"reading {path.name}")
    collected = _read_file(path)
    report(
        f"read {collected.ways_read:,} ways: {len(collected.walk_way_ids):,} walkable, "
        f"{len(collected.area_wkb):,} areas, {len(collected.poi_ids):,} points of interest"
    )

    stats = ParseStats(ways_read=collected.ways_read)
    trim = _TrimCounts()
    edges, nodes = _build_network(collected, stats, trim)
    report(f"built {stats.edges:,} edges between {stats.vertices:,} vertices")
    areas = _build_areas(collected, trim)
    pois = _build_pois(collected)

    stats.ways_with_missing_nodes = trim.ways_with_missing
    stats.missing_node_refs = trim.missing_refs
    stats.ways_trimmed = trim.trimmed
    stats.ways_dropped = trim.dropped
    stats.areas = areas.num_rows
    stats.pois = pois.num_rows
    stats.seconds = time.perf_counter() - began
    if trim.ways_with_missing:
        warnings.warn(
            f"{path.name}: {trim.ways_with_missing:,} ways reference {trim.missing_refs:,} "
            f"nodes missing from the extract; trimmed {trim.trimmed:,}, "
            f"dropped {trim.dropped:,}",
            UserWarning,
            stacklevel=2,
        )
    report(f"parsed {path.name} in {stats.seconds:.2f} s")
    return ParsedRegion(edges=edges, nodes=nodes, areas=areas, pois=pois, stats=stats)
