"""Shared fixtures: real extracts, a temporary warehouse and Dagster home, a live server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
OSM_DIR = REPOSITORY.parent / "shared" / "osm"
MONACO = OSM_DIR / "monaco-2021-04-21.osm.pbf"
ANDORRA = OSM_DIR / "andorra-2021-04-14.osm.pbf"
HEIDELBERG = OSM_DIR / "heidelberg-2024-09-08-routing.osm.pbf"
VANCOUVER = OSM_DIR / "vancouver-2015-05-02-clipped.osm.pbf"

# A street in Monaco (Boulevard des Moulins) and the centre of Andorra la Vella.
MONACO_START = (43.7400, 7.4250)
ANDORRA_START = (42.5078, 1.5211)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def perfect10k_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """Return an environment that points every Perfect10k path at `data_dir`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PERFECT10K_") and key != "DAGSTER_HOME"
    }
    env.update(
        {
            "PERFECT10K_DATA_DIR": str(data_dir),
            "DAGSTER_HOME": str(data_dir / "dagster"),
            "DAGSTER_DISABLE_TELEMETRY": "1",
            "PERFECT10K_WORKERS": "1",
        }
    )
    env.update(extra)
    return env


def run_cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the `perfect10k` command and fail the test with its output when it fails."""
    result = subprocess.run(
        [sys.executable, "-m", "perfect10k.cli", *args],
        check=False,
        env=env,
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"perfect10k {' '.join(args)} failed:\n{result.stderr}"
    return result


@dataclass
class LiveServer:
    """A `perfect10k serve` process with its own warehouse, Dagster home and ports."""

    base_url: str
    data_dir: Path
    env: dict[str, str]
    process: subprocess.Popen

    def client(self, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def finalized_route(client: httpx.Client, lat: float, lon: float, seed: int) -> str:
    """Start a 3 km route at (lat, lon), walk to its first candidate and finalize it.

    Returns the route id.
    """
    started = client.post(
        "/api/start-route-async",
        json={"lat": lat, "lon": lon, "target_distance": 3000, "seed": seed},
    ).json()
    route_id = started["route_id"]
    first = started["candidates"][0]["candidate_id"]
    step = client.post(f"/api/routes/{route_id}/waypoints", json={"candidate_id": first})
    assert step.status_code == 200, step.text
    closed = client.post(f"/api/routes/{route_id}/finalize")
    assert closed.status_code == 200, closed.text
    return route_id


def start_server(data_dir: Path, log_name: str = "server.log", **extra: str) -> LiveServer:
    """Start `perfect10k serve` with embedded Dagster and wait until it responds."""
    port = free_port()
    env = perfect10k_env(
        data_dir,
        PERFECT10K_PORT=str(port),
        PERFECT10K_DAGSTER_PORT=str(free_port()),
        **extra,
    )
    # The server writes to the log for its whole life, so no context manager closes it here.
    log = open(data_dir / log_name, "ab")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "perfect10k.cli", "serve"],
        env=env,
        cwd=REPOSITORY,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = LiveServer(f"http://127.0.0.1:{port}", data_dir, env, process)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited; see {data_dir / log_name}")
        try:
            if httpx.get(f"{server.base_url}/api/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"server did not answer within 120 s; see {data_dir / log_name}")


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with Monaco and Andorra imported and Monaco's cells built."""
    data_dir = tmp_path_factory.mktemp("perfect10k-data")
    env = perfect10k_env(data_dir)
    run_cli(env, "import", str(MONACO))
    run_cli(env, "import", str(ANDORRA))
    run_cli(env, "materialize", "--region", "monaco")
    return data_dir


@pytest.fixture(scope="session")
def server(sample_data: Path) -> Iterator[LiveServer]:
    """The real server on loopback over the sample data, with Dagster beside it."""
    live = start_server(sample_data)
    yield live
    live.stop()
