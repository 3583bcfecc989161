"""The Dagster instance configuration that `perfect10k` writes into DAGSTER_HOME."""

from __future__ import annotations

from pathlib import Path

# Telemetry off so nothing tries the network. A user's request run starts at once, forked
# from a process that has the pipelines imported (pipelines/run_launch.py). Other runs wait
# in the queue, which the daemon polls every second: at most two runs at once (a run worker
# takes a core), at most one of them warming.
DAGSTER_YAML = """\
telemetry:
  enabled: false
run_coordinator:
  module: pipelines.run_launch
  class: ImmediateRequestRunCoordinator
  config:
    max_concurrent_runs: 2
    dequeue_interval_seconds: 1
    tag_concurrency_limits:
      - key: "perfect10k/origin"
        value: "warm"
        limit: 1
run_launcher:
  module: pipelines.run_launch
  class: ForkServerRunLauncher
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  poll_interval_seconds: 10
  max_resume_run_attempts: 0
retention:
  schedule:
    purge_after_days: 7
  sensor:
    purge_after_days:
      skipped: 1
      failure: 7
      success: 7
"""


def write_dagster_yaml(home: Path) -> Path:
    """Create `home` and its dagster.yaml unless one exists; return the file's path."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "dagster.yaml"
    if not path.exists():
        path.write_text(DAGSTER_YAML)
    return path
