"""A durable, bounded on-disk queue of hard examples (SQLite).

Holds the raw request bodies the edge could not hand to the cloud. Durable:
each `put` commits with synchronous=FULL in WAL mode before it returns, so an
example the server acknowledged survives kill -9 and power loss. Bounded by
count and bytes: when full, the *oldest* examples are dropped (recent ones
describe the current data best), each drop is counted on disk and logged with
its id and model. Blocking calls: the server runs them in a worker thread.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("edge_runtime.hardqueue")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS examples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    model TEXT NOT NULL,
    header_length INTEGER,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class HardExample:
    id: int
    created: float
    model: str
    header_length: int | None
    body: bytes


class HardExampleQueue:
    def __init__(self, directory: str | Path, max_items: int = 10_000, max_bytes: int = 256 << 20) -> None:
        if max_items < 1 or max_bytes < 1:
            raise ValueError("the hard-example queue needs max_items >= 1 and max_bytes >= 1")
        self.path = Path(directory) / "hard-examples.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _bump(self, key: str, n: int) -> None:
        self._db.execute(
            "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
            (key, n),
        )

    def put(self, model: str, body: bytes, header_length: int | None) -> tuple[int, list[int]]:
        """Store one example; returns its id and the ids dropped to make room."""
        if len(body) > self.max_bytes:
            raise ValueError(f"example of {len(body)} bytes is larger than the whole queue ({self.max_bytes} bytes)")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                count, size = self._db.execute(
                    "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM examples"
                ).fetchone()
                dropped: list[int] = []
                if count + 1 > self.max_items or size + len(body) > self.max_bytes:
                    for row_id, row_len, row_model in self._db.execute(
                        "SELECT id, LENGTH(body), model FROM examples ORDER BY id"
                    ).fetchall():
                        if count + 1 <= self.max_items and size + len(body) <= self.max_bytes:
                            break
                        dropped.append(row_id)
                        count -= 1
                        size -= row_len
                        log.warning(
                            "hard-example queue full: dropped the oldest example",
                            extra={"dropped_id": row_id, "model": row_model, "bytes": row_len},
                        )
                    self._db.executemany("DELETE FROM examples WHERE id = ?", [(i,) for i in dropped])
                    self._bump("dropped", len(dropped))
                cur = self._db.execute(
                    "INSERT INTO examples(created, model, header_length, body) VALUES(?, ?, ?, ?)",
                    (time.time(), model, header_length, body),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        assert cur.lastrowid is not None
        return cur.lastrowid, dropped

    def peek(self, limit: int = 1) -> list[HardExample]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, created, model, header_length, body FROM examples ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        return [HardExample(r[0], r[1], r[2], r[3], bytes(r[4])) for r in rows]

    def ack(self, example_id: int, *, delivered: bool = True) -> None:
        """Remove an example once the cloud took it (or refused it for good: counted as dropped)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM examples WHERE id = ?", (example_id,))
            self._bump("drained" if delivered else "rejected", 1)
            self._db.execute("COMMIT")

    def depth(self) -> int:
        with self._lock:
            n: int = self._db.execute("SELECT COUNT(*) FROM examples").fetchone()[0]
        return n

    def counter(self, key: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0
