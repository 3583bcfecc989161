"""Planner faults on hand-built OSM files and real extracts, run through the real pipeline.

Each small case is written as OSM XML, parsed by `pipelines.osm.parse_extract`, given
features by `pipelines.features.compute_edge_features` and loaded with
`planner.Network.from_tables`, so the walking rules, features and planner are tested together.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
import shapely

from pipelines.features import compute_edge_features
from pipelines.osm import EDGE_ID_FACTOR, parse_extract
from planner import (
    Network,
    NoLoopFound,
    StartNotFound,
    plan_loops,
    snap_start,
)
from planner._quick_eval import load_network
from planner.walks import edge_jaccard
from serving.gpx import to_gpx
from tests.conftest import HEIDELBERG, MONACO, VANCOUVER
from tests.osm_builders import (
    METRES_PER_DEGREE_LAT,
    Member,
    Node,
    Relation,
    Way,
    grid_nodes,
    write_osm,
)

ORIGIN = (49.0, 8.0)
METRES_PER_DEGREE_LON = METRES_PER_DEGREE_LAT * math.cos(math.radians(ORIGIN[0]))


def at(x: float, y: float) -> tuple[float, float]:
    """Return (lat, lon) of a point x metres east and y metres north of ORIGIN."""
    return ORIGIN[0] + y / METRES_PER_DEGREE_LAT, ORIGIN[1] + x / METRES_PER_DEGREE_LON


def node_at(node_id: int, x: float, y: float, tags: dict | None = None) -> Node:
    lat, lon = at(x, y)
    return Node(node_id, lat, lon, tags or {})


def grid(
    rows: int, columns: int, first_id: int, x0: float = 0.0, y0: float = 0.0, spacing=100.0
) -> dict[tuple[int, int], Node]:
    return grid_nodes(rows, columns, spacing, origin=at(x0, y0), first_id=first_id)


def grid_ways(
    nodes: dict[tuple[int, int], Node], first_way_id: int, tags: dict | None = None
) -> list[Way]:
    """Return one way per grid row and one per column, all with `tags`."""
    tags = tags or {"highway": "residential"}
    rows = 1 + max(row for row, _ in nodes)
    columns = 1 + max(column for _, column in nodes)
    ways = []
    for row in range(rows):
        refs = [nodes[(row, column)].id for column in range(columns)]
        ways.append(Way(first_way_id + len(ways), refs, dict(tags)))
    for column in range(columns):
        refs = [nodes[(row, column)].id for row in range(rows)]
        ways.append(Way(first_way_id + len(ways), refs, dict(tags)))
    return ways


def network_from_osm(
    folder: Path,
    nodes: Iterable[Node],
    ways: Iterable[Way],
    relations: Iterable[Relation] = (),
) -> Network:
    """Run hand-built OSM objects through parsing, features and network building."""
    path = write_osm(folder / "case.osm", nodes, ways, relations)
    region = parse_extract(path)
    features = compute_edge_features(region.edges, region.areas, region.pois)
    return Network.from_tables(region.nodes, region.edges, features, region.areas)


def way_ids(network: Network, edge_ids: Iterable[int]) -> set[int]:
    return {edge_id // EDGE_ID_FACTOR for edge_id in edge_ids}


def polygon_metres(points: list[tuple[float, float]]) -> shapely.Polygon:
    return shapely.Polygon(points)


def loop_line_metres(coordinates: list[tuple[float, float]]) -> shapely.LineString:
    points = [
        ((lon - ORIGIN[1]) * METRES_PER_DEGREE_LON, (lat - ORIGIN[0]) * METRES_PER_DEGREE_LAT)
        for lon, lat in coordinates
    ]
    return shapely.LineString(points)


def assert_closed_walk(network: Network, node_ids: list[int], edge_ids: list[int]) -> None:
    """Check that consecutive nodes are joined by the listed edges in an allowed direction."""
    assert node_ids[0] == node_ids[-1]
    assert len(edge_ids) == len(node_ids) - 1
    for index, edge_id in enumerate(edge_ids):
        edge = network.edge_index(edge_id)
        assert edge >= 0
        u = int(network.node_ids[network.edge_u[edge]])
        v = int(network.node_ids[network.edge_v[edge]])
        walked = (node_ids[index], node_ids[index + 1])
        assert walked in ((u, v), (v, u))
        if network.oneway[edge] == 1:
            assert walked == (u, v)


def relative_error(distance: float, target: float) -> float:
    return abs(distance - target) / target


# Starts and snapping


def test_cul_de_sac_start_repeats_only_stem(tmp_path: Path) -> None:
    town = grid(12, 12, first_id=1)
    stem = [node_at(1000 + step, 1100.0 + 100.0 * step, 500.0) for step in range(1, 7)]
    ways = grid_ways(town, 100)
    ways.append(Way(900, [town[(5, 11)].id] + [node.id for node in stem], {"highway": "service"}))
    network = network_from_osm(tmp_path, [*town.values(), *stem], ways)
    loop = plan_loops(network, *at(1700.0, 500.0), 4000.0, "", seed=1)[0]
    assert loop.node_ids[0] == stem[-1].id
    assert relative_error(loop.distance_m, 4000.0) <= 0.05
    stem_edges = [edge for edge in loop.edge_ids if edge // EDGE_ID_FACTOR == 900]
    assert len(stem_edges) == 2 * len(set(stem_edges))
    assert loop.retrace_share <= 0.03


def test_long_segment_snaps_to_added_point(tmp_path: Path) -> None:
    # The parser cuts the 900 m footway into five pieces of 180 m, so vertices lie at
    # x = 680 m and 860 m, and a start at x = 800 m snaps to the nearer end of its piece.
    town = grid(6, 6, first_id=1)
    far = node_at(1000, 500.0 + 900.0, 0.0)
    ways = grid_ways(town, 100)
    ways.append(Way(900, [town[(0, 5)].id, far.id], {"highway": "footway"}))
    network = network_from_osm(tmp_path, [*town.values(), far], ways)
    start = snap_start(network, *at(800.0, 20.0))
    assert start.node_id < 0
    assert start.distance_m == pytest.approx(math.hypot(60.0, 20.0), abs=2.0)


def test_river_with_one_bridge(tmp_path: Path) -> None:
    west = grid(12, 6, first_id=1)
    east = grid(12, 6, first_id=1000, x0=700.0)
    ways = grid_ways(west, 100) + grid_ways(east, 200)
    ways.append(Way(900, [west[(11, 5)].id, east[(11, 0)].id], {"highway": "footway"}))
    river = [
        node_at(5000 + index, x, y)
        for index, (x, y) in enumerate(
            [(520.0, -200.0), (680.0, -200.0), (680.0, 1300.0), (520.0, 1300.0)]
        )
    ]
    ways.append(Way(950, [node.id for node in river] + [river[0].id], {"natural": "water"}))
    network = network_from_osm(tmp_path, [*west.values(), *east.values(), *river], ways)
    # A click in the river near the west bank, 1 km south of the bridge.
    start = snap_start(network, *at(530.0, 0.0))
    assert start.node_id < 1000
    loop = plan_loops(network, *at(530.0, 0.0), 3000.0, "", seed=2)[0]
    assert relative_error(loop.distance_m, 3000.0) <= 0.05
    water = polygon_metres([(520.0, -200.0), (680.0, -200.0), (680.0, 1300.0), (520.0, 1300.0)])
    for segment_way in way_ids(network, loop.edge_ids) - {900}:
        assert segment_way in {way.id for way in ways}
    wet = loop_line_metres(loop.coordinates).intersection(water).length
    bridge_crossings = sum(1 for edge in loop.edge_ids if edge // EDGE_ID_FACTOR == 900)
    assert wet <= bridge_crossings * 170.0


def test_lake_and_island_inside_radius(tmp_path: Path) -> None:
    town = grid(16, 16, first_id=1)
    lake_box = (550.0, 550.0, 950.0, 950.0)
    inside = {
        key
        for key, node in town.items()
        if 500.0 < key[1] * 100.0 < 1000.0 and 500.0 < key[0] * 100.0 < 1000.0
    }
    ways = [way for way in grid_ways({k: v for k, v in town.items()}, 100)]
    lake_nodes = {node.id for key, node in town.items() if key in inside}
    ways = [
        Way(way.id, refs, way.tags) for way in ways for refs in _split_refs(way.refs, lake_nodes)
    ]
    ways = [Way(100 + index, way.refs, way.tags) for index, way in enumerate(ways)]
    corners = [
        (lake_box[0], lake_box[1]),
        (lake_box[2], lake_box[1]),
        (lake_box[2], lake_box[3]),
        (lake_box[0], lake_box[3]),
    ]
    lake = [node_at(5000 + index, x, y) for index, (x, y) in enumerate(corners)]
    shore = [(700.0, 700.0), (800.0, 700.0), (800.0, 800.0), (700.0, 800.0)]
    island_shore = [node_at(6000 + index, x, y) for index, (x, y) in enumerate(shore)]
    ways.append(Way(950, [node.id for node in lake] + [lake[0].id], {}))
    ways.append(Way(951, [node.id for node in island_shore] + [island_shore[0].id], {}))
    # The lake is a multipolygon whose inner ring is the island.
    lake_relation = Relation(
        990,
        [Member("way", 950, "outer"), Member("way", 951, "inner")],
        {"type": "multipolygon", "natural": "water"},
    )
    island = grid(2, 2, first_id=7000, x0=720.0, y0=720.0, spacing=60.0)
    ways += grid_ways(island, 960, {"highway": "footway"})
    all_nodes = [node for key, node in town.items() if key not in inside]
    network = network_from_osm(
        tmp_path,
        [*all_nodes, *lake, *island_shore, *island.values()],
        ways,
        [lake_relation],
    )

    loop = plan_loops(network, *at(450.0, 450.0), 3000.0, "", seed=3)[0]
    assert relative_error(loop.distance_m, 3000.0) <= 0.05
    water = polygon_metres(corners).difference(polygon_metres(shore))
    assert loop_line_metres(loop.coordinates).intersection(water).length <= 1.0
    assert all(node_id < 7000 for node_id in loop.node_ids)
    # The island is a cut-off network and the mainland lies across the lake.
    with pytest.raises(StartNotFound):
        snap_start(network, *at(750.0, 750.0), min_component_m=1500.0)


def _split_refs(refs: list[int], removed: set[int]) -> list[list[int]]:
    """Split a way's node list where it enters removed nodes."""
    runs: list[list[int]] = [[]]
    for ref in refs:
        if ref in removed:
            runs.append([])
        else:
            runs[-1].append(ref)
    return [run for run in runs if len(run) >= 2]


