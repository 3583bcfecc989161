"""Partitions of the cell assets: one dynamic partition per H3 cell id."""

from dagster import DynamicPartitionsDefinition

from pipelines.tags import H3_CELLS

h3_cells_partitions = DynamicPartitionsDefinition(name=H3_CELLS)
