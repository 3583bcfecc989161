"""Schedule that keeps the cells of popular places built."""

from dagster import DefaultScheduleStatus, RunRequest, ScheduleEvaluationContext, schedule

from pipelines.tags import ORIGIN_BACKFILL, ORIGIN_TAG, PRIORITY_TAG, WARM_PRIORITY
from pipelines.warm_job import WARM_PLACES_JOB, places_run_config, warm_places_job
from pipelines.warming import popular_places


@schedule(
    job=warm_places_job,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Build the cells of the popular places every night at 03:00 UTC.",
)
def popular_places_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    """Warm every place of PERFECT10K_POPULAR_PLACES (or the built-in list)."""
    return RunRequest(
        run_key=f"{WARM_PLACES_JOB}-{context.scheduled_execution_time:%Y%m%d%H%M}",
        run_config=places_run_config(popular_places()),
        tags={ORIGIN_TAG: ORIGIN_BACKFILL, PRIORITY_TAG: WARM_PRIORITY},
    )
