"""Operations on real extracts: warming, the nightly backfill, asset checks, freshness, logs."""

from __future__ import annotations

import itertools
import json
import os
import time
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import h3
import httpx
import networkx as nx
import osmium
import pyarrow.parquet as pq
import pytest
import yaml
from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    QueuedRunCoordinator,
    RunsFilter,
    SensorResult,
    SkipReason,
    build_schedule_context,
    build_sensor_context,
    instance_for_test,
)

from perfect10k.dagster_home import DAGSTER_YAML
from perfect10k.settings import load_settings
from pipelines.cells import cell_needs_build
from pipelines.checks import MIN_LARGEST_COMPONENT_SHARE, cell_connectivity
from pipelines.launch import partition_range_tags
from pipelines.regions import import_region
from pipelines.resources import WarehouseResource
from pipelines.run_launch import ForkServerRunLauncher, ImmediateRequestRunCoordinator
from pipelines.schedules import popular_places_schedule
from pipelines.sensors import warm_neighbours_sensor
from pipelines.tags import (
    CELLS_TAG,
    CENTRE_TAG,
    ORIGIN_REQUEST,
    ORIGIN_TAG,
    ORIGIN_WARM,
    PRIORITY_TAG,
    REQUEST_PRIORITY,
    RUN_WORKER_TAG,
)
from pipelines.warming import cells_to_warm, place_cells, popular_places, warm_radius_m
from serving.dagster_client import DagsterClient
from serving.networks import NetworkCache
from serving.service import RouteService
from serving.state import StateStore
from tests.conftest import (
    ANDORRA,
    ANDORRA_START,
    MONACO,
    MONACO_START,
    REPOSITORY,
    LiveServer,
    free_port,
    perfect10k_env,
    run_cli,
    start_server,
)
from warehouse import Warehouse
from warehouse.cells import cells_around, cells_for_loop

# About 1.4 km south of ANDORRA_START, in a neighbouring H3 cell: a loop from here needs
# cells that a loop from ANDORRA_START does not.
ANDORRA_SOUTH = (42.4950, 1.5211)
LOOP_M = 5000


def load_defs():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pipelines.definitions import defs
    return defs


def region_cells_for_loop(store: Warehouse, region: str, lat: float, lon: float) -> list[str]:
    """Return the cells the server needs for a LOOP_M loop from (lat, lon), start cell first."""
    covered = store.regions()[region]["cells"]
    return [cell for cell in cells_for_loop(lat, lon, LOOP_M, 7) if cell in covered]


def run_request_build(instance: DagsterInstance, cells: list[str], centre: str) -> str:
    """Run `build_cells` in process with the tags the server gives a request's run."""
    tags = partition_range_tags(instance, cells)
    tags.update({ORIGIN_TAG: ORIGIN_REQUEST, PRIORITY_TAG: REQUEST_PRIORITY, CENTRE_TAG: centre})
    result = load_defs().resolve_job_def("build_cells").execute_in_process(
        instance=instance, tags=tags
    )
    assert result.success
    return result.run_id


@pytest.fixture
def temp_instance(tmp_path: Path) -> Iterator[DagsterInstance]:
    home = tmp_path / "dagster"
    home.mkdir()
    with instance_for_test(temp_dir=str(home)) as instance:
        yield instance


@pytest.fixture
def warehouse_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Warehouse:
    """An empty warehouse that in-process Dagster runs of this test write to."""
    root = tmp_path / "warehouse"
    monkeypatch.setenv("PERFECT10K_WAREHOUSE", str(root))
    monkeypatch.delenv("PERFECT10K_MAX_CELL_AGE_DAYS", raising=False)
    monkeypatch.delenv("PERFECT10K_WARM_RADIUS_M", raising=False)
    monkeypatch.delenv("PERFECT10K_POPULAR_PLACES", raising=False)
    monkeypatch.delenv("PERFECT10K_H3_RESOLUTION", raising=False)
    return Warehouse(root)


# Warming sensor, evaluated against a real instance


