"""The web map's HTTP side: overlays read from built cells, bbox checks, the page and config."""

from __future__ import annotations

import collections
from html.parser import HTMLParser

import h3
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import shapely
from litestar.testing import TestClient

from perfect10k.settings import load_settings
from serving.app import create_app
from serving.web import (
    MAX_AREA_FEATURES,
    MAX_OVERLAY_AREA_DEG2,
    MAX_SCORE_FEATURES,
    cell_bounds,
    content_security_policy,
    parse_bbox,
)
from tests.conftest import ANDORRA_START, LiveServer, perfect10k_env
from warehouse import Warehouse
from warehouse.schema import FEATURE_NAMES

AREA_KINDS = {"park", "green", "forest", "water", "waterway", "coastline"}
# All of Monaco's built cells, and a few streets of it with fewer edges than the score limit.
MONACO_BBOX = (7.405, 43.723, 7.441, 43.753)
SMALL_BBOX = (7.4200, 43.7330, 7.4260, 43.7380)
# Starts that other tests send to the server: cells near them may be built during the run.
KNOWN_STARTS = [ANDORRA_START, (42.5440, 1.7330), (42.6180, 1.5390), (42.4650, 1.4900)]


def bbox_text(bbox: tuple[float, ...]) -> str:
    return ",".join(str(value) for value in bbox)


def get_overlays(server: LiveServer, bbox: tuple[float, ...], **params) -> dict:
    with server.client() as client:
        response = client.get("/api/overlays", params={"bbox": bbox_text(bbox), **params})
    assert response.status_code == 200, response.text
    return response.json()


def split_layers(body: dict) -> tuple[list[dict], list[dict]]:
    areas = [f for f in body["features"] if f["properties"]["layer"] == "area"]
    scores = [f for f in body["features"] if f["properties"]["layer"] == "score"]
    assert len(areas) + len(scores) == len(body["features"]), "a feature has an unknown layer"
    return areas, scores


def within(bbox: tuple[float, ...], lon: float, lat: float, margin: float = 1e-6) -> bool:
    return (
        bbox[0] - margin <= lon <= bbox[2] + margin and bbox[1] - margin <= lat <= bbox[3] + margin
    )


def ready_files(server: LiveServer) -> list[dict]:
    warehouse = Warehouse(server.data_dir / "warehouse")
    return [warehouse.cell_files(e) for e in warehouse.cell_entries().values() if e.ready]


def test_overlays_cover_monaco(server: LiveServer):
    body = get_overlays(server, MONACO_BBOX)
    assert body["type"] == "FeatureCollection"
    assert body["bbox"] == list(MONACO_BBOX)
    assert body["cells"] >= 3
    areas, scores = split_layers(body)
    assert len(areas) <= MAX_AREA_FEATURES
    assert len(scores) <= MAX_SCORE_FEATURES
    kinds = collections.Counter(f["properties"]["kind"] for f in areas)
    assert set(kinds) <= AREA_KINDS
    assert kinds["park"] > 0, kinds
    assert kinds["water"] + kinds["coastline"] > 0, kinds
    for feature in areas:
        geometry = shapely.geometry.shape(feature["geometry"])
        assert not geometry.is_empty
        min_lon, min_lat, max_lon, max_lat = geometry.bounds
        assert within(MONACO_BBOX, min_lon, min_lat)
        assert within(MONACO_BBOX, max_lon, max_lat)
    # Monaco has more edges than the limit, so the scores are an even sample of them.
    assert body["scores_truncated"] is True
    assert len(scores) == MAX_SCORE_FEATURES
    for feature in scores:
        assert feature["geometry"]["type"] == "Point"
        assert within(MONACO_BBOX, *feature["geometry"]["coordinates"])
        for name in FEATURE_NAMES:
            assert 0.0 <= feature["properties"][name] <= 1.0


def test_overlay_scores_match_warehouse(server: LiveServer):
    body = get_overlays(server, SMALL_BBOX)
    _, scores = split_layers(body)
    assert body["scores_truncated"] is False

    expected: dict[tuple[float, float], dict[str, float]] = {}
    for files in ready_files(server):
        edges = pq.read_table(files["edges"], columns=["edge_id", "mid_lon", "mid_lat"])
        inside = pc.and_(
            pc.and_(
                pc.greater_equal(edges["mid_lon"], SMALL_BBOX[0]),
                pc.less_equal(edges["mid_lon"], SMALL_BBOX[2]),
            ),
            pc.and_(
                pc.greater_equal(edges["mid_lat"], SMALL_BBOX[1]),
                pc.less_equal(edges["mid_lat"], SMALL_BBOX[3]),
            ),
        )
        edges = edges.filter(inside)
        features = pq.read_table(files["edge_features"]).to_pylist()
        by_edge = {row["edge_id"]: row for row in features}
        for edge in edges.to_pylist():
            point = (round(edge["mid_lon"], 6), round(edge["mid_lat"], 6))
            expected[point] = by_edge[edge["edge_id"]]
    assert len(expected) > 20, "the small box should hold some streets"
    served = {tuple(f["geometry"]["coordinates"]): f["properties"] for f in scores}
    assert set(served) == set(expected)
    for point, properties in served.items():
        for name in FEATURE_NAMES:
            assert properties[name] == pytest.approx(expected[point][name], abs=0.006)


