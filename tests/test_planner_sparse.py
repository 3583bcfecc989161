"""Planner tests on sparse networks: long stems, long edges and alternatives off target."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from planner import (
    Network,
    NoLoopFound,
    RouteState,
    add_waypoint,
    finalize,
    plan_loops,
    start_route,
    suggest_candidates,
)
from planner.closing import Walk
from planner.loops import _select
from planner.walks import edge_jaccard
from tests.test_planner import (
    TableBuilder,
    assert_closed_walk,
    load_extract,
    random_starts,
    to_lat_lon,
)


def branch_network() -> Network:
    """A 10 x 10 grid of 100 m blocks with a 600 m tree branch hanging off its top edge.

    The branch has side spurs, so its junctions lie on no cycle and the start at its tip must
    walk out and back over several junctions to reach the grid.
    """
    builder = TableBuilder()
    ids = builder.grid(1000, 10, 10, 100.0)
    previous = ids[(5, 9)]
    for step in range(1, 7):
        node_id = builder.node(5000 + step, 500.0, 900.0 + 100.0 * step)
        builder.edge(previous, node_id)
        spur = builder.node(6000 + step, 560.0, 900.0 + 100.0 * step)
        builder.edge(node_id, spur)
        previous = node_id
    return builder.network()


def test_branch_tip_start_loops_via_stem() -> None:
    network = branch_network()
    loops = plan_loops(network, *to_lat_lon(500.0, 1500.0), 3000.0, "", seed=3)
    loop = loops[0]
    assert abs(loop.distance_m - 3000.0) <= 0.05 * 3000.0
    assert loop.node_ids[0] == 5006
    assert_closed_walk(network, loop.node_ids, loop.edge_ids)
    assert loop.edge_ids[:6] == loop.edge_ids[::-1][:6]
    assert loop.retrace_share <= 0.03
    assert loop.shape in {"loop", "stem_and_loop"}
    assert loop.stem_share > 0.0


def long_edge_network() -> Network:
    """A 12 x 12 grid of 100 m blocks reached from a small square over one 900 m edge."""
    builder = TableBuilder()
    ids = builder.grid(1000, 12, 12, 100.0)
    corner = [
        builder.node(7000 + index, x, y)
        for index, (x, y) in enumerate(
            [(-900.0, 0.0), (-1000.0, 0.0), (-1000.0, 100.0), (-900.0, 100.0)]
        )
    ]
    for index in range(4):
        builder.edge(corner[index], corner[(index + 1) % 4])
    builder.edge(corner[0], ids[(0, 0)])
    return builder.network()


def test_step_route_crosses_long_edge() -> None:
    network = long_edge_network()
    state = start_route(network, *to_lat_lon(-1000.0, 50.0), 3000.0)
    candidates = suggest_candidates(network, state, "", seed=0)
    assert candidates
    for _ in range(30):
        if state.finalize_suggested or not candidates:
            break
        state = add_waypoint(network, state, candidates[0].id)
        candidates = suggest_candidates(network, state, "", seed=len(state.waypoint_node_ids))
    route = finalize(network, state)
    assert route.distance_m >= 0.75 * 3000.0
    assert route.distance_m <= 1.25 * 3000.0


@pytest.mark.parametrize("region", ["monaco", "andorra"])
def test_alternatives_within_five_percent(region: str) -> None:
    network = load_extract(region)
    checked = 0
    for index, (lat, lon) in enumerate(random_starts(network, 12)):
        try:
            loops = plan_loops(network, lat, lon, 5000.0, "", seed=index)
        except NoLoopFound:
            # Some mountain starts lie on ways far longer than the target, with no loop.
            continue
        for loop in loops[1:]:
            assert abs(loop.distance_m - 5000.0) <= 0.05 * 5000.0
        checked += 1
    assert checked >= 8


def tree_network() -> Network:
    """A 4 km path of 100 m edges running east, with a 50 m side spur every 200 m.

    The network has no cycle at all, so the only walk back to the start is the way out.
    """
    builder = TableBuilder()
    previous = builder.node(1, 0.0, 0.0)
    for step in range(1, 41):
        node_id = builder.node(1 + step, 100.0 * step, 0.0)
        builder.edge(previous, node_id)
        if step % 2 == 0:
            spur = builder.node(100 + step, 100.0 * step, 50.0)
            builder.edge(node_id, spur)
        previous = node_id
    return builder.network()


def test_tree_start_walks_out_and_back() -> None:
    network = tree_network()
    loop = plan_loops(network, *to_lat_lon(0.0, 0.0), 3000.0, "", seed=1)[0]
    assert abs(loop.distance_m - 3000.0) <= 0.05 * 3000.0
    assert_closed_walk(network, loop.node_ids, loop.edge_ids)
    assert loop.edge_ids == loop.edge_ids[::-1]
    assert loop.retrace_share == 0.0
    assert loop.stem_share == 1.0
    assert loop.shape == "out_and_back"


@pytest.fixture(scope="module")
def small_grid() -> Network:
    builder = TableBuilder()
    builder.grid(1000, 11, 11, 100.0)
    return builder.network()


def test_grid_start_prefers_loop_to_stem(small_grid: Network) -> None:
    for seed in range(5):
        loop = plan_loops(small_grid, *to_lat_lon(500.0, 500.0), 3000.0, "", seed=seed)[0]
        assert loop.edge_ids[0] != loop.edge_ids[-1]
        assert loop.retrace_share <= 0.03
        assert loop.shape == "loop"


# Perimeters of the four petals of `flower_network`, north, east, south and west. They
# differ by at most 2% of 3 km, so no petal is clearly the best 3 km loop.
PETAL_PERIMETERS_M = (2940.0, 3000.0, 3060.0, 2970.0)


def flower_network() -> Network:
    """Four triangular petals of about 3 km meeting at one junction at the origin.

    Each petal leaves the origin at 15 degrees either side of its direction, and every side
    is split into 100 m or shorter edges, so the waypoint search finds nodes along them.
    """
    builder = TableBuilder()
    centre = builder.node(1, 0.0, 0.0)
    next_id = 2
    for petal, perimeter in enumerate(PETAL_PERIMETERS_M):
        direction = math.radians(90.0 * petal)
        radius = perimeter / (2.0 + 2.0 * math.sin(math.radians(15.0)))
        corners = [
            (
                radius * math.sin(direction + math.radians(side)),
                radius * math.cos(direction + math.radians(side)),
            )
            for side in (-15.0, 15.0)
        ]
        outline = [(0.0, 0.0), *corners, (0.0, 0.0)]
        previous = centre
        for (x0, y0), (x1, y1) in itertools.pairwise(outline):
            pieces = max(math.ceil(math.hypot(x1 - x0, y1 - y0) / 100.0), 1)
            for piece in range(1, pieces + 1):
                if piece == pieces and (x1, y1) == (0.0, 0.0):
                    node_id = centre
                else:
                    fraction = piece / pieces
                    node_id = builder.node(
                        next_id, x0 + fraction * (x1 - x0), y0 + fraction * (y1 - y0)
                    )
                    next_id += 1
                builder.edge(previous, node_id)
                previous = node_id
    return builder.network()


def test_seeds_lead_with_different_petals() -> None:
    network = flower_network()
    firsts: list[list[int]] = []
    for seed in range(8):
        loop = plan_loops(network, *to_lat_lon(0.0, 0.0), 3000.0, "", seed=seed)[0]
        assert abs(loop.distance_m - 3000.0) <= 0.05 * 3000.0
        assert loop.retrace_share <= 0.03
        firsts.append(loop.edge_ids)
    distinct: list[list[int]] = []
    for edges in firsts:
        if all(edge_jaccard(edges, other) < 0.5 for other in distinct):
            distinct.append(edges)
    assert len(distinct) >= 3


def test_small_town_loop_avoids_pier() -> None:
    """A 9 x 9 grid of 100 m blocks, 800 m across, with a 1.4 km dead-end pier to the north.

    A 5 km loop there must wind through the grid. A first waypoint on the pier has no way
    on, so the loop would walk the pier out and back.
    """
    builder = TableBuilder()
    ids = builder.grid(1000, 9, 9, 100.0)
    previous = ids[(4, 8)]
    for step in range(1, 15):
        node_id = builder.node(5000 + step, 400.0, 800.0 + 100.0 * step)
        builder.edge(previous, node_id)
        previous = node_id
    network = builder.network()
    pier = {5000 + step for step in range(1, 15)}
    for seed in range(6):
        loops = plan_loops(network, *to_lat_lon(400.0, 0.0), 5000.0, "", seed=seed)
        for loop in loops:
            assert abs(loop.distance_m - 5000.0) <= 0.05 * 5000.0
            assert loop.retrace_share <= 0.10
            assert not pier & set(loop.node_ids)
            assert_closed_walk(network, loop.node_ids, loop.edge_ids)


def bridged_halves_network() -> Network:
    """Two 8 x 20 grids of 100 m blocks, 300 m apart, joined only at their two ends.

    A step over the southern bridge looks short, but once it is walked the way back runs
    over the northern bridge, about 4 km round.
    """
    builder = TableBuilder()
    west = builder.grid(1000, 8, 20, 100.0)
    east = builder.grid(3000, 8, 20, 100.0, x0=1000.0)
    builder.edge(west[(7, 0)], east[(0, 0)])
    builder.edge(west[(7, 19)], east[(0, 19)])
    return builder.network()


@pytest.mark.parametrize("first", [0, 1, 2])
def test_step_route_closes_near_target_whichever_first_step(first: int) -> None:
    network = bridged_halves_network()
    target = 3000.0
    state = start_route(network, *to_lat_lon(650.0, 50.0), target)
    candidates = suggest_candidates(network, state, "", seed=0)
    assert len(candidates) == 3
    chosen = candidates[first]
    for _ in range(30):
        state = add_waypoint(network, state, chosen.id)
        candidates = suggest_candidates(network, state, "", seed=len(state.waypoint_node_ids))
        if state.finalize_suggested or not candidates:
            break
        chosen = candidates[len(state.waypoint_node_ids) % len(candidates)]
    assert state.finalize_suggested
    route = finalize(network, state)
    assert_closed_walk(network, route.node_ids, route.edge_ids)
    assert abs(route.distance_m - target) <= 0.03 * target


def lollipop_network() -> Network:
    """A 1 km path from a dead end to a ring of 2 km, and nothing else.

    The only 4 km walk from the dead end without walking a way twice, stem aside, is out
    along the path, once round the ring and back.
    """
    builder = TableBuilder()
    builder.node(1, 0.0, -1000.0)
    previous = 1
    for step in range(1, 11):
        node_id = builder.node(1 + step, 0.0, -1000.0 + 100.0 * step)
        builder.edge(previous, node_id)
        previous = node_id
    ring = [previous]
    radius = 2000.0 / (2 * math.pi)
    for index in range(1, 20):
        angle = 2 * math.pi * index / 20
        ring.append(
            builder.node(100 + index, radius * math.sin(angle), radius - radius * math.cos(angle))
        )
        builder.edge(ring[-2], ring[-1])
    builder.edge(ring[-1], ring[0])
    return builder.network()


def test_step_route_dead_end_stem() -> None:
    network = lollipop_network()
    state = start_route(network, *to_lat_lon(0.0, -1000.0), 4000.0)
    for _ in range(30):
        candidates = suggest_candidates(network, state, "", seed=len(state.waypoint_node_ids))
        if state.finalize_suggested or not candidates:
            break
        state = add_waypoint(network, state, candidates[0].id)
    route = finalize(network, state)
    assert_closed_walk(network, route.node_ids, route.edge_ids)
    assert abs(route.distance_m - 4000.0) <= 0.05 * 4000.0


def test_heidelberg_step_routes_near_target_with_any_pick() -> None:
    """A user may take any offered candidate, not only the best-scored one."""
    network = load_extract("heidelberg")
    rng = np.random.default_rng(3)
    hits = 0
    starts = random_starts(network, 8)
    for index, (lat, lon) in enumerate(starts):
        state = start_route(network, lat, lon, 3000.0)
        for _ in range(40):
            candidates = suggest_candidates(network, state, "", seed=index)
            if state.finalize_suggested or not candidates:
                break
            state = add_waypoint(network, state, candidates[rng.integers(len(candidates))].id)
        route = finalize(network, state)
        hits += abs(route.distance_m - 3000.0) <= 0.05 * 3000.0
    assert hits >= 7


# Starts where the way back from the first steps, once a step is walked, is far longer or
# shorter than it looks, for example on a street joined to the rest only at its ends, or in
# a mountain valley reached over a long path.
HARD_STEP_STARTS = [
    ("heidelberg", 49.450502, 8.802676, 3000.0, ""),
    ("heidelberg", 49.443800, 8.750871, 3000.0, "parks and water"),
    ("andorra", 42.444156, 1.520818, 8000.0, ""),
    ("andorra", 42.475064, 1.505045, 5000.0, ""),
    # Routes that walk to the tip of a valley with most of the target left, and must walk
    # back down it to go on.
    ("andorra", 42.468053, 1.429300, 8000.0, ""),
    ("andorra", 42.528142, 1.487610, 8000.0, ""),
    # Starts where only ends with a way back far off the rest of the target avoid the route,
    # so ways back over the route walked must be weighed too.
    ("andorra", 42.601939, 1.490729, 8000.0, ""),
    ("andorra", 42.541309, 1.480556, 8000.0, "parks and water"),
]


def follow_best_candidates(
    network: Network, state: RouteState, preference: str, seed: int, max_steps: int = 40
) -> RouteState:
    """Add the best-scored candidate until finalize is suggested or nothing is offered.

    Each suggestion's seed is `seed` plus the waypoints added so far, as the server does.
    """
    for _ in range(max_steps):
        candidates = suggest_candidates(
            network, state, preference, seed=seed + len(state.waypoint_node_ids)
        )
        if state.finalize_suggested or not candidates:
            break
        best = max(candidates, key=lambda candidate: candidate.score)
        state = add_waypoint(network, state, best.id)
    return state


@pytest.mark.parametrize(("region", "lat", "lon", "target", "preference"), HARD_STEP_STARTS)
def test_step_route_near_target_from_hard_start(
    region: str, lat: float, lon: float, target: float, preference: str
) -> None:
    network = load_extract(region)
    state = follow_best_candidates(network, start_route(network, lat, lon, target), preference, 7)
    route = finalize(network, state)
    assert abs(route.distance_m - target) <= 0.05 * target


# Mountain-valley starts where the best-scored ends about one step away lead up a dead-end
# valley, so that the route walks back down it or closes over its last step: (lat, lon,
# preference, seed).
VALLEY_STEP_STARTS = [
    (42.466337, 1.642555, "", 436891606),
    (42.581716, 1.772346, "", 611368629),
    (42.556185, 1.447759, "parks and water", 1051347542),
    (42.445193, 1.522719, "parks and water", 236798456),
]


@pytest.mark.parametrize(("lat", "lon", "preference", "seed"), VALLEY_STEP_STARTS)
def test_valley_step_route_walks_little_twice(
    lat: float, lon: float, preference: str, seed: int
) -> None:
    network = load_extract("andorra")
    state = follow_best_candidates(
        network, start_route(network, lat, lon, 8000.0), preference, seed
    )
    route = finalize(network, RouteState.from_dict(state.to_dict()))
    assert route.retrace_share <= 0.10
    assert abs(route.distance_m - 8000.0) <= 0.05 * 8000.0


@pytest.mark.parametrize(("lat", "lon", "preference", "seed"), VALLEY_STEP_STARTS)
def test_valley_step_route_any_pick_walks_little_twice(
    lat: float, lon: float, preference: str, seed: int
) -> None:
    """A user may take any offered candidate, not only the best-scored one."""
    network = load_extract("andorra")
    rng = np.random.default_rng(seed)
    state = start_route(network, lat, lon, 8000.0)
    for _ in range(40):
        candidates = suggest_candidates(
            network, state, preference, seed=seed + len(state.waypoint_node_ids)
        )
        if state.finalize_suggested or not candidates:
            break
        state = add_waypoint(network, state, candidates[rng.integers(len(candidates))].id)
    route = finalize(network, state)
    assert route.retrace_share <= 0.10
    assert abs(route.distance_m - 8000.0) <= 0.05 * 8000.0


def test_planned_candidate_carries_rest_of_loop() -> None:
    network = load_extract("andorra")
    state = start_route(network, 42.466337, 1.642555, 8000.0)
    candidates = suggest_candidates(network, state, "", seed=1)
    planned = [candidate for candidate in candidates if candidate.plan_edge_ids]
    assert planned
    candidate = planned[0]
    assert candidate.path_node_ids[-1] == candidate.node_id
    assert candidate.plan_node_ids[0] == candidate.node_id
    assert candidate.plan_node_ids[-1] == state.start_node_id
    edges = candidate.path_edge_ids + candidate.plan_edge_ids
    length = sum(float(network.length[network.edge_index(edge)]) for edge in edges)
    assert abs(length - 8000.0) <= 0.03 * 8000.0

    state = add_waypoint(network, RouteState.from_dict(state.to_dict()), candidate.id)
    assert state.plan_node_ids == candidate.plan_node_ids
    assert state.plan_edge_ids == candidate.plan_edge_ids
    following = suggest_candidates(network, state, "", seed=2)
    assert any(next_candidate.plan_edge_ids for next_candidate in following)


def walk_of_length(length: float) -> Walk:
    return Walk(nodes=[0, 1, 0], edges=[0, 1], length=length, retrace=0.0, preference_share=0.0)


def test_select_drops_alternatives_off_target() -> None:
    """Where no walk comes within 5% of the target, the best one is returned alone."""
    walks = [walk_of_length(7300.0), walk_of_length(7400.0), walk_of_length(8700.0)]
    chosen = _select(walks, 8000.0, 3, 0.0)
    assert len(chosen) == 1
    assert chosen[0].length == 7400.0


def test_select_keeps_alternatives_on_target() -> None:
    walks = [walk_of_length(7300.0), walk_of_length(7900.0), walk_of_length(8200.0)]
    chosen = _select(walks, 8000.0, 3, 0.0)
    assert [walk.length for walk in chosen] == [7900.0, 8200.0]


def test_select_seed_picks_among_equal_walks() -> None:
    walks = [walk_of_length(7950.0), walk_of_length(8050.0), walk_of_length(7980.0)]
    firsts = {_select(walks, 8000.0, 1, 0.1, pick)[0].length for pick in range(3)}
    assert firsts == {7950.0, 8050.0, 7980.0}


def test_select_tie_excludes_more_retrace() -> None:
    retraced = Walk(
        nodes=[0, 1, 0], edges=[0, 1], length=7990.0, retrace=0.05, preference_share=0.0
    )
    walks = [walk_of_length(7950.0), retraced]
    firsts = {_select(walks, 8000.0, 1, 0.1, pick)[0].length for pick in range(4)}
    assert firsts == {7950.0}


def test_select_puts_loop_before_out_and_back() -> None:
    loop = walk_of_length(8600.0)
    out_and_back = Walk(
        nodes=[0, 1, 0], edges=[0, 0], length=8000.0, retrace=0.0, preference_share=0.0, stem=0.5
    )
    chosen = _select([out_and_back, loop], 8000.0, 3, 0.0)
    assert chosen == [loop, out_and_back]


def test_select_out_and_back_when_no_loop_close() -> None:
    loop = walk_of_length(9000.0)
    out_and_back = Walk(
        nodes=[0, 1, 0], edges=[0, 0], length=8100.0, retrace=0.0, preference_share=0.0, stem=0.5
    )
    chosen = _select([loop, out_and_back], 8000.0, 3, 0.0)
    assert chosen == [out_and_back]


def test_step_route_in_dead_end_keeps_moving() -> None:
    """A route at the tip of a walked valley is offered real steps, not a few metres each."""
    network = load_extract("andorra")
    state = start_route(network, 42.599478, 1.573509, 8000.0)
    state = follow_best_candidates(network, state, "", 873559166)
    assert len(state.waypoint_node_ids) <= 12
    route = finalize(network, state)
    assert abs(route.distance_m - 8000.0) <= 0.05 * 8000.0


def test_finalize_detours_between_ways_back() -> None:
    """After a step up a valley, the way back avoiding it runs far over the target and the
    one retracing it falls short, so finalize must close with a detour in between."""
    network = load_extract("andorra")
    state = start_route(network, 42.543703, 1.546251, 8000.0)
    state = follow_best_candidates(network, state, "", 369145740, max_steps=20)
    route = finalize(network, state)
    assert abs(route.distance_m - 8000.0) <= 0.05 * 8000.0


def test_track_out_and_back_closest_length() -> None:
    """A start at the tip of a track whose only turning point within 25% lies 550 m away."""
    builder = TableBuilder()
    builder.node(1, 0.0, 0.0)
    builder.node(2, 150.0, 0.0)
    builder.node(3, 550.0, 0.0)
    builder.edge(1, 2, highway="track")
    builder.edge(2, 3, highway="track")
    network = builder.network()
    loop = plan_loops(network, *to_lat_lon(0.0, 0.0), 1000.0, "", seed=1)[0]
    assert loop.shape == "out_and_back"
    assert loop.distance_m == pytest.approx(1100.0, abs=2.0)
    assert loop.node_ids == [1, 2, 3, 2, 1]


def test_monaco_dead_end_short_target() -> None:
    network = load_extract("monaco")
    loop = plan_loops(network, 43.7444487, 7.4269042, 1000.0, "", seed=0)[0]
    assert abs(loop.distance_m - 1000.0) <= 0.25 * 1000.0
    assert loop.shape == "out_and_back"
    assert_closed_walk(network, loop.node_ids, loop.edge_ids)
