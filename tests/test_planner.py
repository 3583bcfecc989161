"""Planner tests on hand-built networks and on real OpenStreetMap extracts."""

from __future__ import annotations

import math
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pytest
import shapely

from pipelines.osm import haversine_m
from planner import (
    InvalidWaypoint,
    Network,
    NoLoopFound,
    RouteFinalized,
    RouteState,
    StartNotFound,
    add_waypoint,
    closing,
    finalize,
    parse_preference,
    plan_loops,
    snap_start,
    start_route,
    suggest_candidates,
)
from planner.routing import (
    USED_EDGE_FACTOR,
    cost_matrix,
    edge_costs,
    path_edges,
    shortest_tree,
    tree_path,
)
from planner.walks import edge_jaccard, trim_spurs, walk_coordinates
from warehouse.schema import CELL_AREAS, CELL_EDGE_FEATURES, REGION_EDGES, REGION_NODES

EXTRACTS = Path(__file__).resolve().parents[1].parent / "shared" / "osm"

LAT0 = 49.40
LON0 = 8.70
METRES_PER_DEGREE_LAT = 111_195.0
METRES_PER_DEGREE_LON = METRES_PER_DEGREE_LAT * math.cos(math.radians(LAT0))


def to_lat_lon(x: float, y: float) -> tuple[float, float]:
    """Convert local metres east/north of (LAT0, LON0) to (lat, lon)."""
    return LAT0 + y / METRES_PER_DEGREE_LAT, LON0 + x / METRES_PER_DEGREE_LON


class TableBuilder:
    """Collects nodes and straight edges placed in local metres, then makes Arrow tables."""

    def __init__(self) -> None:
        self.nodes: dict[int, tuple[float, float]] = {}
        self.edges: list[dict] = []

    def node(self, node_id: int, x: float, y: float) -> int:
        self.nodes[node_id] = to_lat_lon(x, y)
        return node_id

    def edge(self, u: int, v: int, oneway: int = 0, highway: str = "residential") -> int:
        (lat_u, lon_u), (lat_v, lon_v) = self.nodes[u], self.nodes[v]
        length = math.hypot(
            (lat_v - lat_u) * METRES_PER_DEGREE_LAT, (lon_v - lon_u) * METRES_PER_DEGREE_LON
        )
        edge_id = len(self.edges) + 1
        self.edges.append(
            {
                "edge_id": edge_id,
                "way_id": edge_id,
                "u": u,
                "v": v,
                "length_m": length,
                "lon": [lon_u, lon_v],
                "lat": [lat_u, lat_v],
                "highway": highway,
                "access": None,
                "foot": None,
                "surface": "asphalt",
                "lit": None,
                "name": None,
                "oneway_foot": oneway,
                "mid_lat": (lat_u + lat_v) / 2,
                "mid_lon": (lon_u + lon_v) / 2,
            }
        )
        return edge_id

    def grid(
        self, first_id: int, columns: int, rows: int, spacing: float, x0: float = 0.0
    ) -> dict[tuple[int, int], int]:
        ids = {}
        for row in range(rows):
            for column in range(columns):
                node_id = first_id + row * columns + column
                ids[(column, row)] = self.node(node_id, x0 + column * spacing, row * spacing)
        for (column, row), node_id in ids.items():
            if (column + 1, row) in ids:
                self.edge(node_id, ids[(column + 1, row)])
            if (column, row + 1) in ids:
                self.edge(node_id, ids[(column, row + 1)])
        return ids

    def node_table(self) -> pa.Table:
        rows = [
            {"node_id": node_id, "lat": lat, "lon": lon}
            for node_id, (lat, lon) in self.nodes.items()
        ]
        return pa.Table.from_pylist(rows, schema=REGION_NODES)

    def edge_table(self) -> pa.Table:
        return pa.Table.from_pylist(self.edges, schema=REGION_EDGES)

    def network(self, features: pa.Table | None = None, areas: pa.Table | None = None) -> Network:
        return Network.from_tables(self.node_table(), self.edge_table(), features, areas)


