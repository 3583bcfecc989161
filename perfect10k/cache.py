"""The `perfect10k cache` subcommands: info, warm, monitor, export, import and clear."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from perfect10k.settings import Settings

DEFAULT_MONITOR_INTERVAL_S = 5.0
HEALTH_TIMEOUT_S = 5.0
# Unreferenced folders younger than this may belong to a build that has not yet switched
# the manifest to them, so `clear --kind orphans` keeps them.
ORPHAN_GRACE_S = 600.0


# Arguments


def _location(text: str) -> tuple[float, float]:
    """Parse "lat,lon" in degrees."""
    try:
        lat_text, lon_text = text.split(",")
        lat, lon = float(lat_text), float(lon_text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"a location is 'lat,lon' in degrees, e.g. 43.74,7.425; got {text!r}"
        ) from error
    if not (math.isfinite(lat) and -90 <= lat <= 90):
        raise argparse.ArgumentTypeError(f"latitude must be within -90..90, got {lat_text}")
    if not (math.isfinite(lon) and -180 <= lon <= 180):
        raise argparse.ArgumentTypeError(f"longitude must be within -180..180, got {lon_text}")
    return lat, lon


def _positive(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def add_cache_parser(commands: argparse._SubParsersAction, handler: Callable) -> None:
    cache = commands.add_parser("cache", help="inspect, warm, export, import or clear the cache")
    sub = cache.add_subparsers(dest="cache_command", required=True)

    info = sub.add_parser("info", help="regions, cells, bytes and cell ages of the warehouse")
    info.add_argument("--server", help="base URL of a running server, to show its hit rate")

    warm = sub.add_parser("warm", help="build the cells around places through a Dagster run")
    warm.add_argument(
        "--locations", nargs="+", type=_location, required=True, metavar="LAT,LON",
        help="centres to warm, each as lat,lon in degrees",
    )
    warm.add_argument(
        "--radius-m", type=_positive, default=3000.0, help="radius around each centre, metres"
    )

    monitor = sub.add_parser("monitor", help="live view of build runs, cells and hit rate")
    monitor.add_argument(
        "--interval", type=_positive, default=DEFAULT_MONITOR_INTERVAL_S,
        help="seconds between refreshes",
    )
    monitor.add_argument("--once", action="store_true", help="print one view and exit")
    monitor.add_argument("--server", help="base URL of a running server, to show its hit rate")

    export = sub.add_parser("export", help="write a snapshot of the current cache")
    export.add_argument("path", help="new directory, or a file name ending in .tar")

    importer = sub.add_parser("import", help="validate a snapshot and install it")
    importer.add_argument("path", help="snapshot directory or .tar file")
    importer.add_argument(
        "--overwrite", action="store_true", help="replace a warehouse that is not empty"
    )
    importer.add_argument(
        "--max-file-mb", type=_positive, default=1024.0,
        help="largest file accepted in the snapshot, MB",
    )

    clear = sub.add_parser("clear", help="delete cells, regions or both from the warehouse")
    clear.add_argument(
        "--kind", choices=("cells", "regions", "orphans", "all"), required=True,
        help="cells; regions with their cells; orphans (files no manifest entry names); all",
    )
    clear.add_argument(
        "--older-than-days", type=_non_negative, default=None,
        help="delete only what was built or imported more than this many days ago",
    )
    cache.set_defaults(handler=handler)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from warehouse import Warehouse
    from warehouse.snapshot import SnapshotError

    store = Warehouse(settings.warehouse_dir)
    commands = {
        "info": command_info,
        "warm": command_warm,
        "monitor": command_monitor,
        "export": command_export,
        "import": command_import,
        "clear": command_clear,
    }
    try:
        return commands[args.cache_command](args, settings, store)
    except SnapshotError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


# info


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def warehouse_facts(store: Any, max_age_s: float) -> dict[str, Any]:
    """Return counts, bytes and ages of the warehouse's regions and cells."""
    regions = store.regions()
    entries = store.cell_entries()
    now = time.time()
    per_region = {}
    for region, record in sorted(regions.items()):
        built = [e for e in entries.values() if e.region == region]
        per_region[region] = {
            "version": record["version"],
            "cells": len(record.get("cells", {})),
            "ready": sum(1 for e in built if e.ready),
            "stale": sum(1 for e in built if e.is_stale(record["version"], max_age_s)),
        }
    ages = [now - entry.built_at for entry in entries.values()]
    return {
        "warehouse": str(store.root),
        "regions": per_region,
        "cells": len(entries),
        "cells_ready": sum(1 for entry in entries.values() if entry.ready),
        "cells_stale": sum(item["stale"] for item in per_region.values()),
        "cells_orphaned": sum(1 for entry in entries.values() if entry.region not in regions),
        "cell_bytes": sum(entry.bytes for entry in entries.values()),
        "bytes": store.size_bytes(),
        "oldest_cell_age_s": max(ages) if ages else None,
        "newest_cell_age_s": min(ages) if ages else None,
    }