def test_snap_not_across_canal(tmp_path: Path) -> None:
    town = grid(8, 8, first_id=1)
    far_side = grid(8, 3, first_id=1000, x0=770.0)
    canal = [node_at(5000, 750.0, -100.0), node_at(5001, 750.0, 800.0)]
    ways = grid_ways(town, 100) + grid_ways(far_side, 200)
    ways.append(Way(900, [town[(7, 7)].id, far_side[(7, 0)].id], {"highway": "footway"}))
    ways.append(Way(950, [node.id for node in canal], {"waterway": "canal"}))
    network = network_from_osm(tmp_path, [*town.values(), *far_side.values(), *canal], ways)
    # 30 m from the far-side street across the canal, 40 m from the near-side one.
    assert snap_start(network, *at(740.0, 250.0)).node_id < 1000
    # Without the canal line the far side is nearer, so the line is what stops the snap.
    dry = network_from_osm(tmp_path, [*town.values(), *far_side.values()], ways[:-1])
    assert snap_start(dry, *at(740.0, 250.0)).node_id >= 1000


def test_start_inside_pedestrian_plaza(tmp_path: Path) -> None:
    town = grid(10, 10, first_id=1)
    plaza_nodes = [town[(3, 3)], town[(3, 6)], town[(6, 6)], town[(6, 3)]]
    inner = {(row, column) for row in (4, 5) for column in (4, 5)}
    streets = [
        Way(way.id, refs, way.tags)
        for way in grid_ways(town, 100)
        for refs in _split_refs(way.refs, {town[key].id for key in inner})
    ]
    streets = [Way(100 + index, way.refs, way.tags) for index, way in enumerate(streets)]
    plaza = Way(
        900,
        [node.id for node in plaza_nodes] + [plaza_nodes[0].id],
        {"highway": "pedestrian", "area": "yes"},
    )
    nodes = [node for key, node in town.items() if key not in inner]
    network = network_from_osm(tmp_path, nodes, [*streets, plaza])
    start = snap_start(network, *at(450.0, 450.0))
    assert start.distance_m <= 250.0
    loops = plan_loops(network, *at(450.0, 450.0), 2500.0, "", seed=1)
    assert relative_error(loops[0].distance_m, 2500.0) <= 0.05