def area_table(kind: str, polygon_metres: list[tuple[float, float]]) -> pa.Table:
    points = [to_lat_lon(x, y)[::-1] for x, y in polygon_metres]
    polygon = shapely.Polygon(points)
    min_lon, min_lat, max_lon, max_lat = polygon.bounds
    row = {
        "kind": kind,
        "name": None,
        "wkb": shapely.to_wkb(polygon),
        "min_lon": min_lon,
        "min_lat": min_lat,
        "max_lon": max_lon,
        "max_lat": max_lat,
    }
    return pa.Table.from_pylist([row], schema=CELL_AREAS)


def assert_closed_walk(network: Network, node_ids: list[int], edge_ids: list[int]) -> None:
    """Check that consecutive nodes are joined by the listed edges, in an allowed direction."""
    assert node_ids[0] == node_ids[-1]
    assert len(edge_ids) == len(node_ids) - 1
    for index, edge_id in enumerate(edge_ids):
        edge = network.edge_index(edge_id)
        u = int(network.node_ids[network.edge_u[edge]])
        v = int(network.node_ids[network.edge_v[edge]])
        walked = (node_ids[index], node_ids[index + 1])
        assert walked in ((u, v), (v, u))
        if network.oneway[edge] == 1:
            assert walked == (u, v)
        if network.oneway[edge] == -1:
            assert walked == (v, u)


@pytest.fixture(scope="module")
def grid_network() -> Network:
    builder = TableBuilder()
    builder.grid(1000, 30, 30, 100.0)
    return builder.network()


GRID_CENTRE = to_lat_lon(1500.0, 1500.0)


# Network construction


def test_network_dedupes_and_drops_border_edges() -> None:
    builder = TableBuilder()
    builder.grid(1, 3, 3, 100.0)
    edges = builder.edge_table()
    duplicated = pa.concat_tables([edges, edges.slice(0, 2)])
    border = dict(builder.edges[0], edge_id=999, v=424242)
    with_border = pa.concat_tables([duplicated, pa.Table.from_pylist([border], REGION_EDGES)])
    network = Network.from_tables(builder.node_table(), with_border)
    assert network.edge_count == len(builder.edges)
    assert network.edge_index(999) == -1
    assert network.node_count == 9


def test_network_keeps_shortest_parallel_edge() -> None:
    builder = TableBuilder()
    builder.node(1, 0.0, 0.0)
    builder.node(2, 100.0, 0.0)
    long_edge = builder.edge(1, 2)
    short_edge = builder.edge(1, 2)
    builder.edges[long_edge - 1]["length_m"] = 250.0
    network = builder.network()
    one, two = network.node_index(1), network.node_index(2)
    assert network.csr[one, two] == pytest.approx(100.0, rel=1e-3)
    entry = network.csr.indptr[one]
    assert network.edge_ids[network.csr_edge[entry]] == short_edge


def test_network_missing_features_are_zero() -> None:
    builder = TableBuilder()
    builder.grid(1, 3, 3, 100.0)
    features = pa.Table.from_pylist(
        [{"edge_id": 1, "green": 0.8, "water": 0.2, "park": 0.0, "quiet": 1.0, "poi": 0.0}],
        schema=CELL_EDGE_FEATURES,
    )
    network = builder.network(features)
    assert network.feature("green")[network.edge_index(1)] == pytest.approx(0.8)
    assert network.feature("green")[network.edge_index(2)] == 0.0
    assert network.features.dtype == np.float32


def test_network_oneway_direction_in_csr() -> None:
    builder = TableBuilder()
    builder.node(1, 0.0, 0.0)
    builder.node(2, 100.0, 0.0)
    builder.node(3, 200.0, 0.0)
    builder.edge(1, 2, oneway=1)
    builder.edge(2, 3, oneway=-1)
    network = builder.network()
    one, two, three = (network.node_index(node_id) for node_id in (1, 2, 3))
    assert network.csr[one, two] > 0
    assert network.csr[two, one] == 0
    assert network.csr[three, two] > 0
    assert network.csr[two, three] == 0


