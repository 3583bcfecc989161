"""The Litestar application: routes, dependencies, limits and the OpenAPI schema."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Annotated

from litestar import Controller, Litestar, Response, post
from litestar.config.cors import CORSConfig
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.params import Parameter

from perfect10k.settings import Settings, load_settings
from serving import schemas
from serving.admin import admin_routers
from serving.dagster_client import EXIT_FILE_ENV, DagsterClient
from serving.errors import EXCEPTION_HANDLERS, NotFound, error_responses
from serving.gpx import to_gpx
from serving.limits import check_request, document_strict_bodies, rate_limit_config
from serving.networks import NetworkCache
from serving.routing import get_and_head
from serving.service import RouteService
from serving.state import StateStore
from serving.web import web_routers
from warehouse import CellEntry, Warehouse

log = logging.getLogger(__name__)

IdPath = Annotated[str, Parameter(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]
GPX_MEDIA_TYPE = "application/gpx+xml"


class RouteController(Controller):
    """Loops, interactive routes and the jobs that build cold areas."""

    path = "/api"
    tags = ("routes",)

    @post(
        "/loops",
        status_code=200,
        sync_to_thread=True,
        responses={
            202: ResponseSpec(schemas.AsyncResponse, description="The area is being built"),
            **error_responses(400, 413, 415, 422, 503),
        },
    )
    def create_loops(
        self, data: schemas.LoopRequest, service: RouteService
    ) -> Response[schemas.LoopsResponse | schemas.AsyncResponse]:
        """Plan complete closed loops; 202 with a job id when the area is not built yet."""
        result = service.loops(data)
        return Response(result, status_code=202 if isinstance(result, schemas.AsyncResponse) else 200)

    @post(
        "/start-route-async",
        status_code=200,
        sync_to_thread=True,
        responses={
            202: ResponseSpec(schemas.AsyncResponse, description="The area is being built"),
            **error_responses(400, 413, 415, 422, 503),
        },
    )
    def start_route(
        self, data: schemas.StartRouteRequest, service: RouteService
    ) -> Response[schemas.StartRouteResponse | schemas.AsyncResponse]:
        """Start an interactive route with three candidate waypoints; 202 when not built yet."""
        result = service.start_route(data)
        return Response(result, status_code=202 if isinstance(result, schemas.AsyncResponse) else 200)

    @get_and_head("/job-status/{job_id:str}", sync_to_thread=True, responses=error_responses(400, 404))
    def job_status(self, job_id: IdPath, service: RouteService) -> schemas.JobStatus:
        """Report a job's progress (cells ready / cells needed) and its result once completed."""
        return service.job_status(job_id)

    @get_and_head("/routes/{route_id:str}", sync_to_thread=True, responses=error_responses(400, 404, 503))
    def get_route(self, route_id: IdPath, service: RouteService) -> schemas.RouteView:
        """Return an interactive route: the path so far and the candidates on offer."""
        return service.route(route_id)

    @post(
        "/routes/{route_id:str}/waypoints",
        status_code=200,
        sync_to_thread=True,
        responses=error_responses(400, 404, 409, 413, 415, 422, 503),
    )
    def add_waypoint(
        self, route_id: IdPath, data: schemas.AddWaypointRequest, service: RouteService
    ) -> schemas.RouteView:
        """Walk to one of the offered candidates and get the next three."""
        return service.add_waypoint(route_id, data.candidate_id)

    @post(
        "/routes/{route_id:str}/finalize",
        status_code=200,
        sync_to_thread=True,
        responses=error_responses(400, 404, 409, 413, 422, 503),
    )
    def finalize_route(self, route_id: IdPath, service: RouteService) -> schemas.RouteView:
        """Close the route back to the start; returns total distance and steps."""
        return service.finalize(route_id)

    @get_and_head(
        "/routes/{route_id:str}/gpx",
        sync_to_thread=True,
        media_type=GPX_MEDIA_TYPE,
        responses=error_responses(400, 404, 422),
    )
    def route_gpx(self, route_id: IdPath, service: RouteService) -> Response[str]:
        """GPX 1.1 track of a finalized route."""
        coordinates, distance_m = service.route_track(route_id)
        return _gpx_response(f"Perfect10k route {distance_m / 1000:.1f} km", coordinates, distance_m)

    @get_and_head(
        "/loops/{loop_id:str}/gpx",
        sync_to_thread=True,
        media_type=GPX_MEDIA_TYPE,
        responses=error_responses(400, 404),
    )
    def loop_gpx(self, loop_id: IdPath, store: StateStore) -> Response[str]:
        """GPX 1.1 track of a loop returned by POST /api/loops."""
        loop = store.loop(loop_id)
        if loop is None:
            raise NotFound(f"loop_id {loop_id!r} not found", field="loop_id")
        coordinates = [tuple(point) for point in loop["coordinates"]]
        distance_m = loop["distance_m"]
        return _gpx_response(f"Perfect10k loop {distance_m / 1000:.1f} km", coordinates, distance_m)


