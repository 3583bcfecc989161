"""An in-memory cache of merged cell networks, one per region, bounded in bytes.

A region's network holds every ready cell of the region's current extract version. A
request whose cells are all in the cached network uses it as it is; a request that needs a
cell built since the network was loaded reloads it with every ready cell, so networks grow
with the warm area instead of multiplying per start. Cells from an older extract are never
mixed in, so one route always comes from one extract version.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from planner import Network
from warehouse import CellEntry, CorruptCellError, Warehouse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedNetwork:
    """A merged network and the cell versions it was built from."""

    region: str
    network: Network
    versions: dict[str, str]
    nbytes: int

    def covers(self, entries: list[CellEntry]) -> bool:
        return all(self.versions.get(e.cell) == _version(e) for e in entries)


def network_nbytes(network: Network) -> int:
    """Estimate a network's memory from its numpy arrays and sparse matrices."""
    total = 0
    for value in vars(network).values():
        if isinstance(value, np.ndarray):
            total += value.nbytes
        elif sparse.issparse(value):
            total += value.data.nbytes + value.indices.nbytes + value.indptr.nbytes
    return total


def _version(entry: CellEntry) -> str:
    return f"{entry.network_version}/{entry.features_version}"


class CorruptCells:
    """Cell versions whose files failed to read, which the server treats as not built.

    Every reader of cell files in this process shares one set: the loop and route network
    loads and the map overlays. The server never moves files itself. A request that needs a
    cell in this set starts a build, and the build run sets the files aside in the
    warehouse's quarantine folder and writes a new version, which is not in the set.
    """

    def __init__(self, warehouse: Warehouse) -> None:
        self.warehouse = warehouse
        self._versions: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def contains(self, entry: CellEntry) -> bool:
        with self._lock:
            return (entry.cell, _version(entry)) in self._versions

    def add(self, entry: CellEntry, reason: str) -> None:
        """Treat this cell version as not built from now on, and log why."""
        with self._lock:
            known = (entry.cell, _version(entry)) in self._versions
            self._versions.add((entry.cell, _version(entry)))
        if not known:
            log.error(
                "cell %s version %s of region %s is corrupt, treated as not built until "
                "rebuilt: %s", entry.cell, _version(entry), entry.region, reason,
            )

    def usable(self, entries: list[CellEntry]) -> list[CellEntry]:
        """Return the entries that are not known to be corrupt, in their order."""
        return [entry for entry in entries if not self.contains(entry)]

    def find(self, entries: list[CellEntry]) -> list[CellEntry]:
        """Read every file of the entries not known to be corrupt, and add those that fail.

        A DuckDB query over many cells stops at the first unreadable file and does not name
        it, so after a failed read the caller checks all the cells it read. Returns the
        entries found corrupt by this call.
        """
        found = []
        for entry in self.usable(entries):
            problem = self.warehouse.validate_cell(entry)
            if problem is not None:
                self.add(entry, problem)
                found.append(entry)
        return found


class NetworkCache:
    """Merged networks per region, least recently used first out past `max_bytes`.

    Loading reads the cells' Parquet files with DuckDB and turns them into compact arrays;
    concurrent requests for the same region wait for one load.
    """

    def __init__(self, warehouse: Warehouse, max_bytes: int) -> None:
        self.warehouse = warehouse
        self.max_bytes = max_bytes
        self._networks: OrderedDict[str, LoadedNetwork] = OrderedDict()
        self._loading: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self.corrupt = CorruptCells(warehouse)
        self.hits = 0
        self.misses = 0

    @property
    def bytes(self) -> int:
        with self._lock:
            return sum(item.nbytes for item in self._networks.values())

    def is_corrupt(self, entry: CellEntry) -> bool:
        return self.corrupt.contains(entry)

    def get(self, region: str, needed: list[CellEntry], ready: list[CellEntry]) -> Network:
        """Return a network of `region` that contains every cell of `needed`.

        `ready` lists every ready, current cell of the region; a reload takes them all.
        Raises CorruptCellError when a cell's files do not read; that cell version is
        remembered as corrupt and left out of later loads.
        """
        while True:
            with self._lock:
                loaded = self._networks.get(region)
                if loaded is not None and loaded.covers(needed):
                    self._networks.move_to_end(region)
                    self.hits += 1
                    return loaded.network
                waiter = self._loading.get(region)
                if waiter is None:
                    self._loading[region] = threading.Event()
                    self.misses += 1
                    break
            waiter.wait(timeout=60)
        try:
            return self._load(region, ready).network
        finally:
            with self._lock:
                self._loading.pop(region).set()

    def _load(self, region: str, ready: list[CellEntry]) -> LoadedNetwork:
        started = time.perf_counter()
        usable = self.corrupt.usable(ready)
        try:
            tables = self.warehouse.read_cells(usable)
        except CorruptCellError as error:
            bad = next(e for e in usable if e.cell == error.cell)
            self.corrupt.add(bad, str(error))
            raise
        network = Network.from_tables(
            tables["nodes"], tables["edges"], tables["edge_features"], tables["areas"]
        )
        loaded = LoadedNetwork(
            region, network, {e.cell: _version(e) for e in usable}, network_nbytes(network)
        )
        with self._lock:
            self._networks[region] = loaded
            self._networks.move_to_end(region)
            total = sum(item.nbytes for item in self._networks.values())
            while total > self.max_bytes and len(self._networks) > 1:
                _, evicted = self._networks.popitem(last=False)
                total -= evicted.nbytes
        log.info(
            "network of region %s loaded: %d cells, %d edges, %.1f MB in %.0f ms",
            region, len(usable), network.edge_count, loaded.nbytes / 1e6,
            (time.perf_counter() - started) * 1e3,
        )
        return loaded