def test_path_edges_follow_walk_direction() -> None:
    builder = TableBuilder()
    builder.node(1, 0.0, 0.0)
    builder.node(2, 100.0, 0.0)
    builder.node(3, 200.0, 0.0)
    first = builder.edge(1, 2)
    second = builder.edge(2, 3)
    network = builder.network()
    one, two, three = (network.node_index(node_id) for node_id in (1, 2, 3))
    edges = path_edges(network, [one, two, three, two])
    assert network.edge_ids[edges].tolist() == [first, second, second]


def test_path_edges_reject_unjoined_nodes() -> None:
    builder = TableBuilder()
    builder.node(1, 0.0, 0.0)
    builder.node(2, 100.0, 0.0)
    builder.node(3, 200.0, 0.0)
    builder.node(4, 300.0, 0.0)
    builder.edge(1, 2)
    builder.edge(2, 3, oneway=1)
    builder.edge(3, 4)
    network = builder.network()
    one, two, three, four = (network.node_index(node_id) for node_id in (1, 2, 3, 4))
    with pytest.raises(ValueError, match="no edge"):
        path_edges(network, [one, three])
    with pytest.raises(ValueError, match="no edge"):
        path_edges(network, [three, two])
    # The last node's row ends the CSR arrays, so a scan past it must not read beyond them.
    with pytest.raises(ValueError, match="no edge"):
        path_edges(network, [four, two])


@pytest.mark.parametrize(
    ("nodes", "edges", "kept_nodes", "kept_edges"),
    [
        ([1, 2, 3, 4], [10, 11, 12], [1, 2, 3, 4], [10, 11, 12]),
        ([1, 2, 3, 2, 4], [10, 11, 11, 13], [1, 2, 4], [10, 13]),
        ([1, 2, 3, 4, 3, 2, 5], [10, 11, 12, 12, 11, 14], [1, 2, 5], [10, 14]),
        # A node two steps later on another edge is no out-and-back.
        ([1, 2, 1, 3], [10, 11, 12], [1, 2, 1, 3], [10, 11, 12]),
    ],
)
def test_trim_spurs_cases(nodes: list, edges: list, kept_nodes: list, kept_edges: list) -> None:
    trimmed_nodes, trimmed_edges = trim_spurs(nodes, edges)
    assert trimmed_nodes == kept_nodes
    assert trimmed_edges == kept_edges
    assert trimmed_nodes is not nodes


def test_walk_coordinates_join_edges_in_walk_order() -> None:
    builder = TableBuilder()
    builder.node(1, 0.0, 0.0)
    builder.node(2, 100.0, 0.0)
    builder.node(3, 100.0, 100.0)
    builder.edge(1, 2)
    builder.edge(3, 2)
    network = builder.network()
    one, two, three = (network.node_index(node_id) for node_id in (1, 2, 3))
    forward = network.edge_index(builder.edges[0]["edge_id"])
    backward = network.edge_index(builder.edges[1]["edge_id"])
    coordinates = walk_coordinates(network, [one, two, three], [forward, backward])
    expected = [
        network.edge_coordinates(forward, forward=True)[0],
        *network.edge_coordinates(backward, forward=True)[::-1],
    ]
    assert coordinates == expected
    assert coordinates[0] == (float(network.lon[one]), float(network.lat[one]))
    assert coordinates[-1] == (float(network.lon[three]), float(network.lat[three]))
    assert walk_coordinates(network, [two], []) == [
        (float(network.lon[two]), float(network.lat[two]))
    ]


def test_repeated_snap_returns_same_start(grid_network: Network) -> None:
    first = snap_start(grid_network, *GRID_CENTRE)
    again = snap_start(grid_network, *GRID_CENTRE)
    assert again == first
    with pytest.raises(StartNotFound):
        snap_start(grid_network, GRID_CENTRE[0] + 1.0, GRID_CENTRE[1])
    with pytest.raises(StartNotFound):
        snap_start(grid_network, GRID_CENTRE[0] + 1.0, GRID_CENTRE[1])