def server_health(url: str) -> dict[str, Any]:
    """Return the JSON body of GET {url}/api/health; raise OSError when the request fails."""
    with urllib.request.urlopen(f"{url.rstrip('/')}/api/health", timeout=HEALTH_TIMEOUT_S) as r:
        return json.loads(r.read())


def _hit_rate_line(url: str) -> str:
    try:
        health = server_health(url)
    except (OSError, ValueError) as error:
        return f"server {url}: no answer ({error})"
    cached = health.get("requests_cached", 0)
    cold = health.get("requests_async", 0)
    total = cached + cold
    rate = f"{cached / total:.1%}" if total else "n/a"
    loads = health.get("network_cache_hits", 0) + health.get("network_cache_misses", 0)
    memory = f"{health.get('network_cache_hits', 0) / loads:.1%}" if loads else "n/a"
    return (
        f"server {url} (worker pid {health.get('pid')}): hit rate {rate} "
        f"({cached} requests from cache, {cold} started a job); "
        f"in-memory network hit rate {memory}; dagster {health.get('dagster')}"
    )


def command_info(args: argparse.Namespace, settings: Settings, store: Any) -> int:
    facts = warehouse_facts(store, settings.max_cell_age_days * 86400)
    print(f"warehouse {facts['warehouse']}")
    print(
        f"regions: {len(facts['regions'])}  cells: {facts['cells']} "
        f"({facts['cells_ready']} ready, {facts['cells_stale']} stale)  "
        f"bytes: {facts['bytes']:,}"
    )
    for region, item in facts["regions"].items():
        print(
            f"  {region} version {item['version']}: {item['ready']} of {item['cells']} "
            f"cells ready, {item['stale']} stale"
        )
    if facts["oldest_cell_age_s"] is not None:
        print(
            f"cell age: oldest {_age(facts['oldest_cell_age_s'])}, "
            f"newest {_age(facts['newest_cell_age_s'])}"
        )
    if facts["cells_orphaned"]:
        print(f"cells of regions no longer imported: {facts['cells_orphaned']}")
    if args.server:
        print(_hit_rate_line(args.server))
    # NOTE: each server worker process counts its own requests, so the hit rate shown is
    # that of the worker that handled the /api/health request.
    return 0


# warm


def command_warm(args: argparse.Namespace, settings: Settings, store: Any) -> int:
    from perfect10k.dagster_home import write_dagster_yaml
    from pipelines.launch import build_cells_in_process
    from pipelines.tags import ORIGIN_BACKFILL
    from pipelines.warming import Place, place_cells

    # The run is recorded in the instance that the server's Dagster uses.
    write_dagster_yaml(settings.dagster_home)
    os.environ["DAGSTER_HOME"] = str(settings.dagster_home)
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("PERFECT10K_WAREHOUSE", str(settings.warehouse_dir))
    places = [
        Place(f"{lat:.5f},{lon:.5f}", lat, lon, args.radius_m) for lat, lon in args.locations
    ]
    max_age_s = settings.max_cell_age_days * 86400
    cells = place_cells(store, places, settings.h3_resolution, max_age_s)
    if not cells:
        print("every cell around these places is built, or no imported region covers them")
        return 0
    started = time.perf_counter()
    run_id = build_cells_in_process(cells, ORIGIN_BACKFILL)
    print(
        f"built {len(cells)} cells around {len(places)} places in Dagster run {run_id} "
        f"in {time.perf_counter() - started:.1f} s"
    )
    return 0


# monitor


def _run_lines(settings: Settings, limit: int = 8) -> list[str]:
    """Return lines for the runs in flight and the latest finished runs of the instance."""
    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

    from pipelines.tags import CELLS_TAG, ORIGIN_TAG
    from pipelines.warming import IN_FLIGHT

    if not (settings.dagster_home / "dagster.yaml").exists():
        return [f"no Dagster instance at {settings.dagster_home} (DAGSTER_HOME)"]
    # Opening the instance logs its storage checks at INFO on every refresh.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        in_flight = instance.get_run_records(filters=RunsFilter(statuses=IN_FLIGHT), limit=100)
        done = instance.get_run_records(
            filters=RunsFilter(
                statuses=[
                    DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED
                ]
            ),
            limit=limit,
        )
    now = time.time()
    lines = [f"runs in flight: {len(in_flight)}"]
    for record in list(in_flight) + list(done):
        run = record.dagster_run
        cells = len([cell for cell in run.tags.get(CELLS_TAG, "").split(",") if cell])
        if record.end_time and record.start_time:
            timing = f"took {record.end_time - record.start_time:.1f} s"
        elif record.start_time:
            timing = f"running {now - record.start_time:.0f} s"
        else:
            timing = f"created {now - record.create_timestamp.timestamp():.0f} s ago"
        lines.append(
            f"  {run.run_id[:8]} {run.job_name:<12} {run.status.value:<9} "
            f"origin={run.tags.get(ORIGIN_TAG, '-'):<8} cells={cells:<3} {timing}"
        )
    return lines


