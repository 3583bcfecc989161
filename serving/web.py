"""The web map page, its static files, and map overlays read from built cells."""

from __future__ import annotations

import functools
import logging
import math
import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import duckdb
import h3
import shapely
from litestar import Controller, MediaType, Response, Router
from litestar.di import NamedDependency, Provide
from litestar.params import Parameter
from litestar.static_files import create_static_files_router

from perfect10k.settings import Settings
from serving import schemas
from serving.errors import (
    MAX_VALUE_CHARS,
    InvalidField,
    ServiceUnavailable,
    error_responses,
)
from serving.networks import CorruptCells
from serving.routing import get_and_head
from serving.service import STEP_LENGTH_M
from warehouse import CellEntry, Warehouse
from warehouse.schema import FEATURE_NAMES
from warehouse.store import thread_connection

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
OSM_ATTRIBUTION = (
    '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors'
)

# The largest overlay box: a 1280x800 screen at zoom 12 and latitude 45 covers about 0.09
# square degrees. At that latitude 0.1 square degrees is about 900 km², so one request reads
# at most about 200 res-7 cells (4.6 km² each).
MAX_OVERLAY_AREA_DEG2 = 0.1
MAX_AREA_FEATURES = 1500
MAX_SCORE_FEATURES = 2000
# Reads per overlay request while corrupt cells keep turning up. One check after a failed
# read finds every corrupt cell of the box, so a second read normally succeeds.
MAX_READ_ATTEMPTS = 3
# Geometries are simplified to about 1/2000 of the box, below a pixel at any screen size.
SIMPLIFY_SHARE = 1 / 2000
COORDINATE_GRID_DEG = 1e-6

BBOX_FORMAT = "min_lon,min_lat,max_lon,max_lat"
# A bbox number: plain decimal or exponent notation. Python's float() would also take
# underscores ("1_0"), "nan" and "inf".
BBOX_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
BBOX_NUMBER_FORMAT = "a decimal number such as 7.43, -0.5 or 4.373e1"
BBOX_ALLOWED = (
    f"{BBOX_FORMAT} as decimal numbers in degrees: longitudes -180 to 180, latitudes -90 to 90, "
    f"min < max, at most {MAX_OVERLAY_AREA_DEG2} square degrees"
)


def _invalid_bbox(raw: str, reason: str) -> InvalidField:
    quoted = raw if len(raw) <= MAX_VALUE_CHARS else raw[:MAX_VALUE_CHARS] + "..."
    return InvalidField(
        f"bbox {quoted!r} is invalid: {reason}", field="bbox", value=quoted, allowed=BBOX_ALLOWED
    )


def parse_bbox(raw: str) -> tuple[float, float, float, float]:
    """Parse `min_lon,min_lat,max_lon,max_lat` in degrees.

    Raises InvalidField (400) with field `bbox`, the value and the allowed range.
    """
    parts = raw.split(",")
    if len(parts) != 4:
        raise _invalid_bbox(raw, f"expected 4 comma-separated numbers {BBOX_FORMAT}")
    values = []
    for part in parts:
        text = part.strip()
        if BBOX_NUMBER.fullmatch(text) is None:
            raise _invalid_bbox(
                raw, f"{text!r} is not a number; each of the 4 must be {BBOX_NUMBER_FORMAT}"
            )
        value = float(text)
        if not math.isfinite(value):
            raise _invalid_bbox(raw, f"{text!r} is not a finite number")
        values.append(value)
    min_lon, min_lat, max_lon, max_lat = values
    for name, value, limit in (
        ("min_lon", min_lon, 180.0),
        ("max_lon", max_lon, 180.0),
        ("min_lat", min_lat, 90.0),
        ("max_lat", max_lat, 90.0),
    ):
        if not -limit <= value <= limit:
            raise _invalid_bbox(
                raw, f"{name} {value} is out of range -{limit:.0f} to {limit:.0f} degrees"
            )
    if min_lon >= max_lon or min_lat >= max_lat:
        raise _invalid_bbox(
            raw, f"it is not ordered {BBOX_FORMAT} with min_lon < max_lon and min_lat < max_lat"
        )
    area = (max_lon - min_lon) * (max_lat - min_lat)
    if area > MAX_OVERLAY_AREA_DEG2:
        raise _invalid_bbox(
            raw,
            f"it covers {area:.4g} square degrees, more than the maximum of "
            f"{MAX_OVERLAY_AREA_DEG2}. Zoom in or request a smaller box.",
        )
    return min_lon, min_lat, max_lon, max_lat


