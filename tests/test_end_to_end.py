"""The whole path on real extracts: import, Dagster builds, the live server, cached and cold."""

from __future__ import annotations

import itertools
import json
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor

import httpx
import pyarrow.parquet as pq
import pytest

from tests.conftest import ANDORRA_START, MONACO_START, LiveServer, finalized_route
from warehouse import Warehouse

GPX_NS = {"gpx": "http://www.topografix.com/GPX/1/1"}


def network_segments(warehouse: Warehouse, region: str) -> set[tuple]:
    """Return every geometry segment of the region's walkable edges, both directions."""
    edges = pq.read_table(warehouse.region_table_path(region, "edges"), columns=["lon", "lat"])
    segments = set()
    for lons, lats in zip(edges.column("lon").to_pylist(), edges.column("lat").to_pylist()):
        points = [(round(lon, 6), round(lat, 6)) for lon, lat in zip(lons, lats)]
        for a, b in itertools.pairwise(points):
            segments.add((a, b))
            segments.add((b, a))
    return segments


def assert_valid_loop(loop: dict, target: float, segments: set[tuple], tolerance: float) -> None:
    coordinates = [tuple(point) for point in loop["geometry"]["coordinates"]]
    assert loop["geometry"]["type"] == "LineString"
    assert coordinates[0] == coordinates[-1], "loop is not closed"
    assert abs(loop["distance_m"] - target) <= tolerance * target, loop["distance_m"]
    off_network = [
        (a, b) for a, b in itertools.pairwise(coordinates) if a != b and (a, b) not in segments
    ]
    assert not off_network, f"{len(off_network)} steps leave the walking network"