def test_start_inside_large_park(tmp_path: Path) -> None:
    town = grid(14, 14, first_id=1, spacing=120.0)
    streets = grid_ways(town, 100, {"highway": "footway"})
    corners = [(0.0, 0.0), (1560.0, 0.0), (1560.0, 1560.0), (0.0, 1560.0)]
    park = [node_at(5000 + index, x, y) for index, (x, y) in enumerate(corners)]
    outer = Way(950, [node.id for node in park] + [park[0].id], {})
    relation = Relation(
        960, [Member("way", 950, "outer")], {"type": "multipolygon", "leisure": "park"}
    )
    network = network_from_osm(tmp_path, [*town.values(), *park], [*streets, outer], [relation])
    loop = plan_loops(network, *at(790.0, 790.0), 3000.0, "parks", seed=1)[0]
    assert relative_error(loop.distance_m, 3000.0) <= 0.05
    assert loop.green_share >= 0.9
    assert all(segment.green >= 0.9 for segment in loop.segments)


def test_small_town_loop_enters_park(tmp_path: Path) -> None:
    # The town's streets add up to 8.4 km, so a 4 km loop needs more than two corners.
    # Those corners must move into the park too, not only the ways between them.
    town = grid(7, 7, first_id=1)
    streets = grid_ways(town, 100)
    corners = [(390.0, -10.0), (610.0, -10.0), (610.0, 610.0), (390.0, 610.0)]
    park = [node_at(1000 + index, x, y) for index, (x, y) in enumerate(corners)]
    boundary = Way(200, [node.id for node in park] + [park[0].id], {"leisure": "park"})
    network = network_from_osm(tmp_path, [*town.values(), *park], [*streets, boundary])
    start = (town[(3, 1)].lat, town[(3, 1)].lon)
    liked, plain = [], []
    for seed in range(8):
        loop = plan_loops(network, *start, 4000.0, "parks", seed=seed, alternatives=1)[0]
        assert relative_error(loop.distance_m, 4000.0) <= 0.05
        liked.append(loop.green_share)
        plain.append(plan_loops(network, *start, 4000.0, seed=seed, alternatives=1)[0].green_share)
    assert np.mean(liked) >= 0.65
    assert np.mean(liked) >= 1.5 * np.mean(plain)