# Preferences


@pytest.mark.parametrize(
    ("text", "groups", "avoid"),
    [
        ("parks and water", ("green", "water"), []),
        ("quiet streets", ("quiet",), []),
        ("trees by the river", ("green", "water"), []),
        ("views and landmarks", ("poi",), []),
        ("no stairs", (), ["steps"]),
        ("avoid steps", (), ["steps"]),
        ("avoid busy roads", (), ["busy"]),
        ("not on main roads", (), ["busy"]),
        ("Parks, no stairs and avoid busy roads", ("green",), ["steps", "busy"]),
        ("", (), []),
    ],
)
def test_parse_preference_cases(text: str, groups: tuple, avoid: list) -> None:
    preference = parse_preference(text)
    assert preference.groups == groups
    assert preference.avoid == avoid


def test_parse_preference_whole_words_only() -> None:
    preference = parse_preference("quiet streets")
    assert "green" not in preference.groups
    assert preference.matched == ["quiet"]


def test_parse_preference_reports_ignored_words() -> None:
    preference = parse_preference("parks and water with hills")
    assert preference.ignored == ["hills"]
    assert preference.describe() == "matched: parks, water; ignored: hills"


def test_parse_preference_bounds_input() -> None:
    preference = parse_preference("parks " * 1000)
    assert len(preference.text) == 500
    assert preference.groups == ("green",)


# Loops on hand-built networks


def test_grid_loops_hit_target(grid_network: Network) -> None:
    loops = plan_loops(grid_network, *GRID_CENTRE, 5000.0, "", seed=3)
    assert len(loops) == 3
    for loop in loops:
        assert abs(loop.distance_m - 5000.0) <= 0.05 * 5000.0
        assert loop.coordinates[0] == loop.coordinates[-1]
        assert loop.retrace_share <= 0.03
        assert_closed_walk(grid_network, loop.node_ids, loop.edge_ids)
        measured = sum(segment.length_m for segment in loop.segments)
        assert measured == pytest.approx(loop.distance_m, abs=1.0)


def grid_closing(network: Network):
    """Return the closing context, prefix and edge factor of a walk 800 m east from the centre."""
    start = int(np.argmin(np.hypot(network.x, network.y)))
    costs = edge_costs(network, parse_preference(""))
    ctx = closing.context(network, start, costs, np.zeros(network.edge_count))
    _, tree = shortest_tree(cost_matrix(network, costs), start, np.inf)
    end = int(np.argmin(np.hypot(network.x - 800.0, network.y)))
    prefix = tree_path(tree, end)
    prefix_edges = path_edges(network, prefix)
    factor = np.ones(network.edge_count)
    factor[prefix_edges] = USED_EDGE_FACTOR
    return ctx, prefix, prefix_edges, factor


def test_close_walk_reuses_given_out_tree(grid_network: Network) -> None:
    ctx, prefix, prefix_edges, factor = grid_closing(grid_network)
    plain, plain_ratio = closing.close_walk(ctx, prefix, prefix_edges, 4000.0, factor, 2400.0)
    _, out_tree = shortest_tree(cost_matrix(grid_network, ctx.costs, factor), prefix[-1], 2400.0)
    given, given_ratio = closing.close_walk(
        ctx, prefix, prefix_edges, 4000.0, factor, 2400.0, out_tree=out_tree
    )
    assert plain is not None
    assert given is not None
    assert given.edges == plain.edges
    assert given_ratio == plain_ratio


def test_close_walk_skips_walks_below_min_length(grid_network: Network) -> None:
    ctx, prefix, prefix_edges, factor = grid_closing(grid_network)
    walk, ratio = closing.close_walk(ctx, prefix, prefix_edges, 4000.0, factor, 2400.0)
    assert walk is not None
    assert walk.length <= ratio * 4000.0 + 1e-6
    skipped, skipped_ratio = closing.close_walk(
        ctx, prefix, prefix_edges, 4000.0, factor, 2400.0, min_length=ratio * 4000.0 + 1.0
    )
    assert skipped is None
    assert skipped_ratio == ratio


