"""The fork-server run launcher on a real Dagster instance: runs, failures, termination.

Each test opens a temporary SQLite instance whose run launcher is ForkServerRunLauncher,
creates a run of a job in this module and launches it. The run executes in a worker forked
from a fork server that this process starts, as in the Dagster webserver and daemon.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Iterator

import pytest
from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    RunsFilter,
    instance_for_test,
    job,
    op,
    reconstructable,
)
from dagster._core.launcher import WorkerStatus
from dagster._daemon.monitoring.run_monitoring import monitor_started_run

from pipelines.run_launch import ForkServerRunLauncher
from pipelines.run_worker import process_start_ticks
from pipelines.tags import RUN_WORKER_TAG

pytestmark = pytest.mark.slow

RUN_TIMEOUT_S = 120


@op
def wait_op() -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.05)


@job
def wait_job() -> None:
    wait_op()


@op
def fail_op() -> None:
    raise OSError(28, "No space left on device")


@job
def fail_job() -> None:
    fail_op()


@op
def quick_op() -> int:
    return os.getpid()


@job
def quick_job() -> None:
    quick_op()


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    launcher = {"module": "pipelines.run_launch", "class": "ForkServerRunLauncher"}
    with instance_for_test(overrides={"run_launcher": launcher}) as test_instance:
        yield test_instance


def launch(instance: DagsterInstance, job_def) -> str:
    origin = reconstructable(job_def).get_python_origin()
    run = instance.create_run_for_job(job_def, job_code_origin=origin)
    instance.launch_run(run.run_id, workspace=None)  # type: ignore[arg-type]
    return run.run_id


def wait_for_status(instance: DagsterInstance, run_id: str, statuses: set) -> DagsterRunStatus:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        assert run is not None
        if run.status in statuses:
            return run.status
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not reach {statuses} in {RUN_TIMEOUT_S} s")


def event_types(instance: DagsterInstance, run_id: str) -> list[DagsterEventType]:
    return [
        entry.dagster_event.event_type
        for entry in instance.all_logs(run_id)
        if entry.dagster_event is not None
    ]


def started_worker(instance: DagsterInstance) -> tuple[str, dict]:
    """Launch `wait_job`, wait until its step runs; return the run id and its worker tag."""
    run_id = launch(instance, wait_job)
    wait_for_status(instance, run_id, {DagsterRunStatus.STARTED})
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while DagsterEventType.STEP_START not in event_types(instance, run_id):
        assert time.monotonic() < deadline, "the step did not start"
        time.sleep(0.1)
    return run_id, json.loads(instance.get_run_by_id(run_id).tags[RUN_WORKER_TAG])


def kill_and_wait(worker: dict) -> None:
    os.kill(worker["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while process_start_ticks(worker["pid"]) == worker["start_ticks"]:
        assert time.monotonic() < deadline, f"worker pid {worker['pid']} did not exit"
        time.sleep(0.05)


def test_run_executes_in_forked_worker(instance: DagsterInstance):
    assert isinstance(instance.run_launcher, ForkServerRunLauncher)
    run_id = launch(instance, quick_job)
    status = wait_for_status(instance, run_id, {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE})
    assert status == DagsterRunStatus.SUCCESS
    run = instance.get_run_by_id(run_id)
    worker = json.loads(run.tags[RUN_WORKER_TAG])
    assert worker["pid"] != os.getpid()
    assert worker["host"]
    types = event_types(instance, run_id)
    assert DagsterEventType.STEP_SUCCESS in types
    assert DagsterEventType.RUN_ENQUEUED not in types
    # The worker has exited and the fork server has reaped it.
    deadline = time.monotonic() + 30
    while process_start_ticks(worker["pid"]) == worker.get("start_ticks"):
        assert time.monotonic() < deadline, f"worker pid {worker['pid']} did not exit"
        time.sleep(0.1)


def test_step_failure_reason_is_recorded(instance: DagsterInstance):
    run_id = launch(instance, fail_job)
    status = wait_for_status(instance, run_id, {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE})
    assert status == DagsterRunStatus.FAILURE
    failures = [
        entry.dagster_event
        for entry in instance.all_logs(run_id)
        if entry.dagster_event is not None
        and entry.dagster_event.event_type == DagsterEventType.STEP_FAILURE
    ]
    assert len(failures) == 1
    error = failures[0].step_failure_data.error
    messages = [error.message] + ([error.cause.message] if error.cause else [])
    assert any("No space left on device" in message for message in messages), messages


def test_terminate_cancels_running_worker(instance: DagsterInstance):
    # Terminate once the step runs, so the interrupt reaches the op's code.
    run_id, _ = started_worker(instance)
    assert instance.run_launcher.terminate(run_id)
    status = wait_for_status(
        instance, run_id, {DagsterRunStatus.CANCELED, DagsterRunStatus.FAILURE,
                           DagsterRunStatus.SUCCESS},
    )
    assert status == DagsterRunStatus.CANCELED
    assert not instance.run_launcher.terminate(run_id), "a finished run cannot be terminated"


def test_terminate_ignores_other_host(instance: DagsterInstance):
    run_id = launch(instance, wait_job)
    wait_for_status(instance, run_id, {DagsterRunStatus.STARTED})
    run = instance.get_run_by_id(run_id)
    worker = json.loads(run.tags[RUN_WORKER_TAG])
    instance.add_run_tags(run_id, {RUN_WORKER_TAG: json.dumps({**worker, "host": "elsewhere"})})
    try:
        assert not instance.run_launcher.terminate(run_id)
        assert process_start_ticks(worker["pid"]) == worker["start_ticks"], "worker was signalled"
    finally:
        os.kill(worker["pid"], 15)
    status = wait_for_status(
        instance, run_id, {DagsterRunStatus.CANCELED, DagsterRunStatus.FAILURE,
                           DagsterRunStatus.SUCCESS},
    )
    assert status != DagsterRunStatus.SUCCESS


def test_monitoring_fails_run_of_killed_worker(instance: DagsterInstance):
    run_id, worker = started_worker(instance)
    launcher = instance.run_launcher
    assert launcher.check_run_worker_health(instance.get_run_by_id(run_id)).status == (
        WorkerStatus.RUNNING
    )
    kill_and_wait(worker)
    health = launcher.check_run_worker_health(instance.get_run_by_id(run_id))
    assert health.status == WorkerStatus.FAILED
    assert str(worker["pid"]) in (health.msg or "")
    record = instance.get_run_records(RunsFilter(run_ids=[run_id]))[0]
    monitor_started_run(instance, None, record, logging.getLogger("test"))  # type: ignore[arg-type]
    assert instance.get_run_by_id(run_id).status == DagsterRunStatus.FAILURE


def test_terminate_cancels_run_of_killed_worker(instance: DagsterInstance):
    run_id, worker = started_worker(instance)
    kill_and_wait(worker)
    assert instance.run_launcher.terminate(run_id)
    assert instance.get_run_by_id(run_id).status == DagsterRunStatus.CANCELED
