"""Judge walking routes by their coordinates alone, against the OSM extract they came from.

This evaluator shares no code with the product: it reads the extract with its own small
pyosmium reader and applies its own pedestrian access rules, written from the OSM wiki
pages on access tags, highway=*, barrier=* and sidewalks. A route is a list of
(lon, lat) points. Each consecutive pair must be one segment of an OSM way, found by
exact node coordinates on the 1e-7 degree grid that OSM uses, or a piece of one: a point
off that grid (one the planner adds to cut a long segment) must lie within ON_SEGMENT_M
of the segment that contains the piece. Nothing the planner reports
about a route (its distance, edge ids, retrace or green shares) is used.

Run on its own to judge one GeoJSON route:
`/tmp/venv/bin/python benchmarks/evaluate.py EXTRACT.osm.pbf ROUTE.geojson`
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import osmium
import pyproj
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, dijkstra

log = logging.getLogger("benchmarks.evaluate")

EARTH_RADIUS_M = 6_371_008.8

# OSM stores coordinates as integers in units of 1e-7 degrees.
COORDINATE_SCALE = 10_000_000

GREEN_DISTANCE_M = 30.0
# Distance from its OSM segment within which a route point that is no OSM node counts as on it.
# The planner places such points on the straight line in lon/lat, and that line parts from
# the straight line in this evaluator's metric projection by 0.25 m on a 3.6 km segment.
ON_SEGMENT_M = 1.0
WATER_DISTANCE_M = 50.0

# Two loops count as different when the length they share is less than this share of the
# length of their union (a length-weighted Jaccard index of their way segments).
DISTINCT_JACCARD = 0.5

Tags = Mapping[str, str]

# Access rules, from the OSM wiki pages "Key:access", "Key:foot", "Key:highway",
# "Key:sidewalk" and "Key:barrier".
FOOT_PERMITTED = frozenset({"yes", "designated", "permissive"})
# foot=use_sidepath: pedestrians must use the separately mapped way beside this one.
FOOT_FORBIDDEN = frozenset({"no", "private", "use_sidepath"})
ACCESS_FORBIDDEN = frozenset({"no", "private"})
MOTORWAYS = frozenset({"motorway", "motorway_link"})
TRUNKS = frozenset({"trunk", "trunk_link"})
# Highway values that are not (or no longer) a usable way, or are not for people at all.
NOT_A_WAY = frozenset(
    {
        "construction",
        "proposed",
        "planned",
        "abandoned",
        "razed",
        "disused",
        "raceway",
        "bus_guideway",
    }
)
# Highway areas a pedestrian may cross: squares and wide footways. Any other highway with
# area=yes is an outline (a rest area, a service area, a road surface), not a way to walk.
WALKABLE_HIGHWAY_AREAS = frozenset({"pedestrian", "footway"})
SIDEWALK_PRESENT = frozenset({"yes", "both", "left", "right"})
SIDEWALK_KEYS = ("sidewalk", "sidewalk:both", "sidewalk:left", "sidewalk:right")
# Linear barriers: a way that passes a node tagged with one of these goes through it.
SOLID_BARRIERS = frozenset({"wall", "fence", "city_wall", "retaining_wall", "hedge"})

# Polygons and lines that make a stretch of a route green or beside water.
GREEN_LEISURE = frozenset(
    {"park", "garden", "nature_reserve", "common", "recreation_ground", "dog_park"}
)
GREEN_LANDUSE = frozenset(
    {
        "forest",
        "grass",
        "meadow",
        "village_green",
        "recreation_ground",
        "allotments",
        "orchard",
        "cemetery",
    }
)
GREEN_NATURAL = frozenset({"wood", "scrub", "heath", "grassland", "fell"})
WATER_NATURAL = frozenset({"water", "bay", "strait", "wetland"})
WATER_LANDUSE = frozenset({"reservoir", "basin"})
WATER_POLYGON_WATERWAYS = frozenset({"riverbank", "dock"})
WATER_LINE_WATERWAYS = frozenset({"river", "stream", "canal", "brook"})


def forbidden_reason(tags: Tags) -> str | None:
    """Return why a pedestrian must not use a way with these tags, or None when allowed."""
    highway = tags.get("highway")
    foot = tags.get("foot")
    foot_permitted = foot in FOOT_PERMITTED
    if tags.get("route") == "ferry":
        return "route=ferry"
    if highway is None:
        return "not a highway"
    if foot in FOOT_FORBIDDEN:
        return f"foot={foot}"
    if highway in MOTORWAYS or highway in NOT_A_WAY:
        return f"highway={highway}"
    if tags.get("area") == "yes" and highway not in WALKABLE_HIGHWAY_AREAS:
        return f"highway={highway} area=yes"
    access = tags.get("access")
    if access in ACCESS_FORBIDDEN and not foot_permitted:
        return f"access={access}"
    if highway in TRUNKS and not (foot_permitted or _has_sidewalk(tags)):
        return f"highway={highway} without sidewalk or foot permission"
    if highway == "cycleway" and not foot_permitted:
        return "highway=cycleway without foot permission"
    return None


def _has_sidewalk(tags: Tags) -> bool:
    return any(tags.get(key) in SIDEWALK_PRESENT for key in SIDEWALK_KEYS)


def barrier_blocks(tags: Tags) -> bool:
    """Tell whether a pedestrian may not pass a barrier node with these tags."""
    if "barrier" not in tags or tags.get("foot") in FOOT_PERMITTED:
        return False
    if tags.get("foot") in FOOT_FORBIDDEN or tags["barrier"] in SOLID_BARRIERS:
        return True
    return tags.get("locked") == "yes" or tags.get("access") in ACCESS_FORBIDDEN


def haversine_m(
    lon1: np.ndarray, lat1: np.ndarray, lon2: np.ndarray, lat2: np.ndarray
) -> np.ndarray:
    """Return great-circle distances in metres on a sphere of the mean Earth radius."""
    lon1, lat1, lon2, lat2 = (
        np.radians(np.asarray(a, dtype=np.float64)) for a in (lon1, lat1, lon2, lat2)
    )
    a = (
        np.sin((lat2 - lat1) / 2) ** 2
        + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def point_keys(x: np.ndarray, y: np.ndarray) -> list[int]:
    """Pack integer OSM coordinates (1e-7 degrees) into one non-negative int per point."""
    offset = np.int64(1 << 31)
    packed = ((x.astype(np.int64) + offset).astype(np.uint64) << np.uint64(32)) | (
        (y.astype(np.int64) + offset).astype(np.uint64)
    )
    return packed.tolist()


@dataclass
class RouteMeasures:
    """Measures of one route, with lengths in metres on the haversine sphere."""

    length_m: float
    closed: bool
    off_network_m: float
    forbidden_m: float
    # Reasons for the forbidden stretches, such as "way 123: access=private", each once.
    forbidden: list[str]
    repeated_m: float
    stem_m: float
    green_water_m: float
    # Length per undirected way segment, for the overlap of two routes.
    segments: dict[tuple[int, int], float] = field(repr=False)

    @property
    def retrace_share(self) -> float:
        """Share of the length walked more than once, the stem at the start excepted."""
        return max(self.repeated_m - self.stem_m, 0.0) / max(self.length_m, 1.0)

    @property
    def stem_share(self) -> float:
        return self.stem_m / max(self.length_m, 1.0)

    @property
    def green_water_share(self) -> float:
        return self.green_water_m / max(self.length_m, 1.0)

    def error(self, target_m: float) -> float:
        """Return the signed relative distance error against `target_m`."""
        return (self.length_m - target_m) / target_m


def overlap(first: RouteMeasures, second: RouteMeasures) -> float:
    """Return the length-weighted Jaccard index of the way segments of two routes."""
    shared = sum(length for key, length in first.segments.items() if key in second.segments)
    union = sum(first.segments.values()) + sum(second.segments.values()) - shared
    return shared / union if union > 0 else 1.0


def count_distinct(routes: Sequence[RouteMeasures]) -> int:
    """Count routes that overlap every earlier counted route by less than DISTINCT_JACCARD."""
    kept: list[RouteMeasures] = []
    for route in routes:
        if all(overlap(route, other) < DISTINCT_JACCARD for other in kept):
            kept.append(route)
    return len(kept)


@dataclass(frozen=True)
class Start:
    """A random point on a walkable way and the length of ways connected to it."""

    lat: float
    lon: float
    way_id: int
    component_m: float
    # Index of the walkable segment the start lies on.
    segment: int


@dataclass
class _Ways:
    """Ways read from the extract, with node coordinates in 1e-7 degrees."""

    ids: list[int] = field(default_factory=list)
    tags: list[dict[str, str]] = field(default_factory=list)
    node_ids: list[list[int]] = field(default_factory=list)
    x: list[list[int]] = field(default_factory=list)
    y: list[list[int]] = field(default_factory=list)


class OsmReference:
    """Way segments, blocking barriers and the green and water zone of one extract."""

    def __init__(
        self,
        ways: _Ways,
        blocking: dict[int, str],
        green: list[shapely.Geometry],
        water: list[shapely.Geometry],
    ) -> None:
        self.way_ids = ways.ids
        self.way_tags = ways.tags
        self.way_reason = [forbidden_reason(tags) for tags in ways.tags]
        # Packed point key -> "node N: barrier=..." for nodes that block pedestrians.
        self.blocking = blocking

        all_x = np.array([value for xs in ways.x for value in xs], dtype=np.int64)
        all_y = np.array([value for ys in ways.y for value in ys], dtype=np.int64)
        center_lon = float(np.median(all_x)) / COORDINATE_SCALE if all_x.size else 0.0
        center_lat = float(np.median(all_y)) / COORDINATE_SCALE if all_y.size else 0.0
        self._transformer = pyproj.Transformer.from_crs(
            "EPSG:4326",
            f"+proj=aeqd +lat_0={center_lat} +lon_0={center_lon} +datum=WGS84 +units=m",
            always_xy=True,
        )
        self._index_segments(ways)
        self._green_water = self._near_zone(green, water)

    @classmethod
    def read(cls, path: str | Path) -> OsmReference:
        """Read highway and ferry ways, barrier nodes and green and water areas of `path`."""
        began = time.perf_counter()
        ways = _Ways()
        barrier_tags: dict[int, dict[str, str]] = {}
        green: list[shapely.Geometry] = []
        water: list[shapely.Geometry] = []
        wkb = osmium.geom.WKBFactory()
        for obj in _processor(Path(path)):
            if isinstance(obj, osmium.osm.Node):
                barrier_tags[obj.id] = dict(obj.tags)
            elif isinstance(obj, osmium.osm.Way):
                _read_way(obj, ways, water)
            elif isinstance(obj, osmium.osm.Area):
                _read_area(obj, wkb, green, water)

        # Barrier nodes are matched by the coordinates their ways give them.
        blocking: dict[int, str] = {}
        for node_ids, xs, ys in zip(ways.node_ids, ways.x, ways.y):
            for node_id, x, y in zip(node_ids, xs, ys):
                tags = barrier_tags.get(node_id)
                if tags is not None and barrier_blocks(tags):
                    key = point_keys(np.array([x]), np.array([y]))[0]
                    blocking[key] = f"node {node_id}: barrier={tags['barrier']}"
        reference = cls(ways, blocking, green, water)
        log.info(
            "read %s in %.1f s: %d ways, %d blocking barriers, %d green and %d water shapes",
            Path(path).name,
            time.perf_counter() - began,
            len(ways.ids),
            len(blocking),
            len(green),
            len(water),
        )
        return reference

    def _index_segments(self, ways: _Ways) -> None:
        """Map each undirected segment to its ways and build the walkable graph for starts."""
        self._segment_ways: dict[tuple[int, int], tuple[int, ...]] = {}
        self._segment_tree: tuple[shapely.STRtree, list[tuple[int, int]]] | None = None
        walk_a: list[int] = []
        walk_b: list[int] = []
        walk_way: list[int] = []
        all_keys = point_keys(
            np.fromiter((x for xs in ways.x for x in xs), dtype=np.int64),
            np.fromiter((y for ys in ways.y for y in ys), dtype=np.int64),
        )
        end = 0
        for index, xs in enumerate(ways.x):
            begin, end = end, end + len(xs)
            keys = all_keys[begin:end]
            allowed = self.way_reason[index] is None
            for a, b in itertools.pairwise(keys):
                if a == b:
                    continue
                segment = (a, b) if a < b else (b, a)
                self._segment_ways[segment] = self._segment_ways.get(segment, ()) + (index,)
                if allowed and a not in self.blocking and b not in self.blocking:
                    walk_a.append(a)
                    walk_b.append(b)
                    walk_way.append(index)

        # Undirected components of the allowed segments, cut at blocking barriers.
        self._node_keys = np.unique(np.asarray(all_keys, dtype=np.uint64))
        points, inverse = np.unique(np.array(walk_a + walk_b, dtype=np.uint64), return_inverse=True)
        count = len(walk_a)
        row, col = inverse[:count], inverse[count:]
        graph = coo_matrix((np.ones(count), (row, col)), shape=(points.size, points.size))
        _, component = connected_components(graph, directed=False)
        self._walk_ends = (row, col, points.size)
        x = (points >> np.uint64(32)).astype(np.int64) - (1 << 31)
        y = (points & np.uint64(0xFFFFFFFF)).astype(np.int64) - (1 << 31)
        lon = x / COORDINATE_SCALE
        lat = y / COORDINATE_SCALE
        self._walk = {
            "lon1": lon[row],
            "lat1": lat[row],
            "lon2": lon[col],
            "lat2": lat[col],
            "length": haversine_m(lon[row], lat[row], lon[col], lat[col]),
            "component": component[row],
            "way": np.asarray(walk_way, dtype=np.int64),
        }
        self._component_m = (
            np.bincount(self._walk["component"], weights=self._walk["length"])
            if count
            else np.zeros(0)
        )

    def _near_zone(
        self, green: list[shapely.Geometry], water: list[shapely.Geometry]
    ) -> shapely.Geometry:
        """Union the green shapes grown by GREEN_DISTANCE_M and water by WATER_DISTANCE_M."""
        parts = []
        for shapes, distance in ((green, GREEN_DISTANCE_M), (water, WATER_DISTANCE_M)):
            if shapes:
                projected = shapely.transform(
                    np.asarray(shapes, dtype=object), self._project, interleaved=False
                )
                parts.append(shapely.buffer(projected, distance, quad_segs=4))
        zone = shapely.union_all(np.concatenate(parts)) if parts else shapely.Polygon()
        shapely.prepare(zone)
        return zone

    def _project(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._transformer.transform(lon, lat)

    def random_starts(self, count: int, seed: int) -> list[Start]:
        """Draw points on segments of the largest walkable component, by segment length."""
        if self._component_m.size == 0:
            return []
        rng = np.random.default_rng(seed)
        largest = int(np.argmax(self._component_m))
        inside = np.flatnonzero(self._walk["component"] == largest)
        weights = self._walk["length"][inside]
        chosen = rng.choice(inside, size=count, p=weights / weights.sum())
        fraction = rng.uniform(0.0, 1.0, size=count)
        walk = self._walk
        lon = walk["lon1"][chosen] + fraction * (walk["lon2"][chosen] - walk["lon1"][chosen])
        lat = walk["lat1"][chosen] + fraction * (walk["lat2"][chosen] - walk["lat1"][chosen])
        component_m = float(self._component_m[largest])
        return [
            Start(
                float(la),
                float(lo),
                self.way_ids[int(walk["way"][segment])],
                component_m,
                int(segment),
            )
            for la, lo, segment in zip(lat, lon, chosen)
        ]

    def shortest_cycle_m(self, start: Start) -> float:
        """Return the shortest closed walk that uses the start's segment once, inf if none.

        A loop may also walk out to a cycle and back the same way, so this is an upper
        bound of the shortest loop from the start, not the minimum.
        """
        row, col, count = self._walk_ends
        low, high = np.minimum(row, col), np.maximum(row, col)
        pair = low.astype(np.int64) * count + high
        # Ways that share the start's segment must not close a cycle over it either.
        keep = pair != pair[start.segment]
        low, high, lengths = low[keep], high[keep], self._walk["length"][keep]
        # scipy sums duplicate entries, so keep only the shortest of parallel segments.
        order = np.lexsort((lengths, high, low))
        low, high, lengths = low[order], high[order], lengths[order]
        first = np.ones(low.size, dtype=bool)
        first[1:] = (low[1:] != low[:-1]) | (high[1:] != high[:-1])
        low, high, lengths = low[first], high[first], lengths[first]
        graph = coo_matrix(
            (
                np.concatenate([lengths, lengths]),
                (np.concatenate([low, high]), np.concatenate([high, low])),
            ),
            shape=(count, count),
        ).tocsr()
        distance = dijkstra(graph, indices=int(row[start.segment]))[col[start.segment]]
        return float(distance + self._walk["length"][start.segment])

    def measure(self, coordinates: Sequence[Sequence[float]]) -> RouteMeasures:
        """Measure a route given as (lon, lat) points. A loop repeats its first point last."""
        points = np.asarray(coordinates, dtype=np.float64).reshape(-1, 2)
        closed = bool(points.shape[0] >= 2 and (points[0] == points[-1]).all())
        if points.shape[0] < 2:
            return RouteMeasures(0.0, closed, 0.0, 0.0, [], 0.0, 0.0, 0.0, {})
        lon, lat = points[:, 0], points[:, 1]
        lengths = haversine_m(lon[:-1], lat[:-1], lon[1:], lat[1:])
        keys = point_keys(
            np.rint(lon * COORDINATE_SCALE).astype(np.int64),
            np.rint(lat * COORDINATE_SCALE).astype(np.int64),
        )
        segments = [(a, b) if a < b else (b, a) for a, b in itertools.pairwise(keys)]
        on_node = np.isin(np.asarray(keys, dtype=np.uint64), self._node_keys).tolist()

        off_network = np.zeros(len(segments), dtype=bool)
        forbidden = np.zeros(len(segments), dtype=bool)
        reasons: dict[str, None] = {}
        for index, (segment, a, b) in enumerate(zip(segments, keys[:-1], keys[1:])):
            if a == b:
                continue
            if on_node[index] and on_node[index + 1]:
                ways = self._segment_ways.get(segment)
            else:
                ends = [(key, on_node[i], points[i]) for i, key in ((index, a), (index + 1, b))]
                ways = self._ways_containing(ends)
            if ways is None:
                off_network[index] = True
            elif all(self.way_reason[way] is not None for way in ways):
                forbidden[index] = True
                way = ways[0]
                reasons[f"way {self.way_ids[way]}: {self.way_reason[way]}"] = None
        self._mark_barrier_passes(keys, segments, closed, forbidden, reasons)

        counts = Counter(segments)
        lengths_by_segment: dict[tuple[int, int], float] = {}
        for segment, length in zip(segments, lengths.tolist()):
            lengths_by_segment[segment] = length
        repeated = sum(lengths_by_segment[key] * (n - 1) for key, n in counts.items() if n > 1)

        x, y = self._project((lon[:-1] + lon[1:]) / 2, (lat[:-1] + lat[1:]) / 2)
        near = shapely.contains_xy(self._green_water, np.asarray(x), np.asarray(y))
        return RouteMeasures(
            length_m=float(lengths.sum()),
            closed=closed,
            off_network_m=float(lengths[off_network].sum()),
            forbidden_m=float(lengths[forbidden].sum()),
            forbidden=list(reasons),
            repeated_m=float(repeated),
            stem_m=_stem_length(segments, lengths) if closed else 0.0,
            green_water_m=float(lengths[near].sum()),
            segments=lengths_by_segment,
        )

    def _ways_containing(self, ends: list[tuple[int, bool, np.ndarray]]) -> tuple[int, ...] | None:
        """Return the ways of the segments that contain a route piece, or None.

        `ends` gives each end of the piece as (point key, is an OSM node, (lon, lat)). A
        segment contains the piece when each end is one of its nodes or, for an end that is no
        OSM node, lies within ON_SEGMENT_M of it.
        """
        tree, segments = self._segments_indexed()
        candidates: set[int] | None = None
        for key, on_node, (lon, lat) in ends:
            if on_node:
                continue
            x, y = self._project(np.array([lon]), np.array([lat]))
            near = tree.query(shapely.points(x, y), predicate="dwithin", distance=ON_SEGMENT_M)
            found = set(near[1].tolist())
            candidates = found if candidates is None else candidates & found
        ways: tuple[int, ...] = ()
        for segment in sorted(candidates or ()):
            pair = segments[segment]
            if all(key in pair for key, on_node, _ in ends if on_node):
                ways += self._segment_ways[pair]
        return ways or None

    def _segments_indexed(self) -> tuple[shapely.STRtree, list[tuple[int, int]]]:
        """Return a tree of every way segment in metres, and the segment of each entry."""
        if self._segment_tree is None:
            segments = list(self._segment_ways)
            packed = np.array(segments, dtype=np.uint64).reshape(-1)
            x = (packed >> np.uint64(32)).astype(np.int64) - (1 << 31)
            y = (packed & np.uint64(0xFFFFFFFF)).astype(np.int64) - (1 << 31)
            mx, my = self._project(x / COORDINATE_SCALE, y / COORDINATE_SCALE)
            coords = np.column_stack([mx, my]).reshape(-1, 2, 2)
            self._segment_tree = (shapely.STRtree(shapely.linestrings(coords)), segments)
        return self._segment_tree

    def _mark_barrier_passes(
        self,
        keys: list[int],
        segments: list[tuple[int, int]],
        closed: bool,
        forbidden: np.ndarray,
        reasons: dict[str, None],
    ) -> None:
        """Mark both segments around each blocking barrier the route walks through.

        Turning back at a barrier is no pass. The first point of a closed route joins its
        last segment to its first.
        """
        # NOTE: only barrier nodes are seen. A fence or wall way that crosses a path at an
        # untagged shared node, or with no shared node, does not count as blocking.
        count = len(segments)
        for index, key in enumerate(keys[:-1]):
            if key not in self.blocking:
                continue
            if index == 0 and not closed:
                continue
            before = index - 1 if index > 0 else count - 1
            if segments[before] == segments[index]:
                continue
            forbidden[before] = forbidden[index] = True
            reasons[self.blocking[key]] = None


def _stem_length(segments: list[tuple[int, int]], lengths: np.ndarray) -> float:
    """Return the length of the stretch a closed route walks out on and back at its end."""
    # NOTE: any common prefix and reversed suffix counts, also one the network did not force,
    # so RouteMeasures.stem_share is reported beside the retrace share.
    count = len(segments)
    steps = 0
    while steps < count // 2 and segments[steps] == segments[count - 1 - steps]:
        steps += 1
    return float(lengths[:steps].sum())


def _processor(path: Path) -> osmium.FileProcessor:
    # Node locations are cached for every node before the filters run, so ways keep their
    # coordinates while only barrier nodes reach Python.
    nodes = osmium.filter.KeyFilter("barrier")
    nodes.enable_for(osmium.osm.NODE)
    ways = osmium.filter.KeyFilter("highway", "route", "waterway", "natural")
    ways.enable_for(osmium.osm.WAY)
    area_keys = ("leisure", "landuse", "natural", "waterway", "water")
    areas = osmium.filter.KeyFilter(*area_keys)
    areas.enable_for(osmium.osm.AREA)
    relations = osmium.filter.KeyFilter(*area_keys)
    relations.enable_for(osmium.osm.RELATION)
    return (
        osmium.FileProcessor(str(path))
        .with_locations()
        .with_areas(relations)
        .with_filter(osmium.filter.EntityFilter(osmium.osm.NODE | osmium.osm.WAY | osmium.osm.AREA))
        .with_filter(nodes)
        .with_filter(ways)
        .with_filter(areas)
    )


def _read_way(way: osmium.osm.Way, ways: _Ways, water: list[shapely.Geometry]) -> None:
    tags = way.tags
    if "highway" in tags or tags.get("route") == "ferry":
        node_ids, xs, ys = [], [], []
        for node in way.nodes:
            location = node.location
            # Ways cut at the extract's edge reference nodes without a location.
            if not location.valid():
                continue
            node_ids.append(node.ref)
            xs.append(location.x)
            ys.append(location.y)
        if len(node_ids) >= 2:
            ways.ids.append(way.id)
            ways.tags.append(dict(tags))
            ways.node_ids.append(node_ids)
            ways.x.append(xs)
            ways.y.append(ys)
        return
    if tags.get("waterway") in WATER_LINE_WATERWAYS or tags.get("natural") == "coastline":
        coords = [
            (node.location.lon, node.location.lat) for node in way.nodes if node.location.valid()
        ]
        if len(coords) >= 2:
            water.append(shapely.LineString(coords))


def _area_kind(tags: osmium.osm.TagList) -> str | None:
    natural = tags.get("natural")
    landuse = tags.get("landuse")
    if (
        natural in WATER_NATURAL
        or landuse in WATER_LANDUSE
        or tags.get("waterway") in WATER_POLYGON_WATERWAYS
        or "water" in tags
    ):
        return "water"
    if tags.get("leisure") in GREEN_LEISURE or landuse in GREEN_LANDUSE:
        return "green"
    if natural in GREEN_NATURAL:
        return "green"
    return None


def _read_area(
    area: osmium.osm.Area,
    wkb: osmium.geom.WKBFactory,
    green: list[shapely.Geometry],
    water: list[shapely.Geometry],
) -> None:
    kind = _area_kind(area.tags)
    if kind is None:
        return
    try:
        geometry = shapely.from_wkb(wkb.create_multipolygon(area))
    except (RuntimeError, osmium.InvalidLocationError):
        # The outline could not be closed, typically where the extract cuts it.
        return
    if not geometry.is_valid:
        geometry = shapely.make_valid(geometry)
    (green if kind == "green" else water).append(geometry)


def _route_coordinates(document: dict) -> list[list[float]]:
    """Return the coordinates of a GeoJSON LineString, Feature or FeatureCollection."""
    if document.get("type") == "FeatureCollection":
        document = document["features"][0]
    if document.get("type") == "Feature":
        document = document["geometry"]
    if document.get("type") != "LineString":
        raise ValueError(f"expected a GeoJSON LineString, got type {document.get('type')!r}")
    return document["coordinates"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Measure one GeoJSON route against an extract.")
    parser.add_argument("extract", type=Path, help="the .osm.pbf the route was planned on")
    parser.add_argument("route", type=Path, help="GeoJSON LineString with [lon, lat] points")
    parser.add_argument("--target", type=float, help="target distance in metres")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    reference = OsmReference.read(args.extract)
    route = reference.measure(_route_coordinates(json.loads(args.route.read_text())))
    print(f"length {route.length_m:.1f} m, closed {route.closed}")
    if args.target:
        print(f"distance error {route.error(args.target):+.2%} of {args.target:.0f} m")
    print(f"walked twice {route.retrace_share:.2%} (stem {route.stem_m:.0f} m excluded)")
    print(f"off network {route.off_network_m:.1f} m, forbidden {route.forbidden_m:.1f} m")
    for reason in route.forbidden:
        print(f"  forbidden: {reason}")
    print(f"green or water {route.green_water_share:.1%}")
    return 0 if math.isfinite(route.length_m) else 1


if __name__ == "__main__":
    sys.exit(main())