def test_sensor_waits_while_request_run_in_flight(warehouse_env, temp_instance):
    store = warehouse_env
    import_region(store, ANDORRA, 7)
    needed = region_cells_for_loop(store, "andorra", *ANDORRA_START)
    run_request_build(temp_instance, needed, needed[0])
    temp_instance.create_run_for_job(
        load_defs().resolve_job_def("build_cells"),
        status=DagsterRunStatus.NOT_STARTED,
        tags={CELLS_TAG: needed[0], ORIGIN_TAG: ORIGIN_REQUEST},
    )
    context = build_sensor_context(
        instance=temp_instance, resources={"warehouse": WarehouseResource(root=str(store.root))}
    )
    result = warm_neighbours_sensor(context)
    assert isinstance(result, SkipReason), result
    assert "request run is in flight" in str(result.skip_message)
    assert context.cursor is None, "the cursor must not move while warming waits"


def test_sensor_requests_neighbours_of_request(warehouse_env, temp_instance):
    store = warehouse_env
    import_region(store, ANDORRA, 7)
    needed = region_cells_for_loop(store, "andorra", *ANDORRA_START)
    centre = needed[0]
    run_request_build(temp_instance, needed, centre)

    # A warm build of two other cells waits to start: the sensor must leave them to it.
    covered = set(store.regions()["andorra"]["cells"])
    centre_lat, centre_lon = h3.cell_to_latlng(centre)
    around = cells_around(centre_lat, centre_lon, warm_radius_m(), 7)
    ring = sorted(c for c in around if c in covered and c not in needed)
    assert len(ring) > 4
    queued = load_defs().resolve_job_def("build_cells")
    temp_instance.create_run_for_job(
        queued,
        status=DagsterRunStatus.NOT_STARTED,
        tags={CELLS_TAG: ",".join(ring[:2]), ORIGIN_TAG: ORIGIN_WARM},
    )

    context = build_sensor_context(
        instance=temp_instance, resources={"warehouse": WarehouseResource(root=str(store.root))}
    )
    result = warm_neighbours_sensor(context)
    assert isinstance(result, SensorResult), result
    assert len(result.run_requests) == 1
    request = result.run_requests[0]
    warmed = request.tags[CELLS_TAG].split(",")
    assert set(warmed) == set(ring[2:]), "neighbours within the warm radius, minus busy cells"
    assert not set(warmed) & set(needed), "cells the request built are skipped"
    assert int(request.tags[PRIORITY_TAG]) < 0
    assert request.tags[ORIGIN_TAG] == ORIGIN_WARM
    added = result.dynamic_partitions_requests[0].partition_keys
    assert set(added) == set(warmed), "cells that are not partitions yet are added"

    # The cursor moved past the request, so the next tick requests no run.
    again = warm_neighbours_sensor(
        build_sensor_context(
            instance=temp_instance,
            cursor=result.cursor,
            resources={"warehouse": WarehouseResource(root=str(store.root))},
        )
    )
    assert not getattr(again, "run_requests", None)


def test_sensor_skips_without_requests(warehouse_env, temp_instance):
    import_region(warehouse_env, MONACO, 7)
    context = build_sensor_context(
        instance=temp_instance,
        resources={"warehouse": WarehouseResource(root=str(warehouse_env.root))},
    )
    result = warm_neighbours_sensor(context)
    assert not getattr(result, "run_requests", None)


# Popular-places schedule and the warm_places job


