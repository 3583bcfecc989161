"""Time and peak memory of a region import against osmnx.graph_from_xml on the same ways.

Each repetition runs three child processes, each with a fresh warehouse. The first calls
`pipelines.regions.import_region`, timed inside the child. The second is the
`perfect10k import` command, timed as a whole process with the interpreter start. The
third calls `osmnx.graph_from_xml` on an OSM XML copy of the extract that contains only the
ways osmnx's own "walk" filter keeps, and their nodes. Peak RSS comes from `wait4` for each
child. The XML is written once with `osmium.SimpleWriter` before anything is timed.

Run from the repository root:
python benchmarks/bench_import.py [--repeat N] [--extract PATH]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import common
import osmium

SCRIPT = Path(__file__).resolve()

# osmnx 2.1.1's Overpass filter for network_type="walk" (osmnx/_overpass.py), as regular
# expressions: a way needs `highway` and must match none of these tag values.
WALK_EXCLUDED = {
    "area": re.compile("yes"),
    "access": re.compile("private"),
    "highway": re.compile(
        "abandoned|bus_guideway|construction|cycleway|motor|no|planned|platform|proposed|"
        "raceway|razed|rest_area|services"
    ),
    "foot": re.compile("no"),
    "service": re.compile("private"),
    "sidewalk": re.compile("separate"),
    "sidewalk:both": re.compile("separate"),
    "sidewalk:left": re.compile("separate"),
    "sidewalk:right": re.compile("separate"),
}


def is_osmnx_walkable(tags: osmium.osm.TagList) -> bool:
    if "highway" not in tags:
        return False
    for key, pattern in WALK_EXCLUDED.items():
        value = tags.get(key)
        if value is not None and pattern.search(value):
            return False
    return True


class _WalkNodeCollector(osmium.SimpleHandler):
    def __init__(self) -> None:
        super().__init__()
        self.node_ids: set[int] = set()
        self.ways = 0

    def way(self, way: osmium.osm.Way) -> None:
        if is_osmnx_walkable(way.tags):
            self.ways += 1
            self.node_ids.update(node.ref for node in way.nodes)


class _WalkWriter(osmium.SimpleHandler):
    def __init__(self, writer: osmium.SimpleWriter, node_ids: set[int] | None) -> None:
        super().__init__()
        self.writer = writer
        self.node_ids = node_ids

    def node(self, node: osmium.osm.Node) -> None:
        if self.node_ids is None or node.id in self.node_ids:
            self.writer.add_node(node)

    def way(self, way: osmium.osm.Way) -> None:
        if self.node_ids is None or is_osmnx_walkable(way.tags):
            self.writer.add_way(way)

    def relation(self, relation: osmium.osm.Relation) -> None:
        if self.node_ids is None:
            self.writer.add_relation(relation)


def write_osm_xml(extract: Path, target: Path, walk_only: bool) -> int:
    """Convert `extract` to OSM XML; with `walk_only`, keep osmnx's walkable ways and nodes.

    Returns the number of ways kept (0 for a full copy).
    """
    collector = None
    if walk_only:
        collector = _WalkNodeCollector()
        collector.apply_file(str(extract))
    writer = osmium.SimpleWriter(str(target), overwrite=True)
    try:
        _WalkWriter(writer, collector.node_ids if collector else None).apply_file(str(extract))
    finally:
        writer.close()
    return collector.ways if collector else 0


# Child processes: each prints one JSON line.


def child_import(extract: str, warehouse: str) -> None:
    from pipelines.regions import import_region
    from warehouse import Warehouse

    with common.cpu_timer() as timing:
        result = import_region(Warehouse(Path(warehouse)), Path(extract), 7)
    stats = result.stats
    print(json.dumps({
        **timing, "edges": stats["edges"], "vertices": stats["vertices"], "cells": result.cells
    }))


def child_osmnx(xml: str) -> None:
    import osmnx

    with common.cpu_timer() as timing:
        # bidirectional=True is what osmnx uses for its own "walk" networks.
        graph = osmnx.graph_from_xml(xml, bidirectional=True, simplify=True, retain_all=False)
    print(json.dumps({
        **timing, "nodes": graph.number_of_nodes(), "edges": graph.number_of_edges()
    }))


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1][:100] if lines else "no output"


def _checked(result: common.ChildResult, what: str) -> common.ChildResult:
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed with exit code {result.returncode}:\n{result.stderr}")
    return result


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--osmnx-raw", action="store_true",
        help="also time graph_from_xml on the whole extract (every way, ~25 s more per run)",
    )


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0], 3, _add_arguments)
    common.print_header("region import vs osmnx.graph_from_xml", args)
    python = sys.executable

    m = {
        "import": common.Metric("import_region, in the child", "s", bar=("<=", 3.0)),
        "import_cpu": common.Metric("import_region CPU time", "s"),
        "import_rss": common.Metric("import_region child peak RSS", "MB", bar=("<=", 400.0)),
        "cli": common.Metric("`perfect10k import` process", "s", note="interpreter start included"),
        "cli_cpu": common.Metric("`perfect10k import` process CPU time", "s"),
        "cli_rss": common.Metric("`perfect10k import` peak RSS", "MB", bar=("<=", 400.0)),
        "osmnx": common.Metric("osmnx.graph_from_xml, walk ways", "s"),
        "osmnx_cpu": common.Metric("osmnx.graph_from_xml CPU time", "s"),
        "osmnx_rss": common.Metric("osmnx child peak RSS", "MB"),
        "speed": common.Metric(
            "speed ratio osmnx / import_region", "x", bar=(">=", 8.0),
            note="wall time in the children, same repetition",
        ),
        "speed_cpu": common.Metric(
            "CPU-time ratio osmnx / import_region", "x", note="robust to other load"
        ),
        "wall": common.Metric("wall ratio osmnx process / CLI", "x", note="whole processes"),
        "memory": common.Metric("peak RSS ratio osmnx / import_region", "x"),
    }
    raw = common.Metric("osmnx.graph_from_xml, whole file", "s")
    sizes: dict[str, dict] = {}

    with common.temp_data_dir("import", args.keep) as work:
        walk_xml = work / "walk.osm"
        started = time.perf_counter()
        ways = write_osm_xml(args.extract, walk_xml, walk_only=True)
        print(
            f"OSM XML for osmnx: {ways:,} walkable ways, {walk_xml.stat().st_size / 1e6:.1f} MB, "
            f"written in {time.perf_counter() - started:.1f} s (not timed)"
        )
        raw_xml = work / "raw.osm"
        if args.osmnx_raw:
            write_osm_xml(args.extract, raw_xml, walk_only=False)

        for repetition in range(args.repeat):
            data = work / f"run-{repetition}"
            child = _checked(
                common.run_measured(
                    common.python_child(
                        SCRIPT, "--child", "import", str(args.extract), str(data / "import")
                    )
                ),
                "import_region",
            )
            sizes["import"] = child.json()
            m["import"].add(sizes["import"]["seconds"])
            m["import_cpu"].add(sizes["import"]["cpu_seconds"])
            m["import_rss"].add(child.max_rss_mb)

            env = common.perfect10k_env(data / "cli")
            cli = _checked(
                common.run_measured(
                    [python, "-m", "perfect10k.cli", "import", str(args.extract)], env
                ),
                "perfect10k import",
            )
            m["cli"].add(cli.seconds)
            m["cli_cpu"].add(cli.cpu_seconds)
            m["cli_rss"].add(cli.max_rss_mb)

            osmnx = common.run_measured(
                common.python_child(SCRIPT, "--child", "osmnx", str(walk_xml)), timeout_s=600
            )
            if osmnx.returncode != 0:
                # osmnx rejects extracts whose ways reference missing nodes (clipped extracts).
                m["osmnx"].note = "failed: " + _last_line(osmnx.stderr)
                continue
            sizes["osmnx"] = osmnx.json()
            m["osmnx"].add(sizes["osmnx"]["seconds"])
            m["osmnx_cpu"].add(sizes["osmnx"]["cpu_seconds"])
            m["osmnx_rss"].add(osmnx.max_rss_mb)
            m["speed"].add(sizes["osmnx"]["seconds"] / sizes["import"]["seconds"])
            m["speed_cpu"].add(sizes["osmnx"]["cpu_seconds"] / sizes["import"]["cpu_seconds"])
            m["wall"].add(osmnx.seconds / cli.seconds)
            m["memory"].add(osmnx.max_rss_mb / child.max_rss_mb)

            if args.osmnx_raw:
                whole = common.run_measured(
                    common.python_child(SCRIPT, "--child", "osmnx", str(raw_xml)), timeout_s=600
                )
                if whole.returncode == 0:
                    raw.add(whole.json()["seconds"])
                else:
                    raw.note = "failed: " + _last_line(whole.stderr)
            common.log.info(
                "repetition %d: import %.2f s, osmnx %.2f s",
                repetition + 1, sizes["import"]["seconds"], sizes["osmnx"]["seconds"],
            )

    print(
        f"Perfect10k network: {sizes['import']['edges']:,} edges, "
        f"{sizes['import']['vertices']:,} vertices in {sizes['import']['cells']} cells"
    )
    if "osmnx" in sizes:
        print(
            "osmnx graph (largest weak component, simplified, both directions): "
            f"{sizes['osmnx']['nodes']:,} nodes, {sizes['osmnx']['edges']:,} edges"
        )
    print()
    metrics = list(m.values()) + ([raw] if args.osmnx_raw else [])
    common.print_table("region import", metrics)
    common.print_footer()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        {"import": child_import, "osmnx": child_osmnx}[sys.argv[2]](*sys.argv[3:])
    else:
        main()
