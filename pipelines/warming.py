"""Which cells to warm, and run requests that build them at low priority."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from dagster import DagsterInstance, DagsterRunStatus, RunRequest, RunsFilter

from pipelines.tags import (
    BUILD_CELLS_JOB,
    CELLS_TAG,
    H3_CELLS,
    ORIGIN_TAG,
    PRIORITY_TAG,
    RANGE_END_TAG,
    RANGE_START_TAG,
    WARM_PRIORITY,
)
from warehouse import Warehouse
from warehouse.cells import cells_around, reach_m

IN_FLIGHT = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]

# Default warming radius: the cells a request built reach one 8 km loop from its start,
# so their neighbours must reach one more loop from any street of those cells.
DEFAULT_WARM_RADIUS_M = 2 * reach_m(8000.0)


@dataclass(frozen=True)
class Place:
    """A place to keep warm: a centre and the radius of cells around it."""

    name: str
    lat: float
    lon: float
    radius_m: float


def warm_radius_m() -> float:
    raw = os.environ.get("PERFECT10K_WARM_RADIUS_M", "")
    return float(raw) if raw else DEFAULT_WARM_RADIUS_M


def popular_places() -> list[Place]:
    """Places the backfill schedule keeps warm: PERFECT10K_POPULAR_PLACES or the defaults.

    The variable holds a JSON list of objects with name, lat, lon and radius_m.
    """
    raw = os.environ.get("PERFECT10K_POPULAR_PLACES", "")
    if raw:
        try:
            items = json.loads(raw)
            return [
                Place(item["name"], float(item["lat"]), float(item["lon"]), float(item["radius_m"]))
                for item in items
            ]
        except (ValueError, TypeError, KeyError) as error:
            raise ValueError(
                "PERFECT10K_POPULAR_PLACES must be a JSON list of objects with name, lat, lon "
                f"and radius_m: {error!r}"
            ) from error
    return [
        Place("Monaco", 43.7384, 7.4246, 2000.0),
        Place("Andorra la Vella", 42.5078, 1.5211, 4000.0),
        Place("Heidelberg", 49.4093, 8.6937, 4000.0),
        Place("Vancouver", 49.2827, -123.1207, 4000.0),
    ]


def cells_in_flight(instance: DagsterInstance) -> set[str]:
    """Return the cells named by build runs that are queued or running."""
    records = instance.get_run_records(
        filters=RunsFilter(job_name=BUILD_CELLS_JOB, statuses=IN_FLIGHT), limit=500
    )
    cells: set[str] = set()
    for record in records:
        cells.update(filter(None, record.dagster_run.tags.get(CELLS_TAG, "").split(",")))
    return cells


def cells_to_warm(
    warehouse: Warehouse, candidates: list[str], skip: set[str], max_age_s: float = 0.0
) -> list[str]:
    """Return the candidates some region covers that are missing, incomplete or stale.

    A cell is stale when it was built from an older extract of its region or, with
    `max_age_s` > 0, longer ago than that. Cells in `skip` are left out.
    """
    regions = warehouse.regions()
    entries = warehouse.cell_entries()
    wanted = []
    for cell in dict.fromkeys(candidates):
        if cell in skip:
            continue
        versions = [r["version"] for r in regions.values() if cell in r.get("cells", {})]
        if not versions:
            continue
        entry = entries.get(cell)
        current = entry is not None and entry.ready and entry.region_version in versions
        if current and not entry.is_stale(entry.region_version, max_age_s):
            continue
        wanted.append(cell)
    return wanted


def place_cells(
    warehouse: Warehouse, places: list[Place], resolution: int, max_age_s: float = 0.0
) -> list[str]:
    """Return the cells within each place's radius that some region covers and need a build."""
    candidates: list[str] = []
    for place in places:
        candidates.extend(cells_around(place.lat, place.lon, place.radius_m, resolution))
    return cells_to_warm(warehouse, candidates, set(), max_age_s)


def warm_run_request(
    instance: DagsterInstance, cells: list[str], origin: str, run_key: str | None
) -> tuple[list[str], RunRequest]:
    """Return the partitions to add and a low-priority run request that builds `cells`.

    The run covers the range of partitions from the first to the last of `cells` in
    partition order; the cells tag narrows it to exactly these cells.
    """
    existing = instance.get_dynamic_partitions(H3_CELLS)
    known = set(existing)
    new = [cell for cell in cells if cell not in known]
    order = {key: index for index, key in enumerate(existing + new)}
    ranked = sorted(cells, key=order.__getitem__)
    request = RunRequest(
        run_key=run_key,
        tags={
            CELLS_TAG: ",".join(cells),
            ORIGIN_TAG: origin,
            PRIORITY_TAG: WARM_PRIORITY,
            RANGE_START_TAG: ranked[0],
            RANGE_END_TAG: ranked[-1],
        },
    )
    return new, request
