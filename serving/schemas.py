"""Request and response bodies of the HTTP API, as msgspec Structs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta, Struct

MIN_DISTANCE_M = 1000.0
MAX_DISTANCE_M = 25000.0
MAX_PREFERENCE_CHARS = 500
MAX_ALTERNATIVES = 5

Latitude = Annotated[float, Meta(ge=-90.0, le=90.0, description="Latitude, degrees (WGS84)")]
Longitude = Annotated[float, Meta(ge=-180.0, le=180.0, description="Longitude, degrees (WGS84)")]
Distance = Annotated[
    float,
    Meta(
        ge=MIN_DISTANCE_M,
        le=MAX_DISTANCE_M,
        description=f"Target loop length in metres, {MIN_DISTANCE_M:.0f} to {MAX_DISTANCE_M:.0f}",
    ),
]
PreferenceText = Annotated[
    str,
    Meta(
        max_length=MAX_PREFERENCE_CHARS,
        description='What the walker likes, in words: "parks and water", "quiet streets"',
    ),
]
Seed = Annotated[int, Meta(ge=0, le=2**31 - 1, description="Reproduces a loop exactly")]
Identifier = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]


class LoopRequest(Struct, forbid_unknown_fields=True):
    lat: Latitude
    lon: Longitude
    target_distance: Distance = 8000.0
    preference: PreferenceText = ""
    seed: Seed | None = None
    alternatives: Annotated[int, Meta(ge=1, le=MAX_ALTERNATIVES)] = 3


class StartRouteRequest(Struct, forbid_unknown_fields=True):
    lat: Latitude
    lon: Longitude
    target_distance: Distance = 8000.0
    preference: PreferenceText = ""
    seed: Seed | None = None


class AddWaypointRequest(Struct, forbid_unknown_fields=True):
    candidate_id: Identifier


class LineString(Struct):
    """GeoJSON LineString; coordinates are [lon, lat] pairs."""

    coordinates: list[tuple[float, float]]
    type: Literal["LineString"] = "LineString"


class PreferenceView(Struct):
    text: str
    matched: list[str]
    ignored: list[str]
    avoid: list[str]
    summary: str


class StartView(Struct):
    lat: float
    lon: float
    snapped_lat: float
    snapped_lon: float
    snap_distance_m: float


class SegmentView(Struct):
    length_m: float
    highway: str
    surface: str | None
    green: float
    water: float


class LoopView(Struct):
    loop_id: str
    distance_m: float
    steps: int
    geometry: LineString
    green_share: float
    water_share: float
    quiet_share: float
    retrace_share: float
    # Share walked out from the start and back the same way; retrace_share leaves it out.
    stem_share: float
    shape: Literal["loop", "stem_and_loop", "out_and_back"]
    segments: list[SegmentView]
    gpx_url: str


class LoopsResponse(Struct):
    response_type: Literal["cached"]
    region: str
    target_distance: float
    preference: PreferenceView
    start: StartView
    loops: list[LoopView]


class AsyncResponse(Struct):
    response_type: Literal["async"]
    job_id: str
    status_url: str
    progress: float
    cells_needed: int
    cells_ready: int


class CandidateView(Struct):
    candidate_id: str
    lat: float
    lon: float
    score: Annotated[float, Meta(ge=0.0, le=1.0)]
    features: dict[str, float]
    reason: str
    distance_m: float


class RouteView(Struct):
    route_id: str
    status: Literal["building", "finalized"]
    region: str
    target_distance: float
    distance_m: float
    remaining_m: float
    steps: int
    finalize_suggested: bool
    preference: PreferenceView
    waypoints: list[tuple[float, float]]
    geometry: LineString
    candidates: list[CandidateView]
    gpx_url: str | None = None
    green_share: float | None = None
    quiet_share: float | None = None


class StartRouteResponse(Struct):
    response_type: Literal["cached"]
    route_id: str
    candidates: list[CandidateView]
    route: RouteView


class JobStatus(Struct):
    job_id: str
    status: Literal["pending", "running", "completed", "failed"]
    progress: Annotated[float, Meta(ge=0.0, le=1.0)]
    cells_needed: int
    cells_ready: int
    result: dict[str, Any] | None = None
    error: str | None = None


class RegionView(Struct):
    region: str
    bbox: tuple[float, float, float, float]
    cells: int
    cells_built: int
    version: str


class Health(Struct):
    # "degraded" while Dagster cannot build cells: built areas are served, cold ones get 503.
    status: Literal["ok", "degraded"]
    regions: int
    cells_built: int
    dagster: str
    cached_networks_mb: float
    # Counters of the worker process that handled this request, since it started.
    pid: int = 0
    requests_cached: int = 0
    requests_async: int = 0
    network_cache_hits: int = 0
    network_cache_misses: int = 0


class WebConfig(Struct):
    """Settings the web map page reads at start."""

    tile_url: str
    attribution: str
    min_distance_m: float
    max_distance_m: float
    step_length_m: float
    max_alternatives: int
    overlay_max_area_deg2: float


class OverlayFeature(Struct):
    """GeoJSON Feature of a map overlay.

    `properties.layer` is "area" for green space and water geometries (with `kind` and
    `name`) or "score" for an edge midpoint with its feature values in [0, 1].
    """

    geometry: dict[str, Any]
    properties: dict[str, Any]
    type: Literal["Feature"] = "Feature"


class OverlayResponse(Struct):
    """GeoJSON FeatureCollection of the overlays in `bbox`, read from built cells only.

    `areas_truncated` and `scores_truncated` are true when a limit dropped features: the
    largest areas and an even sample of edges are kept.
    """

    bbox: tuple[float, float, float, float]
    features: list[OverlayFeature]
    cells: int
    areas_truncated: bool
    scores_truncated: bool
    type: Literal["FeatureCollection"] = "FeatureCollection"
