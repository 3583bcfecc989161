"""Request handling behind the HTTP API: find the cells, serve from cache or start a job."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

import planner
from perfect10k.settings import Settings
from pipelines.tags import (
    CELLS_TAG,
    CENTRE_TAG,
    JOB_TAG,
    ORIGIN_REQUEST,
    ORIGIN_TAG,
    PRIORITY_TAG,
    RANGE_END_TAG,
    RANGE_START_TAG,
    REQUEST_PRIORITY,
)
from planner.network import BoundedCache
from planner.walks import walk_coordinates
from serving import schemas
from serving.dagster_client import DagsterClient, DagsterExited, DagsterUnavailable
from serving.errors import Conflict, NotFound, ServiceUnavailable, Unprocessable
from serving.networks import NetworkCache
from serving.state import Job, StateStore
from warehouse import CellEntry, CorruptCellError, Warehouse
from warehouse.cells import apothem_m, cell_of, cells_around, cells_for_loop

log = logging.getLogger(__name__)

# A start counts as inside a region within this margin of its walkable bounding box.
REGION_MARGIN_DEG = 0.01
# A job whose cells are not ready this long after it started is reported as failed.
JOB_TIMEOUT_S = 300.0
STEP_LENGTH_M = 0.8
# Network loads tried per request when corrupt files keep turning up.
MAX_LOAD_ATTEMPTS = 3
# Decimals of response coordinates (1e-6 degrees is at most 0.11 m).
COORDINATE_DIGITS = 6
# The planner snaps a loop's start with this share of the target as the smallest network
# component it accepts. The cache of loop results keys on the same snapped vertex.
# NOTE: this repeats the share inside plan_loops. If the two differ, results whose start
# differs from the key's vertex are planned but never cached.
LOOP_MIN_COMPONENT_SHARE = 0.5


@dataclass(frozen=True)
class Area:
    """The cells one request needs and which of them are ready."""

    region: str
    record: dict[str, Any]
    needed: list[str]
    ready: dict[str, CellEntry]
    region_ready: list[CellEntry]

    @property
    def missing(self) -> list[str]:
        return [cell for cell in self.needed if cell not in self.ready]


def _retry_after_s(error: DagsterUnavailable) -> int | None:
    """Return the Retry-After of a 503 for `error`: none when only a server restart helps."""
    return None if isinstance(error, DagsterExited) else 30


def steps_for(distance_m: float) -> int:
    return round(distance_m / STEP_LENGTH_M)


def _partial_coordinates(
    network: planner.Network, state: planner.RouteState
) -> list[tuple[float, float]]:
    """Return the (lon, lat) line of a route that is still being built."""
    nodes = [network.node_index(node_id) for node_id in state.node_ids]
    edges = [network.edge_index(edge_id) for edge_id in state.edge_ids]
    return walk_coordinates(network, nodes, edges)


def round_coordinates(coordinates: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Round (lon, lat) pairs to COORDINATE_DIGITS decimals, to the same floats as round().

    np.rint of the scaled value picks the same integer as round() unless the scaled value
    lies within float error of a half, and those few values go through round() itself.
    Dividing the integer by the power of ten then gives the float nearest to the decimal,
    which is what round() returns.
    """
    if not coordinates:
        return []
    values = np.array(coordinates, dtype=np.float64)
    scale = 10.0**COORDINATE_DIGITS
    scaled = values * scale
    rounded = (np.rint(scaled) / scale).tolist()
    near_half = np.abs(scaled - np.floor(scaled) - 0.5) < 1e-6
    for row, column in zip(*np.nonzero(near_half)):
        rounded[row][column] = round(float(values[row, column]), COORDINATE_DIGITS)
    return [(lon, lat) for lon, lat in rounded]


@dataclass(frozen=True)
class CachedLoops:
    """Loop views planned once, for later requests that snap to the same start vertex."""

    network: weakref.ref
    views: bytes
    snapped_lon: float
    snapped_lat: float


def preference_view(text: str, preference: planner.Preference) -> schemas.PreferenceView:
    return schemas.PreferenceView(
        text=text,
        matched=list(preference.matched),
        ignored=list(preference.ignored),
        avoid=list(preference.avoid),
        summary=preference.describe(),
    )


