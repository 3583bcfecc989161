"""Dagster instance plug-ins that start a user's build run within a fraction of a second.

dagster.yaml names both classes. `ImmediateRequestRunCoordinator` hands runs that a user's
cold request started (tag `perfect10k/origin=request`) straight to the run launcher,
instead of waiting up to one dequeue interval of the daemon, and queues every other run.
`ForkServerRunLauncher` forks each run worker from a process that already imported Dagster
and the code location (pipelines/run_worker.py), instead of spawning a new interpreter.

Both run in any process that submits or launches runs: the Dagster webserver for request
runs (launchRun over GraphQL) and the daemon for the queued ones.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from dagster import (
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    Field,
    QueuedRunCoordinator,
    RunsFilter,
    SubmitRunContext,
)
from dagster import _check as check
from dagster._core.launcher import (
    CheckRunHealthResult,
    LaunchRunContext,
    RunLauncher,
    WorkerStatus,
)
from dagster._serdes import ConfigurableClass, ConfigurableClassData, serialize_value

from pipelines import run_worker
from pipelines.tags import ORIGIN_REQUEST, ORIGIN_TAG, RUN_WORKER_TAG

log = logging.getLogger(__name__)

DEFAULT_PRELOAD = ("dagster", "pipelines.definitions")
# The fork server imports its preload modules before it replies to the first request.
REPLY_TIMEOUT_S = 120.0
# The start of the reason `_worker_pid` gives when the worker process is gone.
WORKER_EXITED = "the run worker exited without ending the run"
_IN_PROGRESS = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ForkServerUnavailable(RuntimeError):
    """The fork server did not start, stopped, or returned an invalid reply."""


class _ForkServer:
    """A `pipelines.run_worker` server process and the pipes to it."""

    def __init__(self, preload: Sequence[str]) -> None:
        # The server gets this process's import path, so it imports the same modules.
        code = (
            f"import sys; sys.path[:] = {sys.path!r}; "
            f"from pipelines.run_worker import serve; serve({list(preload)!r})"
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            close_fds=True,
        )

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def request(self, payload: dict[str, str]) -> dict[str, Any]:
        """Send one request to the server and return its reply."""
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None

        try:
            stdin.write(json.dumps(payload) + "\n")
            stdin.flush()
        except (BrokenPipeError, ValueError) as error:
            raise ForkServerUnavailable(f"the fork server stopped: {error}") from error

        ready, _, _ = select.select([stdout], [], [], REPLY_TIMEOUT_S)
        if not ready:
            self.stop()
            raise ForkServerUnavailable(
                f"the fork server (pid {self.process.pid}) did not reply within "
                f"{REPLY_TIMEOUT_S:.0f} s; it was stopped and the next launch starts a new one"
            )

        line = stdout.readline()
        if not line:
            raise ForkServerUnavailable(
                f"the fork server (pid {self.process.pid}) exited with code "
                f"{self.process.wait()} before it replied"
            )
        try:
            reply = json.loads(line)
        except ValueError as error:
            raise ForkServerUnavailable(f"the fork server sent an invalid reply: {line!r}") from error
        if not isinstance(reply, dict):
            raise ForkServerUnavailable(f"the fork server sent an invalid reply: {line!r}")
        if "error" in reply:
            raise ForkServerUnavailable(f"the fork server rejected the request: {reply['error']}")
        return reply

    def stop(self) -> None:
        """Close the server's stdin, so it exits. Workers still running finish their runs."""
        if self.process.stdin is not None:
            try:
                self.process.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class ForkServerRunLauncher(RunLauncher, ConfigurableClass):
    """Launch each run in a worker forked from a server with `preload_modules` imported.

    In the Dagster webserver, `ImmediateRequestRunCoordinator` starts the server in the
    background as soon as the instance creates it. Elsewhere the first launch starts it. Each worker runs in a
    session of its own, so stopping the webserver or the daemon, even by signalling their
    process groups, leaves runs in flight to finish. The run tag `perfect10k/run_worker`
    records the worker's host, pid and start time, so `terminate` works from any process
    on the same host.

    Run monitoring calls `check_run_worker_health` for every STARTED run, so a run whose
    worker died without ending it is marked failed at the next monitoring poll.

    NOTE: a worker that dies while its run is still STARTING is only caught by the start
    timeout, and a worker on another host (the daemon's container in Compose) is reported
    running, because its pid cannot be checked from here.
    """

    def __init__(
        self,
        inst_data: ConfigurableClassData | None = None,
        preload_modules: Sequence[str] = DEFAULT_PRELOAD,
    ) -> None:
        self._inst_data = inst_data
        self._preload = list(preload_modules)
        self._server: _ForkServer | None = None
        self._lock = threading.Lock()
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict[str, Field]:
        return {
            "preload_modules": Field(
                [str],
                is_required=False,
                default_value=list(DEFAULT_PRELOAD),
                description="Modules the fork server imports once for every run worker.",
            )
        }

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> ForkServerRunLauncher:
        return cls(inst_data=inst_data, **config_value)

    def _running_server(self) -> _ForkServer:
        """Return the fork server, starting one when none runs. Call with the lock held."""
        if self._server is None or not self._server.alive:
            if self._server is not None:
                log.warning(
                    "fork server pid %d exited with code %s; starting a new one",
                    self._server.process.pid, self._server.process.returncode,
                )
            self._server = _ForkServer(self._preload)
            log.info("started fork server pid %d for run workers", self._server.process.pid)
        return self._server

    def start_in_background(self) -> None:
        """Start and warm up the fork server now, so the first launch need not wait for it.

        Does nothing in a run worker, which launches no runs.
        """
        if run_worker.IN_RUN_WORKER:
            return
        instance_ref = serialize_value(self._instance.get_ref())

        def start() -> None:
            with self._lock:
                try:
                    self._running_server().request({"instance_ref": instance_ref})
                except (OSError, ForkServerUnavailable):
                    log.exception("starting the fork server failed; the next launch retries")

        threading.Thread(target=start, name="fork-server-start", daemon=True).start()

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        check.inst_param(run, "run", DagsterRun)
        instance_ref = serialize_value(self._instance.get_ref())
        with self._lock:
            server = self._running_server()
            reply = server.request({"run_id": run.run_id, "instance_ref": instance_ref})
            server_pid = server.process.pid
        if not isinstance(reply.get("pid"), int):
            raise ForkServerUnavailable(f"the fork server returned no worker pid: {reply}")
        worker = {"host": socket.gethostname(), "pid": reply["pid"]}
        if reply.get("start_ticks") is not None:
            worker["start_ticks"] = reply["start_ticks"]
        self._instance.add_run_tags(run.run_id, {RUN_WORKER_TAG: json.dumps(worker)})
        log.info(
            "run %s: forked run worker pid %d from fork server pid %d",
            run.run_id, reply["pid"], server_pid,
        )

    def terminate(self, run_id: str) -> bool:
        check.str_param(run_id, "run_id")
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        pid, problem = self._worker_pid(run)
        if pid is None and problem.startswith(WORKER_EXITED):
            # Nothing can end the run any more, so it is canceled right here.
            self._instance.report_run_canceled(run, f"Run canceled: {problem}")
            return True
        if pid is None:
            self._instance.report_engine_event(
                f"Could not send the termination request: {problem}", run, cls=self.__class__
            )
            return False
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            self._instance.report_run_canceled(run, f"Run canceled: {WORKER_EXITED} (pid {pid})")
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        pid, problem = self._worker_pid(run)
        if pid is not None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=str(pid))
        if problem.startswith(WORKER_EXITED):
            return CheckRunHealthResult(WorkerStatus.FAILED, problem)
        return CheckRunHealthResult(WorkerStatus.RUNNING, f"not checked: {problem}")

    def _worker_pid(self, run: DagsterRun) -> tuple[int | None, str]:
        """Return the pid of the run's worker if it runs on this host, or None and why not."""
        raw = run.tags.get(RUN_WORKER_TAG)
        if not raw:
            return None, f"the run has no {RUN_WORKER_TAG} tag (its worker has not started)"
        worker = json.loads(raw)
        if worker.get("host") != socket.gethostname():
            return None, f"its worker runs on host {worker.get('host')}, not on this one"
        pid = int(worker["pid"])
        expected = worker.get("start_ticks")
        if expected is not None and run_worker.process_start_ticks(pid) != expected:
            return None, f"{WORKER_EXITED} (pid {pid})"
        if expected is None and not _process_exists(pid):
            return None, f"{WORKER_EXITED} (pid {pid})"
        return pid, ""

    def dispose(self) -> None:
        # Without the lock, so a warm-up in progress does not delay the instance's disposal.
        server, self._server = self._server, None
        if server is not None:
            server.stop()


