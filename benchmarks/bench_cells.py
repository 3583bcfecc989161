"""Build every cell of a region: the pipeline functions directly, then one Dagster run.

The extract is imported once, and each repetition builds every cell of the region twice,
each time in a child process on a fresh copy of that warehouse. The first child calls the
`pipelines.cells` functions (network, then features, one cell after the other). The second
runs the `build_cells` job once in process (`pipelines.launch.build_cells_in_process`)
against a fresh Dagster home. Bytes per cell come from the manifest the functions wrote.

Run from the repository root:
python benchmarks/bench_cells.py [--repeat N] [--extract PATH]
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import common

SCRIPT = Path(__file__).resolve()


def child_functions(warehouse_dir: str, region: str) -> None:
    from pipelines.cells import RegionFeatureSource, build_cell_features, build_cell_network
    from warehouse import Warehouse

    warehouse = Warehouse(Path(warehouse_dir))
    cells = list(warehouse.regions()[region]["cells"])
    per_cell = []
    with common.cpu_timer() as timing:
        source = RegionFeatureSource(warehouse)
        for cell in cells:
            started = time.perf_counter()
            if build_cell_network(warehouse, cell) is not None:
                build_cell_features(warehouse, cell, source)
            per_cell.append(time.perf_counter() - started)
    print(json.dumps({**timing, "cells": len(cells), "per_cell": per_cell}))


def _step_durations(instance, run_id: str) -> dict[str, float]:
    """Return each step's seconds from its STEP_START to STEP_SUCCESS event."""
    from dagster import DagsterEventType

    starts: dict[str, float] = {}
    durations: dict[str, float] = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            starts[event.step_key] = record.timestamp
        elif event.event_type == DagsterEventType.STEP_SUCCESS:
            durations[event.step_key] = record.timestamp - starts[event.step_key]
    return durations


def child_dagster(region: str) -> None:
    from dagster import DagsterInstance

    from perfect10k.dagster_home import write_dagster_yaml
    from pipelines.launch import build_cells_in_process
    from pipelines.tags import ORIGIN_BACKFILL
    from warehouse import Warehouse

    write_dagster_yaml(Path(os.environ["DAGSTER_HOME"]))
    # Load the code location before timing, as a running process would have it loaded.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pipelines.definitions  # noqa: F401

    cells = list(Warehouse(Path(os.environ["PERFECT10K_WAREHOUSE"])).regions()[region]["cells"])
    with common.cpu_timer() as timing:
        run_id = build_cells_in_process(cells, ORIGIN_BACKFILL)
    steps = _step_durations(DagsterInstance.get(), run_id)
    print(json.dumps({**timing, "cells": len(cells), "run_id": run_id, "steps": steps}))


def _checked(result: common.ChildResult, what: str) -> dict:
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed with exit code {result.returncode}:\n{result.stderr}")
    return result.json()


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0], 3)
    common.print_header("cell builds: pipeline functions vs one Dagster run", args)
    python = sys.executable

    fn_seconds = common.Metric("functions: all cells", "s")
    fn_rate = common.Metric("functions: cells per second", "cells/s")
    fn_cpu = common.Metric("functions: CPU time", "s")
    fn_p50 = common.Metric("functions: per cell p50", "ms")
    fn_p90 = common.Metric("functions: per cell p90", "ms")
    fn_max = common.Metric("functions: per cell max", "ms")
    fn_rss = common.Metric("functions: child peak RSS", "MB")
    dg_seconds = common.Metric("Dagster run: all cells", "s", note="in process, code preloaded")
    dg_rate = common.Metric("Dagster run: cells per second", "cells/s")
    dg_cpu = common.Metric("Dagster run: CPU time", "s")
    dg_outside = common.Metric(
        "Dagster run: time outside steps", "s", note="run start, events, partition bookkeeping"
    )
    dg_process = common.Metric("Dagster run: whole child process", "s", note="imports included")
    dg_rss = common.Metric("Dagster run: child peak RSS", "MB")
    ratio = common.Metric("time ratio Dagster run / functions", "x", note="same repetition")
    steps: dict[str, common.Metric] = {}
    sizes: list[int] = []

    with common.temp_data_dir("cells", args.keep) as work:
        template = work / "template"
        started = time.perf_counter()
        region = common.import_extract(template, args.extract)
        print(f"imported {region} in {time.perf_counter() - started:.1f} s (not timed)")

        for repetition in range(args.repeat):
            functions_dir = work / f"functions-{repetition}"
            shutil.copytree(template, functions_dir)
            child = common.run_measured(
                common.python_child(
                    SCRIPT, "--child", "functions", str(functions_dir / "warehouse"), region
                ),
                timeout_s=900,
            )
            result = _checked(child, "building with the pipeline functions")
            per_cell_ms = [value * 1000 for value in result["per_cell"]]
            fn_seconds.add(result["seconds"])
            fn_rate.add(result["cells"] / result["seconds"])
            fn_cpu.add(result["cpu_seconds"])
            fn_p50.add(common.percentile(per_cell_ms, 50))
            fn_p90.add(common.percentile(per_cell_ms, 90))
            fn_max.add(max(per_cell_ms))
            fn_rss.add(child.max_rss_mb)
            from warehouse import Warehouse

            entries = Warehouse(functions_dir / "warehouse").cell_entries().values()
            sizes = [entry.bytes for entry in entries if entry.ready]

            dagster_dir = work / f"dagster-{repetition}"
            shutil.copytree(template, dagster_dir)
            env = common.perfect10k_env(
                dagster_dir, PERFECT10K_WAREHOUSE=str(dagster_dir / "warehouse")
            )
            child = common.run_measured(
                [python, str(SCRIPT), "--child", "dagster", region], env, timeout_s=900
            )
            run = _checked(child, "building in one Dagster run")
            dg_seconds.add(run["seconds"])
            dg_rate.add(run["cells"] / run["seconds"])
            dg_cpu.add(run["cpu_seconds"])
            dg_outside.add(run["seconds"] - sum(run["steps"].values()))
            dg_process.add(child.seconds)
            dg_rss.add(child.max_rss_mb)
            ratio.add(run["seconds"] / result["seconds"])
            for step, seconds in run["steps"].items():
                steps.setdefault(step, common.Metric(f"Dagster step {step}", "s")).add(seconds)
            common.log.info(
                "repetition %d: functions %.1f s, Dagster run %.1f s (%d cells)",
                repetition + 1, result["seconds"], run["seconds"], run["cells"],
            )
            if not args.keep:
                shutil.rmtree(functions_dir)
                shutil.rmtree(dagster_dir)

    kilobytes = [size / 1024 for size in sizes]
    print(
        f"{len(sizes)} cells built; bytes per cell (network + features Parquet, from the "
        f"manifest): p50 {common.percentile(kilobytes, 50):.0f} KiB, "
        f"p90 {common.percentile(kilobytes, 90):.0f} KiB, max {max(kilobytes):.0f} KiB, "
        f"total {sum(kilobytes) / 1024:.1f} MiB"
    )
    print()
    metrics = [
        fn_seconds, fn_rate, fn_cpu, fn_p50, fn_p90, fn_max, fn_rss,
        dg_seconds, dg_rate, dg_cpu, *steps.values(), dg_outside, dg_process, dg_rss, ratio,
    ]
    common.print_table("cell builds", metrics)
    common.print_footer()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        {"functions": child_functions, "dagster": child_dagster}[sys.argv[2]](*sys.argv[3:])
    else:
        main()
