"""Region import: parse an OSM extract once into the warehouse's region tables."""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.osm import NETWORK_FORMAT, parse_extract
from warehouse import Warehouse
from warehouse.cells import cells_of

log = logging.getLogger(__name__)

EXTRACT_SUFFIXES = (".osm.pbf", ".osm.bz2", ".osm", ".pbf")


@dataclass(frozen=True)
class ImportResult:
    """Outcome of one import: the region id, its version and the parse statistics."""

    region: str
    version: str
    cells: int
    seconds: float
    unchanged: bool
    stats: dict[str, Any]


def region_id_for(path: Path) -> str:
    """Derive a region id from an extract's file name: `monaco-2021-04-21.osm.pbf` -> `monaco`.

    A trailing date and the words `latest` and `routing` are dropped so that a newer extract
    of the same place replaces the older one.
    """
    name = path.name
    for suffix in EXTRACT_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    name = re.sub(r"[-_.]?(\d{4}-\d{2}-\d{2}|\d{6,8})", "", name)
    name = re.sub(r"[-_.](latest|routing|clipped)\b", "", name)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug or "region"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def import_region(
    warehouse: Warehouse,
    path: Path,
    resolution: int,
    region: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> ImportResult:
    """Parse `path` and register it as a region of the warehouse.

    Importing the same file again changes nothing. A different file for the same region id
    becomes the region's new version, and cells built from the old one turn stale.
    """
    started = time.perf_counter()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"extract {path} does not exist")
    region = region or region_id_for(path)
    sha256 = file_sha256(path)
    # The parser's format takes part in the version, so a new parser rebuilds old imports.
    version = hashlib.sha256(f"{sha256} {NETWORK_FORMAT}".encode()).hexdigest()[:16]
    existing = warehouse.regions().get(region)
    if existing and existing["version"] == version and existing.get("h3_resolution") == resolution:
        return ImportResult(region, version, len(existing["cells"]), 0.0, True, existing["stats"])

    # Parse once, then tag every edge with the cell of its midpoint.
    parsed = parse_extract(path, progress=progress)
    stats = asdict(parsed.stats)
    edges = parsed.edges
    cells = cells_of(
        edges.column("mid_lat").to_numpy(), edges.column("mid_lon").to_numpy(), resolution
    )
    edges = edges.append_column("cell", pa.array(cells, type=pa.string()))
    edges = edges.take(pc.sort_indices(edges, [("cell", "ascending"), ("edge_id", "ascending")]))
    cell_ids, cell_counts = np.unique(cells.astype(str), return_counts=True)
    if progress:
        progress(f"{edges.num_rows:,} edges in {len(cell_ids):,} H3 cells at resolution {resolution}")

    record = {
        "name": region,
        "source": str(path.resolve()),
        "sha256": sha256,
        "version": version,
        "h3_resolution": resolution,
        "bbox": list(stats["bbox"] or (0.0, 0.0, 0.0, 0.0)),
        "imported_at": time.time(),
        "stats": stats,
        "cells": {cell: int(count) for cell, count in zip(cell_ids, cell_counts, strict=True)},
    }
    tables = {"edges": edges, "nodes": parsed.nodes, "areas": parsed.areas, "pois": parsed.pois}
    warehouse.write_region(region, tables, record)
    seconds = time.perf_counter() - started
    log.info(
        "region %s version %s imported: %d edges, %d cells in %.2f s",
        region, version, edges.num_rows, len(cell_ids), seconds,
    )
    return ImportResult(region, version, len(cell_ids), seconds, False, stats)