def _gpx_response(name: str, coordinates: list, distance_m: float) -> Response[str]:
    return Response(
        to_gpx(name, coordinates, distance_m),
        media_type=GPX_MEDIA_TYPE,
        headers={"Content-Disposition": 'attachment; filename="perfect10k.gpx"'},
    )


class InfoController(Controller):
    path = "/api"
    tags = ("info",)

    @get_and_head("/health", sync_to_thread=True)
    def health(self, service: RouteService) -> schemas.Health:
        """Liveness and what is loaded: regions, built cells, Dagster reachability.

        The status is `degraded` while Dagster cannot build cells: areas already built are
        still served, so the response stays 200 and liveness probes keep the server running.
        """
        cells = service.warehouse.cell_entries()
        reason = service.dagster.unhealthy_reason()
        return schemas.Health(
            status="ok" if reason is None else "degraded",
            regions=len(service.warehouse.regions()),
            cells_built=sum(1 for entry in cells.values() if _is_built(service, entry)),
            dagster="ok" if reason is None else f"unavailable: {reason}",
            cached_networks_mb=round(service.cache.bytes / 1e6, 1),
            pid=os.getpid(),
            requests_cached=service.requests_cached,
            requests_async=service.requests_async,
            network_cache_hits=service.cache.hits,
            network_cache_misses=service.cache.misses,
        )

    @get_and_head("/regions", sync_to_thread=True)
    def regions(self, service: RouteService) -> list[schemas.RegionView]:
        """Imported regions with their bounding boxes and how many cells are built."""
        cells = service.warehouse.cell_entries()
        views = []
        for region, record in sorted(service.warehouse.regions().items()):
            built = sum(1 for e in cells.values() if e.region == region and _is_built(service, e))
            views.append(
                schemas.RegionView(
                    region=region,
                    bbox=tuple(record["bbox"]),
                    cells=len(record["cells"]),
                    cells_built=built,
                    version=record["version"],
                )
            )
        return views


def _is_built(service: RouteService, entry: CellEntry) -> bool:
    """Check whether a cell is ready and its files were not found corrupt in this process."""
    return entry.ready and not service.cache.corrupt.contains(entry)


def _check_dagster_in_background(dagster: DagsterClient) -> None:
    """Query Dagster's health once at start-up, in a thread, so the first request need not.

    The query also makes the Dagster webserver create its run coordinator, which starts the
    fork server for run workers (pipelines/run_launch.py) before the first cold request.
    """
    threading.Thread(target=dagster.unhealthy_reason, name="dagster-health", daemon=True).start()


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the application from settings (the environment when None)."""
    settings = settings or load_settings()
    warehouse = Warehouse(settings.warehouse_dir)
    cache = NetworkCache(warehouse, settings.graph_cache_mb * 1024 * 1024)
    state = StateStore(settings.state_dir)
    exit_file = os.environ.get(EXIT_FILE_ENV)
    dagster = DagsterClient(
        f"http://{settings.dagster_host}:{settings.dagster_port}",
        exit_file=Path(exit_file) if exit_file else None,
    )
    service = RouteService(settings, warehouse, cache, state, dagster)

    middleware = []
    if settings.rate_limit_per_minute > 0:
        middleware.append(rate_limit_config(settings.rate_limit_per_minute).middleware)
    cors = CORSConfig(allow_origins=list(settings.cors_origins)) if settings.cors_origins else None

    app = Litestar(
        route_handlers=[
            RouteController,
            InfoController,
            *web_routers(settings, warehouse, cache.corrupt),
            *admin_routers(settings.admin_token),
        ],
        dependencies={
            "service": Provide(lambda: service, sync_to_thread=False),
            "store": Provide(lambda: state, sync_to_thread=False),
        },
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=OpenAPIConfig(
            title="Perfect10k",
            version="0.1.0",
            description="Walking loops of a chosen length from OpenStreetMap data.",
            path="/schema",
        ),
        request_max_body_size=settings.max_body_bytes,
        before_request=check_request,
        cors_config=cors,
        middleware=middleware,
        on_startup=[document_strict_bodies, lambda: _check_dagster_in_background(dagster)],
        on_shutdown=[dagster.close],
    )
    app.state.service = service
    app.state.max_body_bytes = settings.max_body_bytes
    return app
