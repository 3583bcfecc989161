"""Parser tests on hand-written OSM XML and on the real extracts beside the repository."""

from __future__ import annotations

import bz2
import itertools
import warnings
from pathlib import Path

import numpy as np
import osmium
import pyarrow as pa
import pytest
import shapely

from pipelines.osm import EDGE_ID_FACTOR, MAX_EDGE_M, ParsedRegion, parse_extract
from planner import Network, snap_start
from tests.osm_builders import Member, Node, Relation, Way, grid_nodes, write_osm
from warehouse.schema import REGION_AREAS, REGION_EDGES, REGION_NODES, REGION_POIS

EXTRACTS = Path(__file__).resolve().parents[1].parent / "shared" / "osm"
MONACO = EXTRACTS / "monaco-2021-04-21.osm.pbf"
VANCOUVER = EXTRACTS / "vancouver-2015-05-02-clipped.osm.pbf"


def edge_pairs(region: ParsedRegion) -> set[tuple[int, int]]:
    return set(zip(region.edges["u"].to_pylist(), region.edges["v"].to_pylist()))


def parse_quietly(path: Path) -> ParsedRegion:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return parse_extract(path)


# --- hand-written files ---------------------------------------------------------------


def test_tables_match_schemas(tmp_path: Path) -> None:
    grid = grid_nodes(1, 3)
    bench = Node(50, grid[(0, 1)].lat + 0.0001, grid[(0, 1)].lon, {"amenity": "bench"})
    path = write_osm(
        tmp_path / "line.osm",
        [*grid.values(), bench],
        [Way(10, [1, 2, 3], {"highway": "footway", "surface": "gravel", "name": "Weg"})],
    )
    region = parse_quietly(path)
    assert region.edges.schema.equals(REGION_EDGES)
    assert region.nodes.schema.equals(REGION_NODES)
    assert region.areas.schema.equals(REGION_AREAS)
    assert region.pois.schema.equals(REGION_POIS)


def test_single_way_becomes_one_edge(tmp_path: Path) -> None:
    grid = grid_nodes(1, 3, spacing_m=100.0)
    path = write_osm(
        tmp_path / "line.osm",
        grid.values(),
        [Way(10, [1, 2, 3], {"highway": "footway", "surface": "gravel", "name": "Weg"})],
    )
    region = parse_quietly(path)
    edge = region.edges.to_pylist()[0]
    assert region.edges.num_rows == 1
    assert (edge["u"], edge["v"]) == (1, 3)
    assert edge["edge_id"] == 10 * EDGE_ID_FACTOR
    assert edge["length_m"] == pytest.approx(200.0, rel=1e-3)
    assert edge["lon"] == pytest.approx([grid[(0, c)].lon for c in range(3)])
    assert edge["lat"] == pytest.approx([grid[(0, c)].lat for c in range(3)])
    assert edge["mid_lon"] == pytest.approx(grid[(0, 1)].lon, abs=1e-7)
    assert edge["surface"] == "gravel"
    assert edge["name"] == "Weg"
    assert edge["access"] is None
    assert sorted(region.nodes["node_id"].to_pylist()) == [1, 3]


def test_midpoint_interpolates_by_length(tmp_path: Path) -> None:
    # Segments of 40 m and 120 m: the midpoint lies 40 m into the second segment.
    grid = grid_nodes(1, 5, spacing_m=40.0)
    path = write_osm(tmp_path / "mid.osm", grid.values(), [Way(10, [1, 2, 5], {"highway": "path"})])
    edge = parse_quietly(path).edges.to_pylist()[0]
    assert edge["length_m"] == pytest.approx(160.0, rel=1e-3)
    assert edge["mid_lon"] == pytest.approx(grid[(0, 2)].lon, abs=1e-7)
    assert edge["mid_lat"] == pytest.approx(grid[(0, 2)].lat, abs=1e-7)


