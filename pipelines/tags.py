"""Names shared by the pipelines and the server: job, partitions and run tags.

This module imports nothing from Dagster, so the server can use it without loading Dagster.
"""

BUILD_CELLS_JOB = "build_cells"
H3_CELLS = "h3_cells"

CELLS_TAG = "perfect10k/cells"
ORIGIN_TAG = "perfect10k/origin"
JOB_TAG = "perfect10k/job"
PRIORITY_TAG = "dagster/priority"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"

# Origins: a user's cold request, the warming sensor, the popular-city schedule, the UI job.
ORIGIN_REQUEST = "request"
ORIGIN_WARM = "warm"
ORIGIN_BACKFILL = "backfill"

REQUEST_PRIORITY = "10"
WARM_PRIORITY = "-10"

# The H3 cell of a request's start, so the warming sensor can warm around it.
CENTRE_TAG = "perfect10k/centre"
# JSON {"host", "pid", "start_ticks"} of the process that executes a run, set at launch.
RUN_WORKER_TAG = "perfect10k/run_worker"
