"""Warehouse reads on real Monaco cells: merged reads, and files that are damaged or swapped."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from perfect10k.settings import load_settings
from pipelines.cells import (
    RegionFeatureSource,
    RegionFilesDamaged,
    build_cell_features,
    build_cell_network,
    cell_needs_build,
)
from pipelines.regions import import_region
from serving.dagster_client import DagsterClient
from serving.errors import ServiceUnavailable
from serving.networks import NetworkCache
from serving.schemas import LoopRequest
from serving.service import RouteService, round_coordinates
from serving.state import StateStore
from tests.conftest import MONACO, MONACO_START, free_port
from warehouse import CorruptCellError, Warehouse

# Fontvieille, in the south-west of Monaco: a short loop there needs three of four cells.
FONTVIEILLE = (43.7310, 7.4190)


@pytest.fixture
def monaco_warehouse(tmp_path: Path) -> Warehouse:
    """A warehouse with Monaco imported and every Monaco cell built."""
    warehouse = Warehouse(tmp_path / "warehouse")
    import_region(warehouse, MONACO, 7)
    source = RegionFeatureSource(warehouse)
    for cell in warehouse.regions()["monaco"]["cells"]:
        build_cell_network(warehouse, cell)
        build_cell_features(warehouse, cell, source)
    return warehouse


def swap_edges_for_nodes(warehouse: Warehouse, cell: str) -> Path:
    """Overwrite a cell's edges file with its nodes file: valid Parquet, wrong columns."""
    files = warehouse.cell_files(warehouse.cell_entry(cell))
    shutil.copyfile(files["nodes"], files["edges"])
    return files["edges"]


def service_for(
    warehouse: Warehouse, tmp_path: Path, result_cache_entries: int = 256
) -> RouteService:
    """A route service over `warehouse` whose Dagster address has nothing listening."""
    settings = dataclasses.replace(load_settings(), result_cache_entries=result_cache_entries)
    dagster = DagsterClient(f"http://127.0.0.1:{free_port()}", timeout_s=2.0)
    cache = NetworkCache(warehouse, 200 * 1024 * 1024)
    return RouteService(settings, warehouse, cache, StateStore(tmp_path / "state"), dagster)


def test_read_cells_merges_every_cell(monaco_warehouse):
    entries = list(monaco_warehouse.cell_entries().values())
    tables = monaco_warehouse.read_cells(entries)
    assert tables["edges"].num_rows == sum(entry.edges for entry in entries)
    assert tables["edge_features"].num_rows == tables["edges"].num_rows


def test_swapped_file_is_reported_as_corrupt(monaco_warehouse):
    cell = min(monaco_warehouse.cell_entries())
    swap_edges_for_nodes(monaco_warehouse, cell)
    with pytest.raises(CorruptCellError) as raised:
        monaco_warehouse.read_cells(list(monaco_warehouse.cell_entries().values()))
    assert raised.value.cell == cell


def test_swapped_file_is_quarantined_before_rebuild(monaco_warehouse):
    cell = min(monaco_warehouse.cell_entries())
    swap_edges_for_nodes(monaco_warehouse, cell)
    assert cell_needs_build(monaco_warehouse, cell)
    assert monaco_warehouse.cell_entry(cell) is None
    quarantined = list((monaco_warehouse.root / "quarantine").glob(f"{cell}-*"))
    assert quarantined, "the damaged version must be set aside"


def test_corrupt_cell_not_needed_costs_no_job(monaco_warehouse, tmp_path):
    service = service_for(monaco_warehouse, tmp_path)
    lat, lon = FONTVIEILLE
    area = service.locate(lat, lon, 1500)
    unneeded = [cell for cell in monaco_warehouse.cell_entries() if cell not in area.needed]
    assert unneeded, "a short loop in Fontvieille must not need every Monaco cell"
    swap_edges_for_nodes(monaco_warehouse, unneeded[0])

    answer = service.loops(LoopRequest(lat=lat, lon=lon, target_distance=1500))
    assert answer.response_type == "cached"
    assert service.cache.is_corrupt(monaco_warehouse.cell_entry(unneeded[0]))


