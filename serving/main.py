"""Run the server, and on one machine a Dagster webserver and daemon beside it."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from perfect10k.settings import Settings
from serving.dagster_client import EXIT_FILE_ENV

log = logging.getLogger(__name__)

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
WORKSPACE = REPOSITORY_ROOT / "workspace.yaml"
DAGSTER_START_TIMEOUT_S = 90.0
# The webserver and daemon stop within a few seconds of SIGTERM on an idle machine.
DAGSTER_STOP_GRACE_S = 10.0
PR_SET_PDEATHSIG = 1
# The code location and the daemon's run queue. The daemon health query also makes the
# webserver create its run coordinator, which starts the run workers' fork server
# (pipelines/run_launch.py) while the rest of Dagster starts.
READY_QUERY = (
    '{ repositoryOrError(repositorySelector: {repositoryLocationName: "perfect10k", '
    'repositoryName: "__repository__"}) { __typename } '
    "instance { daemonHealth { allDaemonStatuses { daemonType healthy } } } }"
)
DAEMON_START_TIMEOUT_S = 30.0


def _terminate_with_parent() -> None:
    """Have Linux send SIGTERM to this child when the server process dies (prctl)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class EmbeddedDagster:
    """A Dagster webserver and daemon started as child processes and stopped with the server."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.processes: list[subprocess.Popen] = []
        self._stopping = threading.Event()
        # The server's request handlers read this file to tell clients that a restart is
        # needed. Its path reaches them, also in uvicorn worker processes, through the
        # environment.
        self.exit_file = settings.dagster_home / "logs" / "embedded-exit.txt"
        self._exit_lock = threading.Lock()

    def start(self) -> None:
        env = {
            **os.environ,
            "DAGSTER_HOME": str(self.settings.dagster_home),
            "DAGSTER_DISABLE_TELEMETRY": "1",
            "PERFECT10K_WAREHOUSE": str(self.settings.warehouse_dir),
        }
        logs = self.settings.dagster_home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.exit_file.unlink(missing_ok=True)
        os.environ[EXIT_FILE_ENV] = str(self.exit_file)
        # Create the instance's storage once, before two processes race to create its tables.
        subprocess.run(
            [sys.executable, "-c", "from dagster import DagsterInstance; DagsterInstance.get()"],
            env=env,
            check=True,
            capture_output=True,
            timeout=DAGSTER_START_TIMEOUT_S,
        )
        bin_dir = Path(sys.executable).parent
        commands = {
            "webserver": [
                str(bin_dir / "dagster-webserver"),
                "-w", str(WORKSPACE),
                "-h", self.settings.dagster_host,
                "-p", str(self.settings.dagster_port),
            ],
            "daemon": [str(bin_dir / "dagster-daemon"), "run", "-w", str(WORKSPACE)],
        }
        for name, command in commands.items():
            # A new session per child, so stopping it stops its code servers and run workers,
            # and a parent-death signal, so it stops even when this process is killed. The
            # children start before the server starts any thread, so preexec_fn is safe.
            with open(logs / f"{name}.log", "ab") as output:
                process = subprocess.Popen(
                    command,
                    cwd=REPOSITORY_ROOT,
                    env=env,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_terminate_with_parent,  # noqa: PLW1509
                )
            self.processes.append(process)
            log.info("started Dagster %s (pid %d), log in %s", name, process.pid, logs / f"{name}.log")
        # NOTE: a child that exits is logged and reaped but not restarted, because starting
        # one with preexec_fn is unsafe once the server runs threads. Cold areas then get 503
        # until the server is restarted.
        for name, process in zip(commands, self.processes, strict=True):
            threading.Thread(
                target=self._watch, args=(name, process, logs), name=f"watch-dagster-{name}",
                daemon=True,
            ).start()

    def _watch(self, name: str, process: subprocess.Popen, logs: Path) -> None:
        """Wait for a child to exit, so it does not stay a zombie, and log its exit."""
        code = process.wait()
        exit_text = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        if self._stopping.is_set():
            log.info("Dagster %s (pid %d) %s", name, process.pid, exit_text)
            return
        log.error(
            "Dagster %s (pid %d) %s while the server runs; cold areas get 503 until the "
            "server is restarted. See %s",
            name, process.pid, exit_text, logs / f"{name}.log",
        )
        with self._exit_lock, open(self.exit_file, "a", encoding="utf-8") as record:
            record.write(f"the embedded Dagster {name} (pid {process.pid}) {exit_text}\n")

    def wait_ready(self) -> bool:
        """Wait until the webserver has loaded the code location; return False on timeout.

        The webserver responds to HTTP before the code location is loaded, and a run launched
        before then fails, so readiness is the repository being queryable. Until the daemon's
        run queue reports healthy the server rejects cold requests with 503, so this also
        waits for it, at most DAEMON_START_TIMEOUT_S after the repository loaded. A daemon
        that does not come up affects only the cold areas, so serving starts anyway.
        """
        url = f"http://{self.settings.dagster_host}:{self.settings.dagster_port}/graphql"
        deadline = time.monotonic() + DAGSTER_START_TIMEOUT_S
        daemon_deadline = None
        while time.monotonic() < deadline:
            repository_loaded, queue_healthy = _ready_state(url)
            if repository_loaded:
                if queue_healthy:
                    return True
                if daemon_deadline is None:
                    daemon_deadline = time.monotonic() + DAEMON_START_TIMEOUT_S
                elif time.monotonic() > daemon_deadline:
                    log.warning(
                        "the Dagster daemon did not report healthy within %.0f s; cold areas "
                        "get 503 until it does", DAEMON_START_TIMEOUT_S,
                    )
                    return True
            if any(process.poll() is not None for process in self.processes):
                return False
            time.sleep(0.5)
        # The code location loaded, and only the daemon is still missing.
        return daemon_deadline is not None

    def stop(self) -> None:
        """Ask every child to stop, then kill the groups still running after the grace period."""
        self._stopping.set()
        # SIGTERM goes to the webserver and daemon only, not their process groups, so a
        # build run in flight finishes and writes its cells instead of being interrupted.
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + DAGSTER_STOP_GRACE_S
        for process in self.processes:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                log.warning("Dagster process %d did not stop in time; killing it", process.pid)
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.info("stopped Dagster")


def _ready_state(url: str) -> tuple[bool, bool]:
    """Return (code location loaded, daemon run queue healthy) from the webserver at `url`.

    Both are False while the webserver does not respond.
    """
    try:
        data = httpx.post(url, json={"query": READY_QUERY}, timeout=5.0).json()["data"]
        loaded = data["repositoryOrError"]["__typename"] == "Repository"
        statuses = data["instance"]["daemonHealth"]["allDaemonStatuses"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return False, False
    healthy = any(
        status["daemonType"] == "QUEUED_RUN_COORDINATOR" and status["healthy"]
        for status in statuses
    )
    return loaded, healthy


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def run_server(settings: Settings, host: str | None = None, port: int | None = None) -> int:
    """Serve until interrupted; with PERFECT10K_DAGSTER_EMBEDDED, run Dagster beside it."""
    host = host or settings.host
    port = port or settings.port
    os.environ.setdefault("PERFECT10K_WAREHOUSE", str(settings.warehouse_dir))
    embedded = EmbeddedDagster(settings) if settings.dagster_embedded else None
    if embedded is not None:
        embedded.start()
    try:
        if embedded is not None and not embedded.wait_ready():
            log.error(
                "the Dagster webserver did not start; see %s", settings.dagster_home / "logs"
            )
            return 1
        log.info("serving on http://%s:%d (%d workers)", host, port, settings.workers)
        # uvicorn re-raises SIGTERM after its own shutdown, with the handler it found; this
        # handler turns it into SystemExit, so the `finally` below stops Dagster.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        uvicorn.run(
            "serving.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=settings.workers if settings.workers > 1 else None,
            log_level="warning",
            timeout_graceful_shutdown=10,
        )
        return 0
    finally:
        if embedded is not None:
            embedded.stop()
