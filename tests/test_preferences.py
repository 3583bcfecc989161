"""Preference parsing, and green and water features on real extracts."""

from __future__ import annotations

import numpy as np
import pytest

from planner import Network, parse_preference, plan_loops
from planner._quick_eval import load_network
from planner.routing import edge_costs
from tests.conftest import ANDORRA, VANCOUVER

# Stanley Park, Vancouver, and the Engolasters lake above Escaldes-Engordany, Andorra.
STANLEY_PARK = (49.3030, -123.1440)
ENGOLASTERS = (42.5200, 1.5690)


@pytest.mark.parametrize(
    ("text", "groups", "avoid"),
    [
        ("parks and water", ("green", "water"), []),
        ("Trees by the RIVER", ("green", "water"), []),
        ("lakeside, woods", ("water", "green"), []),
        ("quiet streets", ("quiet",), []),
        ("no stairs", (), ["steps"]),
        ("avoid busy roads", (), ["busy"]),
        ("without steps, near the sea", ("water",), ["steps"]),
        ("no parks", (), []),
        ("no parks, quiet", ("quiet",), []),
        ("don\u2019t like parks, quiet", ("quiet",), []),
        ("no parks\nquiet", ("quiet",), []),
        ("no parks - quiet", ("quiet",), []),
        ("no stairs; water", ("water",), ["steps"]),
        ("no stairs or busy roads", (), ["steps", "busy"]),
        ("avoid stairs and busy roads", (), ["steps", "busy"]),
        ("avoid busy main roads and stairs", (), ["busy", "steps"]),
        ("without steps nor traffic", (), ["steps", "busy"]),
        ("no stairs or the busy roads, quiet", ("quiet",), ["steps", "busy"]),
        ("no stairs, parks please", ("green",), ["steps"]),
        ("no stairs, busy roads", (), ["steps"]),
        ("no stairs - busy roads", (), ["steps"]),
        ("no stairs or parks", (), ["steps"]),
        ("no stairs and lots of parks", ("green",), ["steps"]),
        ("no stairs or busybodies", (), ["steps"]),
        ("", (), []),
    ],
)
def test_parse_preference_groups(text: str, groups: tuple, avoid: list) -> None:
    preference = parse_preference(text)
    assert preference.groups == groups
    assert preference.avoid == avoid


@pytest.mark.parametrize("text", ["quiet streets", "streets", "treetops", "parkway", "seaweed"])
def test_parse_preference_never_substring(text: str) -> None:
    preference = parse_preference(text)
    assert "green" not in preference.groups
    assert "water" not in preference.groups


def test_parse_preference_reads_back() -> None:
    preference = parse_preference("Parks, no stairs and hills")
    assert preference.matched == ["parks"]
    assert preference.avoid == ["steps"]
    assert preference.ignored == ["hills"]
    assert preference.describe() == "matched: parks; avoid: steps; ignored: hills"


def test_negated_list_reads_back_both() -> None:
    preference = parse_preference("No stairs or busy roads\nwater")
    assert preference.avoid == ["steps", "busy"]
    assert preference.matched == ["water"]
    assert preference.ignored == []
    assert preference.describe() == "matched: water; avoid: steps, busy"


def test_negated_liked_word_is_ignored() -> None:
    preference = parse_preference("not the river")
    assert preference.groups == ()
    assert "river" in preference.ignored


def test_avoid_steps_raises_step_cost() -> None:
    network = load_network(str(VANCOUVER))
    steps = np.flatnonzero(
        np.asarray(network.highway_names, dtype=object)[network.highway_codes] == "steps"
    )
    assert steps.size
    plain = edge_costs(network, parse_preference(""))
    avoiding = edge_costs(network, parse_preference("no stairs"))
    assert np.all(avoiding[steps] > 2.0 * plain[steps])


def test_avoid_list_raises_both_costs() -> None:
    network = load_network(str(VANCOUVER))
    highways = np.asarray(network.highway_names, dtype=object)[network.highway_codes]
    steps = np.flatnonzero(highways == "steps")
    primary = np.flatnonzero(highways == "primary")
    assert steps.size
    assert primary.size
    plain = edge_costs(network, parse_preference(""))
    for text in ["no stairs or busy roads", "avoid busy roads and stairs"]:
        avoiding = edge_costs(network, parse_preference(text))
        assert np.all(avoiding[steps] > 2.0 * plain[steps]), text
        assert np.all(avoiding[primary] > 2.0 * plain[primary]), text


def nearest_start(network: Network, lat: float, lon: float) -> tuple[float, float]:
    nodes = np.flatnonzero(network.component == network.largest_component)
    node = nodes[int(np.argmin(np.hypot(network.lat[nodes] - lat, network.lon[nodes] - lon)))]
    return float(network.lat[node]), float(network.lon[node])


def test_stanley_park_is_green() -> None:
    network = load_network(str(VANCOUVER))
    start = nearest_start(network, *STANLEY_PARK)
    loop = plan_loops(network, *start, 4000.0, "parks", seed=1, alternatives=1)[0]
    assert abs(loop.distance_m - 4000.0) <= 0.05 * 4000.0
    assert loop.green_share >= 0.6


def test_nature_preference_raises_green_and_water() -> None:
    network = load_network(str(VANCOUVER))
    rng = np.random.default_rng(11)
    nodes = rng.choice(np.flatnonzero(network.component == network.largest_component), 16)
    neutral, nature = [], []
    for seed, node in enumerate(nodes):
        lat, lon = float(network.lat[node]), float(network.lon[node])
        plain = plan_loops(network, lat, lon, 5000.0, "", seed=seed, alternatives=1)[0]
        liked = plan_loops(network, lat, lon, 5000.0, "parks and water", seed=seed)[0]
        assert abs(liked.distance_m - 5000.0) <= 0.05 * 5000.0
        neutral.append(plain.green_share + plain.water_share)
        nature.append(liked.green_share + liked.water_share)
    assert np.mean(nature) >= 1.3 * np.mean(neutral)


def test_andorra_lake_gives_water() -> None:
    network = load_network(str(ANDORRA))
    water = network.feature("water")
    near = np.hypot(
        (network.lat[network.edge_u] - ENGOLASTERS[0]) * 111_000,
        (network.lon[network.edge_u] - ENGOLASTERS[1]) * 82_000,
    )
    assert water[near <= 300.0].max() >= 0.5
    start = nearest_start(network, *ENGOLASTERS)
    loop = plan_loops(network, *start, 3000.0, "lakes", seed=1, alternatives=1)[0]
    assert loop.water_share > 0.0
