"""Sensor that warms the neighbours of cells users asked for."""


import json
from datetime import datetime, timezone

from dagster import (
    AddDynamicPartitionsRequest,
    DefaultSensorStatus,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from perfect10k.settings import load_settings
from pipelines.jobs import build_cells_job
from pipelines.resources import WarehouseResource
from pipelines.tags import (
    BUILD_CELLS_JOB,
    CENTRE_TAG,
    H3_CELLS,
    ORIGIN_REQUEST,
    ORIGIN_TAG,
    ORIGIN_WARM,
)
from pipelines.warming import cells_in_flight, cells_to_warm, warm_radius_m, warm_run_request
from warehouse.cells import cells_around


@sensor(
    job=build_cells_job,
    minimum_interval_seconds=5,
    default_status=DefaultSensorStatus.RUNNING,
)
def warm_neighbours_sensor(
    context: SensorEvaluationContext, warehouse: WarehouseResource
) -> SensorResult | SkipReason:
    """Build the cells around each start that users requested, at low priority.

    The cursor stores the creation time of the newest request run seen, so every request
    is warmed around once. Cells that are built, fresh or already in flight are skipped.
    """
    cursor = json.loads(context.cursor) if context.cursor else {"after": 0.0}
    records = context.instance.get_run_records(
        filters=RunsFilter(
            job_name=BUILD_CELLS_JOB,
            tags={ORIGIN_TAG: ORIGIN_REQUEST},
            created_after=datetime.fromtimestamp(cursor["after"], tz=timezone.utc),
        ),
        limit=200,
    )
    records = [r for r in records if r.create_timestamp.timestamp() > cursor["after"]]
    if not records:
        return SkipReason("no new requests")
    newest = max(record.create_timestamp.timestamp() for record in records)

    # Neighbours of every requested start, minus what is built or being built.
    resolution = load_settings().h3_resolution
    radius_m = warm_radius_m()
    candidates: list[str] = []
    for record in records:
        centre = record.dagster_run.tags.get(CENTRE_TAG)
        if centre:
            lat, lon = _cell_centre(centre)
            candidates.extend(cells_around(lat, lon, radius_m, resolution))
    store = warehouse.open()
    cells = cells_to_warm(store, candidates, cells_in_flight(context.instance))
    new_cursor = json.dumps({"after": newest})
    if not cells:
        return SensorResult(skip_reason="neighbours already built", cursor=new_cursor)

    new, request = warm_run_request(
        context.instance, cells, ORIGIN_WARM, run_key=f"warm-{newest:.6f}"
    )
    context.log.info(f"warming {len(cells)} cells around {len(records)} requests")
    return SensorResult(
        run_requests=[request],
        dynamic_partitions_requests=[AddDynamicPartitionsRequest(H3_CELLS, new)] if new else [],
        cursor=new_cursor,
    )


def _cell_centre(cell: str) -> tuple[float, float]:
    import h3

    return h3.cell_to_latlng(cell)
