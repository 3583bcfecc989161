"""Asset checks: flag built cells whose walking network is empty or badly fragmented."""

from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    MetadataValue,
    asset_check,
)
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pipelines.assets import cell_network
from pipelines.resources import WarehouseResource
from pipelines.tags import CELLS_TAG
from warehouse import Warehouse

# A cell whose largest connected component contains less than this share of its edges is
# flagged. Cells are cut from a larger network, so a border cell may legitimately split
# into pieces that join only through a neighbour. The check warns and never blocks.
MIN_LARGEST_COMPONENT_SHARE = 0.5


@dataclass(frozen=True)
class Connectivity:
    """Edges of one cell and the share of them in its largest connected component."""

    cell: str
    edges: int
    components: int
    largest_share: float

    @property
    def problem(self) -> str | None:
        """Why the cell is flagged, or None when it passes."""
        if self.edges == 0:
            return "no walkable edges"
        if self.largest_share < MIN_LARGEST_COMPONENT_SHARE:
            return (
                f"largest connected component contains {self.largest_share:.0%} of "
                f"{self.edges} edges ({self.components} components)"
            )
        return None


def edge_connectivity(u: np.ndarray, v: np.ndarray) -> tuple[int, float]:
    """Return the number of connected components and the largest one's share of the edges.

    Components are counted over the vertices the edges touch, ignoring direction.
    """
    if len(u) == 0:
        return 0, 0.0
    node_ids, index = np.unique(np.concatenate([u, v]), return_inverse=True)
    rows, cols = index[: len(u)], index[len(u) :]
    size = len(node_ids)
    graph = coo_matrix((np.ones(len(u), dtype=np.int8), (rows, cols)), shape=(size, size))
    count, labels = connected_components(graph, directed=False)
    edges_per_component = np.bincount(labels[rows], minlength=count)
    return int(count), float(edges_per_component.max() / len(u))


def cell_connectivity(warehouse: Warehouse, cell: str) -> Connectivity | None:
    """Return the connectivity of the cell's current network, or None when it is not built."""
    entry = warehouse.cell_entry(cell)
    if entry is None:
        return None
    path = warehouse.cell_dir(cell, "network", entry.network_version) / "edges.parquet"
    edges = pq.read_table(path, columns=["u", "v"])
    components, share = edge_connectivity(
        edges.column("u").to_numpy(), edges.column("v").to_numpy()
    )
    return Connectivity(cell, edges.num_rows, components, share)


def _cells_of_run(context: AssetCheckExecutionContext) -> list[str]:
    wanted = context.run.tags.get(CELLS_TAG)
    if wanted:
        return [cell for cell in wanted.split(",") if cell]
    if context.has_partition_key_range:
        return list(context.partition_keys)
    return []


@asset_check(
    asset=cell_network,
    description=(
        "Warn when a cell of the run has no walkable edges or its largest connected "
        f"component holds less than {MIN_LARGEST_COMPONENT_SHARE:.0%} of its edges."
    ),
)
def cell_network_connected(
    context: AssetCheckExecutionContext, warehouse: WarehouseResource
) -> AssetCheckResult:
    """Check every cell the run covers; one result per run lists the flagged cells."""
    store = warehouse.open()
    results = [cell_connectivity(store, cell) for cell in _cells_of_run(context)]
    checked = [result for result in results if result is not None]
    flagged = {result.cell: result.problem for result in checked if result.problem}
    for cell, problem in flagged.items():
        context.log.warning(f"cell {cell}: {problem}")
    shares = [result.largest_share for result in checked if result.edges]
    return AssetCheckResult(
        passed=not flagged,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "cells_checked": len(checked),
            "cells_flagged": len(flagged),
            "min_largest_component_share": round(min(shares), 3) if shares else 0.0,
            "flagged": MetadataValue.json(flagged),
        },
    )
