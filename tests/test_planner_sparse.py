"""Planner tests on sparse networks: long stems, long edges and alternatives off target."""

from __future__ import annotations

import pytest

from planner import (
    Network,
    NoLoopFound,
    add_waypoint,
    finalize,
    plan_loops,
    start_route,
    suggest_candidates,
)
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
def test_alternatives_no_worse_than_first(region: str) -> None:
    network = load_extract(region)
    checked = 0
    for index, (lat, lon) in enumerate(random_starts(network, 12)):
        try:
            loops = plan_loops(network, lat, lon, 5000.0, "", seed=index)
        except NoLoopFound:
            # Some mountain starts lie on ways far longer than the target, with no loop.
            continue
        first = abs(loops[0].distance_m - 5000.0) / 5000.0
        for loop in loops[1:]:
            error = abs(loop.distance_m - 5000.0) / 5000.0
            assert error <= max(0.05, first + 0.03)
            if first <= 0.05:
                assert error <= 0.05
        checked += 1
    assert checked >= 8
