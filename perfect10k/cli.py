"""The `perfect10k` command: import extracts, build cells, serve, manage the cache."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from perfect10k.settings import Settings, load_settings

log = logging.getLogger("perfect10k")


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _latitude(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or not -90 <= value <= 90:
        raise argparse.ArgumentTypeError(f"latitude must be within -90..90, got {text}")
    return value


def _longitude(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or not -180 <= value <= 180:
        raise argparse.ArgumentTypeError(f"longitude must be within -180..180, got {text}")
    return value


def command_import(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.regions import import_region
    from warehouse import Warehouse

    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            result = import_region(
                Warehouse(settings.warehouse_dir),
                Path(args.extract),
                settings.h3_resolution,
                region=args.region,
                progress=lambda line: print(f"  {line}", flush=True),
            )
        except RuntimeError as error:
            # pyosmium raises RuntimeError for files that are not OSM data or are cut short.
            raise ValueError(
                f"{args.extract} could not be read as an OSM extract ({error}); "
                "expected an .osm.pbf, .osm or .osm.bz2 file"
            ) from error
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    if result.unchanged:
        print(f"region {result.region} is already imported at version {result.version}")
        return 0
    _record_region_materialization(settings, result)
    stats = result.stats
    print(
        f"imported region {result.region} (version {result.version}): "
        f"{stats['edges']:,} edges, {stats['vertices']:,} vertices, {result.cells} cells, "
        f"{stats['areas']:,} areas, {stats['pois']:,} points of interest "
        f"in {time.perf_counter() - started:.2f} s"
    )
    return 0


def _record_region_materialization(settings: Settings, result: Any) -> None:
    """Record the import as a materialization of the `region` asset, so the UI shows it."""
    _ensure_dagster_home(settings)
    from dagster import AssetMaterialization, DagsterInstance

    with DagsterInstance.get() as instance:
        instance.report_runless_asset_event(
            AssetMaterialization(
                asset_key="region",
                description="imported with `perfect10k import`",
                metadata={
                    "region": result.region,
                    "version": result.version,
                    "cells": result.cells,
                    "edges": result.stats["edges"],
                    "seconds": round(result.seconds, 3),
                },
            )
        )


def command_materialize(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.launch import build_cells_in_process
    from pipelines.tags import ORIGIN_BACKFILL
    from pipelines.warming import Place, cells_to_warm, place_cells
    from warehouse import Warehouse

    _ensure_dagster_home(settings)
    store = Warehouse(settings.warehouse_dir)
    if args.region:
        record = store.regions().get(args.region)
        if record is None:
            raise ValueError(f"region {args.region!r} is not imported; see `perfect10k cache info`")
        cells = cells_to_warm(store, list(record["cells"]), set())
    elif args.lat is None or args.lon is None:
        raise ValueError("give --lat and --lon, or --region")
    else:
        place = Place("command line", args.lat, args.lon, args.radius_m)
        cells = place_cells(store, [place], settings.h3_resolution)
    if not cells:
        print("every cell around the point is built, or no imported region covers it")
        return 0
    started = time.perf_counter()
    run_id = build_cells_in_process(cells, ORIGIN_BACKFILL)
    print(f"built {len(cells)} cells in Dagster run {run_id} in {time.perf_counter() - started:.1f} s")
    return 0


def command_serve(args: argparse.Namespace, settings: Settings) -> int:
    from serving.main import run_server

    _ensure_dagster_home(settings)
    return run_server(settings, host=args.host, port=args.port)


def command_cache(args: argparse.Namespace, settings: Settings) -> int:
    from perfect10k import cache

    return cache.run(args, settings)


def _ensure_dagster_home(settings: Settings) -> None:
    from perfect10k.dagster_home import write_dagster_yaml

    write_dagster_yaml(settings.dagster_home)
    os.environ["DAGSTER_HOME"] = str(settings.dagster_home)
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perfect10k",
        description="Plan walking loops from OpenStreetMap data precomputed per H3 cell.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True)

    importer = commands.add_parser(
        "import", help="register a region from an .osm.pbf, .osm or .osm.bz2 extract"
    )
    importer.add_argument("extract", help="path of the OSM extract")
    importer.add_argument("--region", help="region id (default: from the file name)")
    importer.set_defaults(handler=command_import)

    serve = commands.add_parser("serve", help="run the HTTP server (and Dagster beside it)")
    serve.add_argument("--host", help="listen address (default PERFECT10K_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default PERFECT10K_PORT, 8000)")
    serve.set_defaults(handler=command_serve)

    materialize = commands.add_parser(
        "materialize", help="build the cells around a point through a Dagster run"
    )
    materialize.add_argument("--lat", type=_latitude, help="latitude, degrees")
    materialize.add_argument("--lon", type=_longitude, help="longitude, degrees")
    materialize.add_argument("--region", help="build every cell of this imported region instead")
    materialize.add_argument(
        "--radius-m", type=float, default=3000.0, help="radius around the point, metres"
    )
    materialize.set_defaults(handler=command_materialize)

    from perfect10k.cache import add_cache_parser

    add_cache_parser(commands, command_cache)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    settings = load_settings()
    try:
        return int(args.handler(args, settings) or 0)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