def poll_job(client, job_id: str, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    seen = set()
    while time.monotonic() < deadline:
        response = client.get(f"/api/job-status/{job_id}")
        assert response.status_code == 200, response.text
        body = response.json()
        seen.add(body["status"])
        assert 0.0 <= body["progress"] <= 1.0
        if body["status"] in {"completed", "failed"}:
            body["seen"] = seen
            return body
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish within {timeout_s} s; saw {seen}")


def test_import_registers_regions(sample_data):
    regions = Warehouse(sample_data / "warehouse").regions()
    assert set(regions) == {"monaco", "andorra"}
    assert len(regions["monaco"]["cells"]) >= 3
    assert regions["andorra"]["stats"]["edges"] > 5000


def test_monaco_cells_built_through_dagster(sample_data):
    warehouse = Warehouse(sample_data / "warehouse")
    entries = warehouse.cell_entries()
    monaco_cells = set(warehouse.regions()["monaco"]["cells"])
    assert monaco_cells <= set(entries)
    assert all(entries[cell].ready for cell in monaco_cells)


def test_cached_loop_in_monaco(server: LiveServer):
    lat, lon = MONACO_START
    with server.client() as client:
        response = client.post(
            "/api/loops", json={"lat": lat, "lon": lon, "target_distance": 5000}
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["response_type"] == "cached"
    assert body["region"] == "monaco"
    assert len(body["loops"]) >= 1
    segments = network_segments(Warehouse(server.data_dir / "warehouse"), "monaco")
    for loop in body["loops"]:
        assert_valid_loop(loop, 5000, segments, tolerance=0.15)
        assert loop["shape"] == "loop", loop["stem_share"]
        assert 0.0 <= loop["stem_share"] < 0.2


def test_loop_gpx_is_valid(server: LiveServer):
    lat, lon = MONACO_START
    with server.client() as client:
        body = client.post(
            "/api/loops", json={"lat": lat, "lon": lon, "target_distance": 3000, "seed": 7}
        ).json()
        loop = body["loops"][0]
        response = client.get(loop["gpx_url"])
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/gpx+xml")
    root = ET.fromstring(response.text)
    points = root.findall(".//gpx:trkpt", GPX_NS)
    assert len(points) == len(loop["geometry"]["coordinates"])
    first, last = points[0].attrib, points[-1].attrib
    assert (first["lat"], first["lon"]) == (last["lat"], last["lon"])
    assert "OpenStreetMap contributors" in response.text


def test_cold_area_answers_202_then_completes(server: LiveServer):
    lat, lon = ANDORRA_START
    request = {"lat": lat, "lon": lon, "target_distance": 5000, "seed": 3}
    with server.client() as client:
        response = client.post("/api/loops", json=request)
        assert response.status_code == 202, response.text
        accepted = response.json()
        assert accepted["response_type"] == "async"
        again = client.post("/api/loops", json=request).json()
        assert again["job_id"] == accepted["job_id"], "identical misses must share one job"
        status = poll_job(client, accepted["job_id"])
        assert status["status"] == "completed", status
        assert status["result"]["response_type"] == "cached"
        cached = client.post("/api/loops", json=request)
    assert cached.status_code == 200
    segments = network_segments(Warehouse(server.data_dir / "warehouse"), "andorra")
    for loop in status["result"]["loops"]:
        assert_valid_loop(loop, 5000, segments, tolerance=0.15)


def test_interactive_route_to_gpx(server: LiveServer):
    lat, lon = MONACO_START
    with server.client() as client:
        response = client.post(
            "/api/start-route-async",
            json={"lat": lat, "lon": lon, "target_distance": 3000, "preference": "parks"},
        )
        assert response.status_code == 200, response.text
        started = response.json()
        assert started["response_type"] == "cached"
        route_id = started["route_id"]
        candidates = started["candidates"]
        assert len(candidates) == 3
        for candidate in candidates:
            assert 0.0 <= candidate["score"] <= 1.0
            assert candidate["reason"]
            assert set(candidate["features"]) >= {"green", "water", "quiet"}

        step = client.post(
            f"/api/routes/{route_id}/waypoints",
            json={"candidate_id": candidates[0]["candidate_id"]},
        )
        assert step.status_code == 200, step.text
        assert step.json()["distance_m"] > 0
        assert len(step.json()["candidates"]) >= 1

        final = client.post(f"/api/routes/{route_id}/finalize")
        assert final.status_code == 200, final.text
        route = final.json()
        assert route["status"] == "finalized"
        assert route["steps"] == round(route["distance_m"] / 0.8)
        coordinates = route["geometry"]["coordinates"]
        assert coordinates[0] == coordinates[-1]

        again = client.post(f"/api/routes/{route_id}/finalize")
        assert again.status_code == 409
        assert again.json()["field"] == "route_id"
        late = client.post(
            f"/api/routes/{route_id}/waypoints",
            json={"candidate_id": candidates[1]["candidate_id"]},
        )
        assert late.status_code == 409
        gpx = client.get(route["gpx_url"])
    assert gpx.status_code == 200
    ET.fromstring(gpx.text)


def test_health_serves_get_and_head(server: LiveServer):
    with server.client() as client:
        # Dagster may still be starting when the server first responds.
        deadline = time.monotonic() + 90
        get = client.get("/api/health")
        while get.json()["dagster"] != "ok" and time.monotonic() < deadline:
            time.sleep(1)
            get = client.get("/api/health")
        head = client.head("/api/health")
    assert get.status_code == 200, get.text
    assert get.json()["status"] == "ok"
    assert get.json()["dagster"] == "ok"
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    assert int(head.headers["content-length"]) > 0


def test_get_endpoints_serve_head(server: LiveServer):
    lat, lon = MONACO_START
    with server.client() as client:
        loop = client.post(
            "/api/loops", json={"lat": lat, "lon": lon, "target_distance": 3000, "seed": 7}
        ).json()["loops"][0]
        route_id = finalized_route(client, lat, lon, 3)
        paths = [
            "/",
            "/api/config",
            "/api/regions",
            "/api/overlays?bbox=7.42,43.733,7.426,43.738",
            f"/api/routes/{route_id}",
            f"/api/routes/{route_id}/gpx",
            loop["gpx_url"],
            "/api/job-status/job_unknown123",
        ]
        for path in paths:
            get = client.get(path)
            head = client.head(path)
            assert get.status_code in {200, 404}, f"{path}: {get.text}"
            assert head.status_code == get.status_code, path
            assert head.content == b"", path
            assert head.headers["content-type"] == get.headers["content-type"], path
            assert head.headers["content-length"] == str(len(get.content)), path
        # Litestar's static files router responds to HEAD without a Content-Type.
        static = client.head("/static/app.js")
    assert static.status_code == 200
    assert static.content == b""
    assert int(static.headers["content-length"]) > 0


def test_waypoint_retry_returns_same_route(server: LiveServer):
    lat, lon = MONACO_START
    with server.client() as client:
        started = client.post(
            "/api/start-route-async", json={"lat": lat, "lon": lon, "target_distance": 3000}
        ).json()
        url = f"/api/routes/{started['route_id']}/waypoints"
        first = started["candidates"][0]["candidate_id"]
        step = client.post(url, json={"candidate_id": first})
        retry = client.post(url, json={"candidate_id": first})
        stored = client.get(f"/api/routes/{started['route_id']}")
    assert step.status_code == 200, step.text
    assert retry.status_code == 200, retry.text
    assert retry.json() == step.json()
    assert len(stored.json()["waypoints"]) == 1
    assert stored.json()["distance_m"] == step.json()["distance_m"]
    assert stored.json()["candidates"] == step.json()["candidates"]


def test_waypoint_concurrent_repeats_succeed(server: LiveServer):
    lat, lon = MONACO_START
    with server.client() as client:
        started = client.post(
            "/api/start-route-async",
            json={"lat": lat, "lon": lon, "target_distance": 3000, "seed": 3},
        ).json()
    url = f"{server.base_url}/api/routes/{started['route_id']}/waypoints"
    body = {"candidate_id": started["candidates"][0]["candidate_id"]}
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda _: httpx.post(url, json=body, timeout=60), range(4)))
    with server.client() as client:
        stored = client.get(f"/api/routes/{started['route_id']}").json()
    assert [answer.status_code for answer in answers] == [200] * 4, [a.text for a in answers]
    assert all(answer.json() == answers[0].json() for answer in answers)
    assert len(stored["waypoints"]) == 1


