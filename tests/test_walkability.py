"""Tag tables for the walking access rules."""

from __future__ import annotations

import pytest

from pipelines.walkability import (
    foot_direction,
    is_blocking_node,
    is_walkable_way,
    quietness,
)

WAY_CASES = [
    # (description, tags, walkable)
    ("footway", {"highway": "footway"}, True),
    ("path", {"highway": "path"}, True),
    ("steps", {"highway": "steps"}, True),
    ("residential street", {"highway": "residential"}, True),
    ("living street", {"highway": "living_street"}, True),
    ("track", {"highway": "track"}, True),
    ("primary road", {"highway": "primary"}, True),
    ("secondary link", {"highway": "secondary_link"}, True),
    ("corridor", {"highway": "corridor"}, True),
    ("elevator", {"highway": "elevator"}, True),
    ("bridleway", {"highway": "bridleway"}, True),
    ("not a highway", {"building": "yes"}, False),
    ("motorway", {"highway": "motorway"}, False),
    ("motorway link with foot=yes", {"highway": "motorway_link", "foot": "yes"}, False),
    ("trunk tunnel without sidewalk", {"highway": "trunk", "tunnel": "yes"}, False),
    ("trunk with sidewalk both", {"highway": "trunk", "sidewalk": "both"}, True),
    ("trunk link with right sidewalk", {"highway": "trunk_link", "sidewalk:right": "yes"}, True),
    ("trunk with sidewalk=no", {"highway": "trunk", "sidewalk": "no"}, False),
    ("trunk with foot=designated", {"highway": "trunk", "foot": "designated"}, True),
    ("trunk with separate sidewalk", {"highway": "trunk", "sidewalk": "separate"}, False),
    ("cycleway alone", {"highway": "cycleway"}, False),
    ("cycleway with foot=designated", {"highway": "cycleway", "foot": "designated"}, True),
    ("cycleway with foot=permissive", {"highway": "cycleway", "foot": "permissive"}, True),
    ("private service road", {"highway": "service", "access": "private"}, False),
    ("service=private", {"highway": "service", "service": "private"}, False),
    ("access=no", {"highway": "residential", "access": "no"}, False),
    ("private with foot=yes", {"highway": "service", "access": "private", "foot": "yes"}, True),
    (
        "access=no with foot=permissive",
        {"highway": "track", "access": "no", "foot": "permissive"},
        True,
    ),
    ("ferry with foot=yes", {"highway": "footway", "route": "ferry", "foot": "yes"}, False),
    ("foot=no", {"highway": "residential", "foot": "no"}, False),
    ("foot=use_sidepath", {"highway": "secondary", "foot": "use_sidepath"}, False),
    ("sidewalk=separate carriageway", {"highway": "residential", "sidewalk": "separate"}, False),
    ("sidewalk:both=separate", {"highway": "tertiary", "sidewalk:both": "separate"}, False),
    (
        "both sides separate",
        {"highway": "primary", "sidewalk:left": "separate", "sidewalk:right": "separate"},
        False,
    ),
    (
        "one side separate only",
        {"highway": "primary", "sidewalk:left": "separate", "sidewalk:right": "no"},
        True,
    ),
    (
        "separate sidewalk but foot=yes",
        {"highway": "residential", "sidewalk": "separate", "foot": "yes"},
        True,
    ),
    (
        "separate sidewalk and foot=permissive",
        {"highway": "residential", "sidewalk": "separate", "foot": "permissive"},
        False,
    ),
    ("footway with sidewalk=separate", {"highway": "footway", "sidewalk": "separate"}, True),
    ("pedestrian area", {"highway": "pedestrian", "area": "yes"}, True),
    ("footway area", {"highway": "footway", "area": "yes"}, True),
    ("service area", {"highway": "service", "area": "yes"}, False),
    ("oneway footway", {"highway": "footway", "oneway": "yes"}, True),
    ("oneway residential", {"highway": "residential", "oneway": "yes"}, True),
    ("construction", {"highway": "construction"}, False),
    ("proposed", {"highway": "proposed"}, False),
    ("platform", {"highway": "platform"}, False),
    ("raceway", {"highway": "raceway"}, False),
    ("bus guideway", {"highway": "bus_guideway"}, False),
    ("rest area", {"highway": "rest_area"}, False),
    ("highway=no", {"highway": "no"}, False),
    ("unknown kind", {"highway": "busway"}, False),
    ("unknown kind with foot=yes", {"highway": "busway", "foot": "yes"}, True),
]