def test_corrupt_needed_cell_asks_for_a_rebuild(monaco_warehouse, tmp_path):
    service = service_for(monaco_warehouse, tmp_path)
    lat, lon = MONACO_START
    needed = service.locate(lat, lon, 3000).needed[0]
    swap_edges_for_nodes(monaco_warehouse, needed)

    # Dagster is unreachable here, so the rebuild is refused with a 503, never a 500.
    with pytest.raises(ServiceUnavailable) as raised:
        service.loops(LoopRequest(lat=lat, lon=lon, target_distance=3000))
    assert raised.value.status_code == 503
    assert "cannot be built now" in raised.value.message


def loop_ids(answer) -> list[str]:
    return [loop.loop_id for loop in answer.loops]


def test_repeated_loop_request_reuses_result(monaco_warehouse, tmp_path):
    service = service_for(monaco_warehouse, tmp_path)
    lat, lon = MONACO_START
    request = LoopRequest(lat=lat, lon=lon, target_distance=3000, seed=4)
    first = service.loops(request)
    again = service.loops(request)
    assert again == first
    # A start a few metres away snaps to the same vertex and gets the same loops.
    nearby = service.loops(LoopRequest(lat=lat + 0.00001, lon=lon, target_distance=3000, seed=4))
    assert loop_ids(nearby) == loop_ids(first)
    assert nearby.start.lat == lat + 0.00001
    assert nearby.start.snapped_lat == first.start.snapped_lat
    for loop_id in loop_ids(first):
        assert service.state.loop(loop_id) is not None


def test_loop_result_key_covers_request(monaco_warehouse, tmp_path):
    service = service_for(monaco_warehouse, tmp_path)
    lat, lon = MONACO_START
    base = loop_ids(service.loops(LoopRequest(lat=lat, lon=lon, target_distance=3000, seed=4)))
    changes = [
        {"seed": 5},
        {"target_distance": 3500},
        {"preference": "parks and water"},
        {"alternatives": 1},
    ]
    for change in changes:
        fields = {"lat": lat, "lon": lon, "target_distance": 3000, "seed": 4, **change}
        answer = service.loops(LoopRequest(**fields))
        assert not set(loop_ids(answer)) & set(base), change


def test_result_cache_off_plans_again(monaco_warehouse, tmp_path):
    cached = service_for(monaco_warehouse, tmp_path / "cached")
    uncached = service_for(monaco_warehouse, tmp_path / "uncached", result_cache_entries=0)
    lat, lon = MONACO_START
    request = LoopRequest(lat=lat, lon=lon, target_distance=3000, seed=4)
    first = uncached.loops(request)
    again = uncached.loops(request)
    assert not set(loop_ids(first)) & set(loop_ids(again))
    assert [loop.geometry for loop in again.loops] == [loop.geometry for loop in first.loops]
    assert cached.loops(request).loops[0].geometry == first.loops[0].geometry


@pytest.mark.parametrize(
    "value",
    [7.4250005, 7.4250015, -123.1234565, 43.7400005, 1.0000005, 0.5, 951 / 128, -951 / 128],
)
def test_round_coordinates_matches_round(value):
    pairs = [(value, -value), (value + 1e-7, value - 1e-7)]
    rounded = round_coordinates(pairs)
    assert rounded == [(round(lon, 6), round(lat, 6)) for lon, lat in pairs]
    assert all(isinstance(pair, tuple) for pair in rounded)


@pytest.mark.parametrize("table", ["edges", "areas"])
def test_damaged_region_file_names_import(tmp_path: Path, table: str) -> None:
    warehouse = Warehouse(tmp_path / "warehouse")
    import_region(warehouse, MONACO, 7)
    cell = next(iter(warehouse.regions()["monaco"]["cells"]))
    path = warehouse.region_table_path("monaco", table)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(RegionFilesDamaged) as raised:
        build_cell_network(warehouse, cell)
        build_cell_features(warehouse, cell, RegionFeatureSource(warehouse))
    message = str(raised.value)
    assert "region monaco" in message
    assert f"perfect10k import {MONACO.resolve()}" in message