def test_schedule_backfills_popular_places(warehouse_env, temp_instance):
    store = warehouse_env
    import_region(store, MONACO, 7)
    defs = load_defs()
    assert defs.get_schedule_def("popular_places_schedule").job_name == "warm_places"

    tick = datetime(2026, 6, 1, 3, 0, tzinfo=UTC)
    context = build_schedule_context(instance=temp_instance, scheduled_execution_time=tick)
    request = popular_places_schedule(context)
    places = request.run_config["ops"]["warm_places_op"]["config"]["places"]
    assert [place["name"] for place in places] == [place.name for place in popular_places()]
    assert int(request.tags[PRIORITY_TAG]) < 0
    assert request.run_key == "warm_places-202606010300"
    expected = place_cells(store, popular_places(), 7)
    assert expected, "the Monaco place must cover Monaco cells"

    job = defs.resolve_job_def("warm_places")
    result = job.execute_in_process(
        run_config=request.run_config, instance=temp_instance, tags=request.tags
    )
    assert result.success
    assert result.output_for_node("warm_places_op") == len(expected)
    entries = store.cell_entries()
    version = store.regions()["monaco"]["version"]
    for cell in expected:
        assert entries[cell].ready, cell
        assert entries[cell].region_version == version, cell
    materialized = temp_instance.get_materialized_partitions(AssetKey("cell_network"))
    assert set(expected) <= materialized

    # Everything is built now: a second night builds nothing.
    again = job.execute_in_process(run_config=request.run_config, instance=temp_instance)
    assert again.output_for_node("warm_places_op") == 0


# Asset check on real cells


def largest_share_networkx(store: Warehouse, cell: str) -> float:
    entry = store.cell_entry(cell)
    edges = pq.read_table(
        store.cell_dir(cell, "network", entry.network_version) / "edges.parquet",
        columns=["u", "v"],
    ).to_pylist()
    graph = nx.MultiGraph()
    graph.add_edges_from((edge["u"], edge["v"]) for edge in edges)
    largest = max(nx.connected_components(graph), key=lambda nodes: graph.subgraph(nodes).size())
    return graph.subgraph(largest).size() / len(edges)


