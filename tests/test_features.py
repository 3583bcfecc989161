"""Edge feature and area clipping tests on small geometries placed in metres."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import shapely

from pipelines.features import clip_areas, compute_edge_features
from pipelines.osm import parse_extract
from warehouse.schema import CELL_AREAS, CELL_EDGE_FEATURES, REGION_AREAS, REGION_EDGES, REGION_POIS

EXTRACTS = Path(__file__).resolve().parents[1].parent / "shared" / "osm"
MONACO = EXTRACTS / "monaco-2021-04-21.osm.pbf"

ORIGIN_LAT, ORIGIN_LON = 49.0, 8.0
METRES_PER_DEGREE = 6_371_008.8 * math.pi / 180


def to_lonlat(x_m: float, y_m: float) -> tuple[float, float]:
    """Return (lon, lat) of a point x_m east and y_m north of the origin."""
    lon = ORIGIN_LON + x_m / (METRES_PER_DEGREE * math.cos(math.radians(ORIGIN_LAT)))
    lat = ORIGIN_LAT + y_m / METRES_PER_DEGREE
    return lon, lat


def make_edges(lines_m: list[list[tuple[float, float]]], highway: str = "footway") -> pa.Table:
    rows = []
    for index, line in enumerate(lines_m):
        coords = [to_lonlat(x, y) for x, y in line]
        rows.append(
            {
                "edge_id": index,
                "way_id": index,
                "u": 1000 + 2 * index,
                "v": 1001 + 2 * index,
                "length_m": float(shapely.LineString(line).length),
                "lon": [lon for lon, _ in coords],
                "lat": [lat for _, lat in coords],
                "highway": highway,
                "access": None,
                "foot": None,
                "surface": None,
                "lit": None,
                "name": None,
                "oneway_foot": 0,
                "mid_lat": coords[0][1],
                "mid_lon": coords[0][0],
            }
        )
    return pa.Table.from_pylist(rows, schema=REGION_EDGES)


def to_lonlat_geometry(geometry_m: shapely.Geometry) -> shapely.Geometry:
    def project(coords: np.ndarray) -> np.ndarray:
        return np.array([to_lonlat(x, y) for x, y in coords]).reshape(-1, 2)

    return shapely.transform(geometry_m, project)


def make_areas(items: list[tuple[str, shapely.Geometry]]) -> pa.Table:
    rows = []
    for kind, geometry_m in items:
        geometry = to_lonlat_geometry(geometry_m)
        min_lon, min_lat, max_lon, max_lat = geometry.bounds
        rows.append(
            {
                "kind": kind,
                "name": None,
                "wkb": shapely.to_wkb(geometry),
                "min_lon": min_lon,
                "min_lat": min_lat,
                "max_lon": max_lon,
                "max_lat": max_lat,
            }
        )
    return pa.Table.from_pylist(rows, schema=REGION_AREAS)


def make_pois(points_m: list[tuple[float, float]]) -> pa.Table:
    rows = []
    for index, (x, y) in enumerate(points_m):
        lon, lat = to_lonlat(x, y)
        rows.append({"node_id": index, "lat": lat, "lon": lon, "kind": "bench", "name": None})
    return pa.Table.from_pylist(rows, schema=REGION_POIS)


NO_AREAS = make_areas([])
NO_POIS = make_pois([])

# A 200 m edge along the x axis, and a 100 x 100 m square whose edge is `gap` metres above it.
EDGE = [[(0.0, 0.0), (200.0, 0.0)]]


def square_above(gap: float, x0: float = 0.0, width: float = 200.0) -> shapely.Polygon:
    return shapely.box(x0, gap, x0 + width, gap + 100.0)


def feature(table: pa.Table, name: str) -> list[float]:
    return table[name].to_pylist()


def test_features_schema_and_order() -> None:
    edges = make_edges([[(0, 0), (50, 0)], [(0, 10), (50, 10)]])
    table = compute_edge_features(edges, NO_AREAS, NO_POIS)
    assert table.schema.equals(CELL_EDGE_FEATURES)
    assert table["edge_id"].to_pylist() == [0, 1]


def test_features_of_no_edges() -> None:
    table = compute_edge_features(make_edges([]), NO_AREAS, NO_POIS)
    assert table.num_rows == 0
    assert table.schema.equals(CELL_EDGE_FEATURES)


def test_park_near_edge() -> None:
    areas = make_areas([("park", square_above(20.0))])
    table = compute_edge_features(make_edges(EDGE), areas, NO_POIS)
    assert feature(table, "green") == [1.0]
    assert feature(table, "park") == [1.0]
    assert feature(table, "water") == [0.0]


def test_park_beyond_reach() -> None:
    areas = make_areas([("park", square_above(40.0))])
    table = compute_edge_features(make_edges(EDGE), areas, NO_POIS)
    assert feature(table, "green") == [0.0]
    assert feature(table, "park") == [0.0]


def test_park_along_half_the_edge() -> None:
    areas = make_areas([("park", square_above(10.0, x0=0.0, width=100.0))])
    table = compute_edge_features(make_edges(EDGE), areas, NO_POIS)
    # 9 samples every 25 m; those at x <= 125 m are within 30 m of the square.
    assert feature(table, "green")[0] == pytest.approx(6 / 9, abs=1e-6)


def test_forest_is_green_not_park() -> None:
    areas = make_areas([("forest", square_above(5.0))])
    table = compute_edge_features(make_edges(EDGE), areas, NO_POIS)
    assert feature(table, "green") == [1.0]
    assert feature(table, "park") == [0.0]


def test_edge_inside_polygon_is_green() -> None:
    areas = make_areas([("green", shapely.box(-50, -50, 250, 50))])
    table = compute_edge_features(make_edges(EDGE), areas, NO_POIS)
    assert feature(table, "green") == [1.0]


def test_large_polygon_is_cut_correctly() -> None:
    # A ring with many vertices goes through the tiled path and must give the same result.
    circle = shapely.Point(100, 500).buffer(480, quad_segs=64)
    areas = make_areas([("forest", circle)])
    edges = make_edges([[(0, 0), (200, 0)], [(0, -100), (200, -100)]])
    table = compute_edge_features(edges, areas, NO_POIS)
    assert feature(table, "green")[0] > 0.0
    assert feature(table, "green")[1] == 0.0


def test_water_line_within_50_m() -> None:
    areas = make_areas([("waterway", shapely.LineString([(0, 45), (200, 45)]))])
    table = compute_edge_features(make_edges(EDGE), areas, NO_POIS)
    assert feature(table, "water") == [1.0]
    assert feature(table, "green") == [0.0]


def test_water_beyond_50_m() -> None:
    areas = make_areas(
        [("coastline", shapely.LineString([(0, 60), (200, 60)])), ("water", square_above(70.0))]
    )
    table = compute_edge_features(make_edges(EDGE), areas, NO_POIS)
    assert feature(table, "water") == [0.0]


@pytest.mark.parametrize(
    ("points", "expected"),
    [
        ([], 0.0),
        ([(100, 30)], 1 / 3),
        ([(100, 30), (20, -50), (190, 10)], 1.0),
        ([(100, 30), (20, -50), (190, 10), (50, 0)], 1.0),
        ([(100, 80), (300, 0)], 0.0),
    ],
)
def test_poi_score(points: list[tuple[float, float]], expected: float) -> None:
    table = compute_edge_features(make_edges(EDGE), NO_AREAS, make_pois(points))
    assert feature(table, "poi")[0] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(("highway", "expected"), [("footway", 1.0), ("primary", 0.1)])
def test_quiet_from_highway(highway: str, expected: float) -> None:
    table = compute_edge_features(make_edges(EDGE, highway=highway), NO_AREAS, NO_POIS)
    assert feature(table, "quiet")[0] == pytest.approx(expected)


def test_invalid_polygon_is_repaired() -> None:
    bowtie = shapely.Polygon([(0, 10), (200, 110), (200, 10), (0, 110), (0, 10)])
    assert not bowtie.is_valid
    table = compute_edge_features(make_edges(EDGE), make_areas([("park", bowtie)]), NO_POIS)
    assert 0.0 < feature(table, "park")[0] <= 1.0


def test_monaco_features_in_unit_range() -> None:
    if not MONACO.exists():
        pytest.skip(f"extract not found: {MONACO}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        region = parse_extract(MONACO)
    table = compute_edge_features(region.edges, region.areas, region.pois)
    assert table.num_rows == region.edges.num_rows
    for name in ("green", "water", "park", "quiet", "poi"):
        values = table[name].to_numpy()
        assert values.min() >= 0.0, name
        assert values.max() <= 1.0, name
        assert values.max() > 0.0, name


# --- clip_areas ---------------------------------------------------------------------------

CELL_M = shapely.box(0, 0, 1000, 1000)


def cell_ring() -> list[tuple[float, float]]:
    return [to_lonlat(x, y) for x, y in CELL_M.exterior.coords]


def test_clip_keeps_the_inside_part() -> None:
    areas = make_areas([("park", shapely.box(800, 800, 1500, 1500))])
    clipped = clip_areas(areas, cell_ring())
    assert clipped.schema.equals(CELL_AREAS)
    assert clipped.num_rows == 1
    row = clipped.to_pylist()[0]
    corner_lon, corner_lat = to_lonlat(1000, 1000)
    assert row["max_lon"] == pytest.approx(corner_lon)
    assert row["max_lat"] == pytest.approx(corner_lat)
    geometry = shapely.from_wkb(row["wkb"])
    assert geometry.geom_type in {"Polygon", "MultiPolygon"}


def test_clip_drops_areas_outside() -> None:
    areas = make_areas([("water", shapely.box(1200, 1200, 1500, 1500))])
    assert clip_areas(areas, cell_ring()).num_rows == 0


def test_clip_accepts_shapely_polygon() -> None:
    areas = make_areas([("forest", shapely.box(100, 100, 200, 200))])
    clipped = clip_areas(areas, shapely.Polygon(cell_ring()))
    assert clipped["kind"].to_pylist() == ["forest"]


def test_clip_lines_stay_lines() -> None:
    areas = make_areas([("waterway", shapely.LineString([(-500, 500), (1500, 500)]))])
    clipped = clip_areas(areas, cell_ring())
    geometry = shapely.from_wkb(clipped["wkb"].to_pylist()[0])
    assert geometry.geom_type in {"LineString", "MultiLineString"}
    assert clipped["min_lon"].to_pylist()[0] == pytest.approx(to_lonlat(0, 0)[0])


def test_clip_polygon_touching_edge_is_dropped() -> None:
    # A polygon that only shares the cell's border leaves a line, which is not an area.
    areas = make_areas([("park", shapely.box(1000, 0, 1200, 1000))])
    assert clip_areas(areas, cell_ring()).num_rows == 0


def test_clip_repairs_invalid_polygon() -> None:
    bowtie = shapely.Polygon([(100, 100), (300, 300), (300, 100), (100, 300), (100, 100)])
    clipped = clip_areas(make_areas([("green", bowtie)]), cell_ring())
    assert clipped.num_rows == 1
    assert shapely.from_wkb(clipped["wkb"].to_pylist()[0]).is_valid
