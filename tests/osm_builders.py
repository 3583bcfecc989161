"""Build small OSM XML files from Python lists, for parser and planner tests.

Example::

    nodes = [Node(1, 49.0, 8.0), Node(2, 49.001, 8.0, {"barrier": "gate", "locked": "yes"})]
    ways = [Way(10, [1, 2], {"highway": "path"})]
    path = write_osm(tmp_path / "gate.osm", nodes, ways)

`grid_nodes` places nodes on a regular lat/lon grid so distances are easy to predict.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import quoteattr

# Metres per degree of latitude on a sphere of the mean Earth radius (6,371,008.8 m).
METRES_PER_DEGREE_LAT = 111_195.08


@dataclass
class Node:
    """An OSM node. `lat` and `lon` are in degrees (WGS 84)."""

    id: int
    lat: float
    lon: float
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Way:
    """An OSM way. `refs` are node ids in order. They may name nodes the file lacks."""

    id: int
    refs: Sequence[int]
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Member:
    """A relation member. `type` is "node", "way" or "relation"."""

    type: str
    ref: int
    role: str = ""


@dataclass
class Relation:
    """An OSM relation, for example a multipolygon with outer and inner way members."""

    id: int
    members: Sequence[Member]
    tags: Mapping[str, str] = field(default_factory=dict)


def _tag_lines(tags: Mapping[str, str]) -> list[str]:
    return [f"    <tag k={quoteattr(key)} v={quoteattr(value)}/>" for key, value in tags.items()]


def osm_xml(
    nodes: Iterable[Node], ways: Iterable[Way] = (), relations: Iterable[Relation] = ()
) -> str:
    """Return an OSM XML document with the objects in the order OSM files use."""
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', '<osm version="0.6" generator="tests">']
    for node in nodes:
        head = f'  <node id="{node.id}" version="1" lat="{node.lat:.7f}" lon="{node.lon:.7f}"'
        if node.tags:
            lines.append(head + ">")
            lines.extend(_tag_lines(node.tags))
            lines.append("  </node>")
        else:
            lines.append(head + "/>")
    for way in ways:
        lines.append(f'  <way id="{way.id}" version="1">')
        lines.extend(f'    <nd ref="{ref}"/>' for ref in way.refs)
        lines.extend(_tag_lines(way.tags))
        lines.append("  </way>")
    for relation in relations:
        lines.append(f'  <relation id="{relation.id}" version="1">')
        for member in relation.members:
            lines.append(
                f'    <member type="{member.type}" ref="{member.ref}" '
                f"role={quoteattr(member.role)}/>"
            )
        lines.extend(_tag_lines(relation.tags))
        lines.append("  </relation>")
    lines.append("</osm>")
    return "\n".join(lines) + "\n"


def write_osm(
    path: Path,
    nodes: Iterable[Node],
    ways: Iterable[Way] = (),
    relations: Iterable[Relation] = (),
) -> Path:
    """Write an OSM XML file and return its path. The name should end in `.osm`."""
    path.write_text(osm_xml(nodes, ways, relations), encoding="utf-8")
    return path


def grid_nodes(
    rows: int,
    columns: int,
    spacing_m: float = 100.0,
    origin: tuple[float, float] = (49.0, 8.0),
    first_id: int = 1,
) -> dict[tuple[int, int], Node]:
    """Return nodes on a rows x columns grid keyed by (row, column).

    Row r lies `r * spacing_m` north of `origin` (lat, lon) and column c lies
    `c * spacing_m` east of it. Ids run row by row from `first_id`.
    """
    lat0, lon0 = origin
    lat_step = spacing_m / METRES_PER_DEGREE_LAT
    lon_step = lat_step / math.cos(math.radians(lat0))
    grid = {}
    for row in range(rows):
        for column in range(columns):
            node_id = first_id + row * columns + column
            grid[(row, column)] = Node(node_id, lat0 + row * lat_step, lon0 + column * lon_step)
    return grid