def test_overlay_areas_match_warehouse(server: LiveServer):
    body = get_overlays(server, SMALL_BBOX, scores="false")
    areas, scores = split_layers(body)
    assert scores == [], "scores=false must leave the scores out"
    assert body["areas_truncated"] is False

    box = shapely.box(*SMALL_BBOX)
    touching: collections.Counter = collections.Counter()
    clearly_inside: collections.Counter = collections.Counter()
    for files in ready_files(server):
        for row in pq.read_table(files["areas"]).to_pylist():
            clipped = shapely.from_wkb(row["wkb"]).intersection(box)
            if clipped.is_empty:
                continue
            key = (row["kind"], row["name"])
            touching[key] += 1
            # Slivers of a few square metres may vanish on the 1e-6 degree grid.
            if clipped.area > 1e-8 or (clipped.area == 0 and clipped.length > 1e-4):
                clearly_inside[key] += 1
    served = collections.Counter((f["properties"]["kind"], f["properties"]["name"]) for f in areas)
    assert sum(clearly_inside.values()) > 0, "the small box should touch a park or water"
    assert served <= touching, served - touching
    assert clearly_inside <= served, clearly_inside - served


def far_unbuilt_cell(server: LiveServer) -> str:
    """Return the unbuilt Andorra cell farthest from every start the tests send."""
    warehouse = Warehouse(server.data_dir / "warehouse")
    built = set(warehouse.cell_entries())
    candidates = [c for c in warehouse.regions()["andorra"]["cells"] if c not in built]
    assert candidates, "every Andorra cell is built; the sample should leave most unbuilt"

    def distance_to_starts(cell: str) -> float:
        lat, lon = h3.cell_to_latlng(cell)
        return min(h3.great_circle_distance((lat, lon), start, unit="km") for start in KNOWN_STARTS)

    return max(candidates, key=distance_to_starts)


def test_overlays_skip_unbuilt_cells(server: LiveServer):
    cell = far_unbuilt_cell(server)
    lat, lon = h3.cell_to_latlng(cell)
    bbox = (lon - 0.003, lat - 0.003, lon + 0.003, lat + 0.003)
    body = get_overlays(server, bbox)
    assert body["cells"] == 0
    assert body["features"] == []
    assert Warehouse(server.data_dir / "warehouse").cell_entry(cell) is None, (
        "an overlay request must not build cells"
    )


@pytest.mark.parametrize(
    ("bbox", "message"),
    [
        ("", "expected 4 comma-separated numbers"),
        ("7.4,43.7,7.5", "expected 4 comma-separated numbers"),
        ("7.4,43.7,7.5,43.8,1", "expected 4 comma-separated numbers"),
        ("west,43.7,7.5,43.8", "'west' is not a number"),
        ("nan,43.7,7.5,43.8", "'nan' is not a number"),
        ("7.4,43.7,inf,43.8", "'inf' is not a number"),
        ("1_0,43.73,7.43,43.74", "'1_0' is not a number; each of the 4 must be a decimal"),
        ("7.4,43.7,7. 5,43.8", "'7. 5' is not a number"),
        ("7.4,43.7,0x1p3,43.8", "'0x1p3' is not a number"),
        ("7.4,43.7,1e999,43.8", "'1e999' is not a finite number"),
        ("-181,43.7,-180.9,43.8", "min_lon -181.0 is out of range -180 to 180 degrees"),
        ("7.4,43.7,7.5,90.5", "max_lat 90.5 is out of range -90 to 90 degrees"),
        ("7.5,43.7,7.4,43.8", "is not ordered"),
        ("7.4,43.8,7.5,43.8", "is not ordered"),
        ("7.0,43.0,8.0,44.0", f"more than the maximum of {MAX_OVERLAY_AREA_DEG2}"),
    ],
)
def test_overlays_reject_bad_bbox(server: LiveServer, bbox: str, message: str):
    with server.client() as client:
        response = client.get("/api/overlays", params={"bbox": bbox})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["field"] == "bbox"
    assert body["value"] == bbox
    assert "-180 to 180" in body["allowed"]
    assert f"bbox {bbox!r} is invalid" in body["detail"]
    assert message in body["detail"]


@pytest.mark.parametrize(
    ("bbox", "expected"),
    [
        (" 7.42, 43.733 ,7.426,43.738 ", (7.42, 43.733, 7.426, 43.738)),
        ("+7.42,43.733,7.426,.43738e2", (7.42, 43.733, 7.426, 43.738)),
        ("742E-2,43.733,7.426,43.738", (7.42, 43.733, 7.426, 43.738)),
    ],
)
def test_parse_bbox_accepts_decimal_forms(bbox: str, expected: tuple[float, ...]):
    assert parse_bbox(bbox) == pytest.approx(expected)