def test_check_flags_fragmented_cells(warehouse_env, temp_instance):
    store = warehouse_env
    import_region(store, MONACO, 7)
    cells = list(store.regions()["monaco"]["cells"])
    tags = partition_range_tags(temp_instance, cells)
    result = load_defs().resolve_job_def("build_cells").execute_in_process(
        instance=temp_instance, tags=tags
    )
    assert result.success, "a failed check must not fail the build"
    evaluations = [
        event.event_specific_data
        for event in result.all_events
        if event.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    assert len(evaluations) == 1
    evaluation = evaluations[0]
    assert evaluation.check_name == "cell_network_connected"
    assert evaluation.metadata["cells_checked"].value == len(cells)

    shares = {cell: largest_share_networkx(store, cell) for cell in cells}
    expected = {cell for cell, share in shares.items() if share < MIN_LARGEST_COMPONENT_SHARE}
    assert set(evaluation.metadata["flagged"].value) == expected
    assert evaluation.passed == (not expected)
    assert evaluation.severity.value == "WARN"
    for cell, share in shares.items():
        assert cell_connectivity(store, cell).largest_share == pytest.approx(share)


def test_check_flags_empty_cell(warehouse_env):
    store = warehouse_env
    import_region(store, MONACO, 7)
    cell = next(iter(store.regions()["monaco"]["cells"]))
    edges = pq.read_table(store.region_table_path("monaco", "edges")).slice(0, 0)
    nodes = pq.read_table(store.region_table_path("monaco", "nodes")).slice(0, 0)
    store.write_cell_network(
        cell, "monaco", store.regions()["monaco"]["version"],
        {"edges": edges.drop_columns(["cell"]), "nodes": nodes},
    )
    result = cell_connectivity(store, cell)
    assert result.edges == 0
    assert result.problem == "no walkable edges"


# Freshness: maximum cell age


def test_max_cell_age_makes_cells_stale(warehouse_env, temp_instance, tmp_path, monkeypatch):
    store = warehouse_env
    import_region(store, MONACO, 7)
    cells = list(store.regions()["monaco"]["cells"])
    run_request_build(temp_instance, cells, cells[0])
    with store.update_manifest() as manifest:
        for raw in manifest["cells"].values():
            raw["built_at"] -= 2 * 86400

    monkeypatch.setenv("PERFECT10K_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PERFECT10K_MAX_CELL_AGE_DAYS", "1")
    settings = load_settings()
    assert settings.max_cell_age_days == 1
    max_age_s = settings.max_cell_age_days * 86400
    assert sorted(cells_to_warm(store, cells, set(), max_age_s)) == sorted(cells)
    assert all(cell_needs_build(store, cell, max_age_s) for cell in cells)

    # The server treats over-age cells as missing; nothing is launched because the Dagster
    # webserver it is given does not exist.
    dagster = DagsterClient(f"http://127.0.0.1:{free_port()}", timeout_s=1)
    service = RouteService(
        settings, store, NetworkCache(store, 50 << 20), StateStore(tmp_path / "state"), dagster
    )
    area = service.locate(*MONACO_START, LOOP_M)
    assert area.missing == area.needed

    # A build run rebuilds them because of their age alone.
    before = {cell: store.cell_entry(cell).network_version for cell in cells}
    run_request_build(temp_instance, cells, cells[0])
    after = {cell: store.cell_entry(cell).network_version for cell in cells}
    assert all(before[cell] != after[cell] for cell in cells)
    assert not service.locate(*MONACO_START, LOOP_M).missing
    dagster.close()


# The live server with its Dagster daemon


@pytest.fixture(scope="module")
def ops_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server of its own: Monaco built, Andorra imported and cold, the daemon running."""
    data_dir = tmp_path_factory.mktemp("perfect10k-ops")
    store = Warehouse(data_dir / "warehouse")
    import_region(store, MONACO, 7)
    import_region(store, ANDORRA, 7)
    run_cli(perfect10k_env(data_dir), "materialize", "--region", "monaco")
    live = start_server(data_dir)
    yield live
    live.stop()


def poll_job(client: httpx.Client, job_id: str, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = client.get(f"/api/job-status/{job_id}").json()
        if body["status"] in {"completed", "failed"}:
            return body
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish within {timeout_s} s")


def instance_of(server: LiveServer) -> DagsterInstance:
    return DagsterInstance.from_config(str(server.data_dir / "dagster"))


def runs_with_origin(instance: DagsterInstance, origin: str) -> list:
    return list(
        instance.get_run_records(
            filters=RunsFilter(job_name="build_cells", tags={ORIGIN_TAG: origin})
        )
    )


def event_types(instance: DagsterInstance, run_id: str) -> list[DagsterEventType]:
    return [
        entry.dagster_event.event_type
        for entry in instance.all_logs(run_id)
        if entry.dagster_event is not None
    ]


def test_daemon_warms_neighbours_of_request(ops_server: LiveServer):
    store = Warehouse(ops_server.data_dir / "warehouse")
    request = {"lat": ANDORRA_START[0], "lon": ANDORRA_START[1], "target_distance": LOOP_M}
    with ops_server.client() as client:
        accepted = client.post("/api/loops", json=request)
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job_id"]
        assert poll_job(client, job_id)["status"] == "completed"
    first_done = time.monotonic()

    # The sensor ticks every 5 s under the daemon and builds the cells the second start needs.
    south = region_cells_for_loop(store, "andorra", *ANDORRA_SOUTH)
    first = set(region_cells_for_loop(store, "andorra", *ANDORRA_START))
    assert set(south) - first, "the second start must need cells the first did not"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        entries = store.cell_entries()
        if all(cell in entries and entries[cell].ready for cell in south):
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the neighbours of the first request were not warmed in 120 s")
    print(f"\nneighbours warm {time.monotonic() - first_done:.1f} s after the first job completed")

    with instance_of(ops_server) as instance:
        request_runs = runs_with_origin(instance, ORIGIN_REQUEST)
        warm_runs = runs_with_origin(instance, ORIGIN_WARM)
        assert warm_runs, "the sensor launched no warm run"
        request_events = event_types(instance, request_runs[-1].dagster_run.run_id)
        warm_events = event_types(instance, warm_runs[-1].dagster_run.run_id)
    # The coordinator launches request runs at once, and warming runs wait in the queue.
    assert DagsterEventType.RUN_ENQUEUED not in request_events
    assert DagsterEventType.RUN_ENQUEUED in warm_events
    for run in (request_runs[-1].dagster_run, warm_runs[-1].dagster_run):
        worker = json.loads(run.tags[RUN_WORKER_TAG])
        assert worker["pid"] > 0, worker
        assert worker["pid"] not in (ops_server.process.pid, os.getpid()), worker
    warm_tags = warm_runs[0].dagster_run.tags
    assert int(warm_tags[PRIORITY_TAG]) < 0
    assert not set(warm_tags[CELLS_TAG].split(",")) & first

    south_request = {"lat": ANDORRA_SOUTH[0], "lon": ANDORRA_SOUTH[1], "target_distance": LOOP_M}
    with ops_server.client() as client:
        response = client.post("/api/loops", json=south_request)
        assert response.status_code == 200, response.text
        assert response.json()["response_type"] == "cached"
        health = client.get("/api/health").json()
    with instance_of(ops_server) as instance:
        assert len(runs_with_origin(instance, ORIGIN_REQUEST)) == len(request_runs)
    assert health["requests_cached"] >= 1
    assert health["requests_async"] >= 1

    log = (ops_server.data_dir / "server.log").read_text()
    assert f"miss: job {job_id}" in log
    assert f"job {job_id} completed" in log


def test_schedule_and_sensor_are_running(ops_server: LiveServer):
    query = """
    { repositoryOrError(repositorySelector: {repositoryLocationName: "perfect10k",
                                              repositoryName: "__repository__"}) {
        ... on Repository {
          schedules { name scheduleState { status } }
          sensors { name sensorState { status } }
        } } }"""
    port = ops_server.env["PERFECT10K_DAGSTER_PORT"]
    response = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": query}, timeout=30)
    repository = response.json()["data"]["repositoryOrError"]
    schedules = {s["name"]: s["scheduleState"]["status"] for s in repository["schedules"]}
    sensors = {s["name"]: s["sensorState"]["status"] for s in repository["sensors"]}
    assert schedules == {"popular_places_schedule": "RUNNING"}
    assert sensors == {"warm_neighbours_sensor": "RUNNING"}


# Freshness: a newer extract of the same region


def loop_segments(loop: dict) -> set[tuple]:
    points = [tuple(point) for point in loop["geometry"]["coordinates"]]
    return {(a, b) for a, b in itertools.pairwise(points) if a != b}


def way_segments(store: Warehouse, region: str) -> dict[tuple, set[int]]:
    """Map each (lon, lat) segment of the region's edges, both directions, to its way ids."""
    path = store.region_table_path(region, "edges")
    table = pq.read_table(path, columns=["way_id", "lon", "lat"]).to_pydict()
    segments: dict[tuple, set[int]] = {}
    for way, lons, lats in zip(table["way_id"], table["lon"], table["lat"], strict=True):
        points = [(round(lon, 6), round(lat, 6)) for lon, lat in zip(lons, lats, strict=True)]
        for a, b in itertools.pairwise(points):
            segments.setdefault((a, b), set()).add(way)
            segments.setdefault((b, a), set()).add(way)
    return segments


def write_without_way(source: Path, target: Path, way_id: int) -> None:
    with osmium.SimpleWriter(str(target), overwrite=True) as writer:
        for obj in osmium.FileProcessor(str(source)):
            if obj.is_way() and obj.id == way_id:
                continue
            writer.add(obj)


def test_newer_extract_rebuilds_stale_cells(ops_server: LiveServer, tmp_path: Path):
    store = Warehouse(ops_server.data_dir / "warehouse")
    old_version = store.regions()["monaco"]["version"]
    request = {"lat": MONACO_START[0], "lon": MONACO_START[1], "target_distance": LOOP_M, "seed": 1}
    with ops_server.client() as client:
        first = client.post("/api/loops", json=request)
    assert first.status_code == 200, first.text

    # Drop the way the first loop walks longest, apart from the one at its start.
    old_segments = way_segments(store, "monaco")
    loop = first.json()["loops"][0]
    points = [tuple(point) for point in loop["geometry"]["coordinates"]]
    start_ways = old_segments[(points[0], points[1])] | old_segments[(points[-2], points[-1])]
    used: dict[int, int] = {}
    for segment in loop_segments(loop):
        for way in old_segments.get(segment, set()):
            used[way] = used.get(way, 0) + 1
    dropped = max((way for way in used if way not in start_ways), key=used.__getitem__)
    dropped_segments = {s for s, ways in old_segments.items() if ways == {dropped}}
    assert dropped_segments & loop_segments(loop)
    copy = tmp_path / "monaco-edited.osm.pbf"
    write_without_way(MONACO, copy, dropped)
    run_cli(ops_server.env, "import", "--region", "monaco", str(copy))

    new_version = store.regions()["monaco"]["version"]
    assert new_version != old_version
    cells = list(store.regions()["monaco"]["cells"])
    for cell in cells:
        entry = store.cell_entry(cell)
        assert entry.is_stale(new_version, 0), cell
        assert cell_needs_build(store, cell), cell

    with ops_server.client() as client:
        again = client.post("/api/loops", json=request)
        assert again.status_code == 202, "stale cells must be rebuilt before serving"
        status = poll_job(client, again.json()["job_id"])
    assert status["status"] == "completed", status
    for cell in cells:
        entry = store.cell_entry(cell)
        assert entry.ready and entry.region_version == new_version, cell
    new_segments = way_segments(store, "monaco")
    for new_loop in status["result"]["loops"]:
        walked = loop_segments(new_loop)
        assert not walked & dropped_segments, "a loop used the way the new extract dropped"
        assert walked <= set(new_segments), "a loop left the new extract's network"


# Deployment files


def test_dagster_yaml_matches_embedded(tmp_path: Path):
    text = (REPOSITORY / "dagster.yaml").read_text()
    deployed = yaml.safe_load(text)
    embedded = yaml.safe_load(DAGSTER_YAML)
    for key in embedded:
        assert deployed[key] == embedded[key], key
    assert deployed["telemetry"]["enabled"] is False

    # The file is a valid instance configuration once its storage paths exist.
    storage = "/var/lib/perfect10k/dagster-storage"
    assert storage in text
    (tmp_path / "dagster.yaml").write_text(text.replace(storage, str(tmp_path / "storage")))
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        # A QueuedRunCoordinator subclass, so the daemon still runs the queue.
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert isinstance(instance.run_coordinator, ImmediateRequestRunCoordinator)
        assert isinstance(instance.run_launcher, ForkServerRunLauncher)
        assert instance.get_runs() == []


def test_dockerfile_copies_existing_paths():
    lines = (REPOSITORY / "Dockerfile").read_text().splitlines()
    # Sources of COPY lines that read the build context, not an earlier stage.
    copies = [line.split()[1:-1] for line in lines if line.startswith("COPY ")]
    sources = [s for parts in copies if not parts[0].startswith("--from") for s in parts]
    assert sources
    for source in sources:
        assert (REPOSITORY / source).exists(), source
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    text = "\n".join(lines)
    assert "/api/health" in text[text.index("HEALTHCHECK") :]
    assert not any(".osm" in line for line in lines if line.startswith("COPY"))


def test_compose_services_and_volumes():
    compose = yaml.safe_load((REPOSITORY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) >= {"serving", "dagster-webserver", "dagster-daemon"}
    serving = services["serving"]
    assert serving["environment"]["PERFECT10K_DAGSTER_EMBEDDED"] == "0"
    assert serving["environment"]["PERFECT10K_DAGSTER_HOST"] == "dagster-webserver"
    assert serving["deploy"]["replicas"] >= 2
    for name in ("serving", "dagster-webserver", "dagster-daemon"):
        assert "healthcheck" in services[name], name
        assert services[name]["environment"]["DAGSTER_DISABLE_TELEMETRY"] == "1", name
    assert set(compose["volumes"]) >= {"warehouse", "dagster-storage", "state"}
    assert os.path.exists(REPOSITORY / ".dockerignore")
