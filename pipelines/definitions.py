"""The Dagster code location of Perfect10k."""

from dagster import Definitions

from pipelines.assets import cell_features, cell_network, region
from pipelines.checks import cell_network_connected
from pipelines.jobs import build_cells_job
from pipelines.resources import WarehouseResource
from pipelines.schedules import popular_places_schedule
from pipelines.sensors import warm_neighbours_sensor
from pipelines.warm_job import warm_places_job

defs = Definitions(
    assets=[region, cell_network, cell_features],
    asset_checks=[cell_network_connected],
    jobs=[build_cells_job, warm_places_job],
    sensors=[warm_neighbours_sensor],
    schedules=[popular_places_schedule],
    resources={"warehouse": WarehouseResource()},
)
