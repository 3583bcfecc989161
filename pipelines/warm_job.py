"""A job with typed config that warms places from the Dagster UI or the schedule."""


from dagster import (
    AssetKey,
    AssetMaterialization,
    Config,
    OpExecutionContext,
    in_process_executor,
    job,
    op,
)
from pydantic import Field

from perfect10k.settings import load_settings
from pipelines.cells import RegionFeatureSource, build_cell_features, build_cell_network
from pipelines.launch import add_partitions
from pipelines.resources import WarehouseResource
from pipelines.warming import Place, cells_in_flight, place_cells

WARM_PLACES_JOB = "warm_places"


class PlaceConfig(Config):
    """One place: a name for the logs, its centre and how far around it to build."""

    name: str = Field(default="", description="Label shown in the run's logs")
    lat: float = Field(ge=-90, le=90, description="Latitude of the centre, degrees")
    lon: float = Field(ge=-180, le=180, description="Longitude of the centre, degrees")
    radius_m: float = Field(default=3000.0, gt=0, le=50000, description="Radius in metres")


class WarmPlacesConfig(Config):
    places: list[PlaceConfig]


def places_run_config(places: list[Place]) -> dict:
    return {
        "ops": {
            "warm_places_op": {
                "config": {
                    "places": [
                        {"name": p.name, "lat": p.lat, "lon": p.lon, "radius_m": p.radius_m}
                        for p in places
                    ]
                }
            }
        }
    }


@op
def warm_places_op(
    context: OpExecutionContext, config: WarmPlacesConfig, warehouse: WarehouseResource
) -> int:
    """Build every missing cell around the configured places and record each partition."""
    store = warehouse.open()
    places = [Place(p.name, p.lat, p.lon, p.radius_m) for p in config.places]
    settings = load_settings()
    cells = place_cells(store, places, settings.h3_resolution, settings.max_cell_age_days * 86400)
    busy = cells_in_flight(context.instance)
    cells = [cell for cell in cells if cell not in busy]
    context.log.info(f"{len(cells)} cells to build around {len(places)} places")
    if not cells:
        return 0

    add_partitions(context.instance, cells)
    source = RegionFeatureSource(store)
    for cell in cells:
        network = build_cell_network(store, cell)
        if network is None:
            continue
        build_cell_features(store, cell, source)
        for key in ("cell_network", "cell_features"):
            context.log_event(
                AssetMaterialization(
                    asset_key=AssetKey(key),
                    partition=cell,
                    metadata={"nodes": network.nodes, "edges": network.edges},
                )
            )
    return len(cells)


@job(name=WARM_PLACES_JOB, executor_def=in_process_executor)
def warm_places_job() -> None:
    """Build the cells around a list of places (name, lat, lon, radius_m)."""
    warm_places_op()
