"""Operator endpoints behind a bearer token: warm the cells around a place ahead of users.

They exist only when PERFECT10K_ADMIN_TOKEN is set; without it the routes are not
registered and requests get 404. A request must send `Authorization: Bearer <token>`,
which is compared in constant time.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import Annotated

from litestar import Controller, Router, post
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import ResponseSpec
from msgspec import Meta, Struct

from pipelines.tags import (
    CELLS_TAG,
    ORIGIN_TAG,
    ORIGIN_WARM,
    PRIORITY_TAG,
    RANGE_END_TAG,
    RANGE_START_TAG,
    WARM_PRIORITY,
)
from serving.dagster_client import DagsterUnavailable
from serving.errors import ErrorBody, ServiceUnavailable, error_responses
from serving.schemas import Latitude, Longitude
from serving.service import RouteService
from warehouse.cells import cells_around

log = logging.getLogger(__name__)

MAX_WARM_RADIUS_M = 10_000.0


class WarmRequest(Struct, forbid_unknown_fields=True):
    lat: Latitude
    lon: Longitude
    radius_m: Annotated[
        float, Meta(ge=0.0, le=MAX_WARM_RADIUS_M, description="Radius around the point, metres")
    ] = 3000.0


class WarmResponse(Struct):
    """The cells around the point that some region covers, and the run building the rest."""

    cells_covered: int
    cells_ready: int
    cells_launched: list[str]
    run_id: str | None


def bearer_token_guard(token: str) -> Callable[[ASGIConnection, BaseRouteHandler], None]:
    """Return a Litestar guard that admits requests carrying `Authorization: Bearer <token>`."""
    expected = f"Bearer {token}".encode()

    def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        sent = connection.headers.get("authorization", "").encode()
        if not hmac.compare_digest(sent, expected):
            # NOTE: failed attempts are logged but not throttled beyond the rate limit.
            log.warning("admin request from %s rejected: bad or missing token", connection.client)
            raise NotAuthorizedException(
                "This endpoint needs the header Authorization: Bearer <PERFECT10K_ADMIN_TOKEN>.",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return guard


class AdminController(Controller):
    """Operator actions; registered only when an admin token is configured."""

    path = "/api/admin"
    tags = ("admin",)

    @post(
        "/warm",
        status_code=202,
        sync_to_thread=True,
        responses={
            401: ResponseSpec(ErrorBody, description="Missing or wrong bearer token"),
            **error_responses(400, 413, 415, 503),
        },
    )
    def warm(self, data: WarmRequest, service: RouteService) -> WarmResponse:
        """Launch one Dagster run building every cell within `radius_m` that is not ready."""
        resolution = service.settings.h3_resolution
        regions = service.warehouse.regions()
        covered = [
            cell
            for cell in cells_around(data.lat, data.lon, data.radius_m, resolution)
            if any(cell in record.get("cells", {}) for record in regions.values())
        ]
        entries = service.warehouse.cell_entries()
        missing = [cell for cell in covered if not (cell in entries and entries[cell].ready)]
        run_id = None
        launched: list[str] = []
        if missing:
            try:
                busy: set[str] = set()
                for run in service.dagster.runs_in_flight():
                    busy.update(filter(None, run.tags.get(CELLS_TAG, "").split(",")))
                launched = [cell for cell in missing if cell not in busy]
                if launched:
                    service.dagster.add_partitions(launched, replace=launched)
                    run_id = service.dagster.launch_build(
                        {
                            CELLS_TAG: ",".join(launched),
                            ORIGIN_TAG: ORIGIN_WARM,
                            PRIORITY_TAG: WARM_PRIORITY,
                            RANGE_START_TAG: launched[0],
                            RANGE_END_TAG: launched[-1],
                        }
                    )
            except DagsterUnavailable as error:
                log.error("admin warm at (%s, %s) failed: %s", data.lat, data.lon, error)
                raise ServiceUnavailable(f"Cannot launch the build now: {error}", 30) from error
        log.info(
            "admin warm at (%s, %s) radius %.0f m: %d cells covered, %d launched in run %s",
            data.lat, data.lon, data.radius_m, len(covered), len(launched), run_id,
        )
        return WarmResponse(
            cells_covered=len(covered),
            cells_ready=len(covered) - len(missing),
            cells_launched=launched,
            run_id=run_id,
        )


def admin_routers(token: str) -> list[Router]:
    """Return the admin routes guarded by `token`, or nothing when the token is empty."""
    if not token:
        return []
    return [Router(path="/", route_handlers=[AdminController], guards=[bearer_token_guard(token)])]