def test_grid_loops_differ(grid_network: Network) -> None:
    loops = plan_loops(grid_network, *GRID_CENTRE, 5000.0, "", seed=3)
    for first in range(len(loops)):
        for second in range(first + 1, len(loops)):
            assert edge_jaccard(loops[first].edge_ids, loops[second].edge_ids) < 0.5


def test_seed_reproducible_and_varied(grid_network: Network) -> None:
    first = plan_loops(grid_network, *GRID_CENTRE, 4000.0, "", seed=11, alternatives=1)
    again = plan_loops(grid_network, *GRID_CENTRE, 4000.0, "", seed=11, alternatives=1)
    assert first[0].edge_ids == again[0].edge_ids
    default = plan_loops(grid_network, *GRID_CENTRE, 4000.0, "", seed=None, alternatives=1)
    assert default == plan_loops(grid_network, *GRID_CENTRE, 4000.0, "", alternatives=1)
    loops = [
        plan_loops(grid_network, *GRID_CENTRE, 4000.0, "", seed=seed, alternatives=1)[0]
        for seed in range(5)
    ]
    distinct = [
        loop
        for index, loop in enumerate(loops)
        if all(edge_jaccard(loop.edge_ids, other.edge_ids) < 0.5 for other in loops[:index])
    ]
    assert len(distinct) >= 4


def test_cul_de_sac_start_repeats_only_stem() -> None:
    builder = TableBuilder()
    ids = builder.grid(1000, 20, 20, 100.0)
    previous = ids[(10, 19)]
    for step in range(1, 6):
        node_id = builder.node(5000 + step, 1000.0, 1900.0 + 100.0 * step)
        builder.edge(previous, node_id)
        previous = node_id
    network = builder.network()
    loops = plan_loops(network, *to_lat_lon(1000.0, 2400.0), 4000.0, "", seed=1)
    loop = loops[0]
    assert abs(loop.distance_m - 4000.0) <= 0.05 * 4000.0
    assert loop.node_ids[0] == 5005
    assert loop.edge_ids[:5] == loop.edge_ids[::-1][:5]
    assert loop.retrace_share <= 0.03


def test_oneway_foot_honoured() -> None:
    builder = TableBuilder()
    builder.grid(1000, 20, 20, 100.0)
    for edge in builder.edges:
        if edge["u"] % 3 == 0:
            edge["oneway_foot"] = 1 if edge["u"] % 2 else -1
    network = builder.network()
    loops = plan_loops(network, *to_lat_lon(1000.0, 1000.0), 4000.0, "", seed=2)
    assert any(network.oneway[network.edge_index(e)] != 0 for e in loops[0].edge_ids)
    for loop in loops:
        assert_closed_walk(network, loop.node_ids, loop.edge_ids)


def water_split_network(bridge: bool = True) -> Network:
    """Two grids with a river between them (x 1010-1090 m) and a bridge at the north end."""
    builder = TableBuilder()
    west = builder.grid(1000, 11, 15, 100.0)
    east = builder.grid(5000, 8, 15, 100.0, x0=1300.0)
    if bridge:
        builder.edge(west[(10, 14)], east[(0, 14)])
    river = area_table("water", [(1010, -200), (1090, -200), (1090, 1700), (1010, 1700)])
    return builder.network(areas=river)


def test_snap_never_crosses_water() -> None:
    network = water_split_network()
    start = snap_start(network, *to_lat_lon(1095.0, 50.0))
    assert start.node_id >= 5000
    assert start.distance_m > 200.0
    loops = plan_loops(network, *to_lat_lon(1095.0, 50.0), 3000.0, "", seed=1)
    assert loops[0].node_ids[0] >= 5000


def test_snap_names_water_when_only_far_bank_near() -> None:
    network = water_split_network()
    with pytest.raises(StartNotFound, match="lies across water from every walkable way"):
        snap_start(network, *to_lat_lon(1095.0, 50.0), max_distance_m=150.0)


