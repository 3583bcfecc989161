"""Parquet warehouse of regions and H3 cells, with a manifest and DuckDB reads."""

from warehouse.store import CellEntry, CorruptCellError, Warehouse, WarehouseError

__all__ = ["CellEntry", "CorruptCellError", "Warehouse", "WarehouseError"]