def test_ways_split_at_shared_nodes(tmp_path: Path) -> None:
    grid = grid_nodes(3, 3)
    ids = {key: node.id for key, node in grid.items()}
    ways = [
        Way(10, [ids[(1, 0)], ids[(1, 1)], ids[(1, 2)]], {"highway": "residential"}),
        Way(11, [ids[(0, 1)], ids[(1, 1)], ids[(2, 1)]], {"highway": "footway"}),
    ]
    region = parse_quietly(write_osm(tmp_path / "cross.osm", grid.values(), ways))
    assert region.edges.num_rows == 4
    assert region.nodes.num_rows == 5
    assert ids[(1, 1)] in region.nodes["node_id"].to_pylist()
    assert len(set(region.edges["edge_id"].to_pylist())) == 4
    assert region.stats.edges == 4
    assert region.stats.vertices == 5


def test_fence_way_shares_node_with_path(tmp_path: Path) -> None:
    grid = grid_nodes(3, 3)
    ids = {key: node.id for key, node in grid.items()}
    path_way = Way(10, [ids[(1, 0)], ids[(1, 1)], ids[(1, 2)]], {"highway": "path"})
    fence = Way(11, [ids[(0, 1)], ids[(1, 1)], ids[(2, 1)]], {"barrier": "fence"})
    region = parse_quietly(write_osm(tmp_path / "fence.osm", grid.values(), [path_way, fence]))
    assert edge_pairs(region) == {(ids[(1, 0)], ids[(1, 2)])}
    assert region.edges["way_id"].to_pylist() == [10]


def test_fence_node_on_path_blocks(tmp_path: Path) -> None:
    grid = grid_nodes(1, 3)
    grid[(0, 1)].tags = {"barrier": "fence"}
    region = parse_quietly(
        write_osm(
            tmp_path / "fence_node.osm", grid.values(), [Way(10, [1, 2, 3], {"highway": "path"})]
        )
    )
    assert region.edges.num_rows == 0
    assert region.stats.blocked_edges == 2


def test_locked_gate_cuts_path(tmp_path: Path) -> None:
    # Path 1-2-3 with a branch 2-4; a locked gate at 3 removes only the piece 2-3.
    grid = grid_nodes(2, 3)
    ids = {key: node.id for key, node in grid.items()}
    grid[(0, 2)].tags = {"barrier": "gate", "locked": "yes", "access": "private"}
    ways = [
        Way(10, [ids[(0, 0)], ids[(0, 1)], ids[(0, 2)]], {"highway": "path"}),
        Way(11, [ids[(0, 1)], ids[(1, 1)]], {"highway": "path"}),
    ]
    region = parse_quietly(write_osm(tmp_path / "gate.osm", grid.values(), ways))
    assert edge_pairs(region) == {(ids[(0, 0)], ids[(0, 1)]), (ids[(0, 1)], ids[(1, 1)])}
    assert ids[(0, 2)] not in region.nodes["node_id"].to_pylist()


def test_open_gate_keeps_path(tmp_path: Path) -> None:
    grid = grid_nodes(1, 3)
    grid[(0, 1)].tags = {"barrier": "gate"}
    region = parse_quietly(
        write_osm(
            tmp_path / "open_gate.osm", grid.values(), [Way(10, [1, 2, 3], {"highway": "path"})]
        )
    )
    assert edge_pairs(region) == {(1, 3)}


def test_missing_node_trims_way(tmp_path: Path) -> None:
    grid = grid_nodes(1, 4)
    ways = [
        Way(10, [1, 2, 3, 999, 4], {"highway": "footway"}),  # keeps 1-2-3
        Way(11, [998, 4, 997], {"highway": "footway"}),  # one node left: dropped
    ]
    path = write_osm(tmp_path / "clipped.osm", grid.values(), ways)
    with pytest.warns(UserWarning, match=r"2 ways reference 3 nodes missing") as caught:
        region = parse_extract(path)
    assert len(caught) == 1
    assert "trimmed 1" in str(caught[0].message)
    assert "dropped 1" in str(caught[0].message)
    assert edge_pairs(region) == {(1, 3)}
    assert region.stats.ways_trimmed == 1
    assert region.stats.ways_dropped == 1
    assert region.stats.missing_node_refs == 3


