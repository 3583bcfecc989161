#!/usr/bin/env bash
# Set up with the test tools and run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh --dev
export DAGSTER_DISABLE_TELEMETRY=1
exec .venv/bin/python -m pytest "$@"
