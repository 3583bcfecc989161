"""Dagster pipelines that turn OSM extracts into per-cell walking networks and features."""