def test_longest_valid_run_is_kept(tmp_path: Path) -> None:
    grid = grid_nodes(1, 6, spacing_m=50.0)
    way = Way(10, [1, 2, 999, 3, 4, 5, 6], {"highway": "path"})
    with pytest.warns(UserWarning):
        region = parse_extract(write_osm(tmp_path / "runs.osm", grid.values(), [way]))
    assert edge_pairs(region) == {(3, 6)}


def test_multipolygon_park_relation(tmp_path: Path) -> None:
    grid = grid_nodes(4, 4, spacing_m=100.0)
    ids = {key: node.id for key, node in grid.items()}
    outer = Way(20, [ids[(0, 0)], ids[(0, 3)], ids[(3, 3)], ids[(3, 0)], ids[(0, 0)]])
    inner = Way(21, [ids[(1, 1)], ids[(1, 2)], ids[(2, 2)], ids[(2, 1)], ids[(1, 1)]])
    park = Relation(
        30,
        [Member("way", 20, "outer"), Member("way", 21, "inner")],
        {"type": "multipolygon", "leisure": "park", "name": "Stadtpark"},
    )
    region = parse_quietly(write_osm(tmp_path / "park.osm", grid.values(), [outer, inner], [park]))
    areas = region.areas.to_pylist()
    assert [area["kind"] for area in areas] == ["park"]
    assert areas[0]["name"] == "Stadtpark"
    geometry = shapely.from_wkb(areas[0]["wkb"])
    assert geometry.geom_type in {"Polygon", "MultiPolygon"}
    assert len(shapely.get_parts(geometry)[0].interiors) == 1
    assert areas[0]["min_lon"] == pytest.approx(grid[(0, 0)].lon)
    assert areas[0]["max_lat"] == pytest.approx(grid[(3, 0)].lat)


def test_closed_way_areas_and_lines(tmp_path: Path) -> None:
    grid = grid_nodes(2, 4)
    ids = {key: node.id for key, node in grid.items()}
    ring = [ids[(0, 0)], ids[(0, 1)], ids[(1, 1)], ids[(1, 0)], ids[(0, 0)]]
    ways = [
        Way(20, ring, {"natural": "wood"}),
        Way(21, [ids[(0, 2)], ids[(0, 3)]], {"waterway": "stream", "name": "Bach"}),
        Way(22, [ids[(1, 2)], ids[(1, 3)]], {"natural": "coastline"}),
    ]
    region = parse_quietly(write_osm(tmp_path / "areas.osm", grid.values(), ways))
    kinds = sorted(region.areas["kind"].to_pylist())
    assert kinds == ["coastline", "forest", "waterway"]
    lines = region.areas.filter(pa.compute.equal(region.areas["kind"], "waterway")).to_pylist()
    assert shapely.from_wkb(lines[0]["wkb"]).geom_type == "LineString"
    assert lines[0]["name"] == "Bach"


def test_pedestrian_area_ring_is_walkable(tmp_path: Path) -> None:
    grid = grid_nodes(2, 2, spacing_m=40.0)
    ring = [1, 2, 4, 3, 1]
    plaza = Way(10, ring, {"highway": "pedestrian", "area": "yes"})
    region = parse_quietly(write_osm(tmp_path / "plaza.osm", grid.values(), [plaza]))
    assert edge_pairs(region) == {(1, 1)}
    assert region.edges["length_m"].to_pylist()[0] == pytest.approx(160.0, rel=1e-3)