@pytest.mark.parametrize("scores", ["maybe", "2", ""])
def test_overlays_reject_bad_scores(server: LiveServer, scores: str):
    with server.client() as client:
        response = client.get(
            "/api/overlays", params={"bbox": bbox_text(SMALL_BBOX), "scores": scores}
        )
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["field"] == "scores"
    assert body["value"] == scores
    assert body["allowed"] == "true or false"
    assert f"Invalid scores={scores!r}" in body["detail"]
    assert "true or false" in body["detail"]


def test_overlays_require_bbox(server: LiveServer):
    with server.client() as client:
        response = client.get("/api/overlays")
    assert response.status_code == 400
    assert "bbox" in response.json()["detail"]
    assert response.json()["field"] == "bbox"


class AssetParser(HTMLParser):
    """Collect the URLs of scripts and stylesheets a page loads."""

    def __init__(self) -> None:
        super().__init__()
        self.assets: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script" and values.get("src"):
            self.assets.append(values["src"])
        if tag == "link" and values.get("rel") == "stylesheet":
            self.assets.append(values["href"])


def test_page_loads_only_local_assets(server: LiveServer):
    with server.client() as client:
        page = client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp
        assert "img-src 'self' data: https://tile.openstreetmap.org" in csp
        parser = AssetParser()
        parser.feed(page.text)
        assert len(parser.assets) == 4, parser.assets
        for asset in parser.assets:
            assert asset.startswith("/static/"), f"{asset} does not come from this server"
            assert client.get(asset).status_code == 200, asset
        leaflet = client.get("/static/vendor/leaflet/leaflet.js").text
        assert 't.version="1.9.4"' in leaflet
        license_text = client.get("/static/vendor/leaflet/LICENSE")
        assert license_text.status_code == 200
        assert "BSD 2-Clause License" in license_text.text
        for image in ("marker-icon.png", "marker-shadow.png", "layers.png"):
            assert client.get(f"/static/vendor/leaflet/images/{image}").status_code == 200
        assert client.get("/static/%2e%2e/web.py").status_code == 404
        assert client.get("/static/missing.js").status_code == 404


def test_config_reads_tile_url(tmp_path, monkeypatch):
    tile_url = "https://{s}.tiles.example.org/{z}/{x}/{y}.png"
    for key, value in perfect10k_env(tmp_path, PERFECT10K_TILE_URL=tile_url).items():
        if key.startswith("PERFECT10K_") or key == "DAGSTER_HOME":
            monkeypatch.setenv(key, value)
    with TestClient(app=create_app(load_settings())) as client:
        config = client.get("/api/config").json()
        csp = client.get("/").headers["content-security-policy"]
    assert config["tile_url"] == tile_url
    assert "OpenStreetMap" in config["attribution"]
    assert config["min_distance_m"] == 1000
    assert config["max_distance_m"] == 25000
    assert config["step_length_m"] == 0.8
    assert config["overlay_max_area_deg2"] == MAX_OVERLAY_AREA_DEG2
    assert "img-src 'self' data: https://*.tiles.example.org" in csp


@pytest.mark.parametrize(
    ("tile_url", "image_sources"),
    [
        (
            "https://tile.openstreetmap.org/{z}/{x}/{y}.png",
            "'self' data: https://tile.openstreetmap.org",
        ),
        ("https://{s}.tile.example.org/{z}/{x}/{y}.png", "'self' data: https://*.tile.example.org"),
        ("https://{server}.example.org/{z}/{x}/{y}.png", "'self' data: https:"),
        ("http://127.0.0.1:8080/{z}/{x}/{y}.png", "'self' data: http://127.0.0.1:8080"),
        ("/tiles/{z}/{x}/{y}.png", "'self' data:"),
    ],
)
def test_csp_allows_tile_host(tile_url: str, image_sources: str):
    csp = content_security_policy(tile_url)
    directives = dict(part.split(" ", 1) for part in csp.split("; "))
    assert directives["img-src"] == image_sources
    assert directives["script-src"] == "'self'"
    assert directives["connect-src"] == "'self'"


def test_cell_bounds_contain_cell():
    cell = h3.latlng_to_cell(43.74, 7.425, 7)
    min_lon, min_lat, max_lon, max_lat = cell_bounds(cell)
    lat, lon = h3.cell_to_latlng(cell)
    assert min_lon < lon < max_lon
    assert min_lat < lat < max_lat
    # A res-7 cell is about 2.8 km across: 0.02 to 0.05 degrees here.
    assert 0.02 < max_lon - min_lon < 0.05
    assert 0.015 < max_lat - min_lat < 0.04
