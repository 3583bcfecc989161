"""Cell builds: slice a region's tables into one H3 cell's network and features."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.features import clip_areas, compute_edge_features
from warehouse import Warehouse, schema
from warehouse.cells import cell_polygon_lonlat
from warehouse.store import thread_connection

log = logging.getLogger(__name__)

# Areas and points of interest this far outside a cell still count for its edges' features.
FEATURE_MARGIN_DEG = 0.002


class RegionFilesDamaged(RuntimeError):
    """The imported files of a region fail to read, so none of its cells can be built."""


@contextmanager
def _reading_region(region: str, record: dict[str, Any]) -> Iterator[None]:
    """Raise RegionFilesDamaged, naming the import command, when a region file fails to read."""
    try:
        yield
    except (duckdb.Error, pa.ArrowException, OSError) as error:
        source = record.get("source")
        command = f"perfect10k import {source}" if source else "perfect10k import EXTRACT"
        raise RegionFilesDamaged(
            f"the imported files of region {region} (version {record.get('version')}) failed "
            f"to read ({error}); import the region again with `{command}`"
        ) from error


@dataclass
class CellBuild:
    """Counts and timing of one built cell part."""

    cell: str
    region: str
    version: str
    nodes: int = 0
    edges: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def region_for_cell(warehouse: Warehouse, cell: str) -> tuple[str, dict[str, Any]] | None:
    """Return the region that has the most edges in `cell`, or None when no region has any.

    NOTE: where two imported extracts overlap, a cell takes all its edges from one of them.
    """
    best: tuple[str, dict[str, Any]] | None = None
    best_count = 0
    for region, record in warehouse.regions().items():
        count = record.get("cells", {}).get(cell, 0)
        if count > best_count:
            best, best_count = (region, record), count
    return best


def cell_needs_build(warehouse: Warehouse, cell: str, max_age_s: float = 0.0) -> bool:
    """Check whether `cell` is missing, incomplete, stale or has files that do not read."""
    owner = region_for_cell(warehouse, cell)
    if owner is None:
        return False
    entry = warehouse.cell_entry(cell)
    if entry is None or not entry.ready:
        return True
    if entry.is_stale(owner[1]["version"], max_age_s):
        return True
    problem = warehouse.validate_cell(entry)
    if problem is not None:
        warehouse.quarantine_cell(cell, problem)
        return True
    return False


def build_cell_network(warehouse: Warehouse, cell: str) -> CellBuild | None:
    """Write the walking network of `cell`: its edges and every vertex they touch."""
    started = time.perf_counter()
    owner = region_for_cell(warehouse, cell)
    if owner is None:
        return None
    region, record = owner
    edges_path = str(warehouse.region_table_path(region, "edges"))
    nodes_path = str(warehouse.region_table_path(region, "nodes"))

    # Slice the region tables; the edge file is sorted by cell, so few row groups are read.
    # The vertex query reads the cell's edges again rather than a registered Arrow table,
    # because registering one makes DuckDB import pandas (about 0.3 s in a new process).
    connection = thread_connection()
    with _reading_region(region, record):
        edges = connection.sql(
            "SELECT * EXCLUDE (cell) FROM read_parquet($path) WHERE cell = $cell "
            "ORDER BY edge_id",
            params={"path": edges_path, "cell": cell},
        ).to_arrow_table()
        nodes = connection.sql(
            "WITH e AS (SELECT u, v FROM read_parquet($edges) WHERE cell = $cell) "
            "SELECT n.* FROM read_parquet($nodes) n WHERE n.node_id IN "
            "(SELECT u FROM e UNION SELECT v FROM e) ORDER BY n.node_id",
            params={"edges": edges_path, "nodes": nodes_path, "cell": cell},
        ).to_arrow_table()

    tables = {
        "edges": edges.cast(schema.CELL_EDGES),
        "nodes": nodes.cast(schema.CELL_NODES),
    }
    version = warehouse.write_cell_network(cell, region, record["version"], tables)
    build = CellBuild(
        cell, region, version, nodes.num_rows, edges.num_rows, time.perf_counter() - started
    )
    log.info(
        "cell %s network built: %d nodes, %d edges in %.0f ms",
        cell, build.nodes, build.edges, build.seconds * 1000,
    )
    return build


class RegionFeatureSource:
    """A region's areas and points of interest, read once per run and shared by its cells."""

    def __init__(self, warehouse: Warehouse) -> None:
        self._warehouse = warehouse
        self._tables: dict[tuple[str, str], tuple[pa.Table, pa.Table]] = {}

    def tables(self, region: str, version: str) -> tuple[pa.Table, pa.Table]:
        key = (region, version)
        if key not in self._tables:
            with _reading_region(region, self._warehouse.regions().get(region, {})):
                self._tables[key] = (
                    self._warehouse.read_region_table(region, "areas"),
                    self._warehouse.read_region_table(region, "pois"),
                )
        return self._tables[key]


def _within_bbox(table: pa.Table, bbox: tuple[float, float, float, float]) -> pa.Table:
    """Return the rows of an areas or points table that touch `bbox` (lon/lat degrees)."""
    min_lon, min_lat, max_lon, max_lat = bbox
    if table.num_rows == 0:
        return table
    if "min_lon" in table.column_names:
        mask = pc.and_(
            pc.and_(
                pc.greater_equal(table["max_lon"], min_lon), pc.less_equal(table["min_lon"], max_lon)
            ),
            pc.and_(
                pc.greater_equal(table["max_lat"], min_lat), pc.less_equal(table["min_lat"], max_lat)
            ),
        )
    else:
        mask = pc.and_(
            pc.and_(pc.greater_equal(table["lon"], min_lon), pc.less_equal(table["lon"], max_lon)),
            pc.and_(pc.greater_equal(table["lat"], min_lat), pc.less_equal(table["lat"], max_lat)),
        )
    return table.filter(mask)


def build_cell_features(
    warehouse: Warehouse, cell: str, source: RegionFeatureSource
) -> CellBuild | None:
    """Write the features of `cell`'s current network: per-edge scores and clipped areas."""
    started = time.perf_counter()
    entry = warehouse.cell_entry(cell)
    if entry is None:
        return None
    network_dir = warehouse.cell_dir(cell, "network", entry.network_version)
    edges = pq.ParquetFile(network_dir / "edges.parquet").read()
    record = warehouse.regions()[entry.region]
    areas, pois = source.tables(entry.region, record["version"])

    # Only geometry near the cell can touch its edges.
    ring = cell_polygon_lonlat(cell)
    lons = [lon for lon, _ in ring]
    lats = [lat for _, lat in ring]
    bbox = (
        min(lons) - FEATURE_MARGIN_DEG,
        min(lats) - FEATURE_MARGIN_DEG,
        max(lons) + FEATURE_MARGIN_DEG,
        max(lats) + FEATURE_MARGIN_DEG,
    )
    near_areas = _within_bbox(areas, bbox)
    near_pois = _within_bbox(pois, bbox)
    edge_features = compute_edge_features(edges, near_areas, near_pois)
    cell_areas = clip_areas(near_areas, ring)

    tables = {"edge_features": edge_features, "areas": cell_areas}
    version = warehouse.write_cell_features(cell, entry.network_version, tables)
    build = CellBuild(
        cell, entry.region, version, entry.nodes, edges.num_rows, time.perf_counter() - started,
        {"areas": cell_areas.num_rows},
    )
    log.info(
        "cell %s features built: %d edges, %d areas in %.0f ms",
        cell, build.edges, cell_areas.num_rows, build.seconds * 1000,
    )
    return build
