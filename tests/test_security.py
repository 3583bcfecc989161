"""What keeps the server closed: no code-bearing formats, guarded admin routes, CORS off,
size and rate limits, unguessable ids.

The admin, CORS and limit checks run against a live server started with a token, one
allowed origin and small limits. The defaults are checked on the session server.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from perfect10k.settings import load_settings
from tests.conftest import MONACO_START, REPOSITORY, LiveServer, start_server

PRODUCT_PACKAGES = ("pipelines", "serving", "warehouse", "planner", "perfect10k")
# Modules that load or store executable objects (pickle and its relatives).
BANNED_MODULES = {
    "pickle", "_pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle", "jsonpickle",
    "joblib",
}
BANNED_CALLS = {"eval", "exec"}
UNSAFE_YAML = {"unsafe_load", "full_load", "unsafe_load_all", "full_load_all"}
# Routes that change state and are open to every client by design.
PUBLIC_WRITES = {
    ("POST", "/api/loops"),
    ("POST", "/api/start-route-async"),
    ("POST", "/api/routes/{route_id:str}/waypoints"),
    ("POST", "/api/routes/{route_id:str}/finalize"),
}
TOKEN = "test-admin-token-5f1c2a"
ALLOWED_ORIGIN = "https://maps.example.org"
FOREIGN_ORIGIN = "https://attacker.example.net"
SMALL_BODY_LIMIT = 2048
SMALL_RATE_LIMIT = 30
ID_PATTERN = re.compile(r"^(job|route|loop)_[A-Za-z0-9_-]{22}$")


def unsafe_uses(source: str) -> list[str]:
    """Return each use of pickle-like modules, eval/exec or unsafe YAML loading in `source`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in BANNED_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in BANNED_MODULES:
                found.append(f"from {node.module} import")
        elif isinstance(node, ast.Constant) and node.value in BANNED_MODULES:
            found.append(f"module name {node.value!r} in a string")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in BANNED_CALLS:
                found.append(f"{node.func.id}()")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if not (isinstance(owner, ast.Name) and owner.id == "yaml"):
                continue
            if node.func.attr in UNSAFE_YAML:
                found.append(f"yaml.{node.func.attr}()")
            elif node.func.attr in {"load", "load_all"}:
                loader = next((k.value for k in node.keywords if k.arg == "Loader"), None)
                if loader is None or "SafeLoader" not in ast.unparse(loader):
                    found.append(f"yaml.{node.func.attr}() without SafeLoader")
    return found


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        ("import pickle", True),
        ("from pickle import loads", True),
        ("import shelve as s", True),
        ("import marshal", True),
        ("importlib.import_module('pickle')", True),
        ("eval(text)", True),
        ("exec(code)", True),
        ("yaml.load(stream)", True),
        ("yaml.load(stream, Loader=yaml.FullLoader)", True),
        ("yaml.unsafe_load(stream)", True),
        ("yaml.load(stream, Loader=yaml.SafeLoader)", False),
        ("connection.execute('SELECT 1')", False),
        ("model.eval()", False),
        ("ast.literal_eval(text)", False),
        ('"""Snapshots hold no pickle."""', False),
    ],
)
def test_unsafe_use_checker(source: str, flagged: bool):
    assert bool(unsafe_uses(source)) is flagged


def test_product_has_no_code_bearing_formats():
    files = [
        path for package in PRODUCT_PACKAGES for path in (REPOSITORY / package).rglob("*.py")
    ]
    assert len(files) > 20
    found = {
        str(path.relative_to(REPOSITORY)): uses
        for path in files
        if (uses := unsafe_uses(path.read_text(encoding="utf-8")))
    }
    assert found == {}


def test_defaults_are_safe(monkeypatch: pytest.MonkeyPatch):
    for name in (
        "PERFECT10K_CORS_ORIGINS", "PERFECT10K_ADMIN_TOKEN", "PERFECT10K_MAX_BODY_BYTES",
        "PERFECT10K_RATE_LIMIT_PER_MINUTE", "PERFECT10K_HOST",
    ):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.cors_origins == ()
    assert settings.admin_token == ""
    assert 0 < settings.max_body_bytes <= 1024 * 1024
    assert 0 < settings.rate_limit_per_minute <= 10_000
    assert settings.host == "127.0.0.1"


