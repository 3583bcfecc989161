"""Dagster resources: the warehouse the assets write to."""


import os

from dagster import ConfigurableResource

from perfect10k.settings import load_settings
from warehouse import Warehouse


def _default_root() -> str:
    return str(load_settings().warehouse_dir)


class WarehouseResource(ConfigurableResource):
    """The Parquet warehouse; `root` defaults to PERFECT10K_WAREHOUSE."""

    root: str = ""

    def open(self) -> Warehouse:
        return Warehouse(self.root or os.environ.get("PERFECT10K_WAREHOUSE") or _default_root())