class ImmediateRequestRunCoordinator(QueuedRunCoordinator):
    """A QueuedRunCoordinator that launches user request runs at once, when there is room.

    A run tagged `perfect10k/origin=request` is launched right away while fewer than
    `max_concurrent_runs` runs are starting or running. Otherwise it waits in the queue for
    the daemon like every other run, and its higher priority puts it first. Runs
    launched here count against the limits the daemon applies to the queued runs.

    NOTE: the count and the launch are not atomic with the daemon's dequeuing, so a request
    run and a dequeued run may briefly exceed `max_concurrent_runs` by one.
    """

    def register_instance(self, instance: DagsterInstance) -> None:
        super().register_instance(instance)
        # The webserver launches request runs, so it starts its fork server at once. The
        # daemon launches only queued runs, and starts its own at the first one, which
        # keeps its start-up from competing for the CPU with the webserver's.
        if "dagster_webserver" in sys.modules:
            launcher = instance.run_launcher
            if isinstance(launcher, ForkServerRunLauncher):
                launcher.start_in_background()

    def submit_run(self, context: SubmitRunContext) -> DagsterRun:
        run = context.dagster_run
        if (
            run.status != DagsterRunStatus.NOT_STARTED
            or run.tags.get(ORIGIN_TAG) != ORIGIN_REQUEST
            or not self._has_room()
        ):
            return super().submit_run(context)
        self._instance.launch_run(run.run_id, context.workspace)
        launched = self._instance.get_run_by_id(run.run_id)
        if launched is None:
            check.failed(f"run {run.run_id} disappeared after its launch")
        return launched

    def _has_room(self) -> bool:
        limit = self.get_run_queue_config().max_concurrent_runs
        if limit == -1:
            return True
        in_progress = self._instance.get_run_records(
            filters=RunsFilter(statuses=_IN_PROGRESS), limit=limit
        )
        return len(in_progress) < limit