def test_snap_too_far_names_distance(grid_network: Network) -> None:
    with pytest.raises(StartNotFound, match=r"nearest is \d+ m away"):
        snap_start(grid_network, *to_lat_lon(-2000.0, -2000.0))


def test_snap_skips_small_island() -> None:
    builder = TableBuilder()
    builder.grid(1000, 15, 15, 100.0)
    island = builder.grid(9000, 2, 2, 50.0, x0=1520.0)
    network = builder.network()
    assert len(island) == 4
    start = snap_start(network, *to_lat_lon(1525.0, 0.0), min_component_m=2000.0)
    assert start.node_id < 9000


def test_tiny_network_raises_no_loop() -> None:
    builder = TableBuilder()
    builder.grid(1, 3, 3, 100.0)
    network = builder.network()
    with pytest.raises(NoLoopFound, match="No loop of about 5000 m"):
        plan_loops(network, *to_lat_lon(100.0, 100.0), 5000.0, "")


def test_preference_prefers_green_edges() -> None:
    builder = TableBuilder()
    builder.grid(1000, 30, 30, 100.0)
    green_rows = []
    for edge in builder.edges:
        west_m = ((edge["lon"][0] + edge["lon"][1]) / 2 - LON0) * METRES_PER_DEGREE_LON
        if west_m < 800.0:
            row = {"edge_id": edge["edge_id"], "green": 1.0, "water": 0.0, "park": 1.0}
            green_rows.append(row | {"quiet": 0.0, "poi": 0.0})
    features = pa.Table.from_pylist(green_rows, schema=CELL_EDGE_FEATURES)
    network = builder.network(features)
    start = to_lat_lon(1300.0, 1500.0)
    neutral, green = [], []
    for seed in range(5):
        neutral_loop = plan_loops(network, *start, 4000.0, "", seed=seed, alternatives=1)[0]
        green_loop = plan_loops(network, *start, 4000.0, "parks", seed=seed, alternatives=1)[0]
        neutral.append(neutral_loop.green_share)
        green.append(green_loop.green_share)
        assert abs(green_loop.distance_m - 4000.0) <= 0.05 * 4000.0
    assert np.mean(green) >= 1.5 * np.mean(neutral)


def test_plan_loops_rejects_bad_target(grid_network: Network) -> None:
    with pytest.raises(ValueError, match="target_m"):
        plan_loops(grid_network, *GRID_CENTRE, float("nan"), "")


# Step-by-step routes on hand-built networks


def follow_best(network: Network, lat: float, lon: float, target: float, seed: int = 0):
    state = start_route(network, lat, lon, target)
    for _ in range(40):
        candidates = suggest_candidates(network, state, "parks", seed=seed)
        if state.finalize_suggested or not candidates:
            break
        state = add_waypoint(network, state, candidates[0].id)
    return state, finalize(network, state)


def test_candidates_spread_and_explained(grid_network: Network) -> None:
    state = start_route(grid_network, *GRID_CENTRE, 5000.0)
    candidates = suggest_candidates(grid_network, state, "parks", seed=1)
    assert len(candidates) == 3
    bearings = [candidate.bearing_deg for candidate in candidates]
    for first in range(3):
        for second in range(first + 1, 3):
            difference = abs(bearings[first] - bearings[second]) % 360.0
            assert min(difference, 360.0 - difference) >= 60.0
    for candidate in candidates:
        assert 0.0 <= candidate.score <= 1.0
        assert f"{candidate.distance_m:.0f} m" in candidate.reason
        assert set(candidate.features) >= {"green", "water", "park", "quiet", "poi"}


def test_step_route_lands_near_target(grid_network: Network) -> None:
    state, route = follow_best(grid_network, *GRID_CENTRE, 5000.0)
    assert abs(route.distance_m - 5000.0) <= 0.05 * 5000.0
    assert route.coordinates[0] == route.coordinates[-1]
    assert route.steps == round(route.distance_m / 0.8)
    assert_closed_walk(grid_network, route.node_ids, route.edge_ids)
    assert state.finalized