def test_long_segment_cut_into_equal_pieces(tmp_path: Path) -> None:
    # Nodes 60 m, 600 m and 660 m along: only the 540 m segment is longer than MAX_EDGE_M.
    nodes = [
        Node(1, 49.0, 8.0),
        Node(2, 49.00054, 8.0),
        Node(3, 49.0054, 8.0),
        Node(4, 49.00594, 8.0),
    ]
    track = Way(10, [1, 2, 3, 4], {"highway": "track"})
    region = parse_quietly(write_osm(tmp_path / "track.osm", nodes, [track]))
    rows = sorted(region.edges.to_pylist(), key=lambda row: row["edge_id"])
    chain = [rows[0]["u"]] + [row["v"] for row in rows]
    assert chain[:2] == [1, 2]
    assert chain[-2:] == [3, 4]
    assert len(chain) == 6
    assert all(node < 0 for node in chain[2:4])
    assert [row["length_m"] for row in rows[1:4]] == pytest.approx([180.0] * 3, rel=1e-3)


# A footway 495 m north and 495 m east of its start, 700 m long, and a node 73 m west of it.
METRES_PER_DEGREE_LAT = 111_195.08
METRES_PER_DEGREE_LON = METRES_PER_DEGREE_LAT * float(np.cos(np.radians(49.0)))
FOOTWAY_NODES = [
    Node(1, 49.0, 8.0),
    Node(2, 49.0 + 495.0 / METRES_PER_DEGREE_LAT, 8.0 + 495.0 / METRES_PER_DEGREE_LON),
    Node(3, 49.0, 7.999),
]


def straight_footway(path: Path, refs: list[int] | None = None) -> ParsedRegion:
    """Parse the footway: its nodes 1 and 2, or the nodes `refs` names."""
    way = Way(10, refs or [1, 2], {"highway": "footway"})
    return parse_quietly(write_osm(path, FOOTWAY_NODES, [way]))


def test_straight_segment_pieces_and_ids(tmp_path: Path) -> None:
    region = straight_footway(tmp_path / "footway.osm")
    edges = region.edges
    lengths = edges["length_m"].to_pylist()
    assert len(lengths) == 4
    assert max(lengths) <= MAX_EDGE_M
    assert sum(lengths) == pytest.approx(700.0, rel=1e-3)

    node_ids = region.nodes["node_id"].to_pylist()
    added = [node for node in node_ids if node not in (1, 2)]
    assert len(node_ids) == len(set(node_ids)) == 5
    assert len(added) == 3
    assert all(node < 0 for node in added)
    assert len(set(region.edges["edge_id"].to_pylist())) == region.edges.num_rows

    # Each piece starts where the one before ends, and every point lies on the line.
    rows = sorted(edges.to_pylist(), key=lambda row: row["edge_id"])
    assert rows[0]["u"] == 1
    assert rows[-1]["v"] == 2
    for before, after in itertools.pairwise(rows):
        assert before["v"] == after["u"]
        assert (before["lon"][-1], before["lat"][-1]) == (after["lon"][0], after["lat"][0])
    lon = np.array([lon for row in rows for lon in row["lon"]])
    lat = np.array([lat for row in rows for lat in row["lat"]])
    slope = (lat[-1] - lat[0]) / (lon[-1] - lon[0])
    assert lat - lat[0] == pytest.approx(slope * (lon - lon[0]), abs=1e-12)
    assert np.all(np.diff(lon) >= 0)

    nodes = dict(
        zip(node_ids, zip(region.nodes["lon"].to_pylist(), region.nodes["lat"].to_pylist()))
    )
    for row in rows:
        assert nodes[row["u"]] == (row["lon"][0], row["lat"][0])
        assert nodes[row["v"]] == (row["lon"][-1], row["lat"][-1])


