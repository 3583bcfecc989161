"""Jobs: building cells on demand."""

from dagster import define_asset_job, in_process_executor

from pipelines.assets import cell_features, cell_network
from pipelines.tags import BUILD_CELLS_JOB

# One run covers every missing cell of a request, in one process: starting a run worker
# costs seconds, building a cell tens of milliseconds.
build_cells_job = define_asset_job(
    BUILD_CELLS_JOB,
    selection=[cell_network, cell_features],
    executor_def=in_process_executor,
    description="Build the network and features of the H3 cells named by the run's tags.",
)