def test_hidden_writes_need_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Routes left out of the OpenAPI schema follow the same rule as documented ones."""
    from serving.app import create_app

    monkeypatch.setenv("PERFECT10K_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("PERFECT10K_ADMIN_TOKEN", raising=False)
    open_app = create_app(load_settings())
    monkeypatch.setenv("PERFECT10K_ADMIN_TOKEN", TOKEN)
    guarded_app = create_app(load_settings())

    def writes(app) -> dict[tuple[str, str], list]:
        found = {}
        for route in app.routes:
            for handler in getattr(route, "route_handlers", []):
                for method in handler.http_methods & {"POST", "PUT", "PATCH", "DELETE"}:
                    found[(method, route.path)] = handler.resolve_guards()
        return found

    open_writes = writes(open_app)
    assert set(open_writes) <= PUBLIC_WRITES, set(open_writes) - PUBLIC_WRITES
    guarded_writes = writes(guarded_app)
    extra = {key: guards for key, guards in guarded_writes.items() if key not in PUBLIC_WRITES}
    assert extra, "the admin routes were not registered with a token"
    assert all(guards for guards in extra.values()), extra


# The session server runs with the defaults


def test_writes_are_public_only_by_design(server: LiveServer):
    """Every state-changing route outside PUBLIC_WRITES is absent without an admin token."""
    with server.client() as client:
        schema = client.get("/schema/openapi.json").json()
        admin = client.post("/api/admin/warm", json={"lat": 43.74, "lon": 7.42})
    writes = {
        (method.upper(), re.sub(r"\{(\w+)\}", r"{\1:str}", path))
        for path, operations in schema["paths"].items()
        for method in operations
        if method.upper() in {"POST", "PUT", "PATCH", "DELETE"}
    }
    assert writes <= PUBLIC_WRITES, writes - PUBLIC_WRITES
    assert admin.status_code in {404, 405}, admin.text


def test_cors_off_by_default(server: LiveServer):
    lat, lon = MONACO_START
    with server.client() as client:
        simple = client.post(
            "/api/loops",
            json={"lat": lat, "lon": lon, "target_distance": 2000},
            headers={"Origin": FOREIGN_ORIGIN},
        )
        preflight = client.options(
            "/api/loops",
            headers={"Origin": FOREIGN_ORIGIN, "Access-Control-Request-Method": "POST"},
        )
    assert simple.status_code == 200, simple.text
    assert "access-control-allow-origin" not in simple.headers
    assert "access-control-allow-origin" not in preflight.headers


def test_ids_are_unguessable(server: LiveServer):
    lat, lon = MONACO_START
    with server.client() as client:
        loops = client.post(
            "/api/loops", json={"lat": lat, "lon": lon, "target_distance": 2000}
        ).json()["loops"]
        routes = [
            client.post(
                "/api/start-route-async", json={"lat": lat, "lon": lon, "target_distance": 2000}
            ).json()["route_id"]
            for _ in range(3)
        ]
    ids = [loop["loop_id"] for loop in loops] + routes
    assert len(set(ids)) == len(ids)
    for identifier in ids:
        # 22 base64url characters carry 132 random bits.
        assert ID_PATTERN.match(identifier), identifier


# A server with an admin token, one allowed origin and small limits


@pytest.fixture(scope="module")
def guarded_server(sample_data: Path) -> Iterator[LiveServer]:
    live = start_server(
        sample_data,
        "guarded-server.log",
        PERFECT10K_DAGSTER_EMBEDDED="0",
        PERFECT10K_ADMIN_TOKEN=TOKEN,
        PERFECT10K_CORS_ORIGINS=ALLOWED_ORIGIN,
        PERFECT10K_MAX_BODY_BYTES=str(SMALL_BODY_LIMIT),
        PERFECT10K_RATE_LIMIT_PER_MINUTE=str(SMALL_RATE_LIMIT),
    )
    yield live
    live.stop()


def client_from(server: LiveServer, address: str) -> httpx.Client:
    """Return a client whose requests come from `address`, a loopback address of its own."""
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=server.base_url, timeout=60, transport=transport)


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer wrong", f"Bearer {TOKEN}x", f"bearer{TOKEN}", TOKEN],
)
def test_admin_rejects_bad_token(guarded_server: LiveServer, authorization: str | None):
    headers = {} if authorization is None else {"Authorization": authorization}
    with client_from(guarded_server, "127.0.0.11") as client:
        response = client.post(
            "/api/admin/warm", json={"lat": 43.74, "lon": 7.42, "radius_m": 500}, headers=headers
        )
    assert response.status_code == 401, response.text
    assert response.headers.get("www-authenticate") == "Bearer"
    assert TOKEN not in response.text


def test_admin_accepts_token(guarded_server: LiveServer):
    lat, lon = MONACO_START
    with client_from(guarded_server, "127.0.0.12") as client:
        response = client.post(
            "/api/admin/warm",
            json={"lat": lat, "lon": lon, "radius_m": 500},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    # Monaco is built, so nothing needs Dagster, which this server does not reach.
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["cells_covered"] >= 1
    assert body["cells_ready"] == body["cells_covered"]
    assert body["run_id"] is None


def test_cors_allows_configured_origin_only(guarded_server: LiveServer):
    with client_from(guarded_server, "127.0.0.13") as client:
        allowed = client.get("/api/regions", headers={"Origin": ALLOWED_ORIGIN})
        foreign = client.get("/api/regions", headers={"Origin": FOREIGN_ORIGIN})
    assert allowed.headers.get("access-control-allow-origin") == ALLOWED_ORIGIN
    assert "access-control-allow-origin" not in foreign.headers


def test_body_limit_is_configurable(guarded_server: LiveServer):
    lat, lon = MONACO_START
    preference = "p" * (SMALL_BODY_LIMIT + 100)
    with client_from(guarded_server, "127.0.0.14") as client:
        response = client.post(
            "/api/loops", json={"lat": lat, "lon": lon, "preference": preference}
        )
    assert response.status_code == 413, response.text
    assert f"{SMALL_BODY_LIMIT} bytes" in response.json()["detail"]


def test_rate_limit_per_client(guarded_server: LiveServer):
    with client_from(guarded_server, "127.0.0.15") as client:
        answers = [client.get("/api/regions") for _ in range(SMALL_RATE_LIMIT + 1)]
        health = client.get("/api/health")
    with client_from(guarded_server, "127.0.0.16") as other:
        fresh = other.get("/api/regions")
    assert all(answer.status_code == 200 for answer in answers[:SMALL_RATE_LIMIT])
    limited = answers[-1]
    assert limited.status_code == 429, limited.text
    assert int(limited.headers["Retry-After"]) >= 0
    assert "PERFECT10K_RATE_LIMIT_PER_MINUTE" in limited.json()["detail"]
    assert health.status_code == 200, "the health check must not be rate limited"
    assert fresh.status_code == 200, "another client must keep its own budget"
