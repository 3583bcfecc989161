"""Schemathesis fuzzing of the live server from its own OpenAPI schema.

Every operation gets valid and invalid requests generated from the schema. No response may
be a 5xx, and every response must match the documented status codes, media types and
bodies. Half of the valid starts are moved into Monaco, so the planner runs on real
networks with random distances, seeds and preference texts.

The server runs without Dagster and without a rate limit: cold areas get the documented
503 instead of launching builds, and the fuzzer's request rate is not throttled.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.conftest import LiveServer, start_server

# Monaco's built area, as (south, west) and size in degrees.
MONACO_SOUTH_WEST = (43.727, 7.412)
MONACO_SIZE_DEG = (0.02, 0.025)
MAX_EXAMPLES = 30

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fuzz_server(sample_data: Path) -> Iterator[LiveServer]:
    live = start_server(
        sample_data,
        "fuzz-server.log",
        PERFECT10K_DAGSTER_EMBEDDED="0",
        PERFECT10K_RATE_LIMIT_PER_MINUTE="0",
    )
    yield live
    live.stop()


def move_half_into_monaco(body: Any) -> Any:
    """Move every second valid start into Monaco; the rest stay where they were generated."""
    if not isinstance(body, dict):
        return body
    lat, lon = body.get("lat"), body.get("lon")
    if not all(isinstance(v, float | int) and not isinstance(v, bool) for v in (lat, lon)):
        return body
    if not (math.isfinite(lat) and math.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180):
        return body
    if int(abs(lat) * 1000) % 2 == 1:
        return body
    south, west = MONACO_SOUTH_WEST
    height, width = MONACO_SIZE_DEG
    return {
        **body,
        "lat": south + (abs(lat) % 1.0) * height,
        "lon": west + (abs(lon) % 1.0) * width,
    }


def fuzz_operation(operation: APIOperation, mode: GenerationMode) -> None:
    """Send up to MAX_EXAMPLES generated requests to one operation and validate each response."""

    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: schemathesis.Case) -> None:
        if mode is GenerationMode.POSITIVE:
            case.body = move_half_into_monaco(case.body)
        # Schema-valid starts outside every imported region are rightly rejected with 422.
        case.call_and_validate(excluded_checks=[positive_data_acceptance], timeout=60)

    check()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms_to_schema(fuzz_server: LiveServer, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz_server.base_url}/schema/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    failures = []
    for operation in operations:
        try:
            fuzz_operation(operation, mode)
        except Unsatisfiable:
            # An operation without parameters or body has no invalid request to generate.
            assert mode is GenerationMode.NEGATIVE, operation.label
        except Exception as error:  # noqa: BLE001 - collect every operation's failure
            failures.append(f"{operation.label}:\n{error}")
    assert not failures, "\n\n".join(failures)


def test_server_alive_after_fuzzing(fuzz_server: LiveServer) -> None:
    with fuzz_server.client() as client:
        health = client.get("/api/health")
    assert fuzz_server.process.poll() is None
    assert health.status_code == 200
