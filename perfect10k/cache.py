"""The `perfect10k cache` subcommands."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from perfect10k.settings import Settings


def add_cache_parser(commands: argparse._SubParsersAction, handler: Callable) -> None:
    cache = commands.add_parser("cache", help="inspect, warm, export, import or clear the cache")
    sub = cache.add_subparsers(dest="cache_command", required=True)
    sub.add_parser("info", help="cells, regions, bytes and age of the warehouse")
    cache.set_defaults(handler=handler)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from warehouse import Warehouse

    store = Warehouse(settings.warehouse_dir)
    if args.cache_command == "info":
        regions = store.regions()
        cells = store.cell_entries()
        print(f"warehouse {settings.warehouse_dir}")
        print(f"regions: {len(regions)}  cells: {len(cells)}  bytes: {store.size_bytes():,}")
        return 0
    return 2