@pytest.mark.parametrize(
    ("tags", "expected"),
    [(tags, expected) for _, tags, expected in WAY_CASES],
    ids=[description for description, _, _ in WAY_CASES],
)
def test_is_walkable_way(tags: dict[str, str], expected: bool) -> None:
    assert is_walkable_way(tags) is expected


def test_way_table_size() -> None:
    assert len(WAY_CASES) >= 30


DIRECTION_CASES = [
    ("oneway=yes footway", {"highway": "footway", "oneway": "yes"}, 0),
    ("oneway:foot=yes", {"highway": "footway", "oneway:foot": "yes"}, 1),
    ("oneway:foot=1", {"highway": "footway", "oneway:foot": "1"}, 1),
    ("oneway:foot=true", {"highway": "footway", "oneway:foot": "true"}, 1),
    ("oneway:foot=-1", {"highway": "steps", "oneway:foot": "-1"}, -1),
    ("oneway:foot=no", {"highway": "footway", "oneway:foot": "no"}, 0),
    ("no oneway tags", {"highway": "path"}, 0),
]


@pytest.mark.parametrize(
    ("tags", "expected"),
    [(tags, expected) for _, tags, expected in DIRECTION_CASES],
    ids=[description for description, _, _ in DIRECTION_CASES],
)
def test_foot_direction(tags: dict[str, str], expected: int) -> None:
    assert foot_direction(tags) == expected


NODE_CASES = [
    ("fence node", {"barrier": "fence"}, True),
    ("wall node", {"barrier": "wall"}, True),
    ("hedge node", {"barrier": "hedge"}, True),
    ("retaining wall node", {"barrier": "retaining_wall"}, True),
    ("city wall node", {"barrier": "city_wall"}, True),
    ("guard rail node", {"barrier": "guard_rail"}, True),
    ("fence with foot=yes", {"barrier": "fence", "foot": "yes"}, False),
    ("open gate", {"barrier": "gate"}, False),
    ("gate with locked=no", {"barrier": "gate", "locked": "no"}, False),
    ("locked gate", {"barrier": "gate", "locked": "yes"}, True),
    ("locked private gate", {"barrier": "gate", "locked": "yes", "access": "private"}, True),
    ("private gate", {"barrier": "gate", "access": "private"}, True),
    ("lift gate access=no", {"barrier": "lift_gate", "access": "no"}, True),
    ("private gate with foot=yes", {"barrier": "gate", "access": "private", "foot": "yes"}, False),
    (
        "locked gate with foot=permissive",
        {"barrier": "gate", "locked": "yes", "foot": "permissive"},
        False,
    ),
    ("gate with foot=no", {"barrier": "gate", "foot": "no"}, True),
    ("bollard", {"barrier": "bollard"}, False),
    ("bollard access=no", {"barrier": "bollard", "access": "no"}, False),
    ("kissing gate", {"barrier": "kissing_gate"}, False),
    ("stile", {"barrier": "stile"}, False),
    ("kerb", {"barrier": "kerb"}, False),
    ("cattle grid", {"barrier": "cattle_grid"}, False),
    ("not a barrier", {"amenity": "bench"}, False),
    ("access=no without barrier", {"access": "no"}, False),
]


@pytest.mark.parametrize(
    ("tags", "expected"),
    [(tags, expected) for _, tags, expected in NODE_CASES],
    ids=[description for description, _, _ in NODE_CASES],
)
def test_is_blocking_node(tags: dict[str, str], expected: bool) -> None:
    assert is_blocking_node(tags) is expected


@pytest.mark.parametrize(
    ("highway", "expected"),
    [
        ("footway", 1.0),
        ("path", 1.0),
        ("pedestrian", 1.0),
        ("track", 1.0),
        ("living_street", 0.8),
        ("residential", 0.8),
        ("service", 0.7),
        ("unclassified", 0.6),
        ("tertiary", 0.4),
        ("secondary", 0.2),
        ("primary", 0.1),
        ("trunk", 0.0),
    ],
)
def test_quietness_values(highway: str, expected: float) -> None:
    assert quietness(highway) == pytest.approx(expected)


@pytest.mark.parametrize("highway", [None, "busway", "unknown"])
def test_quietness_in_unit_range(highway: str | None) -> None:
    assert 0.0 <= quietness(highway) <= 1.0


def test_quietness_orders_road_kinds() -> None:
    kinds = ["footway", "residential", "service", "unclassified", "tertiary", "secondary"]
    values = [quietness(kind) for kind in kinds + ["primary", "trunk"]]
    assert values == sorted(values, reverse=True)
