#!/usr/bin/env bash
# Set up, import an extract (Monaco by default), build its cells and serve it.
# Usage: bash scripts/serve-sample.sh [EXTRACT.osm.pbf]
# The server listens on PERFECT10K_HOST:PERFECT10K_PORT (127.0.0.1:8000), Dagster on :3000.
set -euo pipefail
cd "$(dirname "$0")/.."
extract=${1:-../shared/osm/monaco-2021-04-21.osm.pbf}
if [ ! -f "$extract" ]; then
  echo "extract $extract not found: put the shared OSM extracts in ../shared/osm/ beside" \
    "the repository, or pass the path of an .osm.pbf file as the first argument" >&2
  exit 1
fi

bash scripts/setup.sh
export DAGSTER_DISABLE_TELEMETRY=1
.venv/bin/perfect10k import "$extract"
# Build the sample region's cells up front, so the first request is served from cache.
region=$(.venv/bin/python -c 'import sys; from pipelines.regions import region_id_for; from pathlib import Path; print(region_id_for(Path(sys.argv[1])))' "$extract")
if [ -z "${1:-}" ]; then
  .venv/bin/perfect10k materialize --region "$region"
fi
exec .venv/bin/perfect10k serve