def monitor_view(settings: Settings, store: Any, server: str | None) -> str:
    facts = warehouse_facts(store, settings.max_cell_age_days * 86400)
    cells = (
        f"cells: {facts['cells_ready']} ready, {facts['cells_stale']} stale, "
        f"{facts['cells'] - facts['cells_ready']} incomplete; "
        f"{len(facts['regions'])} regions; {facts['bytes']:,} bytes"
    )
    lines = [time.strftime("%Y-%m-%d %H:%M:%S"), cells]
    lines.extend(_run_lines(settings))
    if server:
        lines.append(_hit_rate_line(server))
    return "\n".join(lines)


def command_monitor(args: argparse.Namespace, settings: Settings, store: Any) -> int:
    while True:
        view = monitor_view(settings, store, args.server)
        if args.once:
            print(view)
            return 0
        if sys.stdout.isatty():
            print("\x1b[2J\x1b[H", end="")
        print(view, flush=True)
        try:
            time.sleep(args.interval)
        except KeyboardInterrupt:
            return 0


# export and import


def command_export(args: argparse.Namespace, settings: Settings, store: Any) -> int:
    from warehouse.snapshot import export_snapshot

    summary = export_snapshot(store, Path(args.path))
    print(
        f"snapshot {summary.path}: {summary.regions} regions, {summary.cells} cells, "
        f"{summary.files} files, {summary.bytes:,} bytes"
    )
    if summary.skipped_cells:
        print(f"left out {summary.skipped_cells} cells that are incomplete or stale")
    return 0


def command_import(args: argparse.Namespace, settings: Settings, store: Any) -> int:
    from warehouse.snapshot import import_snapshot

    summary = import_snapshot(
        store,
        Path(args.path),
        settings.h3_resolution,
        overwrite=args.overwrite,
        max_file_bytes=int(args.max_file_mb * 1024 * 1024),
    )
    print(
        f"imported snapshot {summary.path}: {summary.regions} regions, {summary.cells} cells, "
        f"{summary.files} files, {summary.bytes:,} bytes"
    )
    if summary.removed_dirs:
        print(f"deleted {summary.removed_dirs} folders only the replaced manifest named")
    return 0


# clear


def command_clear(args: argparse.Namespace, settings: Settings, store: Any) -> int:
    from warehouse.snapshot import manifest_dirs

    cutoff = None if args.older_than_days is None else time.time() - args.older_than_days * 86400

    def old_enough(timestamp: float) -> bool:
        return cutoff is None or timestamp < cutoff

    removed_regions: list[str] = []
    removed_cells: list[str] = []
    if args.kind in ("cells", "regions", "all"):
        with store.update_manifest() as manifest:
            if args.kind in ("regions", "all"):
                for region, record in list(manifest["regions"].items()):
                    if old_enough(float(record.get("imported_at", 0))):
                        removed_regions.append(region)
                        del manifest["regions"][region]
            for cell, raw in list(manifest["cells"].items()):
                expired = args.kind in ("cells", "all") and old_enough(float(raw["built_at"]))
                if expired or raw["region"] in removed_regions:
                    removed_cells.append(cell)
                    del manifest["cells"][cell]
            kept = manifest_dirs(manifest)

        # NOTE: a build run that writes one of these cells during the deletion may leave a
        # manifest entry without files. The next build of that cell sets it aside first.
        for region in removed_regions:
            _remove_unnamed(store.root / "regions" / region, store.root, kept)
        for cell in removed_cells:
            _remove_unnamed(store.root / "cells" / cell, store.root, kept)
    else:
        kept = manifest_dirs(store.manifest())

    orphans = 0
    if args.kind in ("orphans", "all"):
        orphans = _remove_orphans(store.root, kept, old_enough)
    if args.kind == "all" and cutoff is None:
        for sub in ("quarantine", "tmp"):
            shutil.rmtree(store.root / sub, ignore_errors=True)
    print(
        f"removed {len(removed_regions)} regions, {len(removed_cells)} cells and "
        f"{orphans} unreferenced folders from {store.root}"
    )
    return 0


def _remove_unnamed(folder: Path, root: Path, kept: set[str]) -> None:
    """Delete the version folders under `folder` that the manifest does not name."""
    if not folder.is_dir():
        return
    for version in folder.iterdir():
        if version.relative_to(root).as_posix() not in kept:
            shutil.rmtree(version, ignore_errors=True)
    if not any(folder.iterdir()):
        folder.rmdir()


def _remove_orphans(root: Path, kept: set[str], old_enough: Callable[[float], bool]) -> int:
    """Delete version folders no manifest entry names, such as versions replaced by rebuilds."""
    removed = 0
    grace_end = time.time() - ORPHAN_GRACE_S
    for top in ("regions", "cells"):
        base = root / top
        if not base.is_dir():
            continue
        for owner in base.iterdir():
            for version in owner.iterdir():
                named = version.relative_to(root).as_posix() in kept
                mtime = version.stat().st_mtime
                if not named and mtime < grace_end and old_enough(mtime):
                    shutil.rmtree(version, ignore_errors=True)
                    removed += 1
            if not any(owner.iterdir()):
                owner.rmdir()
    return removed
