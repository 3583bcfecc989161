"""Compact walking network built from warehouse tables: numpy arrays and a CSR adjacency."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import shapely
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

FEATURE_NAMES: tuple[str, ...] = ("green", "water", "park", "quiet", "poi")

EARTH_RADIUS_M = 6_371_008.8

# Edges shorter than this get this length as cost, because scipy's csgraph treats a zero
# stored in a sparse matrix as a missing edge.
MIN_COST_M = 0.01

# Entries kept in a network's cache (edge costs per preference, lookup arrays, and one
# cache of sub-networks). Every other entry is at most a few arrays of one value per edge.
CACHE_ENTRIES = 24

# Sub-networks kept per network. Each can be a large part of its parent, so few are kept:
# enough for the steps of a few interactive routes at once.
AROUND_ENTRIES = 4


class BoundedCache:
    """Least-recently-used mapping with a fixed number of entries, safe across threads."""

    def __init__(self, max_entries: int = CACHE_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any, default: Any = None) -> Any:
        with self._lock:
            if key not in self._entries:
                return default
            self._entries.move_to_end(key)
            return self._entries[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

    def get_or_build(self, key: Any, build: Callable[[], Any]) -> Any:
        """Return the entry for `key`, building it outside the lock when it is missing."""
        value = self.get(key)
        if value is None:
            value = build()
            self[key] = value
        return value


@dataclass(eq=False)
class Network:
    """Walking network as flat arrays; edge and node indices are positions in these arrays.

    Nodes are only the vertices some kept edge touches. Geometry of edge i is
    `geom_lon[geom_offsets[i]:geom_offsets[i + 1]]` (and `geom_lat`), ordered from u to v.
    `csr` is the directed adjacency with lengths as weights. Each (from, to) pair is stored
    once with its shortest edge, and `csr_edge[k]` is the edge index of CSR entry k.
    `csr_reverse` / `csr_reverse_edge` are the same for the transposed graph (distances to
    a node). `x`/`y` are metres in a local equirectangular projection around (lat0, lon0).
    """

    node_ids: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    x: np.ndarray
    y: np.ndarray
    lat0: float
    lon0: float
    edge_ids: np.ndarray
    edge_u: np.ndarray
    edge_v: np.ndarray
    length: np.ndarray
    oneway: np.ndarray
    features: np.ndarray
    highway_codes: np.ndarray
    highway_names: tuple[str, ...]
    surface_codes: np.ndarray
    surface_names: tuple[str, ...]
    geom_offsets: np.ndarray
    geom_lon: np.ndarray
    geom_lat: np.ndarray
    csr: csr_matrix
    csr_edge: np.ndarray
    csr_reverse: csr_matrix
    csr_reverse_edge: np.ndarray
    component: np.ndarray
    component_length_m: np.ndarray
    largest_component: int
    kdtree: cKDTree | None
    # Water polygons, waterway lines and coastlines in local metres; a start never snaps
    # across them.
    water_geoms: np.ndarray
    water_tree: shapely.STRtree | None
    # Per-network results reused across requests (edge costs per preference, sub-networks).
    cache: BoundedCache = field(default_factory=BoundedCache, repr=False)
    # Rows of the parent network for a network made by `around`, else None.
    parent_nodes: np.ndarray | None = field(default=None, repr=False)
    parent_edges: np.ndarray | None = field(default=None, repr=False)

    @property
    def node_count(self) -> int:
        return int(self.node_ids.shape[0])

    @property
    def edge_count(self) -> int:
        return int(self.edge_ids.shape[0])

    @classmethod
    def from_tables(
        cls,
        nodes: pa.Table,
        edges: pa.Table,
        edge_features: pa.Table | None = None,
        areas: pa.Table | None = None,
    ) -> Network:
        """Build a network from merged cell tables (REGION_NODES, REGION_EDGES, ...).

        Edges listed by several cells are kept once per edge_id. Edges whose u or v is
        missing from `nodes` (at the border of the loaded area) are dropped. Edges without
        a feature row get zero features.
        """
        edges = _dedupe_edges(edges)
        node_table_ids = nodes.column("node_id").to_numpy().astype(np.int64)
        order = np.argsort(node_table_ids, kind="stable")
        sorted_ids = node_table_ids[order]
        unique_mask = np.ones(sorted_ids.shape[0], dtype=bool)
        unique_mask[1:] = sorted_ids[1:] != sorted_ids[:-1]
        sorted_ids = sorted_ids[unique_mask]
        order = order[unique_mask]

        # Map node ids to node table rows and drop edges that reference unknown nodes.
        u_ids = edges.column("u").to_numpy().astype(np.int64)
        v_ids = edges.column("v").to_numpy().astype(np.int64)
        u_row = _lookup(sorted_ids, u_ids)
        v_row = _lookup(sorted_ids, v_ids)
        keep = (u_row >= 0) & (v_row >= 0)
        if not keep.all():
            edges = edges.filter(pa.array(keep))
            u_row, v_row = u_row[keep], v_row[keep]

        # Keep only vertices some edge touches, renumbered 0..n-1 in node id order.
        used_rows, inverse = np.unique(np.concatenate([u_row, v_row]), return_inverse=True)
        edge_u = inverse[: u_row.shape[0]].astype(np.int32)
        edge_v = inverse[u_row.shape[0] :].astype(np.int32)
        table_rows = order[used_rows]
        node_ids = sorted_ids[used_rows]
        lat = nodes.column("lat").to_numpy()[table_rows].astype(np.float64)
        lon = nodes.column("lon").to_numpy()[table_rows].astype(np.float64)

        lat0 = float(np.mean(lat)) if lat.size else 0.0
        lon0 = float(np.mean(lon)) if lon.size else 0.0
        x, y = project(lat, lon, lat0, lon0)

        geom_offsets, geom_lon, geom_lat = _flat_geometry(edges, edge_u, edge_v, lat, lon)
        length = _edge_lengths(edges, geom_offsets, geom_lon, geom_lat)
        oneway = _int_column(edges, "oneway_foot", np.int8)
        edge_ids = edges.column("edge_id").to_numpy().astype(np.int64)
        highway_codes, highway_names = _categorical(edges, "highway")
        surface_codes, surface_names = _categorical(edges, "surface")
        features = _join_features(edge_ids, edge_features)

        csr, csr_edge = _directed_csr(edge_u, edge_v, oneway, length, node_ids.shape[0])
        # Swapping u and v under the same oneway rule transposes every allowed direction.
        csr_reverse, csr_reverse_edge = _directed_csr(
            edge_v, edge_u, oneway, length, node_ids.shape[0]
        )

        # Strong components, because a loop has to get back to its start under oneway:foot.
        if node_ids.shape[0]:
            _, component = connected_components(csr, directed=True, connection="strong")
            component = component.astype(np.int32)
        else:
            component = np.zeros(0, dtype=np.int32)
        same = component[edge_u] == component[edge_v]
        component_length_m = np.bincount(
            component[edge_u][same],
            weights=length[same],
            minlength=int(component.max(initial=-1)) + 1,
        )
        largest = int(np.argmax(component_length_m)) if component_length_m.size else -1

        kdtree = cKDTree(np.column_stack([x, y])) if node_ids.shape[0] else None
        water_geoms = _water_geometries(areas, lat0, lon0)
        water_tree = shapely.STRtree(water_geoms) if water_geoms.size else None

        return cls(
            node_ids=node_ids,
            lat=lat,
            lon=lon,
            x=x,
            y=y,
            lat0=lat0,
            lon0=lon0,
            edge_ids=edge_ids,
            edge_u=edge_u,
            edge_v=edge_v,
            length=length,
            oneway=oneway,
            features=features,
            highway_codes=highway_codes,
            highway_names=highway_names,
            surface_codes=surface_codes,
            surface_names=surface_names,
            geom_offsets=geom_offsets,
            geom_lon=geom_lon,
            geom_lat=geom_lat,
            csr=csr,
            csr_edge=csr_edge,
            csr_reverse=csr_reverse,
            csr_reverse_edge=csr_reverse_edge,
            component=component,
            component_length_m=component_length_m,
            largest_component=largest,
            kdtree=kdtree,
            water_geoms=water_geoms,
            water_tree=water_tree,
        )

    def node_index(self, node_id: int) -> int:
        """Return the array index of a node id, or -1 when the network lacks it."""
        row = int(np.searchsorted(self.node_ids, node_id))
        if row < self.node_ids.shape[0] and self.node_ids[row] == node_id:
            return row
        return -1

    def edge_index(self, edge_id: int) -> int:
        """Return the array index of an edge id, or -1 when the network lacks it."""
        order = self.cache.get("edge_order")
        if order is None:
            order = np.argsort(self.edge_ids, kind="stable")
            self.cache["edge_order"] = order
        row = int(np.searchsorted(self.edge_ids, edge_id, sorter=order))
        if row < order.shape[0] and self.edge_ids[order[row]] == edge_id:
            return int(order[row])
        return -1

    def around(self, node: int, radius_m: float) -> Network:
        """Return the part of the network within `radius_m` (straight line) of a node.

        A closed walk of length L never leaves the circle of radius L / 2 around its start,
        so searches for it can run on this smaller network. Results are cached per node and
        radius. Node and edge ids are the parent's, so ids move freely between the two.
        """
        key = (int(node), round(float(radius_m), -1))
        cache = self.cache.get_or_build("around", lambda: BoundedCache(AROUND_ENTRIES))
        return cache.get_or_build(key, lambda: self._build_around(node, radius_m))

    def _build_around(self, node: int, radius_m: float) -> Network:
        inside = np.hypot(self.x - self.x[node], self.y - self.y[node]) <= radius_m
        edges = np.flatnonzero(inside[self.edge_u] & inside[self.edge_v])
        # A mask gives the same sorted unique nodes as np.unique, without sorting.
        touched = np.zeros(self.node_count, dtype=bool)
        touched[self.edge_u[edges]] = True
        touched[self.edge_v[edges]] = True
        touched[node] = True
        nodes = np.flatnonzero(touched)
        remap = np.full(self.node_count, -1, dtype=np.int32)
        remap[nodes] = np.arange(nodes.shape[0], dtype=np.int32)
        edge_u = remap[self.edge_u[edges]]
        edge_v = remap[self.edge_v[edges]]
        length = self.length[edges]
        oneway = self.oneway[edges]

        starts = self.geom_offsets[edges]
        counts = self.geom_offsets[edges + 1] - starts
        geom_offsets = np.zeros(edges.shape[0] + 1, dtype=np.int64)
        np.cumsum(counts, out=geom_offsets[1:])
        points = np.repeat(starts - geom_offsets[:-1], counts) + np.arange(int(geom_offsets[-1]))

        count = nodes.shape[0]
        kept = np.zeros(self.edge_count, dtype=bool)
        kept[edges] = True
        edge_remap = np.full(self.edge_count, -1, dtype=np.int32)
        edge_remap[edges] = np.arange(edges.shape[0], dtype=np.int32)
        csr, csr_edge = _sub_csr(
            self.csr, self.csr_edge, self.entry_rows(False), kept, remap, edge_remap, count
        )
        csr_reverse, csr_reverse_edge = _sub_csr(
            self.csr_reverse,
            self.csr_reverse_edge,
            self.entry_rows(True),
            kept,
            remap,
            edge_remap,
            count,
        )
        return Network(
            node_ids=self.node_ids[nodes],
            lat=self.lat[nodes],
            lon=self.lon[nodes],
            x=self.x[nodes],
            y=self.y[nodes],
            lat0=self.lat0,
            lon0=self.lon0,
            edge_ids=self.edge_ids[edges],
            edge_u=edge_u,
            edge_v=edge_v,
            length=length,
            oneway=oneway,
            features=self.features[edges],
            highway_codes=self.highway_codes[edges],
            highway_names=self.highway_names,
            surface_codes=self.surface_codes[edges],
            surface_names=self.surface_names,
            geom_offsets=geom_offsets,
            geom_lon=self.geom_lon[points],
            geom_lat=self.geom_lat[points],
            csr=csr,
            csr_edge=csr_edge,
            csr_reverse=csr_reverse,
            csr_reverse_edge=csr_reverse_edge,
            component=self.component[nodes],
            component_length_m=self.component_length_m,
            largest_component=self.largest_component,
            kdtree=None,
            water_geoms=np.array([], dtype=object),
            water_tree=None,
            cache=BoundedCache(),
            parent_nodes=nodes,
            parent_edges=edges,
        )

    def entry_rows(self, reverse: bool) -> np.ndarray:
        """Return the row of every entry of `csr` (or `csr_reverse`), cached per network."""

        def build() -> np.ndarray:
            matrix = self.csr_reverse if reverse else self.csr
            counts = np.diff(matrix.indptr)
            return np.repeat(np.arange(matrix.shape[0], dtype=np.int32), counts)

        return self.cache.get_or_build(("entry_rows", reverse), build)

    def feature(self, name: str) -> np.ndarray:
        return self.features[:, FEATURE_NAMES.index(name)]

    def edge_coordinates(self, edge: int, forward: bool) -> list[tuple[float, float]]:
        """Return the (lon, lat) points of an edge in walking direction."""
        start, stop = self.geom_offsets[edge], self.geom_offsets[edge + 1]
        lons = self.geom_lon[start:stop]
        lats = self.geom_lat[start:stop]
        if not forward:
            lons, lats = lons[::-1], lats[::-1]
        return list(zip(lons.tolist(), lats.tolist()))


def project(
    lat: np.ndarray | float, lon: np.ndarray | float, lat0: float, lon0: float
) -> tuple[np.ndarray, np.ndarray]:
    """Project to metres on a local equirectangular plane (error < 0.5% within ~20 km)."""
    scale = math.pi / 180.0 * EARTH_RADIUS_M
    x = (np.asarray(lon, dtype=np.float64) - lon0) * scale * math.cos(math.radians(lat0))
    y = (np.asarray(lat, dtype=np.float64) - lat0) * scale
    return x, y


def _lookup(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    rows = np.searchsorted(sorted_ids, ids)
    rows = np.minimum(rows, max(sorted_ids.shape[0] - 1, 0))
    if sorted_ids.shape[0] == 0:
        return np.full(ids.shape[0], -1, dtype=np.int64)
    return np.where(sorted_ids[rows] == ids, rows, -1)


def _dedupe_edges(edges: pa.Table) -> pa.Table:
    ids = edges.column("edge_id").to_numpy().astype(np.int64)
    _, first = np.unique(ids, return_index=True)
    if first.shape[0] == ids.shape[0]:
        return edges
    return edges.take(pa.array(np.sort(first)))


def _int_column(table: pa.Table, name: str, dtype: type) -> np.ndarray:
    if name not in table.column_names:
        return np.zeros(table.num_rows, dtype=dtype)
    column = pc.fill_null(table.column(name), 0)
    return column.to_numpy().astype(dtype)


def _categorical(table: pa.Table, name: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Encode a string column as int16 codes; code 0 is the empty string (missing tag)."""
    if name not in table.column_names or table.num_rows == 0:
        return np.zeros(table.num_rows, dtype=np.int16), ("",)
    values = pc.fill_null(table.column(name), "").combine_chunks()
    encoded = values.dictionary_encode()
    names = [""] + [value for value in encoded.dictionary.to_pylist() if value != ""]
    remap = np.array([names.index(value) for value in encoded.dictionary.to_pylist()])
    codes = remap[encoded.indices.to_numpy(zero_copy_only=False)] if remap.size else None
    if codes is None:
        return np.zeros(table.num_rows, dtype=np.int16), ("",)
    return codes.astype(np.int16), tuple(names)


