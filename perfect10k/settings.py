"""Runtime settings read from environment variables.

Every setting has a default that works on one machine from the repository root. The
README lists each variable with its default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as error:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from error


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as error:
        raise ValueError(f"{name} must be a number, got {raw!r}") from error


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """Settings of one process; see `load_settings` for the variables behind each field."""

    data_dir: Path
    warehouse_dir: Path
    dagster_home: Path
    state_dir: Path
    h3_resolution: int
    host: str
    port: int
    workers: int
    dagster_host: str
    dagster_port: int
    dagster_embedded: bool
    max_pending_jobs: int
    graph_cache_mb: int
    result_cache_entries: int
    max_body_bytes: int
    rate_limit_per_minute: int
    cors_origins: tuple[str, ...]
    admin_token: str
    tile_url: str
    max_cell_age_days: float


def load_settings() -> Settings:
    """Read settings from the environment.

    PERFECT10K_DATA_DIR (default `./data`) is the parent of the warehouse, the Dagster home
    and the serving state unless each is set on its own.
    """
    data_dir = Path(os.environ.get("PERFECT10K_DATA_DIR", "data")).resolve()
    warehouse_dir = Path(os.environ.get("PERFECT10K_WAREHOUSE", data_dir / "warehouse")).resolve()
    dagster_home = Path(os.environ.get("DAGSTER_HOME", data_dir / "dagster")).resolve()
    state_dir = Path(os.environ.get("PERFECT10K_STATE_DIR", data_dir / "state")).resolve()
    cors = os.environ.get("PERFECT10K_CORS_ORIGINS", "")
    return Settings(
        data_dir=data_dir,
        warehouse_dir=warehouse_dir,
        dagster_home=dagster_home,
        state_dir=state_dir,
        h3_resolution=_env_int("PERFECT10K_H3_RESOLUTION", 7),
        host=os.environ.get("PERFECT10K_HOST", "127.0.0.1"),
        port=_env_int("PERFECT10K_PORT", 8000),
        workers=_env_int("PERFECT10K_WORKERS", 2),
        dagster_host=os.environ.get("PERFECT10K_DAGSTER_HOST", "127.0.0.1"),
        dagster_port=_env_int("PERFECT10K_DAGSTER_PORT", 3000),
        dagster_embedded=_env_bool("PERFECT10K_DAGSTER_EMBEDDED", True),
        max_pending_jobs=_env_int("PERFECT10K_MAX_PENDING_JOBS", 8),
        graph_cache_mb=_env_int("PERFECT10K_GRAPH_CACHE_MB", 200),
        result_cache_entries=_env_int("PERFECT10K_RESULT_CACHE_ENTRIES", 256),
        max_body_bytes=_env_int("PERFECT10K_MAX_BODY_BYTES", 64 * 1024),
        rate_limit_per_minute=_env_int("PERFECT10K_RATE_LIMIT_PER_MINUTE", 600),
        cors_origins=tuple(origin.strip() for origin in cors.split(",") if origin.strip()),
        admin_token=os.environ.get("PERFECT10K_ADMIN_TOKEN", ""),
        tile_url=os.environ.get(
            "PERFECT10K_TILE_URL", "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
        ),
        max_cell_age_days=_env_float("PERFECT10K_MAX_CELL_AGE_DAYS", 0.0),
    )
