"""The warehouse: immutable Parquet files and a JSON manifest that records which are current.

Layout under the warehouse root::

    manifest.json                          regions, cells, versions (replaced atomically)
    regions/<region>/<version>/<table>.parquet
    cells/<cell>/<part>-<version>/<table>.parquet  part is network or features
    quarantine/                            files that failed validation, set aside
    tmp/                                   partial writes, never read

A file is never rewritten: a rebuilt cell gets a new version directory and the manifest
switches to it with `os.replace`. Writers serialise manifest updates with an exclusive
`flock` on `manifest.lock`; readers only read `manifest.json` and the files it names.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from warehouse import schema

log = logging.getLogger(__name__)

MANIFEST_FORMAT = 1
CELL_PARTS = {"network": schema.CELL_NETWORK_TABLES, "features": schema.CELL_FEATURE_TABLES}
CELL_TABLES = {**schema.CELL_NETWORK_TABLES, **schema.CELL_FEATURE_TABLES}


class WarehouseError(RuntimeError):
    """A warehouse file or the manifest is missing, unreadable or inconsistent."""


class CorruptCellError(WarehouseError):
    """A cell's Parquet file failed to read; the cell must be rebuilt."""

    def __init__(self, cell: str, path: Path, reason: str) -> None:
        super().__init__(f"cell {cell}: file {path.name} is unreadable ({reason})")
        self.cell = cell
        self.path = path


@dataclass(frozen=True)
class CellEntry:
    """A cell as the manifest records it: its network part and the features built from it."""

    cell: str
    region: str
    region_version: str
    network_version: str
    features_version: str | None
    features_network_version: str | None
    built_at: float
    nodes: int
    edges: int
    bytes: int

    @property
    def ready(self) -> bool:
        """Whether both parts exist and the features were computed from the current network."""
        return (
            self.features_version is not None
            and self.features_network_version == self.network_version
        )

    def is_stale(self, region_version: str, max_age_s: float) -> bool:
        """Check whether the cell is from an older extract or older than `max_age_s` (0: none)."""
        if self.region_version != region_version:
            return True
        return max_age_s > 0 and time.time() - self.built_at > max_age_s