# Ways and nodes a pedestrian must not use


def shortcut_case(folder: Path, shortcut_tags: dict, node_tags: dict | None = None):
    """A small west grid joined to a larger east grid by a footway and a tagged shortcut.

    A 2.5 km loop from the west grid has to cross to the east grid and back, so it uses
    the shortcut whenever the shortcut is walkable.
    """
    west = grid(4, 4, first_id=1)
    east = grid(8, 8, first_id=1000, x0=500.0)
    middle = node_at(2000, 400.0, 100.0, node_tags)
    ways = grid_ways(west, 100) + grid_ways(east, 200)
    ways.append(Way(900, [west[(1, 3)].id, middle.id, east[(1, 0)].id], shortcut_tags))
    ways.append(Way(910, [west[(3, 3)].id, east[(3, 0)].id], {"highway": "footway"}))
    nodes = [*west.values(), *east.values(), middle]
    return network_from_osm(folder, nodes, ways)


def loops_or_none(network: Network, target: float, seed: int) -> list:
    try:
        return plan_loops(network, *at(100.0, 150.0), target, "", seed=seed)
    except NoLoopFound:
        return []


@pytest.mark.parametrize(
    ("name", "tags"),
    [
        ("trunk tunnel", {"highway": "trunk", "tunnel": "yes"}),
        ("private service", {"highway": "service", "access": "private"}),
        ("ferry", {"route": "ferry", "foot": "yes"}),
        ("foot no", {"highway": "footway", "foot": "no"}),
        ("sidewalk separate", {"highway": "residential", "sidewalk": "separate"}),
    ],
)
def test_forbidden_shortcut_never_used(tmp_path: Path, name: str, tags: dict) -> None:
    network = shortcut_case(tmp_path, tags)
    assert 900 not in way_ids(network, network.edge_ids.tolist()), name
    for seed in range(3):
        for loop in loops_or_none(network, 2500.0, seed):
            assert 900 not in way_ids(network, loop.edge_ids), name


def test_locked_gate_not_passed(tmp_path: Path) -> None:
    gate = {"barrier": "gate", "locked": "yes", "access": "private"}
    network = shortcut_case(tmp_path, {"highway": "footway"}, gate)
    assert network.node_index(2000) == -1
    for seed in range(3):
        for loop in loops_or_none(network, 2500.0, seed):
            assert 2000 not in loop.node_ids


