"""Sensor that warms the neighbours of cells users asked for."""

import json
from datetime import UTC, datetime

import h3
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
from pipelines.warming import (
    IN_FLIGHT,
    cells_in_flight,
    cells_to_warm,
    warm_radius_m,
    warm_run_request,
)
from warehouse.cells import cells_around, is_valid_cell

# Request runs read per tick, oldest first; the rest wait for the next tick.
MAX_REQUESTS_PER_TICK = 100
# Run creation times are compared with this slack, because the storage id in the cursor
# decides which runs are new.
CURSOR_SLACK_S = 5.0


def _read_cursor(raw: str | None) -> tuple[float, int]:
    if not raw:
        return 0.0, 0
    data = json.loads(raw)
    return float(data.get("after", 0.0)), int(data.get("storage_id", 0))


@sensor(
    job=build_cells_job,
    minimum_interval_seconds=5,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Build the cells within PERFECT10K_WARM_RADIUS_M of each requested start, "
        "at low priority, skipping cells that are built or in flight."
    ),
)
def warm_neighbours_sensor(
    context: SensorEvaluationContext, warehouse: WarehouseResource
) -> SensorResult | SkipReason:
    """Build the cells around each start that users requested, at low priority.

    The cursor stores the storage id and creation time of the newest request run seen, so
    the cells around every request are warmed once. Request runs carry their start cell
    in the `perfect10k/centre` tag.
    """
    after, last_id = _read_cursor(context.cursor)
    records = context.instance.get_run_records(
        filters=RunsFilter(
            job_name=BUILD_CELLS_JOB,
            tags={ORIGIN_TAG: ORIGIN_REQUEST},
            created_after=datetime.fromtimestamp(max(after - CURSOR_SLACK_S, 0), tz=UTC),
        ),
        limit=MAX_REQUESTS_PER_TICK,
        ascending=True,
    )
    records = [record for record in records if record.storage_id > last_id]
    if not records:
        return SkipReason("no new request runs")
    # A user waits on request runs: warm only once none is queued or running, so warming
    # never takes a core from them. The cursor stays put until then.
    if context.instance.get_run_records(
        filters=RunsFilter(
            job_name=BUILD_CELLS_JOB, tags={ORIGIN_TAG: ORIGIN_REQUEST}, statuses=IN_FLIGHT
        ),
        limit=1,
    ):
        return SkipReason("a request run is in flight; warming waits for it")
    newest = records[-1]
    new_cursor = json.dumps(
        {"after": newest.create_timestamp.timestamp(), "storage_id": newest.storage_id}
    )

    # Cells around every requested start, minus what is built, fresh or being built.
    radius_m = warm_radius_m()
    candidates: list[str] = []
    for record in records:
        centre = record.dagster_run.tags.get(CENTRE_TAG, "")
        if not is_valid_cell(centre):
            context.log.warning(f"run {record.dagster_run.run_id} has no valid {CENTRE_TAG} tag")
            continue
        lat, lon = h3.cell_to_latlng(centre)
        candidates.extend(cells_around(lat, lon, radius_m, h3.get_resolution(centre)))
    store = warehouse.open()
    max_age_s = load_settings().max_cell_age_days * 86400
    cells = cells_to_warm(store, candidates, cells_in_flight(context.instance), max_age_s)
    if not cells:
        return SensorResult(skip_reason="the neighbours are built or in flight", cursor=new_cursor)

    new, request = warm_run_request(
        context.instance, cells, ORIGIN_WARM, run_key=f"warm-{newest.storage_id}"
    )
    context.log.info(f"warming {len(cells)} cells around {len(records)} request runs")
    return SensorResult(
        run_requests=[request],
        dynamic_partitions_requests=[AddDynamicPartitionsRequest(H3_CELLS, new)] if new else [],
        cursor=new_cursor,
    )
