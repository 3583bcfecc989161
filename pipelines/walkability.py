"""Walking access rules over OpenStreetMap tags.

Every function takes the tags of one OSM object as a mapping of key to value and is pure,
so the parser, the tests and the planner share one definition of where a pedestrian may go.
"""

from __future__ import annotations

from collections.abc import Mapping

Tags = Mapping[str, str]

# foot=* values that grant pedestrian access over a restrictive access=* or highway kind.
FOOT_ALLOWED = frozenset({"yes", "designated", "permissive"})

# foot=* values that forbid walking on the way itself. `use_sidepath` sends pedestrians to a
# separately mapped way, and `private` is the pedestrian form of access=private.
FOOT_FORBIDDEN = frozenset({"no", "use_sidepath", "private"})

ACCESS_FORBIDDEN = frozenset({"private", "no"})

# Highway kinds a pedestrian may use unless another tag forbids it.
WALKABLE_HIGHWAYS = frozenset(
    {
        "footway",
        "path",
        "pedestrian",
        "steps",
        "living_street",
        "residential",
        "service",
        "track",
        "unclassified",
        "road",
        "tertiary",
        "tertiary_link",
        "secondary",
        "secondary_link",
        "primary",
        "primary_link",
        "corridor",
        "bridleway",
        "elevator",
    }
)

# Highway kinds that are never walked, even with foot=yes.
NEVER_WALKABLE_HIGHWAYS = frozenset(
    {
        "motorway",
        "motorway_link",
        "construction",
        "proposed",
        "planned",
        "abandoned",
        "razed",
        "platform",
        "raceway",
        "bus_guideway",
        "escape",
        "rest_area",
        "services",
        "no",
    }
)

TRUNK_HIGHWAYS = frozenset({"trunk", "trunk_link"})

# Ways built for pedestrians. Every other walkable kind is a carriageway, whose
# sidewalk=separate means the pedestrian walks a separately mapped sidewalk.
PEDESTRIAN_HIGHWAYS = frozenset(
    {"footway", "path", "pedestrian", "steps", "corridor", "bridleway", "elevator"}
)

# Highway kinds whose area=yes outline is walkable (a plaza or a wide footway).
WALKABLE_AREA_HIGHWAYS = frozenset({"pedestrian", "footway"})

SIDEWALK_KEYS = ("sidewalk", "sidewalk:both", "sidewalk:left", "sidewalk:right")
SIDEWALK_PRESENT = frozenset({"yes", "both", "left", "right"})

# Linear barriers: a node on one of these is a point where a way crosses a wall or fence.
WALL_BARRIERS = frozenset(
    {"wall", "fence", "hedge", "retaining_wall", "city_wall", "guard_rail", "ditch"}
)

# Barriers that a pedestrian passes unless they are locked or closed to access.
GATE_BARRIERS = frozenset(
    {
        "gate",
        "lift_gate",
        "swing_gate",
        "sliding_gate",
        "hampshire_gate",
        "wicket_gate",
        "door",
        "turnstile",
        "full-height_turnstile",
        "entrance",
        "chain",
        "rope",
        "spikes",
    }
)

# Quietness per highway kind, 1.0 for ways without motor traffic and 0.0 for trunk roads.
QUIETNESS = {
    "footway": 1.0,
    "path": 1.0,
    "pedestrian": 1.0,
    "track": 1.0,
    "steps": 1.0,
    "bridleway": 1.0,
    "corridor": 1.0,
    "elevator": 1.0,
    "cycleway": 0.9,
    "living_street": 0.8,
    "residential": 0.8,
    "service": 0.7,
    "unclassified": 0.6,
    "road": 0.6,
    "tertiary": 0.4,
    "tertiary_link": 0.4,
    "secondary": 0.2,
    "secondary_link": 0.2,
    "primary": 0.1,
    "primary_link": 0.1,
    "trunk": 0.0,
    "trunk_link": 0.0,
}

# Quietness of a highway kind missing from QUIETNESS.
DEFAULT_QUIETNESS = 0.5


def _foot_allowed(tags: Tags) -> bool:
    return tags.get("foot") in FOOT_ALLOWED


def _has_sidewalk(tags: Tags) -> bool:
    return any(tags.get(key) in SIDEWALK_PRESENT for key in SIDEWALK_KEYS)


def _sidewalk_is_separate(tags: Tags) -> bool:
    if tags.get("sidewalk") == "separate" or tags.get("sidewalk:both") == "separate":
        return True
    return tags.get("sidewalk:left") == "separate" and tags.get("sidewalk:right") == "separate"


def is_walkable_way(tags: Tags) -> bool:
    """Return whether a pedestrian may walk along a way with these tags.

    A plain oneway=yes never restricts walking, because only oneway:foot binds pedestrians
    (see `foot_direction`).
    A highway kind that is in neither rule set (busway, bus_stop, ...) is walkable only
    with an explicit foot=yes|designated|permissive.
    """
    highway = tags.get("highway")
    if highway is None:
        return False
    if tags.get("route") == "ferry":
        return False
    if tags.get("foot") in FOOT_FORBIDDEN:
        return False
    if highway in NEVER_WALKABLE_HIGHWAYS:
        return False
    if tags.get("area") == "yes" and highway not in WALKABLE_AREA_HIGHWAYS:
        return False

    foot_allowed = _foot_allowed(tags)
    private = tags.get("access") in ACCESS_FORBIDDEN or tags.get("service") == "private"
    if private and not foot_allowed:
        return False

    if highway in TRUNK_HIGHWAYS:
        return foot_allowed or _has_sidewalk(tags)
    if highway == "cycleway":
        return foot_allowed

    is_carriageway = highway not in PEDESTRIAN_HIGHWAYS
    if is_carriageway and _sidewalk_is_separate(tags):
        return tags.get("foot") in {"yes", "designated"}

    return highway in WALKABLE_HIGHWAYS or foot_allowed


def foot_direction(tags: Tags) -> int:
    """Return 1 when only the way's direction may be walked, -1 for the reverse, else 0."""
    value = tags.get("oneway:foot")
    if value in {"yes", "1", "true"}:
        return 1
    if value == "-1":
        return -1
    return 0


def is_blocking_node(tags: Tags) -> bool:
    """Return whether a barrier node with these tags stops a pedestrian.

    Walls and fences always block, and gates block when locked or closed to access.
    foot=yes|designated|permissive opens any barrier. Bollards, kissing gates, stiles,
    kerbs and barrier values not listed here do not block.
    """
    barrier = tags.get("barrier")
    if barrier is None:
        return False
    if _foot_allowed(tags):
        return False
    if barrier in WALL_BARRIERS:
        return True
    if tags.get("foot") in FOOT_FORBIDDEN:
        return True
    if barrier in GATE_BARRIERS:
        return tags.get("locked") == "yes" or tags.get("access") in ACCESS_FORBIDDEN
    return False


def quietness(highway: str | None) -> float:
    """Return how free of motor traffic a highway kind is, from 0.0 (trunk) to 1.0 (footway)."""
    if highway is None:
        return DEFAULT_QUIETNESS
    return QUIETNESS.get(highway, DEFAULT_QUIETNESS)