class Warehouse:
    """Read and write access to one warehouse root.

    Reading is safe from many threads and processes at once. Each thread gets its own
    DuckDB connection because one connection must not be shared across threads.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._manifest_cache: tuple[float, int, dict[str, Any]] | None = None
        self._manifest_lock = threading.Lock()

    # Paths

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def cell_dir(self, cell: str, part: str, version: str) -> Path:
        return self.root / "cells" / cell / f"{part}-{version}"

    def region_dir(self, region: str, version: str) -> Path:
        return self.root / "regions" / region / version

    def ensure_layout(self) -> None:
        """Create the warehouse folders; used by writers only."""
        for sub in ("regions", "cells", "quarantine", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # Manifest

    def manifest(self) -> dict[str, Any]:
        """Return the current manifest, re-read only when the file changed on disk."""
        try:
            stat = self.manifest_path.stat()
        except FileNotFoundError:
            return {"format": MANIFEST_FORMAT, "regions": {}, "cells": {}}
        key = (stat.st_mtime, stat.st_size)
        with self._manifest_lock:
            cached = self._manifest_cache
            if cached is not None and (cached[0], cached[1]) == key:
                return cached[2]
            data = json.loads(self.manifest_path.read_text())
            if data.get("format") != MANIFEST_FORMAT:
                raise WarehouseError(
                    f"manifest format {data.get('format')!r} is not supported "
                    f"(expected {MANIFEST_FORMAT})"
                )
            self._manifest_cache = (key[0], key[1], data)
            return data

    @contextlib.contextmanager
    def update_manifest(self) -> Iterator[dict[str, Any]]:
        """Yield the manifest for editing under an exclusive lock, then replace it atomically."""
        self.ensure_layout()
        lock_path = self.root / "manifest.lock"
        with open(lock_path, "a+") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                if self.manifest_path.exists():
                    data = json.loads(self.manifest_path.read_text())
                else:
                    data = {"format": MANIFEST_FORMAT, "regions": {}, "cells": {}}
                yield data
                data["updated_at"] = time.time()
                tmp = self.root / "tmp" / f"manifest-{secrets.token_hex(6)}.json"
                tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
                os.replace(tmp, self.manifest_path)
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    # Regions

    def regions(self) -> dict[str, dict[str, Any]]:
        return self.manifest().get("regions", {})

    def region_table_path(self, region: str, table: str) -> Path:
        entry = self.regions().get(region)
        if entry is None:
            raise WarehouseError(f"region {region!r} is not imported")
        return self.region_dir(region, entry["version"]) / f"{table}.parquet"

    def read_region_table(self, region: str, table: str) -> pa.Table:
        return pq.ParquetFile(self.region_table_path(region, table)).read()

    # Cells

    def cell_entries(self) -> dict[str, CellEntry]:
        """Return every built cell of the manifest."""
        return {
            cell: _cell_entry(cell, raw) for cell, raw in self.manifest().get("cells", {}).items()
        }

    def cell_entry(self, cell: str) -> CellEntry | None:
        raw = self.manifest().get("cells", {}).get(cell)
        return None if raw is None else _cell_entry(cell, raw)

    def cell_files(self, entry: CellEntry) -> dict[str, Path]:
        """Return the path of each table of a ready cell."""
        files = {}
        for part, tables in CELL_PARTS.items():
            version = entry.network_version if part == "network" else entry.features_version
            directory = self.cell_dir(entry.cell, part, str(version))
            files.update({table: directory / f"{table}.parquet" for table in tables})
        return files

    def write_cell_network(
        self, cell: str, region: str, region_version: str, tables: Mapping[str, pa.Table]
    ) -> str:
        """Write a cell's network under a new version and switch the manifest to it.

        The files are complete on disk before the manifest names them, so a crash at any
        point leaves either the old version or the new one visible, never a partial cell.
        The cell is not ready again until its features are written for this version.
        """
        version = _new_version()
        size = self._write_tables_atomically(
            self.cell_dir(cell, "network", version), tables, schema.CELL_NETWORK_TABLES
        )
        with self.update_manifest() as manifest:
            previous = manifest["cells"].get(cell, {})
            manifest["cells"][cell] = {
                "region": region,
                "region_version": region_version,
                "network_version": version,
                "network_bytes": size,
                "features_version": previous.get("features_version"),
                "features_network_version": previous.get("features_network_version"),
                "features_bytes": previous.get("features_bytes", 0),
                "built_at": time.time(),
                "nodes": tables["nodes"].num_rows,
                "edges": tables["edges"].num_rows,
            }
        return version

    def write_cell_features(
        self, cell: str, network_version: str, tables: Mapping[str, pa.Table]
    ) -> str:
        """Write a cell's features computed from `network_version` and mark the cell ready."""
        version = _new_version()
        size = self._write_tables_atomically(
            self.cell_dir(cell, "features", version), tables, schema.CELL_FEATURE_TABLES
        )
        with self.update_manifest() as manifest:
            raw = manifest["cells"].get(cell)
            if raw is None or raw["network_version"] != network_version:
                # A newer network replaced the one these features describe; the run that
                # wrote it also writes its features.
                log.info("cell %s: features for a replaced network discarded", cell)
                return version
            raw["features_version"] = version
            raw["features_network_version"] = network_version
            raw["features_bytes"] = size
        return version

    def write_region(
        self,
        region: str,
        tables: Mapping[str, pa.Table],
        record: dict[str, Any],
    ) -> None:
        """Write a region's tables under `record['version']` and register it in the manifest."""
        final_dir = self.region_dir(region, record["version"])
        if not final_dir.exists():
            self._write_tables_atomically(final_dir, tables, schema.REGION_TABLES)
        with self.update_manifest() as manifest:
            manifest["regions"][region] = record

    def _write_tables_atomically(
        self,
        final_dir: Path,
        tables: Mapping[str, pa.Table],
        schemas: Mapping[str, pa.Schema],
    ) -> int:
        self.ensure_layout()
        staging = self.root / "tmp" / f"{final_dir.name}-{secrets.token_hex(6)}"
        staging.mkdir(parents=True)
        total = 0
        try:
            for name, expected in schemas.items():
                table = tables[name].select(expected.names).cast(expected)
                path = staging / f"{name}.parquet"
                pq.write_table(table, path, compression="zstd")
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
                total += path.stat().st_size
            final_dir.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging, final_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return total

    def quarantine_cell(self, cell: str, reason: str) -> None:
        """Move a cell's current files aside and drop it from the manifest."""
        with self.update_manifest() as manifest:
            raw = manifest["cells"].pop(cell, None)
        if raw is None:
            return
        for part in CELL_PARTS:
            version = raw.get(f"{part}_version")
            source = self.cell_dir(cell, part, str(version))
            if version is None or not source.exists():
                continue
            target = self.root / "quarantine" / f"{cell}-{part}-{version}"
            os.replace(source, target)
            (target / "REASON.txt").write_text(reason + "\n")
        log.warning("cell %s set aside: %s", cell, reason)

    def validate_cell(self, entry: CellEntry) -> str | None:
        """Return why the cell's files are unusable, or None when every file reads."""
        for table, path in self.cell_files(entry).items():
            try:
                metadata = pq.read_metadata(path)
                expected = CELL_TABLES[table]
                if metadata.schema.to_arrow_schema().names != expected.names:
                    return f"{path.name} has columns {metadata.schema.names}"
                pq.ParquetFile(path).read()
            except (OSError, pa.ArrowException) as error:
                return f"{path.name}: {error}"
        return None

    # Reading merged cells

    def read_cells(self, entries: list[CellEntry]) -> dict[str, pa.Table]:
        """Return the merged tables of the given cells, one DuckDB query per table.

        Raises CorruptCellError naming the first cell whose file does not read.
        """
        merged: dict[str, pa.Table] = {}
        connection = thread_connection()
        for table, expected in CELL_TABLES.items():
            paths = [str(self.cell_files(entry)[table]) for entry in entries]
            if not paths:
                merged[table] = expected.empty_table()
                continue
            try:
                result = connection.sql(
                    "SELECT * FROM read_parquet($paths)", params={"paths": paths}
                ).to_arrow_table()
                merged[table] = result.cast(expected)
            except (duckdb.Error, OSError, pa.ArrowException, ValueError, KeyError) as error:
                raise self._locate_corrupt(entries, table, error) from error
        return merged

    def _locate_corrupt(
        self, entries: list[CellEntry], table: str, error: Exception
    ) -> WarehouseError:
        """Return a CorruptCellError for the first cell whose `table` file is unusable.

        A file counts as unusable when it does not read or its columns differ from the
        schema, which DuckDB reports as a mismatch across the files of one query.
        """
        expected = CELL_TABLES[table]
        for entry in entries:
            path = self.cell_files(entry)[table]
            try:
                columns = pq.read_schema(path).names
                if columns != expected.names:
                    return CorruptCellError(entry.cell, path, f"unexpected columns {columns}")
                pq.ParquetFile(path).read()
            except (OSError, pa.ArrowException) as inner:
                return CorruptCellError(entry.cell, path, str(inner))
        return WarehouseError(f"reading table {table} failed: {error}")

    def size_bytes(self) -> int:
        total = 0
        for path in self.root.rglob("*.parquet"):
            with contextlib.suppress(FileNotFoundError):
                total += path.stat().st_size
        return total


_thread_state = threading.local()


def thread_connection() -> duckdb.DuckDBPyConnection:
    """Return this thread's in-memory DuckDB connection, opened on first use.

    One connection must not be shared across threads, and opening one costs tens of
    milliseconds, so each thread keeps its own. It runs queries on one thread, because the
    server already handles requests on several.
    """
    connection = getattr(_thread_state, "connection", None)
    if connection is None:
        connection = duckdb.connect(":memory:")
        connection.execute("SET threads TO 1")
        _thread_state.connection = connection
    return connection


def _new_version() -> str:
    """Return a version name that sorts by creation time and never repeats."""
    return f"{int(time.time() * 1000):x}-{secrets.token_hex(3)}"


def _cell_entry(cell: str, raw: Mapping[str, Any]) -> CellEntry:
    return CellEntry(
        cell=cell,
        region=raw["region"],
        region_version=raw["region_version"],
        network_version=raw["network_version"],
        features_version=raw.get("features_version"),
        features_network_version=raw.get("features_network_version"),
        built_at=float(raw["built_at"]),
        nodes=int(raw["nodes"]),
        edges=int(raw["edges"]),
        bytes=int(raw.get("network_bytes", 0)) + int(raw.get("features_bytes", 0)),
    )
