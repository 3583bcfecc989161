"""Run workers forked from a fork server that has Dagster and the code location imported.

`ForkServerRunLauncher` (pipelines/run_launch.py) starts `serve` in a new interpreter. The
server imports the preload modules once, then reads one JSON request per line on stdin
and writes one JSON reply per line on stdout:

- `{"instance_ref": ...}` warms the server up: it opens that Dagster instance and executes
  a one-op job on an in-memory instance, so Dagster's storage and execution modules are
  imported too. Reply: `{"ready": true}`.
- `{"run_id": ..., "instance_ref": ...}` forks a child that leaves the server's session
  and executes the run with Dagster's `execute_run`. Reply: `{"pid": ..., "start_ticks":
  ...}`.

Any request that fails gets `{"error": ...}`. A new interpreter took about 2 s to import
all this before a run's first step (benchmarks/bench_cold.py on a 2-core machine), and a
forked child starts with it done. The server exits when its stdin closes, that is when the launcher's process exits;
children still running finish their runs.

This module imports nothing heavy at the top, because every launcher process imports it.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from dagster import DagsterInstance

log = logging.getLogger(__name__)

# True in a forked run worker, where nothing may start another fork server.
IN_RUN_WORKER = False
# Instances the server opened, keyed by serialized instance ref. Forked children inherit them.
_instances: dict[str, DagsterInstance] = {}


def process_start_ticks(pid: int) -> int | None:
    """Return the start time of `pid` in clock ticks after boot, or None without /proc.

    The pair (pid, start time) names one process even after the pid is reused.
    """
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # Field 22 of proc(5), counted after the command name, which may contain spaces.
            return int(stat.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _instance(serialized_instance_ref: str) -> DagsterInstance:
    """Return the instance `serialized_instance_ref` names, opened once per process."""
    instance = _instances.get(serialized_instance_ref)
    if instance is None:
        from dagster import DagsterInstance
        from dagster._core.instance.ref import InstanceRef
        from dagster._serdes import deserialize_value

        ref = deserialize_value(serialized_instance_ref, InstanceRef)
        instance = _instances[serialized_instance_ref] = DagsterInstance.from_ref(ref)
    return instance


def execute_run_worker(run_id: str, serialized_instance_ref: str) -> int:
    """Execute the run `run_id` in this process; return 0 when it succeeded.

    Failures are recorded on the run: a step failure by Dagster itself, any other error
    as an engine event followed by a run failure, so the UI and the server see the reason.
    """
    from dagster._core.events import EngineEventData
    from dagster._core.execution.api import execute_run
    from dagster._utils.error import serializable_error_info_from_exc_info
    from dagster._utils.hosted_user_process import recon_job_from_origin
    from dagster._utils.interrupts import capture_interrupts

    instance = _instance(serialized_instance_ref)
    # SIGTERM and SIGINT become a Dagster interrupt, which ends the run as canceled.
    with capture_interrupts():
        run = instance.get_run_by_id(run_id)
        if run is None:
            log.error("run %s not found in the Dagster instance; nothing to execute", run_id)
            return 1
        pid = os.getpid()
        instance.report_engine_event(
            f"Started process for run (pid: {pid}).", run, EngineEventData.in_process(pid)
        )
        try:
            if run.job_code_origin is None:
                raise ValueError(f"run {run_id} has no job code origin to load the job from")
            result = execute_run(recon_job_from_origin(run.job_code_origin), run, instance)
            return 0 if result.success else 1
        except BaseException:  # noqa: BLE001 - an interrupt also leaves the run to record
            error = serializable_error_info_from_exc_info(sys.exc_info())
            instance.report_engine_event(
                f"The run worker failed: {error.message.strip()}",
                run,
                EngineEventData.engine_error(error),
            )
            current = instance.get_run_by_id(run_id)
            if current is not None and not current.is_finished:
                instance.report_run_failed(current)
            return 1
        finally:
            instance.report_engine_event(f"Process for run exited (pid: {pid}).", run)


def _warm_up(serialized_instance_ref: str) -> None:
    """Open the instance and execute a one-op job in memory, importing what runs need."""
    from dagster import DagsterInstance, job, op

    _instance(serialized_instance_ref)

    @op
    def warm_up_op() -> None:
        return None

    @job
    def warm_up_job() -> None:
        warm_up_op()

    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    with DagsterInstance.ephemeral() as ephemeral:
        warm_up_job.execute_in_process(run_config=quiet, instance=ephemeral, raise_on_error=True)
    if threading.active_count() > 1:
        # A forked child inherits no thread but every lock another thread held.
        log.warning(
            "fork server: %d threads run after the warm-up: %s",
            threading.active_count(), [thread.name for thread in threading.enumerate()],
        )


def _run_child(request: dict[str, Any], requests: TextIO, replies: TextIO) -> None:
    """Execute the requested run in this forked child and exit; never returns."""
    global IN_RUN_WORKER
    IN_RUN_WORKER = True
    code = 1
    try:
        os.setsid()
        # Undo the server's signal set-up, so the run gets the usual Python behaviour.
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        requests.close()
        replies.close()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        code = execute_run_worker(request["run_id"], request["instance_ref"])
    except BaseException:  # noqa: BLE001 - the child must reach os._exit
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _handle(request: Any, requests: TextIO, replies: TextIO) -> dict[str, Any]:
    """Serve one request and return the reply."""
    if not isinstance(request, dict) or not isinstance(request.get("instance_ref"), str):
        return {"error": "invalid request: instance_ref must be a string"}
    run_id = request.get("run_id")
    if run_id is None:
        _warm_up(request["instance_ref"])
        return {"ready": True}
    if not isinstance(run_id, str):
        return {"error": "invalid request: run_id must be a string"}
    # Opened before the fork, so later children inherit the instance.
    _instance(request["instance_ref"])
    pid = os.fork()
    if pid == 0:
        _run_child(request, requests, replies)
    return {"pid": pid, "start_ticks": process_start_ticks(pid)}


def serve(preload: list[str]) -> None:
    """Import `preload`, then serve requests from stdin until it closes."""
    # Replies get their own copy of stdout, and fd 1 then points at stderr. Output of the
    # preloaded code and of the runs goes to the launcher's log, never into a reply.
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    requests = sys.stdin
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    started = time.perf_counter()
    for module in preload:
        try:
            importlib.import_module(module)
        except Exception:
            log.exception("fork server: importing %s failed; run workers import it", module)
    log.info(
        "fork server pid %d imported %s in %.1f s",
        os.getpid(), ", ".join(preload), time.perf_counter() - started,
    )
    # The kernel reaps exited children, so none is left as a zombie.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    for line in requests:
        try:
            reply = _handle(json.loads(line), requests, replies)
        except Exception as error:
            log.exception("fork server: request failed")
            reply = {"error": f"{type(error).__name__}: {error}"}
        replies.write(json.dumps(reply) + "\n")