def test_open_shortcut_is_used(tmp_path: Path) -> None:
    """The same layout with a plain footway: the shortcut is walkable and loops use it."""
    network = shortcut_case(tmp_path, {"highway": "footway"})
    loops = loops_or_none(network, 2500.0, 1)
    assert loops
    assert relative_error(loops[0].distance_m, 2500.0) <= 0.05
    assert 900 in way_ids(network, loops[0].edge_ids)


def test_fence_sharing_node_with_path(tmp_path: Path) -> None:
    town = grid(8, 8, first_id=1)
    fence_end = [node_at(5000, 350.0, -50.0), node_at(5001, 350.0, 750.0)]
    ways = grid_ways(town, 100, {"highway": "path"})
    ways.append(Way(950, [fence_end[0].id, town[(3, 3)].id, fence_end[1].id], {"barrier": "fence"}))
    network = network_from_osm(tmp_path, [*town.values(), *fence_end], ways)
    assert 950 not in way_ids(network, network.edge_ids.tolist())
    assert network.node_index(5000) == -1
    assert network.node_index(town[(3, 3)].id) >= 0
    loop = plan_loops(network, *at(300.0, 300.0), 2000.0, "", seed=1)[0]
    assert 950 not in way_ids(network, loop.edge_ids)
    assert relative_error(loop.distance_m, 2000.0) <= 0.05


def test_cycleway_foot_designated_joins_sidewalks(tmp_path: Path) -> None:
    west = grid(3, 3, first_id=1)
    east = grid(10, 10, first_id=1000, x0=400.0)
    sidewalk = {"highway": "footway", "footway": "sidewalk"}
    ways = grid_ways(west, 100, sidewalk) + grid_ways(east, 200, sidewalk)
    crossing = {"highway": "cycleway", "foot": "designated"}
    ways.append(Way(900, [west[(0, 2)].id, east[(0, 0)].id], crossing))
    ways.append(Way(901, [west[(2, 2)].id, east[(2, 0)].id], crossing))
    network = network_from_osm(tmp_path, [*west.values(), *east.values()], ways)
    loop = plan_loops(network, *at(0.0, 100.0), 3000.0, "", seed=1)[0]
    assert relative_error(loop.distance_m, 3000.0) <= 0.05
    assert way_ids(network, loop.edge_ids) & {900, 901}


def test_sidewalks_used_not_separate_carriageway(tmp_path: Path) -> None:
    town = grid(8, 8, first_id=1)
    ways = grid_ways(town, 100, {"highway": "footway", "footway": "sidewalk"})
    road = [node_at(5000 + index, x, 350.0) for index, x in enumerate((0.0, 700.0))]
    ways.append(
        Way(950, [node.id for node in road], {"highway": "primary", "sidewalk": "separate"})
    )
    network = network_from_osm(tmp_path, [*town.values(), *road], ways)
    assert 950 not in way_ids(network, network.edge_ids.tolist())
    loop = plan_loops(network, *at(350.0, 300.0), 2000.0, "", seed=1)[0]
    assert way_ids(network, loop.edge_ids) <= {way.id for way in ways if way.id != 950}


def test_oneway_footway_both_ways_oneway_foot_one(tmp_path: Path) -> None:
    town = grid(10, 10, first_id=1)
    ways = grid_ways(town, 100, {"highway": "footway"})
    ways[2] = Way(ways[2].id, ways[2].refs, {"highway": "footway", "oneway": "yes"})
    ways[12] = Way(ways[12].id, ways[12].refs, {"highway": "footway", "oneway:foot": "yes"})
    network = network_from_osm(tmp_path, town.values(), ways)
    plain = [
        e for e in range(network.edge_count) if network.edge_ids[e] // EDGE_ID_FACTOR == ways[2].id
    ]
    foot = [
        e for e in range(network.edge_count) if network.edge_ids[e] // EDGE_ID_FACTOR == ways[12].id
    ]
    assert plain and all(network.oneway[e] == 0 for e in plain)
    assert foot and all(network.oneway[e] == 1 for e in foot)
    for seed in range(4):
        for loop in plan_loops(network, *at(450.0, 450.0), 2500.0, "", seed=seed):
            assert_closed_walk(network, loop.node_ids, loop.edge_ids)