def test_added_points_same_in_clipped_extract(tmp_path: Path) -> None:
    # Without its first node the way is trimmed, yet its added points keep ids and places.
    whole = straight_footway(tmp_path / "whole.osm", [3, 1, 2])
    with pytest.warns(UserWarning):
        clipped = parse_extract(
            write_osm(
                tmp_path / "clipped.osm",
                FOOTWAY_NODES[:2],
                [Way(10, [3, 1, 2], {"highway": "footway"})],
            )
        )
    whole_nodes = whole.nodes.filter(pa.compute.less(whole.nodes["node_id"], 0))
    clipped_nodes = clipped.nodes.filter(pa.compute.less(clipped.nodes["node_id"], 0))
    assert whole_nodes.num_rows == 3
    assert clipped_nodes.equals(whole_nodes)


def test_start_beside_long_segment_snaps_close(tmp_path: Path) -> None:
    region = straight_footway(tmp_path / "footway.osm")
    network = Network.from_tables(region.nodes, region.edges)
    # 30 m south-east of the middle of the footway, at right angles to it.
    lat = 49.0 + (247.5 - 21.2) / METRES_PER_DEGREE_LAT
    lon = 8.0 + (247.5 + 21.2) / METRES_PER_DEGREE_LON
    snapped = snap_start(network, lat, lon)
    assert snapped.node_id < 0
    assert snapped.distance_m <= 100.0


def test_long_way_cut_at_inner_nodes(tmp_path: Path) -> None:
    grid = grid_nodes(1, 8, spacing_m=60.0)
    track = Way(10, [node.id for node in grid.values()], {"highway": "track"})
    region = parse_quietly(write_osm(tmp_path / "track.osm", grid.values(), [track]))
    lengths = region.edges["length_m"].to_pylist()
    assert edge_pairs(region) == {(1, 4), (4, 7), (7, 8)}
    assert max(lengths) <= MAX_EDGE_M + 1.0
    assert sum(lengths) == pytest.approx(420.0, rel=1e-3)


def test_oneway_foot_column(tmp_path: Path) -> None:
    grid = grid_nodes(3, 2)
    ways = [
        Way(10, [1, 2], {"highway": "footway", "oneway:foot": "yes"}),
        Way(11, [3, 4], {"highway": "footway", "oneway": "yes"}),
        Way(12, [5, 6], {"highway": "steps", "oneway:foot": "-1"}),
    ]
    region = parse_quietly(write_osm(tmp_path / "oneway.osm", grid.values(), ways))
    by_way = dict(zip(region.edges["way_id"].to_pylist(), region.edges["oneway_foot"].to_pylist()))
    assert by_way == {10: 1, 11: 0, 12: -1}


def test_unwalkable_ways_are_left_out(tmp_path: Path) -> None:
    grid = grid_nodes(4, 2)
    ways = [
        Way(10, [1, 2], {"highway": "motorway"}),
        Way(11, [3, 4], {"highway": "service", "access": "private"}),
        Way(12, [5, 6], {"route": "ferry", "highway": "footway", "foot": "yes"}),
        Way(13, [7, 8], {"highway": "footway"}),
    ]
    region = parse_quietly(write_osm(tmp_path / "mixed.osm", grid.values(), ways))
    assert region.edges["way_id"].to_pylist() == [13]
    assert region.stats.walkable_ways == 1


def test_pois(tmp_path: Path) -> None:
    nodes = [
        Node(1, 49.0, 8.0, {"tourism": "viewpoint", "name": "Blick"}),
        Node(2, 49.0, 8.001, {"amenity": "drinking_water"}),
        Node(3, 49.0, 8.002, {"historic": "memorial"}),
        Node(4, 49.0, 8.003, {"amenity": "parking"}),
        Node(5, 49.0, 8.004, {"natural": "peak"}),
    ]
    region = parse_quietly(write_osm(tmp_path / "pois.osm", nodes))
    kinds = dict(zip(region.pois["node_id"].to_pylist(), region.pois["kind"].to_pylist()))
    assert kinds == {1: "viewpoint", 2: "drinking_water", 3: "memorial", 5: "peak"}
    assert region.pois["name"].to_pylist()[0] == "Blick"


