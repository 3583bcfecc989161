"""Serving state that outlives one process: jobs, interactive routes and returned loops.

The state is a SQLite database in PERFECT10K_STATE_DIR, apart from the read-only
warehouse. Every replica on the same host shares it, so any replica can respond to a poll for
a job or the next step of a route, and a restart loses nothing.

NOTE: replicas on different hosts need a shared database; SQLite over a network file
system is not safe for that.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    dedupe_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    cells TEXT NOT NULL,
    run_id TEXT,
    result TEXT,
    error TEXT,
    created_at REAL NOT NULL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_dedupe ON jobs (dedupe_key, created_at);
CREATE TABLE IF NOT EXISTS routes (
    route_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS loops (
    loop_id TEXT PRIMARY KEY,
    loop TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""


def new_id(prefix: str) -> str:
    """Return an id with 128 random bits, so ids cannot be guessed or enumerated."""
    return f"{prefix}_{secrets.token_urlsafe(16)}"


@dataclass(frozen=True)
class Job:
    """A request waiting for cells: what was asked, which cells, the run that builds them."""

    job_id: str
    kind: str
    params: dict[str, Any]
    cells: list[str]
    run_id: str | None
    result: dict[str, Any] | None
    error: str | None
    created_at: float
    finished_at: float | None


class StateStore:
    """SQLite-backed store; one connection per thread, WAL mode for concurrent replicas."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "serving.sqlite3"
        self._local = threading.local()
        with self._connect() as connection:
            connection.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            self._local.connection = connection
        return connection

    # Jobs

    def add_job(
        self,
        dedupe_key: str,
        kind: str,
        params: dict[str, Any],
        cells: list[str],
        run_id: str | None,
    ) -> Job:
        job = Job(new_id("job"), kind, params, cells, run_id, None, None, time.time(), None)
        self._connect().execute(
            "INSERT INTO jobs (job_id, dedupe_key, kind, params, cells, run_id, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                job.job_id,
                dedupe_key,
                kind,
                json.dumps(params),
                json.dumps(cells),
                run_id,
                job.created_at,
            ),
        )
        return job

    def job(self, job_id: str) -> Job | None:
        row = self._connect().execute(
            "SELECT job_id, kind, params, cells, run_id, result, error, created_at, finished_at "
            "FROM jobs WHERE job_id = ?",
            (job_id,),
        ).fetchone()
        return None if row is None else _job_from_row(row)

    def open_job(self, dedupe_key: str, newer_than: float) -> Job | None:
        """Return the newest unfinished job with this key created after `newer_than`."""
        row = self._connect().execute(
            "SELECT job_id, kind, params, cells, run_id, result, error, created_at, finished_at "
            "FROM jobs WHERE dedupe_key = ? AND finished_at IS NULL AND created_at > ? "
            "ORDER BY created_at DESC LIMIT 1",
            (dedupe_key, newer_than),
        ).fetchone()
        return None if row is None else _job_from_row(row)

    def count_open_jobs(self, newer_than: float) -> int:
        row = self._connect().execute(
            "SELECT COUNT(DISTINCT run_id) FROM jobs WHERE finished_at IS NULL AND created_at > ?",
            (newer_than,),
        ).fetchone()
        return int(row[0])

    def finish_job(self, job_id: str, result: dict[str, Any] | None, error: str | None) -> None:
        self._connect().execute(
            "UPDATE jobs SET result = ?, error = ?, finished_at = ? "
            "WHERE job_id = ? AND finished_at IS NULL",
            (None if result is None else json.dumps(result), error, time.time(), job_id),
        )

    # Routes

    def add_route(self, state: dict[str, Any]) -> str:
        route_id = new_id("route")
        now = time.time()
        self._connect().execute(
            "INSERT INTO routes (route_id, state, created_at, updated_at) VALUES (?, ?, ?, ?)",
            (route_id, json.dumps(state), now, now),
        )
        return route_id

    def route(self, route_id: str) -> dict[str, Any] | None:
        row = self._connect().execute(
            "SELECT state FROM routes WHERE route_id = ?", (route_id,)
        ).fetchone()
        return None if row is None else json.loads(row[0])

    def replace_route(self, route_id: str, expected: dict[str, Any], state: dict[str, Any]) -> bool:
        """Store `state` only if the stored state still equals `expected` (compare and swap).

        Two concurrent steps on one route cannot both win, so a route is never finalized
        twice or extended after it was finalized.
        """
        cursor = self._connect().execute(
            "UPDATE routes SET state = ?, updated_at = ? WHERE route_id = ? AND state = ?",
            (json.dumps(state), time.time(), route_id, json.dumps(expected)),
        )
        return cursor.rowcount == 1

    # Loops

    def add_loop(self, loop: dict[str, Any]) -> str:
        return self.add_loops([loop])[0]

    def add_loops(self, loops: list[dict[str, Any]]) -> list[str]:
        """Store loops in one transaction and return their ids in the same order."""
        now = time.time()
        rows = [(new_id("loop"), msgspec.json.encode(loop).decode(), now) for loop in loops]
        connection = self._connect()
        connection.execute("BEGIN")
        try:
            connection.executemany(
                "INSERT INTO loops (loop_id, loop, created_at) VALUES (?, ?, ?)", rows
            )
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
        return [row[0] for row in rows]

    def loop(self, loop_id: str) -> dict[str, Any] | None:
        row = self._connect().execute(
            "SELECT loop FROM loops WHERE loop_id = ?", (loop_id,)
        ).fetchone()
        return None if row is None else json.loads(row[0])


def _job_from_row(row: tuple) -> Job:
    return Job(
        job_id=row[0],
        kind=row[1],
        params=json.loads(row[2]),
        cells=json.loads(row[3]),
        run_id=row[4],
        result=None if row[5] is None else json.loads(row[5]),
        error=row[6],
        created_at=row[7],
        finished_at=row[8],
    )