def test_town_split_by_trunk_without_crossing(tmp_path: Path) -> None:
    west = grid(4, 5, first_id=1)
    east = grid(12, 12, first_id=1000, x0=600.0)
    trunk = [
        node_at(5000 + index, 500.0 + 5.0 * index, y) for index, y in enumerate((-100.0, 1300.0))
    ]
    ways = grid_ways(west, 100) + grid_ways(east, 200)
    ways.append(Way(950, [node.id for node in trunk], {"highway": "trunk"}))
    network = network_from_osm(tmp_path, [*west.values(), *east.values(), *trunk], ways)
    target = 4000.0
    try:
        loops = plan_loops(network, *at(200.0, 150.0), target, "", seed=1)
    except NoLoopFound:
        return
    for loop in loops:
        assert relative_error(loop.distance_m, target) <= 0.25
        assert 950 not in way_ids(network, loop.edge_ids)
        assert all(node_id < 1000 for node_id in loop.node_ids)


# Real extracts


def real_network(path: Path) -> Network:
    return load_network(str(path))


def start_near(network: Network, lat: float, lon: float) -> tuple[float, float]:
    nodes = np.flatnonzero(network.component == network.largest_component)
    distance = np.hypot(network.lat[nodes] - lat, (network.lon[nodes] - lon) * 0.65)
    node = nodes[int(np.argmin(distance))]
    return float(network.lat[node]), float(network.lon[node])


def test_vancouver_loop_near_clipped_edge() -> None:
    network = real_network(VANCOUVER)
    main = network.component == network.largest_component
    # A start 300 m inside the eastern cut of the extract, halfway up.
    east = float(network.lon[main].max()) - 300.0 / (METRES_PER_DEGREE_LAT * 0.65)
    middle = float(np.median(network.lat[main]))
    lat, lon = start_near(network, middle, east)
    loops = plan_loops(network, lat, lon, 5000.0, "", seed=1)
    assert relative_error(loops[0].distance_m, 5000.0) <= 0.05
    for loop in loops:
        assert_closed_walk(network, loop.node_ids, loop.edge_ids)
        assert relative_error(loop.distance_m, 5000.0) <= 0.25


def test_monaco_short_targets_with_steps() -> None:
    network = real_network(MONACO)
    rng = np.random.default_rng(3)
    nodes = rng.choice(np.flatnonzero(network.component == network.largest_component), 8)
    hits = total = 0
    for index, node in enumerate(nodes):
        for target in (1000.0, 2000.0, 3000.0):
            loop = plan_loops(network, network.lat[node], network.lon[node], target, seed=index)[0]
            total += 1
            hits += relative_error(loop.distance_m, target) <= 0.05
            assert loop.retrace_share <= 0.15
    assert hits >= 0.9 * total


def test_heidelberg_long_target() -> None:
    network = real_network(HEIDELBERG)
    lat, lon = start_near(network, 49.4094, 8.6937)
    for seed in range(2):
        loop = plan_loops(network, lat, lon, 15000.0, "", seed=seed, alternatives=1)[0]
        assert relative_error(loop.distance_m, 15000.0) <= 0.05
        assert loop.retrace_share <= 0.10


def test_twenty_seeds_reproducible_and_distinct() -> None:
    network = real_network(HEIDELBERG)
    lat, lon = start_near(network, 49.4094, 8.6937)
    loops = [
        plan_loops(network, lat, lon, 5000.0, seed=seed, alternatives=1)[0] for seed in range(20)
    ]
    again = plan_loops(network, lat, lon, 5000.0, seed=7, alternatives=1)[0]
    assert again.edge_ids == loops[7].edge_ids
    distinct: list = []
    for loop in loops:
        if all(edge_jaccard(loop.edge_ids, other.edge_ids) < 0.5 for other in distinct):
            distinct.append(loop)
    assert len(distinct) >= 10


def test_gpx_of_every_loop_is_closed() -> None:
    network = real_network(MONACO)
    namespace = {"gpx": "http://www.topografix.com/GPX/1/1"}
    lat, lon = start_near(network, 43.7400, 7.4250)
    for loop in plan_loops(network, lat, lon, 3000.0, "parks and water", seed=4):
        document = ElementTree.fromstring(to_gpx("loop", loop.coordinates, loop.distance_m))
        points = document.findall(".//gpx:trkpt", namespace)
        assert len(points) == len(loop.coordinates)
        first, last = points[0].attrib, points[-1].attrib
        assert (first["lat"], first["lon"]) == (last["lat"], last["lon"])
        assert float(first["lat"]) == pytest.approx(loop.coordinates[0][1], abs=1e-6)