def test_bz2_xml_is_read(tmp_path: Path) -> None:
    grid = grid_nodes(1, 2)
    plain = write_osm(tmp_path / "plain.osm", grid.values(), [Way(10, [1, 2], {"highway": "path"})])
    packed = tmp_path / "packed.osm.bz2"
    packed.write_bytes(bz2.compress(plain.read_bytes()))
    assert parse_quietly(packed).edges.num_rows == 1


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        parse_extract(tmp_path / "absent.osm.pbf")


def test_progress_callback(tmp_path: Path) -> None:
    grid = grid_nodes(1, 2)
    path = write_osm(tmp_path / "p.osm", grid.values(), [Way(10, [1, 2], {"highway": "path"})])
    lines: list[str] = []
    parse_extract(path, progress=lines.append)
    assert lines
    assert all(isinstance(line, str) for line in lines)


# --- real extracts ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def monaco() -> ParsedRegion:
    if not MONACO.exists():
        pytest.skip(f"extract not found: {MONACO}")
    return parse_quietly(MONACO)


def test_monaco_has_edges(monaco: ParsedRegion) -> None:
    assert monaco.edges.num_rows > 1000
    assert monaco.stats.edges == monaco.edges.num_rows


def test_monaco_lengths_positive(monaco: ParsedRegion) -> None:
    assert (monaco.edges["length_m"].to_numpy() > 0).all()


def test_monaco_endpoints_are_nodes(monaco: ParsedRegion) -> None:
    endpoints = np.concatenate((monaco.edges["u"].to_numpy(), monaco.edges["v"].to_numpy()))
    assert np.isin(endpoints, monaco.nodes["node_id"].to_numpy()).all()
    assert len(np.unique(endpoints)) == monaco.nodes.num_rows


def test_monaco_edge_ids_unique(monaco: ParsedRegion) -> None:
    assert len(np.unique(monaco.edges["edge_id"].to_numpy())) == monaco.edges.num_rows


def test_monaco_excludes_motorways(monaco: ParsedRegion) -> None:
    highways = set(monaco.edges["highway"].to_pylist())
    assert not highways & {"motorway", "motorway_link", "construction", "platform"}


def test_monaco_excludes_ferries(monaco: ParsedRegion) -> None:
    ferry_ways = {
        way.id
        for way in osmium.FileProcessor(str(MONACO), osmium.osm.WAY)
        if way.tags.get("route") == "ferry"
    }
    assert not ferry_ways & set(monaco.edges["way_id"].to_pylist())


def test_monaco_geometry_runs_u_to_v(monaco: ParsedRegion) -> None:
    lookup = {
        node_id: (lat, lon)
        for node_id, lat, lon in zip(
            monaco.nodes["node_id"].to_pylist(),
            monaco.nodes["lat"].to_pylist(),
            monaco.nodes["lon"].to_pylist(),
        )
    }
    for edge in monaco.edges.slice(0, 500).to_pylist():
        assert lookup[edge["u"]] == (edge["lat"][0], edge["lon"][0])
        assert lookup[edge["v"]] == (edge["lat"][-1], edge["lon"][-1])


def test_monaco_areas_and_pois(monaco: ParsedRegion) -> None:
    kinds = set(monaco.areas["kind"].to_pylist())
    assert {"park", "water", "coastline"} <= kinds
    assert monaco.pois.num_rows > 0


def test_vancouver_warns_and_parses() -> None:
    if not VANCOUVER.exists():
        pytest.skip(f"extract not found: {VANCOUVER}")
    with pytest.warns(UserWarning, match=r"ways reference [\d,]+ nodes missing") as caught:
        region = parse_extract(VANCOUVER)
    assert len([w for w in caught if "missing" in str(w.message)]) == 1
    assert region.stats.ways_with_missing_nodes > 0
    assert region.stats.ways_trimmed > 0
    assert region.stats.ways_dropped > 0
    assert region.stats.missing_node_refs > 0
    assert region.edges.num_rows > 10_000
    assert (region.edges["length_m"].to_numpy() > 0).all()
