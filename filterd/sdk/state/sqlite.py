"""The embedded store: one SQLite file in WAL mode (readers never wait for the writer),
a pool of connections (at most ``concurrency``: one per call running in a worker thread),
atomic updates in single statements or ``BEGIN IMMEDIATE`` transactions.

A record is ``(key, value, expires)``; ``expires`` is on the store's clock (unix seconds). An
expired record reads as missing at once; the rows are deleted when the store opens and every
``PURGE_EVERY`` writes.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filterd.sdk.state.base import StateStore

PURGE_EVERY = 10_000  # writes between deletions of expired rows

_SCHEMA = """
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    expires REAL NOT NULL
) WITHOUT ROWID
"""


class SqliteStore(StateStore):
    def __init__(
        self,
        path: Path,
        *,
        timeout: float,
        concurrency: int,
        clock: Callable[[], float],
    ) -> None:
        super().__init__(f"sqlite:{path}", timeout=timeout, concurrency=concurrency)
        self.path = path
        self.clock = clock
        self._idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._writes = 0

    def open(self) -> None:
        """Create the file and table (blocking; called once, in a worker thread)."""
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)
            self._purge(db)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """A connection for this call: an idle one, or a new one (never more than the calls
        that run at once)."""
        try:
            db = self._idle.get_nowait()
        except queue.Empty:
            # isolation_level=None: autocommit, transactions only where we BEGIN them.
            db = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints, never corrupt
            with self._lock:
                self._connections.append(db)
        try:
            yield db
        finally:
            self._idle.put(db)

    def _purge(self, db: sqlite3.Connection) -> None:
        db.execute("DELETE FROM state WHERE expires <= ?", (self.clock(),))

    def _wrote(self, db: sqlite3.Connection) -> None:
        with self._lock:
            self._writes += 1
            due = self._writes % PURGE_EVERY == 0
        if due:
            self._purge(db)

    def _get(self, key: str) -> str | None:
        with self._db() as db:
            row = db.execute(
                "SELECT value FROM state WHERE key = ? AND expires > ?", (key, self.clock())
            ).fetchone()
        return None if row is None else str(row[0])

    def _set(self, key: str, value: str, ttl: float) -> None:
        with self._db() as db:
            db.execute(
                "INSERT OR REPLACE INTO state (key, value, expires) VALUES (?, ?, ?)",
                (key, value, self.clock() + ttl),
            )
            self._wrote(db)

    def _delete(self, key: str) -> None:
        with self._db() as db:
            db.execute("DELETE FROM state WHERE key = ?", (key,))

    def _compare_and_set(self, key: str, expected: str | None, value: str, ttl: float) -> bool:
        with self._db() as db:
            return self._compare_and_set_on(db, key, expected, value, ttl)

    def _compare_and_set_on(
        self, db: sqlite3.Connection, key: str, expected: str | None, value: str, ttl: float
    ) -> bool:
        now = self.clock()
        if expected is None:  # only over a missing or expired record
            cursor = db.execute(
                "INSERT INTO state (key, value, expires) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                "expires = excluded.expires WHERE state.expires <= ?",
                (key, value, now + ttl, now),
            )
        else:
            cursor = db.execute(
                "UPDATE state SET value = ?, expires = ? WHERE key = ? AND value = ? "
                "AND expires > ?",
                (value, now + ttl, key, expected, now),
            )
        done = cursor.rowcount == 1
        if done:
            self._wrote(db)
        return done

    def _increment(self, key: str, amount: int, ttl: float) -> int:
        with self._db() as db:
            return self._increment_on(db, key, amount, ttl)

    def _increment_on(self, db: sqlite3.Connection, key: str, amount: int, ttl: float) -> int:
        now = self.clock()
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                "SELECT value FROM state WHERE key = ? AND expires > ?", (key, now)
            ).fetchone()
            if row is None:
                total = amount
                db.execute(
                    "INSERT OR REPLACE INTO state (key, value, expires) VALUES (?, ?, ?)",
                    (key, str(total), now + ttl),
                )
            else:
                total = int(row[0]) + amount
                db.execute("UPDATE state SET value = ? WHERE key = ?", (str(total), key))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._wrote(db)
        return total

    def _close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for db in connections:
            db.close()
