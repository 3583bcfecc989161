"""A small client for the Dagster webserver's GraphQL API: partitions, runs, daemon health."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from pipelines.tags import BUILD_CELLS_JOB, H3_CELLS

log = logging.getLogger(__name__)

LOCATION_NAME = "perfect10k"
REPOSITORY_NAME = "__repository__"
DAEMONS_NEEDED = ("QUEUED_RUN_COORDINATOR",)
HEALTH_CACHE_S = 5.0
# Names the file in which `perfect10k serve` records the exit of its Dagster processes.
EXIT_FILE_ENV = "PERFECT10K_DAGSTER_EXIT_FILE"


class DagsterUnavailable(RuntimeError):
    """The Dagster webserver did not respond, or its daemon is not running."""


class DagsterExited(DagsterUnavailable):
    """A Dagster process that the server started itself exited, so only a restart helps."""


@dataclass(frozen=True)
class RunInfo:
    """Status of one Dagster run as the webserver reports it."""

    run_id: str
    status: str
    tags: dict[str, str]

    @property
    def finished(self) -> bool:
        return self.status in {"SUCCESS", "FAILURE", "CANCELED"}


_REPOSITORY = {"repositoryLocationName": LOCATION_NAME, "repositoryName": REPOSITORY_NAME}


class DagsterClient:
    """Talk to the Dagster webserver at `base_url` over GraphQL.

    Every method raises DagsterUnavailable when the webserver cannot be reached in time or
    returns an error, so callers can turn that into a 503.
    """

    def __init__(
        self, base_url: str, timeout_s: float = 10.0, exit_file: Path | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # The file where `perfect10k serve` records the exit of the Dagster webserver or
        # daemon that it started; None when Dagster runs on its own.
        self.exit_file = exit_file
        self._http = httpx.Client(timeout=timeout_s)
        self._health: tuple[float, str | None] | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        self._http.close()

    def _query(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = self._http.post(
                f"{self.base_url}/graphql", json={"query": query, "variables": variables or {}}
            )
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise DagsterUnavailable(
                f"the Dagster webserver at {self.base_url} did not respond: {error}"
            ) from error
        if body.get("errors"):
            raise DagsterUnavailable(f"Dagster GraphQL error: {body['errors'][0].get('message')}")
        return body["data"]

    def embedded_exit(self) -> str | None:
        """Return how the Dagster processes started by this server exited, or None."""
        if self.exit_file is None:
            return None
        try:
            lines = self.exit_file.read_text(encoding="utf-8").split("\n")
        except FileNotFoundError:
            return None
        exits = "; ".join(line for line in lines if line)
        return f"{exits}; restart the server to build new areas" if exits else None

    def check_embedded(self) -> None:
        """Raise DagsterExited when a Dagster process started by this server has exited."""
        exited = self.embedded_exit()
        if exited is not None:
            raise DagsterExited(exited)

    def unhealthy_reason(self) -> str | None:
        """Return why cold cells cannot be built now, or None when Dagster is ready."""
        exited = self.embedded_exit()
        if exited is not None:
            return exited
        with self._lock:
            cached = self._health
            if cached is not None and time.monotonic() - cached[0] < HEALTH_CACHE_S:
                return cached[1]
        try:
            data = self._query(
                "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy } } } }"
            )
            statuses = data["instance"]["daemonHealth"]["allDaemonStatuses"]
            down = [
                s["daemonType"]
                for s in statuses
                if s["daemonType"] in DAEMONS_NEEDED and s["healthy"] is False
            ]
            reason = f"the Dagster daemon is not running ({', '.join(down)})" if down else None
        except DagsterUnavailable as error:
            reason = str(error)
        with self._lock:
            self._health = (time.monotonic(), reason)
        return reason

    def add_partitions(self, cells: list[str], replace: list[str]) -> None:
        """Add `cells` as h3_cells partitions, in order, after deleting those in `replace`.

        Deleting and re-adding moves cells that already were partitions to the end, so the
        cells of one run always form one contiguous partition range.
        """
        fields = []
        if replace:
            fields.append(
                "d: deleteDynamicPartitions(repositorySelector: $repo, "
                "partitionsDefName: $name, partitionKeys: $replace) { __typename }"
            )
        for index, cell in enumerate(cells):
            fields.append(
                f'a{index}: addDynamicPartition(repositorySelector: $repo, '
                f'partitionsDefName: $name, partitionKey: "{cell}") {{ __typename }}'
            )
        query = (
            "mutation($repo: RepositorySelector!, $name: String!, $replace: [String!]!) { "
            + " ".join(fields)
            + " }"
        )
        self._query(query, {"repo": _REPOSITORY, "name": H3_CELLS, "replace": replace})

    def launch_build(self, tags: dict[str, str]) -> str:
        """Launch one `build_cells` run with `tags`; return its run id."""
        query = """
        mutation($params: ExecutionParams!) {
          launchRun(executionParams: $params) {
            __typename
            ... on LaunchRunSuccess { run { runId } }
            ... on PythonError { message }
            ... on RunConfigValidationInvalid { errors { message } }
            ... on InvalidSubsetError { message }
            ... on RunConflict { message }
            ... on UnauthorizedError { message }
          }
        }"""
        params = {
            "selector": {**_REPOSITORY, "jobName": BUILD_CELLS_JOB},
            "runConfigData": {},
            "executionMetadata": {
                "tags": [{"key": key, "value": value} for key, value in tags.items()]
            },
        }
        result = self._query(query, {"params": params})["launchRun"]
        if result["__typename"] != "LaunchRunSuccess":
            detail = result.get("message") or result.get("errors") or result["__typename"]
            raise DagsterUnavailable(f"Dagster did not launch the build run: {detail}")
        return result["run"]["runId"]

    def run(self, run_id: str) -> RunInfo | None:
        """Return the run's status, or None when Dagster does not know the run."""
        query = """
        query($runId: ID!) {
          runOrError(runId: $runId) {
            __typename
            ... on Run { runId status tags { key value } }
          }
        }"""
        result = self._query(query, {"runId": run_id})["runOrError"]
        if result["__typename"] != "Run":
            return None
        return RunInfo(
            result["runId"], result["status"], {t["key"]: t["value"] for t in result["tags"]}
        )

    def failure_reason(self, run_id: str) -> str | None:
        """Return the error message of the run's first failed step, or of the run itself."""
        query = """
        query($runId: ID!) {
          runOrError(runId: $runId) {
            __typename
            ... on Run {
              eventConnection(limit: 1000) {
                events {
                  __typename
                  ... on ExecutionStepFailureEvent {
                    stepKey error { message cause { message } }
                  }
                  ... on RunFailureEvent { message error { message cause { message } } }
                }
              }
            }
          }
        }"""
        result = self._query(query, {"runId": run_id})["runOrError"]
        if result["__typename"] != "Run":
            return None
        events = result["eventConnection"]["events"]
        for kind in ("ExecutionStepFailureEvent", "RunFailureEvent"):
            for event in events:
                if event["__typename"] != kind:
                    continue
                # Dagster wraps the exception a step raised; its cause names what failed.
                error = event.get("error") or {}
                cause = error.get("cause") or {}
                message = cause.get("message") or error.get("message") or event.get("message")
                if message:
                    step = event.get("stepKey")
                    text = " ".join(message.split())
                    return f"step {step}: {text}" if step else text
        return None

    def runs_in_flight(self) -> list[RunInfo]:
        """Return the build runs that are queued, starting or running."""
        query = """
        query($filter: RunsFilter!) {
          runsOrError(filter: $filter, limit: 200) {
            __typename
            ... on Runs { results { runId status tags { key value } } }
          }
        }"""
        run_filter = {
            "pipelineName": BUILD_CELLS_JOB,
            "statuses": ["QUEUED", "NOT_STARTED", "STARTING", "STARTED"],
        }
        result = self._query(query, {"filter": run_filter})["runsOrError"]
        if result["__typename"] != "Runs":
            return []
        return [
            RunInfo(r["runId"], r["status"], {t["key"]: t["value"] for t in r["tags"]})
            for r in result["results"]
        ]
