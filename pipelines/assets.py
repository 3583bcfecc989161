"""Assets: the imported region and, per H3 cell, its walking network and features."""


import os
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    BackfillPolicy,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)

from perfect10k.settings import load_settings
from pipelines.cells import (
    RegionFeatureSource,
    build_cell_features,
    build_cell_network,
    cell_needs_build,
)
from pipelines.partitions import h3_cells_partitions
from pipelines.regions import import_region
from pipelines.resources import WarehouseResource
from pipelines.tags import CELLS_TAG


class RegionConfig(Config):
    """Extract to import. An empty path means PERFECT10K_EXTRACT."""

    path: str = ""
    region: str = ""


@asset(group_name="regions")
def region(
    context: AssetExecutionContext, config: RegionConfig, warehouse: WarehouseResource
) -> MaterializeResult:
    """An OSM extract parsed once into the warehouse's region tables (edges, nodes, areas, POIs)."""
    path = config.path or os.environ.get("PERFECT10K_EXTRACT", "")
    if not path:
        raise ValueError("set the region config `path` or PERFECT10K_EXTRACT to an .osm.pbf file")
    result = import_region(
        warehouse.open(),
        Path(path),
        load_settings().h3_resolution,
        region=config.region or None,
        progress=context.log.info,
    )
    return MaterializeResult(
        metadata={
            "region": result.region,
            "version": result.version,
            "cells": result.cells,
            "edges": result.stats.get("edges", 0),
            "seconds": round(result.seconds, 3),
            "unchanged": result.unchanged,
        }
    )


def _cells_of_run(context: AssetExecutionContext) -> list[str]:
    """Return the cells this run must build: its partitions, narrowed by the cells tag."""
    keys = list(context.partition_keys)
    wanted = context.run.tags.get(CELLS_TAG)
    if wanted:
        requested = set(wanted.split(","))
        keys = [key for key in keys if key in requested]
    return keys


@asset(
    group_name="cells",
    partitions_def=h3_cells_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    deps=[region],
)
def cell_network(
    context: AssetExecutionContext, warehouse: WarehouseResource
) -> MaterializeResult:
    """Walking network of each H3 cell: edges whose midpoint lies in it and their vertices.

    Cells that are already current are skipped, so a run over a range of partitions only
    builds what is missing, stale or corrupt.
    """
    store = warehouse.open()
    max_age_s = load_settings().max_cell_age_days * 86400
    built, skipped, nodes, edges = [], [], 0, 0
    for cell in _cells_of_run(context):
        if not cell_needs_build(store, cell, max_age_s):
            skipped.append(cell)
            continue
        build = build_cell_network(store, cell)
        if build is None:
            skipped.append(cell)
            continue
        built.append(cell)
        nodes += build.nodes
        edges += build.edges
    context.log.info(f"built the network of {len(built)} cells, skipped {len(skipped)}")
    return MaterializeResult(
        metadata={
            "cells_built": len(built),
            "cells_skipped": len(skipped),
            "nodes": nodes,
            "edges": edges,
            "built": MetadataValue.text(",".join(built)),
        }
    )


@asset(
    group_name="cells",
    partitions_def=h3_cells_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    deps=[cell_network],
)
def cell_features(
    context: AssetExecutionContext, warehouse: WarehouseResource
) -> MaterializeResult:
    """Per-edge features of each cell (green, water, park, quiet, POIs) and its clipped areas."""
    store = warehouse.open()
    source = RegionFeatureSource(store)
    built = []
    for cell in _cells_of_run(context):
        entry = store.cell_entry(cell)
        if entry is None or entry.ready:
            continue
        if build_cell_features(store, cell, source) is not None:
            built.append(cell)
    context.log.info(f"built the features of {len(built)} cells")
    return MaterializeResult(metadata={"cells_built": len(built)})
