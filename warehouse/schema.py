"""Arrow schemas of every table the warehouse stores.

Region tables are written once per imported extract under
`regions/<region_id>/<version>/<table>.parquet`. Cell tables are written per H3 cell under
`cells/<cell>/<version>/<table>.parquet`. Node ids are OSM node ids, or negative ids
of points the parser adds inside long segments (`pipelines.osm.POINT_ID_WAY_FACTOR`), so
the edges of neighbouring cells join at shared nodes when their tables are concatenated.
"""

from __future__ import annotations

import pyarrow as pa

# Walkable edges between graph vertices (intersections, way ends, blocked barriers).
# `lon` and `lat` hold the full geometry from u to v. `oneway_foot` is 1 when only u -> v
# may be walked (oneway:foot=yes), -1 for v -> u only, 0 for both ways.
REGION_EDGES = pa.schema(
    [
        ("edge_id", pa.int64()),
        ("way_id", pa.int64()),
        ("u", pa.int64()),
        ("v", pa.int64()),
        ("length_m", pa.float64()),
        ("lon", pa.list_(pa.float64())),
        ("lat", pa.list_(pa.float64())),
        ("highway", pa.string()),
        ("access", pa.string()),
        ("foot", pa.string()),
        ("surface", pa.string()),
        ("lit", pa.string()),
        ("name", pa.string()),
        ("oneway_foot", pa.int8()),
        ("mid_lat", pa.float64()),
        ("mid_lon", pa.float64()),
    ]
)

# Graph vertices and every other node on a walkable edge are not listed: only vertices.
REGION_NODES = pa.schema(
    [
        ("node_id", pa.int64()),
        ("lat", pa.float64()),
        ("lon", pa.float64()),
    ]
)

# Green space, water and park geometries as WKB (EPSG:4326, lon/lat order).
# kind is one of: park, green, forest, water, waterway, coastline.
REGION_AREAS = pa.schema(
    [
        ("kind", pa.string()),
        ("name", pa.string()),
        ("wkb", pa.binary()),
        ("min_lon", pa.float64()),
        ("min_lat", pa.float64()),
        ("max_lon", pa.float64()),
        ("max_lat", pa.float64()),
    ]
)

# Points of interest a walker may like to pass (viewpoint, drinking_water, bench, ...).
REGION_POIS = pa.schema(
    [
        ("node_id", pa.int64()),
        ("lat", pa.float64()),
        ("lon", pa.float64()),
        ("kind", pa.string()),
        ("name", pa.string()),
    ]
)

# The region's edge table as stored: parsed edges plus the H3 cell of each edge's midpoint
# at the warehouse resolution, sorted by cell so a cell's slice reads few row groups.
REGION_EDGES_STORED = REGION_EDGES.append(pa.field("cell", pa.string()))

REGION_TABLES = {
    "edges": REGION_EDGES_STORED,
    "nodes": REGION_NODES,
    "areas": REGION_AREAS,
    "pois": REGION_POIS,
}

# A cell's network: the region edges whose midpoint lies in the cell, and every vertex
# those edges touch (vertices outside the cell included, so borders join).
CELL_EDGES = REGION_EDGES
CELL_NODES = REGION_NODES

# Features per edge, each in [0, 1]: share of the edge within reach of green space,
# water and parks, quietness from the way kind, and nearby points of interest.
CELL_EDGE_FEATURES = pa.schema(
    [
        ("edge_id", pa.int64()),
        ("green", pa.float32()),
        ("water", pa.float32()),
        ("park", pa.float32()),
        ("quiet", pa.float32()),
        ("poi", pa.float32()),
    ]
)

# Green and water geometries clipped to the cell, for start snapping and map overlays.
CELL_AREAS = REGION_AREAS

CELL_NETWORK_TABLES = {"edges": CELL_EDGES, "nodes": CELL_NODES}
CELL_FEATURE_TABLES = {"edge_features": CELL_EDGE_FEATURES, "areas": CELL_AREAS}

FEATURE_NAMES = ("green", "water", "park", "quiet", "poi")
