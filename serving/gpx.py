"""GPX 1.1 export of a loop or a finalized route."""

from __future__ import annotations

from datetime import UTC, datetime
from xml.sax.saxutils import escape

ATTRIBUTION = "Map data © OpenStreetMap contributors, ODbL 1.0"
LICENSE_URL = "https://www.openstreetmap.org/copyright"


def to_gpx(name: str, coordinates: list[tuple[float, float]], distance_m: float) -> str:
    """Return a GPX 1.1 document with one track; `coordinates` are (lon, lat) pairs."""
    points = "\n".join(
        f'      <trkpt lat="{lat:.6f}" lon="{lon:.6f}"/>' for lon, lat in coordinates
    )
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<gpx version="1.1" creator="Perfect10k" xmlns="http://www.topografix.com/GPX/1/1">
  <metadata>
    <name>{escape(name)}</name>
    <desc>{distance_m / 1000:.2f} km walking loop</desc>
    <copyright author="OpenStreetMap contributors">
      <license>{LICENSE_URL}</license>
    </copyright>
    <link href="{LICENSE_URL}"><text>{escape(ATTRIBUTION)}</text></link>
    <time>{stamp}</time>
  </metadata>
  <trk>
    <name>{escape(name)}</name>
    <trkseg>
{points}
    </trkseg>
  </trk>
</gpx>
"""
