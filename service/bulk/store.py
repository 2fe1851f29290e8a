"""Batch jobs on disk: one SQLite database and a folder of files in the data directory.

Tables: ``files`` (uploaded inputs and produced outputs; the bytes live in ``files/``),
``batches`` (one row per job: OpenAI's fields, counts, rate) and ``results`` (one row per
input line that is done, keyed by job and line number). A line's result is committed with
``INSERT OR IGNORE`` on that key, so a line run twice (its first run's commit lost to a
crash) is recorded once: every input line gets exactly one output line. Every process of the
service opens its own connection (WAL mode, so readers never wait for the runner's writes);
all calls block, and the async code calls them in a thread.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY, filename TEXT NOT NULL, purpose TEXT NOT NULL,
    bytes INTEGER NOT NULL, created_at INTEGER NOT NULL, path TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY, endpoint TEXT NOT NULL, input_file_id TEXT NOT NULL,
    completion_window TEXT NOT NULL, status TEXT NOT NULL, created_at INTEGER NOT NULL,
    in_progress_at INTEGER, finalizing_at INTEGER, completed_at INTEGER, failed_at INTEGER,
    cancelling_at INTEGER, cancelled_at INTEGER,
    output_file_id TEXT, error_file_id TEXT, errors TEXT, metadata TEXT,
    total INTEGER NOT NULL DEFAULT 0, completed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0, input_tokens INTEGER NOT NULL DEFAULT 0,
    lines_per_second REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS results (
    batch_id TEXT NOT NULL, line INTEGER NOT NULL, ok INTEGER NOT NULL, text TEXT NOT NULL,
    PRIMARY KEY (batch_id, line)
) WITHOUT ROWID;
"""

ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
"""States the runner still has work in: a job in one of them after a restart resumes."""

Row = dict[str, Any]
Result = tuple[int, bool, str, int]  # line number, succeeded, output line, input tokens


def now() -> int:
    return int(time.time())