def test_waypoint_not_offered_is_rejected(server: LiveServer):
    lat, lon = MONACO_START
    with server.client() as client:
        route_id = client.post(
            "/api/start-route-async", json={"lat": lat, "lon": lon, "target_distance": 3000}
        ).json()["route_id"]
        response = client.post(
            f"/api/routes/{route_id}/waypoints", json={"candidate_id": "not-offered"}
        )
    assert response.status_code == 422
    assert "not offered" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"lat": 91, "lon": 7.42}, "lat"),
        ({"lat": 43.74, "lon": -181}, "lon"),
        ({"lat": 43.74, "lon": 7.42, "target_distance": 10}, "target_distance"),
        ({"lat": 43.74, "lon": 7.42, "target_distance": 1e9}, "target_distance"),
        ({"lat": "north", "lon": 7.42}, "lat"),
        ({"lon": 7.42}, "lat"),
    ],
)
def test_invalid_loop_request_is_400(server: LiveServer, body: dict, needle: str):
    with server.client() as client:
        response = client.post("/api/loops", json=body)
    assert response.status_code == 400, response.text
    assert needle in response.text


@pytest.mark.parametrize(
    "raw",
    [
        '{"lat": NaN, "lon": 7.42}',
        '{"lat": Infinity, "lon": 7.42}',
        '{"lat": 43.74, "lon": 7.42',
        "not json",
    ],
)
def test_malformed_json_is_400(server: LiveServer, raw: str):
    with server.client() as client:
        response = client.post(
            "/api/loops", content=raw, headers={"content-type": "application/json"}
        )
    assert response.status_code == 400, response.text
    assert json.loads(response.text)["detail"]


def test_start_far_from_regions_is_422(server: LiveServer):
    with server.client() as client:
        response = client.post("/api/loops", json={"lat": 0.0, "lon": 0.0})
    assert response.status_code == 422
    assert "No imported region covers" in response.json()["detail"]


def test_unknown_ids_are_404(server: LiveServer):
    with server.client() as client:
        job = client.get("/api/job-status/job_doesnotexist")
        route = client.get("/api/routes/route_doesnotexist")
        loop = client.get("/api/loops/loop_doesnotexist/gpx")
    assert job.status_code == 404
    assert "job_id" in job.json()["detail"]
    assert route.status_code == 404
    assert loop.status_code == 404


def test_openapi_schema_is_served(server: LiveServer):
    with server.client() as client:
        schema = client.get("/schema/openapi.json").json()
    assert "/api/loops" in schema["paths"]
    assert "/api/job-status/{job_id}" in schema["paths"]
