"""Helpers shared by the benchmark scripts: machine line, statistics, data set-up, servers.

Every script runs on loopback only, keeps its data in a temporary directory and stops the
processes it started by process id.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import logging
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np

REPOSITORY = Path(__file__).resolve().parents[1]
if str(REPOSITORY) not in sys.path:
    # The scripts run as `python benchmarks/<name>.py`, which puts only this folder on the
    # path; the server helpers of the test suite live in `tests`.
    sys.path.insert(0, str(REPOSITORY))

from tests.conftest import (
    HEIDELBERG,
    VANCOUVER,
    LiveServer,
    perfect10k_env,
    start_server,
)

if TYPE_CHECKING:
    from planner import Network

log = logging.getLogger("benchmarks")

__all__ = [
    "HEIDELBERG",
    "VANCOUVER",
    "LiveServer",
    "perfect10k_env",
]

PRODUCT_FOLDERS = ("pipelines", "serving", "warehouse", "planner", "perfect10k")
KEY_PACKAGES = (
    "numpy", "scipy", "pyarrow", "duckdb", "polars", "h3", "osmium", "osmnx", "networkx",
    "dagster", "litestar", "uvicorn", "msgspec", "httpx",
)


# Command line


def parse_args(
    description: str,
    default_repeat: int,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    default_extract: Path = HEIDELBERG,
) -> argparse.Namespace:
    """Parse the options every benchmark takes (--repeat, --extract, --keep) and its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--repeat", type=int, default=default_repeat,
        help=f"repetitions of each measurement (default {default_repeat})",
    )
    parser.add_argument(
        "--extract", type=Path, default=default_extract,
        help=f"OSM extract to measure (default {default_extract.name})",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary data directories for inspection"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at DEBUG")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    if not args.extract.is_file():
        parser.error(f"--extract {args.extract} does not exist")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Product modules log every built cell at INFO; keep the benchmark output readable.
    for name in ("pipelines", "warehouse", "serving", "dagster", "httpx", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return args


# Machine


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _memory_gib() -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    return float("nan")


def package_versions(names: Sequence[str] = KEY_PACKAGES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def code_version() -> str:
    """Return the commit and the product folders with uncommitted changes (read-only git)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPOSITORY, capture_output=True,
            text=True, timeout=10, check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "diff-index", "--name-only", "HEAD", "--", *PRODUCT_FOLDERS],
            cwd=REPOSITORY, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return "unknown (git unavailable)"
    folders = sorted({path.split("/")[0] for path in changed})
    if not folders:
        return f"commit {commit}"
    return f"commit {commit} with uncommitted changes in {', '.join(folders)}"


def machine_lines() -> list[str]:
    """Describe the machine: CPU, cores, RAM, load, Python and the key package versions."""
    load = os.getloadavg()
    usable = len(os.sched_getaffinity(0))
    packages = " ".join(f"{name} {version}" for name, version in package_versions().items())
    return [
        f"date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
        (
            f"machine: {_cpu_model()}, {usable} cores usable ({os.cpu_count()} online), "
            f"{_memory_gib():.1f} GiB RAM, {platform.system()} {platform.release()}"
        ),
        (
            f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
            "(other work on the machine skews every figure)"
        ),
        f"python: {platform.python_version()} ({sys.executable})",
        f"code: {code_version()}",
        f"packages: {packages}",
    ]


def print_header(title: str, args: argparse.Namespace) -> None:
    print(f"== {title}")
    for line in machine_lines():
        print(line)
    print(f"extract: {args.extract.name}, repetitions: {args.repeat}")
    print(flush=True)


def print_footer() -> None:
    load = os.getloadavg()
    print(f"load average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)


@contextlib.contextmanager
def cpu_timer() -> Iterator[dict[str, float]]:
    """Measure wall and CPU seconds (all threads of this process) of the block."""
    times: dict[str, float] = {}
    wall = time.perf_counter()
    cpu = time.process_time()
    yield times
    times["seconds"] = time.perf_counter() - wall
    times["cpu_seconds"] = time.process_time() - cpu


# Statistics and tables


def percentile(values: Sequence[float], q: float) -> float:
    if len(values) == 0:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


@dataclass
class Metric:
    """One figure measured once per repetition, with its bar when the design sets one.

    `bar` is (operator, limit) with operator "<=" or ">="; the median decides the verdict.
    """

    name: str
    unit: str
    values: list[float] = field(default_factory=list)
    bar: tuple[str, float] | None = None
    note: str = ""

    def add(self, value: float) -> None:
        self.values.append(float(value))

    @property
    def median(self) -> float:
        return percentile(self.values, 50)

    def verdict(self) -> str:
        if self.bar is None or not self.values:
            return ""
        operator, limit = self.bar
        met = self.median <= limit if operator == "<=" else self.median >= limit
        return "meets" if met else "MISSES"


def _number(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def print_table(title: str, metrics: Sequence[Metric]) -> None:
    """Print median and min–max over the repetitions, the bar and whether the median meets it."""
    header = ("metric", "unit", "median", "min–max", "n", "bar", "verdict", "note")
    rows = [header]
    for metric in metrics:
        spread = ""
        if metric.values:
            spread = f"{_number(min(metric.values))}–{_number(max(metric.values))}"
        bar = f"{metric.bar[0]} {_number(metric.bar[1])}" if metric.bar else ""
        rows.append(
            (
                metric.name, metric.unit, _number(metric.median), spread,
                str(len(metric.values)), bar, metric.verdict(), metric.note,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    print(f"-- {title}")
    for index, row in enumerate(rows):
        cells = [row[i].ljust(widths[i]) for i in range(len(widths))]
        print("  ".join(cells + [row[-1]]).rstrip())
        if index == 0:
            print("  ".join("-" * width for width in widths))
    print(flush=True)


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """Return p50, p90, p99 and max of latencies given in seconds, in milliseconds."""
    ms = [value * 1000 for value in seconds]
    return {
        "p50": percentile(ms, 50),
        "p90": percentile(ms, 90),
        "p99": percentile(ms, 99),
        "max": max(ms) if ms else float("nan"),
    }



@dataclass
class LoadResult:
    """Outcome of loop requests sent by concurrent clients."""

    elapsed_s: float
    latencies_s: list[float]
    errors: Counter[str]
    loops: int
    answered: list[int]


def post_loops_concurrently(
    base_url: str,
    starts: Sequence[Sequence[float]],
    clients: int,
    body: dict,
    duration_s: float | None,
    timeout_s: float = 60.0,
) -> LoadResult:
    """POST /api/loops from `clients` threads with keep-alive connections.

    Each request takes the next (lat, lon) of `starts`, cycling, merged into `body`. With
    `duration_s` None every start is requested once; otherwise clients stop at the deadline.
    A transport error or any status other than 200 counts as an error, by name.
    """
    counter = itertools.count()
    lock = threading.Lock()
    result = LoadResult(0.0, [], Counter(), 0, [])
    deadline = None if duration_s is None else time.perf_counter() + duration_s

    def client_loop() -> None:
        with httpx.Client(base_url=base_url, timeout=timeout_s) as client:
            while True:
                index = next(counter)
                if deadline is None and index >= len(starts):
                    return
                if deadline is not None and time.perf_counter() >= deadline:
                    return
                lat, lon = starts[index % len(starts)]
                started = time.perf_counter()
                try:
                    response = client.post("/api/loops", json={**body, "lat": lat, "lon": lon})
                except httpx.HTTPError as error:
                    with lock:
                        result.errors[type(error).__name__] += 1
                    continue
                elapsed = time.perf_counter() - started
                with lock:
                    if response.status_code == 200:
                        result.latencies_s.append(elapsed)
                        result.answered.append(index % len(starts))
                        # Counting keys avoids decoding every 100 kB body in this process.
                        result.loops += response.content.count(b'"loop_id"')
                    else:
                        result.errors[f"HTTP {response.status_code}"] += 1

    result.elapsed_s = run_threads(client_loop, clients)
    return result


def run_threads(target: Callable[[], None], count: int) -> float:
    """Run `target` in `count` threads at once and return the seconds until all ended."""
    threads = [threading.Thread(target=target) for _ in range(count)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


# Child processes


@dataclass
class ChildResult:
    """Exit status, wall time and peak resident memory of one child process."""

    returncode: int
    seconds: float
    cpu_seconds: float
    max_rss_mb: float
    stdout: str
    stderr: str

    def json(self) -> dict:
        """Return the JSON object on the child's last stdout line."""
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        if not lines:
            raise RuntimeError(f"child printed nothing; stderr:\n{self.stderr[-2000:]}")
        return json.loads(lines[-1])


def run_measured(
    argv: Sequence[str], env: dict[str, str] | None = None, timeout_s: float = 300.0
) -> ChildResult:
    """Run `argv` and return its wall time and peak RSS, taken from `wait4` for that child alone.

    Peak RSS counts the child and any descendants it waited for. The child gets its own
    process group, which is killed when it outlives `timeout_s`.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(
            list(argv), env=env, cwd=REPOSITORY, stdout=out, stderr=err, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid == process.pid:
                break
            if time.monotonic() > deadline:
                os.killpg(process.pid, signal.SIGKILL)
                os.wait4(process.pid, 0)
                raise TimeoutError(f"{' '.join(argv)} timed out after {timeout_s:.0f} s")
            time.sleep(0.005)
        seconds = time.perf_counter() - started
        # Popen must not wait for a pid that wait4 already reaped.
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return ChildResult(
            process.returncode,
            seconds,
            usage.ru_utime + usage.ru_stime,
            usage.ru_maxrss / 1024,  # kilobytes on Linux
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )


def python_child(script: Path, *args: str) -> list[str]:
    """Return the command line that reruns a benchmark script in a child-process mode."""
    return [sys.executable, str(script), *args]


# Data directories and cells


@contextlib.contextmanager
def temp_data_dir(prefix: str, keep: bool = False) -> Iterator[Path]:
    """Yield a fresh data directory under the system temp folder; remove it unless `keep`."""
    path = Path(tempfile.mkdtemp(prefix=f"perfect10k-bench-{prefix}-"))
    try:
        yield path
    finally:
        if keep:
            print(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def import_extract(data_dir: Path, extract: Path, resolution: int = 7) -> str:
    """Import `extract` into the data directory's warehouse in this process; return its region."""
    from pipelines.regions import import_region
    from warehouse import Warehouse

    result = import_region(Warehouse(data_dir / "warehouse"), extract, resolution)
    return result.region


def build_region_cells(data_dir: Path, region: str) -> int:
    """Build every cell of `region` with the pipeline functions, outside Dagster."""
    from pipelines.cells import RegionFeatureSource, build_cell_features, build_cell_network
    from warehouse import Warehouse

    warehouse = Warehouse(data_dir / "warehouse")
    source = RegionFeatureSource(warehouse)
    built = 0
    for cell in warehouse.regions()[region]["cells"]:
        if build_cell_network(warehouse, cell) is not None:
            build_cell_features(warehouse, cell, source)
            built += 1
    return built


def load_region_network(data_dir: Path, region: str) -> Network:
    """Merge every ready cell of `region` into one network, as the server's cache does."""
    from serving.networks import NetworkCache
    from warehouse import Warehouse

    warehouse = Warehouse(data_dir / "warehouse")
    ready = [e for e in warehouse.cell_entries().values() if e.region == region and e.ready]
    return NetworkCache(warehouse, 1 << 40).get(region, ready, ready)


def random_starts(network: Network, count: int, seed: int) -> list[tuple[float, float]]:
    """Return `count` distinct random vertices of the largest strong component as (lat, lon)."""
    rng = np.random.default_rng(seed)
    nodes = np.flatnonzero(network.component == network.largest_component)
    chosen = rng.choice(nodes, size=min(count, nodes.size), replace=False)
    return [(float(network.lat[node]), float(network.lon[node])) for node in chosen]


# Servers and processes


def _parent_pids() -> dict[int, int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            # The command name may contain spaces; the fields after its ")" are fixed.
            stat = (entry / "stat").read_text()
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def descendants(pid: int) -> list[int]:
    """Return the ids of every live descendant process of `pid`."""
    parents = _parent_pids()
    found: list[int] = []
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        children = [child for child, parent in parents.items() if parent == current]
        found.extend(children)
        frontier.extend(children)
    return found


def command_line(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def process_cpu_seconds(pid: int) -> float:
    """Return user + system CPU seconds of a live process, all its threads included."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of proc(5), so 11 and 12 after the command name.
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def memory_status_mb(pid: int) -> dict[str, float]:
    """Return VmRSS and VmHWM (peak RSS) of a live process from /proc, in megabytes."""
    values = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values


def serving_pids(server: LiveServer) -> list[int]:
    """Return the processes that serve HTTP requests.

    With one worker, uvicorn serves inside the `perfect10k serve` process itself; with more,
    it spawns one worker child each (`multiprocessing.spawn`). The Dagster webserver and
    daemon are separate children and are not counted.
    """
    parents = _parent_pids()
    workers = [
        pid
        for pid, parent in parents.items()
        if parent == server.process.pid and "spawn_main" in command_line(pid)
    ]
    return workers or [server.process.pid]


def start_benchmark_server(data_dir: Path, workers: int, **extra: str) -> LiveServer:
    """Start `perfect10k serve` with embedded Dagster on free loopback ports."""
    started = time.perf_counter()
    # Benchmarks send far more than a client's default 600 requests per minute.
    extra.setdefault("PERFECT10K_RATE_LIMIT_PER_MINUTE", "0")
    server = start_server(data_dir, PERFECT10K_WORKERS=str(workers), **extra)
    log.info(
        "server pid %d on %s with %d worker(s) responded after %.1f s",
        server.process.pid, server.base_url, workers, time.perf_counter() - started,
    )
    return server


def is_alive(pid: int) -> bool:
    """Return whether `pid` runs. A zombie waiting to be reaped counts as ended."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_ended(pids: list[int], timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    alive = [pid for pid in pids if is_alive(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [pid for pid in alive if is_alive(pid)]
    return alive


def stop_server(server: LiveServer) -> None:
    """Stop the server, then any descendant that outlived it.

    The Dagster webserver and daemon run in sessions of their own, so they keep running
    when the server ends before it stops them. They get SIGTERM here, then SIGKILL.
    """
    leftovers = descendants(server.process.pid)
    started = time.perf_counter()
    server.stop()
    log.info("server pid %d stopped in %.1f s", server.process.pid, time.perf_counter() - started)
    # NOTE: uvicorn re-raises SIGTERM after its graceful shutdown, so `perfect10k serve` ends
    # before it stops its Dagster webserver and daemon, and this function stops them instead.
    alive = _wait_ended(leftovers, 10)
    if alive:
        log.warning(
            "%d processes outlived server pid %d (Dagster webserver, daemon, code servers); "
            "stopping them: %s",
            len(alive), server.process.pid, " ".join(map(str, alive)),
        )
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for pid in _wait_ended(alive, 10):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def running_server(data_dir: Path, workers: int, **extra: str) -> Iterator[LiveServer]:
    server = start_benchmark_server(data_dir, workers, **extra)
    try:
        yield server
    finally:
        stop_server(server)