class Store:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.files_dir = directory / "files"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            directory / "jobs.sqlite3", check_same_thread=False, isolation_level=None
        )
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()  # one connection, used from worker threads
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _one(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        with self._lock:
            row = self._db.execute(sql, args).fetchone()
        return dict(row) if row is not None else None

    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        with self._lock:
            return [dict(row) for row in self._db.execute(sql, args).fetchall()]

    def _write(self, sql: str, args: Sequence[Any] = ()) -> None:
        with self._lock:
            self._db.execute(sql, args)

    # --- files ----------------------------------------------------------------------------
    def add_file(self, filename: str, purpose: str, source: IO[bytes], limit: int) -> Row:
        """Copy an upload into the data directory; None past `limit` bytes (nothing kept)."""
        file_id = f"file-{uuid.uuid4().hex}"
        path = self.files_dir / f"{file_id}.jsonl"
        with path.open("wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
        size = path.stat().st_size
        if size > limit:
            path.unlink()
            raise ValueError(f"the file holds {size} bytes, more than the {limit} allowed")
        return self.register_file(file_id, filename, purpose, path)

    def register_file(self, file_id: str, filename: str, purpose: str, path: Path) -> Row:
        self._write(
            "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)",
            (file_id, filename, purpose, path.stat().st_size, now(), str(path)),
        )
        found = self.file(file_id)
        assert found is not None
        return found

    def file(self, file_id: str) -> Row | None:
        return self._one("SELECT * FROM files WHERE id = ?", (file_id,))

    # --- jobs -----------------------------------------------------------------------------
    def create_batch(
        self,
        endpoint: str,
        input_file_id: str,
        completion_window: str,
        metadata: dict[str, str] | None,
        batch_id: str | None = None,
    ) -> Row:
        """A new job (validating), or with `batch_id` the job of that id if it exists."""
        batch_id = batch_id or f"batch_{uuid.uuid4().hex}"
        self._write(
            "INSERT OR IGNORE INTO batches (id, endpoint, input_file_id, completion_window,"
            " status, created_at, metadata) VALUES (?, ?, ?, ?, 'validating', ?, ?)",
            (
                batch_id,
                endpoint,
                input_file_id,
                completion_window,
                now(),
                json.dumps(metadata) if metadata is not None else None,
            ),
        )
        found = self.batch(batch_id)
        assert found is not None
        return found

    def batch(self, batch_id: str) -> Row | None:
        return self._one("SELECT * FROM batches WHERE id = ?", (batch_id,))

    def batches(self, after: str | None, limit: int) -> list[Row]:
        """Newest first, as OpenAI lists them; `after`: the last id of the previous page."""
        if after is None:
            return self._all(
                "SELECT * FROM batches ORDER BY created_at DESC, id DESC LIMIT ?", (limit,)
            )
        return self._all(
            "SELECT * FROM batches WHERE (created_at, id) < "
            "(SELECT created_at, id FROM batches WHERE id = ?) "
            "ORDER BY created_at DESC, id DESC LIMIT ?",
            (after, limit),
        )

    def next_job(self) -> Row | None:
        """The oldest job with work left, if any."""
        marks = ",".join("?" * len(ACTIVE))
        return self._one(
            f"SELECT * FROM batches WHERE status IN ({marks}) ORDER BY created_at, id LIMIT 1",
            ACTIVE,
        )

    def set_status(self, batch_id: str, status: str, **fields: Any) -> None:
        """Move a job to `status`, stamping `<status>_at` and setting the given fields."""
        values = {"status": status, f"{status}_at": now(), **fields}
        if status == "validating":
            del values["validating_at"]
        assignments = ", ".join(f"{name} = ?" for name in values)
        self._write(f"UPDATE batches SET {assignments} WHERE id = ?", (*values.values(), batch_id))

    def cancel(self, batch_id: str) -> None:
        """Ask for a job's end: the runner stops it, keeping the lines already done."""
        marks = ",".join("?" * len(ACTIVE))
        self._write(
            f"UPDATE batches SET status = 'cancelling', cancelling_at = ? "
            f"WHERE id = ? AND status IN ({marks})",
            (now(), batch_id, *ACTIVE),
        )

    # --- results --------------------------------------------------------------------------
    def done_lines(self, batch_id: str) -> set[int]:
        with self._lock:
            rows = self._db.execute("SELECT line FROM results WHERE batch_id = ?", (batch_id,))
            return {line for (line,) in rows}

    def record(self, batch_id: str, results: Sequence[Result], rate: float) -> None:
        """Commit lines' results in one transaction; a line already recorded keeps its first."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                counts = {True: 0, False: 0}
                tokens = 0
                for line, ok, text, used in results:
                    cursor = db.execute(
                        "INSERT OR IGNORE INTO results VALUES (?, ?, ?, ?)",
                        (batch_id, line, int(ok), text),
                    )
                    if cursor.rowcount:
                        counts[ok] += 1
                        tokens += used
                db.execute(
                    "UPDATE batches SET completed = completed + ?, failed = failed + ?,"
                    " input_tokens = input_tokens + ?, lines_per_second = ? WHERE id = ?",
                    (counts[True], counts[False], tokens, rate, batch_id),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def results(self, batch_id: str, ok: bool) -> Iterator[str]:
        """The output lines of a job's succeeded (or failed) lines, in input order, read a
        page at a time (a job's results may not fit in memory)."""
        last = -1
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT line, text FROM results WHERE batch_id = ? AND ok = ? AND line > ?"
                    " ORDER BY line LIMIT 1024",
                    (batch_id, int(ok), last),
                ).fetchall()
            if not rows:
                return
            yield from (text for _, text in rows)
            last = rows[-1][0]

    def forget_results(self, batch_id: str) -> None:
        """Once a job's files are written, its per-line rows are no longer needed."""
        self._write("DELETE FROM results WHERE batch_id = ?", (batch_id,))