def test_step_route_rejects_unoffered_waypoint(grid_network: Network) -> None:
    state = start_route(grid_network, *GRID_CENTRE, 5000.0)
    suggest_candidates(grid_network, state, "", seed=1)
    with pytest.raises(InvalidWaypoint, match="not offered"):
        add_waypoint(grid_network, state, "made-up")


def test_step_route_closed_rejects_changes(grid_network: Network) -> None:
    state, _ = follow_best(grid_network, *GRID_CENTRE, 3000.0)
    with pytest.raises(RouteFinalized):
        finalize(grid_network, state)
    with pytest.raises(RouteFinalized):
        suggest_candidates(grid_network, state, "")


def test_step_state_survives_json(grid_network: Network) -> None:
    state = start_route(grid_network, *GRID_CENTRE, 5000.0)
    candidates = suggest_candidates(grid_network, state, "", seed=1)
    restored = RouteState.from_dict(msgspec.json.decode(msgspec.json.encode(state.to_dict())))
    moved = add_waypoint(grid_network, restored, candidates[1].id)
    assert moved.waypoint_node_ids == [candidates[1].node_id]
    assert moved.distance_m == pytest.approx(candidates[1].distance_m, abs=0.5)


# Real extracts


def load_extract(name: str) -> Network:
    """Return the network of a real extract, parsed once per test session."""
    from planner._quick_eval import load_network

    return load_network(str(next(EXTRACTS.glob(f"{name}-*.osm.pbf"))))


@pytest.fixture(scope="module")
def heidelberg() -> Network:
    return load_extract("heidelberg")


@pytest.fixture(scope="module")
def monaco() -> Network:
    return load_extract("monaco")


def random_starts(network: Network, count: int) -> list[tuple[float, float]]:
    rng = np.random.default_rng(5)
    nodes = np.flatnonzero(network.component == network.largest_component)
    chosen = rng.choice(nodes, size=count, replace=False)
    return [(float(network.lat[node]), float(network.lon[node])) for node in chosen]


def test_heidelberg_loops_within_five_percent(heidelberg: Network) -> None:
    errors = []
    for index, (lat, lon) in enumerate(random_starts(heidelberg, 12)):
        loops = plan_loops(heidelberg, lat, lon, 8000.0, "", seed=index)
        assert loops[0].coordinates[0] == loops[0].coordinates[-1]
        assert_closed_walk(heidelberg, loops[0].node_ids, loops[0].edge_ids)
        errors.append(abs(loops[0].distance_m - 8000.0) / 8000.0)
    assert np.mean(np.array(errors) <= 0.05) >= 0.9


def test_heidelberg_step_routes_near_target(heidelberg: Network) -> None:
    errors = []
    for index, (lat, lon) in enumerate(random_starts(heidelberg, 8)):
        _, route = follow_best(heidelberg, lat, lon, 8000.0, seed=index)
        errors.append(abs(route.distance_m - 8000.0) / 8000.0)
    assert np.mean(np.array(errors) <= 0.05) >= 0.75


def test_monaco_loops_within_five_percent(monaco: Network) -> None:
    hits = 0
    starts = random_starts(monaco, 10)
    for index, (lat, lon) in enumerate(starts):
        loops = plan_loops(monaco, lat, lon, 3000.0, "parks and water", seed=index)
        hits += abs(loops[0].distance_m - 3000.0) <= 0.05 * 3000.0
    assert hits >= 9


def test_andorra_start_beside_long_track_starts_close() -> None:
    # The start lies beside the middle of a track segment over 700 m long without nodes.
    andorra = load_extract("andorra")
    lat, lon = 42.4545658, 1.56367135
    loops = plan_loops(andorra, lat, lon, 8000.0, "", seed=0)
    first_lon, first_lat = loops[0].coordinates[0]
    assert haversine_m(first_lon, first_lat, lon, lat) <= 120.0
    assert_closed_walk(andorra, loops[0].node_ids, loops[0].edge_ids)
    assert abs(loops[0].distance_m - 8000.0) <= 0.05 * 8000.0