@functools.lru_cache(maxsize=65536)
def cell_bounds(cell: str) -> tuple[float, float, float, float]:
    """Return the (min_lon, min_lat, max_lon, max_lat) box around an H3 cell."""
    boundary = h3.cell_to_boundary(cell)
    lats = [lat for lat, _ in boundary]
    lons = [lon for _, lon in boundary]
    return min(lons), min(lats), max(lons), max(lats)


def _boxes_intersect(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


class OverlayReader:
    """Reader of green space, water and per-edge scores inside a box, from built cells.

    Only cells the manifest marks ready and whose files read are used, and an overlay
    request never starts a build. A cell whose files fail to read joins `corrupt`, which
    the loop planner shares, so the next loop request over it rebuilds it. Each thread has
    its own DuckDB connection.
    """

    def __init__(self, warehouse: Warehouse, corrupt: CorruptCells) -> None:
        self.warehouse = warehouse
        self.corrupt = corrupt

    def cells_in(self, bbox: tuple[float, float, float, float]) -> list[CellEntry]:
        return [
            entry
            for entry in self.warehouse.cell_entries().values()
            if entry.ready
            and _boxes_intersect(cell_bounds(entry.cell), bbox)
            and not self.corrupt.contains(entry)
        ]

    def read(
        self, bbox: tuple[float, float, float, float], scores: bool = True
    ) -> schemas.OverlayResponse:
        """Return the overlay features of the box from every readable built cell in it.

        Raises ServiceUnavailable (503) when a read fails and no cell's files are found
        corrupt, or when reads keep failing MAX_READ_ATTEMPTS times.
        """
        entries = self.cells_in(bbox)
        features: list[schemas.OverlayFeature] = []
        areas_truncated = scores_truncated = False
        if entries:
            entries, area_rows, score_rows = self._read_rows(entries, bbox, scores)
            areas_truncated = len(area_rows) > MAX_AREA_FEATURES
            scores_truncated = len(score_rows) > MAX_SCORE_FEATURES
            features.extend(_area_features(area_rows[:MAX_AREA_FEATURES], bbox))
            features.extend(_score_features(score_rows[:MAX_SCORE_FEATURES]))
        return schemas.OverlayResponse(
            bbox=bbox,
            features=features,
            cells=len(entries),
            areas_truncated=areas_truncated,
            scores_truncated=scores_truncated,
        )

    def _read_rows(
        self, entries: list[CellEntry], bbox: tuple[float, ...], scores: bool
    ) -> tuple[list[CellEntry], list[tuple], list[tuple]]:
        """Return the entries read, their area rows and their score rows.

        A failed read checks every cell's files, leaves out the corrupt ones and reads again.
        """
        for attempt in range(1, MAX_READ_ATTEMPTS + 1):
            files = [self.warehouse.cell_files(entry) for entry in entries]
            try:
                area_rows = self._area_rows([str(f["areas"]) for f in files], bbox)
                score_rows = []
                if scores:
                    score_rows = self._score_rows(
                        [str(f["edges"]) for f in files],
                        [str(f["edge_features"]) for f in files],
                        bbox,
                    )
                return entries, area_rows, score_rows
            except (duckdb.Error, OSError) as error:
                log.error(
                    "overlays: reading %d cells in bbox %s failed (attempt %d of %d): %s",
                    len(entries), bbox, attempt, MAX_READ_ATTEMPTS, error,
                )
                if not self.corrupt.find(entries):
                    raise ServiceUnavailable(
                        "Reading the overlay data of a cell in this area failed. Retry shortly.",
                        5,
                    ) from error
                entries = self.corrupt.usable(entries)
                if not entries:
                    return [], [], []
        raise ServiceUnavailable(
            "Reading the overlay data of this area kept failing. Retry shortly.", 5
        )

    def _area_rows(self, paths: list[str], bbox: tuple[float, ...]) -> list[tuple]:
        """Return (kind, name, wkb) of areas touching the box, largest first."""
        return (
            thread_connection()
            .sql(
                """
                SELECT kind, name, wkb FROM read_parquet($paths)
                WHERE max_lon >= $min_lon AND min_lon <= $max_lon
                  AND max_lat >= $min_lat AND min_lat <= $max_lat
                ORDER BY (max_lon - min_lon) * (max_lat - min_lat) DESC
                LIMIT $limit
                """,
                params={"paths": paths, **_bbox_params(bbox), "limit": MAX_AREA_FEATURES + 1},
            )
            .fetchall()
        )

    def _score_rows(
        self, edge_paths: list[str], feature_paths: list[str], bbox: tuple[float, ...]
    ) -> list[tuple]:
        """Return (mid_lon, mid_lat, *FEATURE_NAMES) of edges in the box, an even sample.

        Ordering by a hash of the edge id keeps the same sample for the same box, spread
        over the whole box instead of the first cells read.
        """
        columns = ", ".join(f"f.{name}" for name in FEATURE_NAMES)
        return (
            thread_connection()
            .sql(
                f"""
                SELECT e.mid_lon, e.mid_lat, {columns}
                FROM read_parquet($edges) AS e
                JOIN read_parquet($features) AS f USING (edge_id)
                WHERE e.mid_lon BETWEEN $min_lon AND $max_lon
                  AND e.mid_lat BETWEEN $min_lat AND $max_lat
                ORDER BY hash(e.edge_id)
                LIMIT $limit
                """,
                params={
                    "edges": edge_paths,
                    "features": feature_paths,
                    **_bbox_params(bbox),
                    "limit": MAX_SCORE_FEATURES + 1,
                },
            )
            .fetchall()
        )


def _bbox_params(bbox: tuple[float, ...]) -> dict[str, float]:
    return dict(zip(("min_lon", "min_lat", "max_lon", "max_lat"), bbox, strict=True))


def _area_features(
    rows: list[tuple], bbox: tuple[float, float, float, float]
) -> list[schemas.OverlayFeature]:
    """Clip each area to the box, simplify it below pixel size and convert it to GeoJSON."""
    if not rows:
        return []
    geometries = shapely.from_wkb([row[2] for row in rows], on_invalid="ignore")
    tolerance = max(bbox[2] - bbox[0], bbox[3] - bbox[1]) * SIMPLIFY_SHARE
    features = []
    for (kind, name, _), geometry in zip(rows, geometries, strict=True):
        if geometry is None:
            continue
        geometry = shapely.clip_by_rect(geometry, *bbox)
        geometry = shapely.simplify(geometry, tolerance, preserve_topology=True)
        geometry = shapely.set_precision(geometry, COORDINATE_GRID_DEG)
        if geometry.is_empty:
            continue
        features.append(
            schemas.OverlayFeature(
                geometry=shapely.geometry.mapping(geometry),
                properties={"layer": "area", "kind": kind, "name": name},
            )
        )
    return features


def _score_features(rows: list[tuple]) -> list[schemas.OverlayFeature]:
    features = []
    for lon, lat, *values in rows:
        properties: dict[str, Any] = {"layer": "score"}
        properties.update(
            (name, round(float(value), 2))
            for name, value in zip(FEATURE_NAMES, values, strict=True)
        )
        features.append(
            schemas.OverlayFeature(
                geometry={"type": "Point", "coordinates": [round(lon, 6), round(lat, 6)]},
                properties=properties,
            )
        )
    return features


def content_security_policy(tile_url: str) -> str:
    """Return the page's CSP: everything from this server, map tiles from the tile host.

    A `{s}` subdomain placeholder in the tile host becomes a `*` wildcard. Any other
    placeholder in the host allows images from every host over the tile URL's scheme.
    """
    image_sources = ["'self'", "data:"]
    parts = urlsplit(tile_url)
    if parts.scheme in {"http", "https"} and parts.netloc:
        host = parts.netloc.replace("{s}", "*")
        image_sources.append(f"{parts.scheme}:" if "{" in host else f"{parts.scheme}://{host}")
    return "; ".join(
        [
            "default-src 'self'",
            f"img-src {' '.join(image_sources)}",
            "style-src 'self'",
            "script-src 'self'",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ]
    )


class WebController(Controller):
    """The map page and the small APIs only it uses."""

    @get_and_head("/", include_in_schema=False, media_type=MediaType.HTML, sync_to_thread=False)
    def index(self, page: NamedDependency[str], csp: NamedDependency[str]) -> Response[str]:
        """Serve the web map page. Its script reads /api/config and calls the route API."""
        return Response(
            page,
            media_type=MediaType.HTML,
            headers={
                "Content-Security-Policy": csp,
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-cache",
            },
        )

    @get_and_head("/api/config", tags=["web"], sync_to_thread=False, responses=error_responses())
    def config(self, settings: NamedDependency[Settings]) -> schemas.WebConfig:
        """Return the tile URL, attribution and limits for the web map page."""
        return schemas.WebConfig(
            tile_url=settings.tile_url,
            attribution=OSM_ATTRIBUTION,
            min_distance_m=schemas.MIN_DISTANCE_M,
            max_distance_m=schemas.MAX_DISTANCE_M,
            step_length_m=STEP_LENGTH_M,
            max_alternatives=schemas.MAX_ALTERNATIVES,
            overlay_max_area_deg2=MAX_OVERLAY_AREA_DEG2,
        )

    @get_and_head(
        "/api/overlays", tags=["web"], sync_to_thread=True, responses=error_responses(400, 503)
    )
    def overlays(
        self,
        overlay_reader: NamedDependency[OverlayReader],
        bbox: Annotated[
            str,
            Parameter(
                max_length=200,
                description=BBOX_ALLOWED,
            ),
        ],
        scores: Annotated[
            bool, Parameter(description="Whether to include per-edge scores (false: areas only)")
        ] = True,
    ) -> schemas.OverlayResponse:
        """Return green space, water and per-edge scores inside bbox as GeoJSON.

        Only built cells are read. Cells not built yet contribute nothing, and this request
        never starts a build.
        """
        return overlay_reader.read(parse_bbox(bbox), scores=scores)


def web_routers(settings: Settings, warehouse: Warehouse, corrupt: CorruptCells) -> list[Router]:
    """Return the routers of the page, its API and /static, bound to these settings.

    `corrupt` is the set of corrupt cell versions that the loop planner uses too.
    """
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    csp = content_security_policy(settings.tile_url)
    reader = OverlayReader(warehouse, corrupt)
    pages = Router(
        path="/",
        route_handlers=[WebController],
        dependencies={
            "page": Provide(lambda: page, sync_to_thread=False),
            "csp": Provide(lambda: csp, sync_to_thread=False),
            "settings": Provide(lambda: settings, sync_to_thread=False),
            "overlay_reader": Provide(lambda: reader, sync_to_thread=False),
        },
    )
    static = create_static_files_router(path="/static", directories=[STATIC_DIR])
    return [pages, static]