def _flat_geometry(
    edges: pa.Table,
    edge_u: np.ndarray,
    edge_v: np.ndarray,
    lat: np.ndarray,
    lon: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate edge geometries; an edge with fewer than two points gets its end nodes."""
    count = edge_u.shape[0]
    if count == 0 or "lon" not in edges.column_names:
        given_lengths = np.zeros(count, dtype=np.int64)
        flat_lon = flat_lat = np.zeros(0)
    else:
        lon_column = edges.column("lon").combine_chunks()
        lat_column = edges.column("lat").combine_chunks()
        given_lengths = pc.fill_null(pc.list_value_length(lon_column), 0).to_numpy()
        lat_lengths = pc.fill_null(pc.list_value_length(lat_column), 0).to_numpy()
        given_lengths = np.where(given_lengths == lat_lengths, given_lengths, 0)
        flat_lon = pc.list_flatten(lon_column).to_numpy(zero_copy_only=False)
        flat_lat = pc.list_flatten(lat_column).to_numpy(zero_copy_only=False)

    valid = given_lengths >= 2
    lengths = np.where(valid, given_lengths, 2).astype(np.int64)
    offsets = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    geom_lon = np.empty(int(offsets[-1]), dtype=np.float64)
    geom_lat = np.empty(int(offsets[-1]), dtype=np.float64)

    # Copy the given points of valid edges in one masked assignment.
    source_valid = np.repeat(valid, given_lengths.astype(np.int64))
    target_valid = np.repeat(valid, lengths)
    geom_lon[target_valid] = flat_lon[source_valid]
    geom_lat[target_valid] = flat_lat[source_valid]

    missing = np.flatnonzero(~valid)
    geom_lon[offsets[missing]] = lon[edge_u[missing]]
    geom_lat[offsets[missing]] = lat[edge_u[missing]]
    geom_lon[offsets[missing] + 1] = lon[edge_v[missing]]
    geom_lat[offsets[missing] + 1] = lat[edge_v[missing]]
    return offsets, geom_lon, geom_lat


def _edge_lengths(
    edges: pa.Table, offsets: np.ndarray, geom_lon: np.ndarray, geom_lat: np.ndarray
) -> np.ndarray:
    """Return length_m, measured on the geometry where it is missing or not positive."""
    count = offsets.shape[0] - 1
    given = (
        pc.fill_null(edges.column("length_m"), np.nan).to_numpy().astype(np.float64)
        if "length_m" in edges.column_names
        else np.full(count, np.nan)
    )
    bad = ~(given > 0)
    if bad.any():
        lat1, lat2 = np.radians(geom_lat[:-1]), np.radians(geom_lat[1:])
        dlat = lat2 - lat1
        dlon = np.radians(geom_lon[1:] - geom_lon[:-1])
        a = np.sin(dlat / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin(dlon / 2) ** 2
        step = 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0, 1)))
        # Steps that span two edges are zeroed so each sum stays within one edge.
        step[offsets[1:-1] - 1] = 0.0
        cumulative = np.concatenate([[0.0], np.cumsum(step)])
        measured = cumulative[offsets[1:] - 1] - cumulative[offsets[:-1]]
        given = np.where(bad, measured, given)
    return np.maximum(given, 0.0)


def _join_features(edge_ids: np.ndarray, edge_features: pa.Table | None) -> np.ndarray:
    features = np.zeros((edge_ids.shape[0], len(FEATURE_NAMES)), dtype=np.float32)
    if edge_features is None or edge_features.num_rows == 0:
        return features
    feature_ids = edge_features.column("edge_id").to_numpy().astype(np.int64)
    order = np.argsort(feature_ids, kind="stable")
    rows = _lookup(feature_ids[order], edge_ids)
    found = rows >= 0
    source = order[rows[found]]
    for column, name in enumerate(FEATURE_NAMES):
        if name in edge_features.column_names:
            values = pc.fill_null(edge_features.column(name), 0).to_numpy()
            features[found, column] = np.clip(values[source], 0.0, 1.0)
    return features


def _directed_csr(
    edge_u: np.ndarray,
    edge_v: np.ndarray,
    oneway: np.ndarray,
    length: np.ndarray,
    node_count: int,
) -> tuple[csr_matrix, np.ndarray]:
    """Build the directed adjacency, keeping the shortest edge per (from, to) pair.

    scipy sums duplicate entries when it builds a sparse matrix from coordinates, which
    would turn two parallel ways into one long one, so duplicates are removed first.
    """
    edge_index = np.arange(edge_u.shape[0], dtype=np.int32)
    not_loop = edge_u != edge_v
    forward = not_loop & (oneway >= 0)
    backward = not_loop & (oneway <= 0)
    rows = np.concatenate([edge_u[forward], edge_v[backward]])
    cols = np.concatenate([edge_v[forward], edge_u[backward]])
    entry_edge = np.concatenate([edge_index[forward], edge_index[backward]])
    weights = np.maximum(length[entry_edge], MIN_COST_M)

    order = np.lexsort((weights, cols, rows))
    rows, cols, entry_edge, weights = rows[order], cols[order], entry_edge[order], weights[order]
    first = np.ones(rows.shape[0], dtype=bool)
    first[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
    rows, cols, entry_edge, weights = rows[first], cols[first], entry_edge[first], weights[first]

    indptr = np.zeros(node_count + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=node_count), out=indptr[1:])
    matrix = csr_matrix((weights, cols.astype(np.int32), indptr), shape=(node_count, node_count))
    return matrix, entry_edge.astype(np.int32)


def _sub_csr(
    matrix: csr_matrix,
    entry_edge: np.ndarray,
    entry_rows: np.ndarray,
    kept: np.ndarray,
    node_remap: np.ndarray,
    edge_remap: np.ndarray,
    count: int,
) -> tuple[csr_matrix, np.ndarray]:
    """Return the entries of a CSR adjacency whose edge is kept, renumbered.

    `entry_rows` is the row of every entry. Kept nodes keep their relative order, so rows
    stay sorted and no sort is needed.
    """
    keep = np.flatnonzero(kept[entry_edge])
    rows = node_remap[entry_rows[keep]]
    cols = node_remap[matrix.indices[keep]]
    indptr = np.zeros(count + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=count), out=indptr[1:])
    sub = csr_matrix((matrix.data[keep], cols, indptr), shape=(count, count), copy=False)
    return sub, edge_remap[entry_edge[keep]]


def _water_geometries(areas: pa.Table | None, lat0: float, lon0: float) -> np.ndarray:
    """Return water polygons, waterway lines and coastlines projected to local metres."""
    if areas is None or areas.num_rows == 0:
        return np.array([], dtype=object)
    kinds = np.array(pc.fill_null(areas.column("kind"), "").to_pylist(), dtype=object)
    is_line_kind = (kinds == "coastline") | (kinds == "waterway")
    wanted = np.flatnonzero((kinds == "water") | is_line_kind)
    if wanted.size == 0:
        return np.array([], dtype=object)
    blobs = areas.column("wkb").take(pa.array(wanted)).to_pylist()
    geoms = shapely.from_wkb(np.array(blobs, dtype=object), on_invalid="ignore")
    is_polygon = np.isin(shapely.get_type_id(geoms), [3, 6])
    keep = ~shapely.is_missing(geoms) & (is_polygon | is_line_kind[wanted])
    geoms = geoms[keep]

    def to_metres(coords: np.ndarray) -> np.ndarray:
        x, y = project(coords[:, 1], coords[:, 0], lat0, lon0)
        return np.column_stack([x, y])

    geoms = shapely.transform(geoms, to_metres)
    shapely.prepare(geoms)
    return geoms