class RouteService:
    """Serves loops and interactive routes from ready cells, and starts jobs for the rest."""

    def __init__(
        self,
        settings: Settings,
        warehouse: Warehouse,
        cache: NetworkCache,
        state: StateStore,
        dagster: DagsterClient,
    ) -> None:
        self.settings = settings
        self.warehouse = warehouse
        self.cache = cache
        self.state = state
        self.dagster = dagster
        self._launch_lock = threading.Lock()
        self.max_cell_age_s = settings.max_cell_age_days * 86400
        # Requests this process served from ready cells and with a job, for /api/health.
        self.requests_cached = 0
        self.requests_async = 0
        self._counter_lock = threading.Lock()
        # Encoded loop views per network, start vertex, target, preference, alternatives
        # and seed: everything that decides the loops. None when turned off.
        self.loop_results = (
            BoundedCache(settings.result_cache_entries)
            if settings.result_cache_entries > 0
            else None
        )

    def _count_request(self, cached: bool) -> None:
        with self._counter_lock:
            if cached:
                self.requests_cached += 1
            else:
                self.requests_async += 1

    # Cells

    def locate(self, lat: float, lon: float, target_m: float) -> Area:
        """Return the region around (lat, lon) and the cells a loop of `target_m` needs.

        Raises Unprocessable when no imported region covers the start.
        """
        regions = self.warehouse.regions()
        inside = []
        for region, record in regions.items():
            min_lon, min_lat, max_lon, max_lat = record["bbox"]
            if (
                min_lat - REGION_MARGIN_DEG <= lat <= max_lat + REGION_MARGIN_DEG
                and min_lon - REGION_MARGIN_DEG <= lon <= max_lon + REGION_MARGIN_DEG
            ):
                inside.append((region, record))
        if not inside:
            names = ", ".join(sorted(regions)) or "none"
            raise Unprocessable(
                f"No imported region covers lat={lat}, lon={lon}; imported regions: {names}. "
                "Import an extract of this area with `perfect10k import`.",
                field="lat",
            )
        resolution = int(inside[0][1]["h3_resolution"])
        start_cell = cell_of(lat, lon, resolution)
        region, record = max(inside, key=lambda item: item[1]["cells"].get(start_cell, 0))
        needed = [c for c in cells_for_loop(lat, lon, target_m, resolution) if c in record["cells"]]
        # The start snaps within a few hundred metres, so a start whose cell and neighbours
        # hold no edge can never be served: reject it before building anything.
        nearby = cells_around(lat, lon, apothem_m(resolution), resolution)
        if not needed or not any(cell in record["cells"] for cell in nearby):
            raise Unprocessable(
                f"No walkable way lies near lat={lat}, lon={lon} in region {region}; "
                "choose a start on or next to a street or path.",
                field="lat",
            )
        region_ready = [
            entry
            for entry in self.warehouse.cell_entries().values()
            if entry.region == region
            and entry.ready
            and not entry.is_stale(record["version"], self.max_cell_age_s)
            and not self.cache.is_corrupt(entry)
        ]
        by_cell = {entry.cell: entry for entry in region_ready}
        ready = {cell: by_cell[cell] for cell in needed if cell in by_cell}
        return Area(region, record, needed, ready, region_ready)

    def network_for(self, area: Area) -> planner.Network | None:
        """Return the merged network of a fully ready area, or None after finding a corrupt file."""
        try:
            return self.cache.get(area.region, list(area.ready.values()), area.region_ready)
        except CorruptCellError:
            # A load stops at the first unreadable file. Finding all of them now lets one
            # job rebuild every corrupt cell, instead of one job per corrupt file.
            self.cache.corrupt.find(area.region_ready)
            return None

    # Complete loops

    def loops(self, request: schemas.LoopRequest) -> schemas.LoopsResponse | schemas.AsyncResponse:
        params = msgspec.to_builtins(request)
        area, network = self._area_network(request.lat, request.lon, request.target_distance)
        if network is not None:
            self._count_request(cached=True)
            return self._plan_loops(area, network, params)
        self._count_request(cached=False)
        return self._start_job("loops", params, area)

    def _area_network(
        self, lat: float, lon: float, target_m: float
    ) -> tuple[Area, planner.Network | None]:
        """Return the area of a request and its network, or no network while cells are missing.

        A corrupt file found during the load marks its cell as missing and the load is
        retried without it, so a corrupt cell that this request does not need costs no job.
        """
        area = self.locate(lat, lon, target_m)
        for _ in range(MAX_LOAD_ATTEMPTS):
            if area.missing:
                return area, None
            network = self.network_for(area)
            if network is not None:
                return area, network
            area = self.locate(lat, lon, target_m)
        return area, None

    def _plan_loops(
        self, area: Area, network: planner.Network, params: dict[str, Any]
    ) -> schemas.LoopsResponse:
        preference = planner.parse_preference(params["preference"])
        target = params["target_distance"]
        key, snapped = self._loop_key(network, params, preference)
        cached = self.loop_results.get(key) if key is not None else None
        if cached is not None and cached.network() is not network:
            cached = None
        if cached is None:
            loops = planner.plan_loops(
                network,
                params["lat"],
                params["lon"],
                target,
                preference,
                seed=params["seed"],
                alternatives=params["alternatives"],
            )
            views = self._loop_views(loops)
            snapped_lon, snapped_lat = loops[0].coordinates[0]
            snap_distance_m = loops[0].snap_distance_m
            # Only a result from the vertex that was snapped for the key may be reused.
            if snapped is not None and loops[0].node_ids[0] == snapped.node_id:
                self.loop_results[key] = CachedLoops(
                    weakref.ref(network), msgspec.json.encode(views), snapped_lon, snapped_lat
                )
        else:
            views = msgspec.json.decode(cached.views, type=list[schemas.LoopView])
            snapped_lon, snapped_lat = cached.snapped_lon, cached.snapped_lat
            snap_distance_m = snapped.distance_m
        return schemas.LoopsResponse(
            response_type="cached",
            region=area.region,
            target_distance=target,
            preference=preference_view(params["preference"], preference),
            start=schemas.StartView(
                lat=params["lat"],
                lon=params["lon"],
                snapped_lat=snapped_lat,
                snapped_lon=snapped_lon,
                snap_distance_m=round(snap_distance_m, 1),
            ),
            loops=views,
        )

    def _loop_key(
        self, network: planner.Network, params: dict[str, Any], preference: planner.Preference
    ) -> tuple[tuple | None, planner.SnappedStart | None]:
        """Return the result cache key of a loop request and its snapped start.

        Returns (None, None) when the cache is off or the start does not snap, and then the
        planner raises its own error.
        """
        if self.loop_results is None:
            return None, None
        target = params["target_distance"]
        try:
            snapped = planner.snap_start(
                network,
                params["lat"],
                params["lon"],
                min_component_m=LOOP_MIN_COMPONENT_SHARE * target,
            )
        except planner.PlannerError:
            return None, None
        key = (
            id(network),
            snapped.node,
            target,
            preference.key,
            params["alternatives"],
            params["seed"],
        )
        return key, snapped

    def _loop_views(self, loops: list[planner.Loop]) -> list[schemas.LoopView]:
        """Build the response view of each loop and store the loops for GPX export."""
        tracks = [round_coordinates(loop.coordinates) for loop in loops]
        records = [
            {"coordinates": coordinates, "distance_m": loop.distance_m, "kind": "loop"}
            for loop, coordinates in zip(loops, tracks, strict=True)
        ]
        loop_ids = self.state.add_loops(records)
        return [
            self._loop_view(loop, loop_id, coordinates)
            for loop, loop_id, coordinates in zip(loops, loop_ids, tracks, strict=True)
        ]

    @staticmethod
    def _loop_view(
        loop: planner.Loop, loop_id: str, coordinates: list[tuple[float, float]]
    ) -> schemas.LoopView:
        return schemas.LoopView(
            loop_id=loop_id,
            distance_m=round(loop.distance_m, 1),
            steps=steps_for(loop.distance_m),
            geometry=schemas.LineString(coordinates=coordinates),
            green_share=round(loop.green_share, 3),
            water_share=round(loop.water_share, 3),
            quiet_share=round(loop.quiet_share, 3),
            retrace_share=round(loop.retrace_share, 3),
            stem_share=round(loop.stem_share, 3),
            shape=loop.shape,
            segments=[
                schemas.SegmentView(
                    length_m=round(segment.length_m, 1),
                    highway=segment.highway,
                    surface=segment.surface,
                    green=round(float(segment.green), 3),
                    water=round(float(segment.water), 3),
                )
                for segment in loop.segments
            ],
            gpx_url=f"/api/loops/{loop_id}/gpx",
        )

    # Interactive routes

    def start_route(
        self, request: schemas.StartRouteRequest
    ) -> schemas.StartRouteResponse | schemas.AsyncResponse:
        params = msgspec.to_builtins(request)
        area, network = self._area_network(request.lat, request.lon, request.target_distance)
        if network is not None:
            self._count_request(cached=True)
            return self._start_route(area, network, params)
        self._count_request(cached=False)
        return self._start_job("route", params, area)

    def _start_route(
        self, area: Area, network: planner.Network, params: dict[str, Any]
    ) -> schemas.StartRouteResponse:
        state = planner.start_route(
            network, params["lat"], params["lon"], params["target_distance"]
        )
        seed = params["seed"] or 0
        planner.suggest_candidates(network, state, params["preference"], seed=seed)
        record = {
            "lat": params["lat"],
            "lon": params["lon"],
            "target_m": params["target_distance"],
            "preference": params["preference"],
            "seed": seed,
            "region": area.region,
            "state": state.to_dict(),
            "final": None,
        }
        route_id = self.state.add_route(record)
        view = self._route_view(route_id, network, record)
        return schemas.StartRouteResponse(
            response_type="cached", route_id=route_id, candidates=view.candidates, route=view
        )

    def _route_network(self, route_id: str, record: dict[str, Any]) -> planner.Network:
        """Return the network of a stored route, or raise 503 after starting a rebuild.

        Cells of the route's area go missing when their files turn out corrupt or stale.
        A route has no job to poll, so the client sends the same request again after the 503.
        """
        params = {"lat": record["lat"], "lon": record["lon"]}
        area, network = self._area_network(record["lat"], record["lon"], record["target_m"])
        if network is not None:
            return network
        if not area.missing:
            log.warning(
                "route %s rejected with 503: loading the cells of region %s kept failing",
                route_id, area.region,
            )
            raise ServiceUnavailable("Files of this route's area failed to read; retry shortly.", 5)
        try:
            with self._launch_lock:
                self._launch_build("route " + route_id, params, area, route_id)
        except DagsterUnavailable as error:
            raise ServiceUnavailable(
                f"{len(area.missing)} cells of this route's area are unavailable until they "
                f"are rebuilt, and they cannot be rebuilt now: {error}.",
                retry_after_s=_retry_after_s(error),
            ) from error
        raise ServiceUnavailable(
            f"{len(area.missing)} cells of this route's area are being rebuilt; retry shortly.",
            retry_after_s=5,
        )

    def route(self, route_id: str) -> schemas.RouteView:
        record = self._load_route(route_id)
        return self._route_view(route_id, self._route_network(route_id, record), record)

    def add_waypoint(self, route_id: str, candidate_id: str) -> schemas.RouteView:
        """Walk to an offered candidate, or return the current view for a repeat of the last step.

        A client that lost the response to a step sends the same `candidate_id` again. The
        route stores the id of its last step, so the repeat gets the current route (and
        its new candidates) without walking to the waypoint twice.
        """
        record = self._load_route(route_id)
        if record["final"] is not None:
            raise planner.RouteFinalized(
                f"route {route_id} is finalized; start a new route to walk further"
            )
        network = self._route_network(route_id, record)
        if record.get("last_candidate_id") == candidate_id:
            return self._route_view(route_id, network, record)
        state = planner.add_waypoint(
            network, planner.RouteState.from_dict(record["state"]), candidate_id
        )
        step_seed = record["seed"] + len(state.waypoint_node_ids)
        planner.suggest_candidates(network, state, record["preference"], seed=step_seed)
        updated = {**record, "state": state.to_dict(), "last_candidate_id": candidate_id}
        if not self.state.replace_route(route_id, record, updated):
            # A concurrent repeat of this step may have stored it first.
            current = self._load_route(route_id)
            if current["final"] is None and current.get("last_candidate_id") == candidate_id:
                return self._route_view(route_id, network, current)
            raise self._changed_meanwhile(route_id)
        return self._route_view(route_id, network, updated)

    def finalize(self, route_id: str) -> schemas.RouteView:
        """Close the route; a route closed already gets RouteFinalized (409)."""
        record = self._load_route(route_id)
        if record["final"] is not None:
            raise planner.RouteFinalized(f"route {route_id} is already finalized")
        network = self._route_network(route_id, record)
        state = planner.RouteState.from_dict(record["state"])
        final = planner.finalize(network, state)
        updated = {**record, "state": state.to_dict(), "final": msgspec.to_builtins(final)}
        if not self.state.replace_route(route_id, record, updated):
            raise self._changed_meanwhile(route_id)
        return self._route_view(route_id, network, updated)

    def _load_route(self, route_id: str) -> dict[str, Any]:
        record = self.state.route(route_id)
        if record is None:
            raise NotFound(f"route_id {route_id!r} not found", field="route_id")
        return record

    @staticmethod
    def _changed_meanwhile(route_id: str) -> Conflict:
        return Conflict(
            f"route {route_id} changed while this step ran; fetch it and try again",
            field="route_id",
        )

    def _route_view(
        self, route_id: str, network: planner.Network, record: dict[str, Any]
    ) -> schemas.RouteView:
        state = planner.RouteState.from_dict(record["state"])
        final = record["final"]
        preference = planner.parse_preference(record["preference"])
        if final is not None:
            points, distance_m = final["coordinates"], final["distance_m"]
        else:
            points, distance_m = _partial_coordinates(network, state), state.distance_m
        waypoints = [
            (float(network.lon[index]), float(network.lat[index]))
            for index in (network.node_index(node_id) for node_id in state.waypoint_node_ids)
        ]
        candidates = [
            schemas.CandidateView(
                candidate_id=c.id,
                lat=round(c.lat, 6),
                lon=round(c.lon, 6),
                score=round(min(max(c.score, 0.0), 1.0), 3),
                features={name: round(float(value), 3) for name, value in c.features.items()},
                reason=c.reason,
                distance_m=round(c.distance_m, 1),
            )
            for c in state.candidates
        ]
        return schemas.RouteView(
            route_id=route_id,
            status="finalized" if final is not None else "building",
            region=record["region"],
            target_distance=record["target_m"],
            distance_m=round(distance_m, 1),
            remaining_m=round(max(record["target_m"] - distance_m, 0.0), 1),
            steps=steps_for(distance_m),
            finalize_suggested=state.finalize_suggested,
            preference=preference_view(record["preference"], preference),
            waypoints=[(round(lon, 6), round(lat, 6)) for lon, lat in waypoints],
            geometry=schemas.LineString(
                coordinates=[(round(lon, 6), round(lat, 6)) for lon, lat in points]
            ),
            candidates=candidates,
            gpx_url=f"/api/routes/{route_id}/gpx" if final is not None else None,
            green_share=None if final is None else round(final["green_share"], 3),
            quiet_share=None if final is None else round(final["quiet_share"], 3),
        )

    def route_track(self, route_id: str) -> tuple[list[tuple[float, float]], float]:
        """Return the finalized route's (lon, lat) track and length for GPX export."""
        record = self._load_route(route_id)
        final = record["final"]
        if final is None:
            raise Unprocessable(
                f"route {route_id} is not finalized yet; finalize it before exporting GPX",
                field="route_id",
            )
        return [tuple(point) for point in final["coordinates"]], final["distance_m"]

    # Jobs

    def _start_job(self, kind: str, params: dict[str, Any], area: Area) -> schemas.AsyncResponse:
        """Return the job that builds the area's missing cells, launching one Dagster run."""
        missing = area.missing
        if not missing:
            log.warning(
                "rejected with 503 (%s from %.5f,%.5f): every cell of region %s this request "
                "needs is built, but loading them kept failing",
                kind, params["lat"], params["lon"], area.region,
            )
            raise ServiceUnavailable(
                "Files of this area failed to read several times; retry shortly.", 5
            )
        canonical = json.dumps({"kind": kind, "params": params, "cells": missing}, sort_keys=True)
        dedupe_key = hashlib.sha256(canonical.encode()).hexdigest()
        since = time.time() - JOB_TIMEOUT_S
        job = self.state.open_job(dedupe_key, since)
        if job is None:
            job = self._launch(dedupe_key, kind, params, area, since)
        return schemas.AsyncResponse(
            response_type="async",
            job_id=job.job_id,
            status_url=f"/api/job-status/{job.job_id}",
            progress=round(len(area.ready) / len(area.needed), 3),
            cells_needed=len(area.needed),
            cells_ready=len(area.ready),
        )

    def _launch(
        self, dedupe_key: str, kind: str, params: dict[str, Any], area: Area, since: float
    ) -> Job:
        with self._launch_lock:
            job = self.state.open_job(dedupe_key, since)
            if job is not None:
                return job
            if self.state.count_open_jobs(since) >= self.settings.max_pending_jobs:
                log.warning(
                    "miss rejected with 503 (%s from %.5f,%.5f): region %s has %d cells "
                    "missing, and %d jobs are open, the configured maximum",
                    kind, params["lat"], params["lon"], area.region, len(area.missing),
                    self.settings.max_pending_jobs,
                )
                raise ServiceUnavailable(
                    f"{self.settings.max_pending_jobs} new areas are being built, the "
                    "configured maximum; retry this one shortly.",
                    retry_after_s=15,
                )
            try:
                run_id = self._launch_build(kind, params, area, dedupe_key[:16])
            except DagsterUnavailable as error:
                raise ServiceUnavailable(
                    f"This area is not built yet and cannot be built now: {error}. "
                    "Areas already built are still served.",
                    retry_after_s=_retry_after_s(error),
                ) from error
            job = self.state.add_job(dedupe_key, kind, params, area.needed, run_id)
        log.info(
            "miss: job %s (%s from %.5f,%.5f) region %s needs %d cells, %d missing, run %s",
            job.job_id, kind, params["lat"], params["lon"], area.region, len(area.needed),
            len(area.missing), run_id,
        )
        return job

    def _launch_build(
        self, kind: str, params: dict[str, Any], area: Area, job_tag: str
    ) -> str | None:
        """Launch one Dagster run for the area's missing cells that no run in flight builds.

        Returns the run id, or None when runs in flight build every missing cell already.
        Raises DagsterUnavailable when Dagster cannot build now. Call it with
        `_launch_lock` acquired, so two requests do not both launch a run for the same cells.
        """
        reason = self.dagster.unhealthy_reason()
        if reason is not None:
            log.warning(
                "miss rejected with 503 (%s from %.5f,%.5f): region %s needs %d cells, "
                "%d missing: %s; cannot build: %s",
                kind, params["lat"], params["lon"], area.region, len(area.needed),
                len(area.missing), ",".join(area.missing), reason,
            )
            self.dagster.check_embedded()
            raise DagsterUnavailable(reason)
        try:
            busy = set()
            for run in self.dagster.runs_in_flight():
                busy.update(filter(None, run.tags.get(CELLS_TAG, "").split(",")))
            to_build = [cell for cell in area.missing if cell not in busy]
            run_id = None
            if to_build:
                self.dagster.add_partitions(to_build, replace=to_build)
                run_id = self.dagster.launch_build(
                    {
                        CELLS_TAG: ",".join(to_build),
                        CENTRE_TAG: area.needed[0],
                        ORIGIN_TAG: ORIGIN_REQUEST,
                        PRIORITY_TAG: REQUEST_PRIORITY,
                        RANGE_START_TAG: to_build[0],
                        RANGE_END_TAG: to_build[-1],
                        JOB_TAG: job_tag,
                    }
                )
        except DagsterUnavailable as error:
            log.error("miss in region %s: launching the build failed: %s", area.region, error)
            raise
        log.info(
            "miss (%s) in region %s: %d cells missing, %d launched in run %s: %s",
            kind, area.region, len(area.missing), len(to_build), run_id, ",".join(to_build),
        )
        return run_id

    def job_status(self, job_id: str) -> schemas.JobStatus:
        job = self.state.job(job_id)
        if job is None:
            raise NotFound(f"job_id {job_id!r} not found", field="job_id")
        needed = len(job.cells)
        if job.finished_at is not None:
            return self._finished_status(job, needed)

        params = job.params
        area = self.locate(params["lat"], params["lon"], params["target_distance"])
        ready = sum(1 for cell in job.cells if cell in area.ready)
        if ready == needed:
            network = self.network_for(area)
            if network is not None:
                return self._complete(job, area, network)
        status, error = "running" if ready else "pending", None
        run = None
        if job.run_id is not None:
            try:
                run = self.dagster.run(job.run_id)
            except DagsterUnavailable as unavailable:
                error = str(unavailable)
        if run is not None and run.status in {"QUEUED", "NOT_STARTED", "STARTING"}:
            status = "pending"
        elif run is not None and run.status == "STARTED":
            status = "running"
        elif run is not None and run.status in {"FAILURE", "CANCELED"}:
            return self._fail(job, self._run_failure(job, run.status), needed, ready)
        elif run is not None and run.status == "SUCCESS":
            stranded = self._stranded_cells(job)
            if stranded:
                error = (
                    f"Dagster run {job.run_id} succeeded but cells {', '.join(stranded)} are "
                    "still not ready (a file was set aside as corrupt or replaced meanwhile); "
                    "send the request again to rebuild them"
                )
                return self._fail(job, error, needed, ready)
        elif job.run_id is None and error is None:
            # Every cell of this job was in another request's or warming run when it
            # started. Once none of those runs is in flight, missing cells will not come.
            stranded = self._stranded_cells(job)
            if stranded:
                error = (
                    f"cells {', '.join(stranded)} are not ready and no build run is working "
                    "on them any more (the run that was building them ended without them); "
                    "send the request again to rebuild them"
                )
                return self._fail(job, error, needed, ready)
        if time.time() - job.created_at > JOB_TIMEOUT_S:
            return self._fail(job, f"cells not ready after {JOB_TIMEOUT_S:.0f} s", needed, ready)
        return schemas.JobStatus(
            job_id=job.job_id,
            status=status,
            progress=round(ready / needed, 3),
            cells_needed=needed,
            cells_ready=ready,
            error=error,
        )

    def _run_failure(self, job: Job, status: str) -> str:
        """Return why the job's run ended without building its cells, as Dagster reports it."""
        error = f"Dagster run {job.run_id} ended with {status}"
        try:
            reason = self.dagster.failure_reason(str(job.run_id))
        except DagsterUnavailable as unavailable:
            log.warning("job %s: reading why run %s failed: %s", job.job_id, job.run_id, unavailable)
            reason = None
        return f"{error}: {reason}" if reason else error

    def _stranded_cells(self, job: Job) -> list[str]:
        """Return the job's cells that are not ready and that no build run is working on.

        The warehouse is read again, because a run may have finished since the caller looked.
        """
        params = job.params
        area = self.locate(params["lat"], params["lon"], params["target_distance"])
        missing = [cell for cell in job.cells if cell not in area.ready]
        if not missing:
            return []
        try:
            busy = set()
            for run in self.dagster.runs_in_flight():
                busy.update(filter(None, run.tags.get(CELLS_TAG, "").split(",")))
        except DagsterUnavailable:
            return []
        return [cell for cell in missing if cell not in busy]

    def _complete(self, job: Job, area: Area, network: planner.Network) -> schemas.JobStatus:
        try:
            if job.kind == "loops":
                result = self._plan_loops(area, network, job.params)
            else:
                result = self._start_route(area, network, job.params)
        except planner.PlannerError as error:
            return self._fail(job, str(error), len(job.cells), len(job.cells))
        self.state.finish_job(job.job_id, msgspec.to_builtins(result), None)
        log.info(
            "job %s completed: %d cells ready %.1f s after the miss, run %s",
            job.job_id, len(job.cells), time.time() - job.created_at, job.run_id,
        )
        finished = self.state.job(job.job_id)
        assert finished is not None
        return self._finished_status(finished, len(job.cells))

    def _fail(self, job: Job, error: str, needed: int, ready: int) -> schemas.JobStatus:
        log.warning(
            "job %s failed %.1f s after the miss (run %s): %s",
            job.job_id, time.time() - job.created_at, job.run_id, error,
        )
        self.state.finish_job(job.job_id, None, error)
        return schemas.JobStatus(
            job_id=job.job_id,
            status="failed",
            progress=round(ready / needed, 3),
            cells_needed=needed,
            cells_ready=ready,
            error=error,
        )

    @staticmethod
    def _finished_status(job: Job, needed: int) -> schemas.JobStatus:
        if job.error is not None:
            return schemas.JobStatus(
                job_id=job.job_id,
                status="failed",
                progress=0.0,
                cells_needed=needed,
                cells_ready=0,
                error=job.error,
            )
        return schemas.JobStatus(
            job_id=job.job_id,
            status="completed",
            progress=1.0,
            cells_needed=needed,
            cells_ready=needed,
            result=job.result,
        )
