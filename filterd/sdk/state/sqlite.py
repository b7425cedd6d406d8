"""The embedded store: one SQLite file in WAL mode (readers never wait for the writer),
a pool of connections (at most ``concurrency``: one per call running in a worker thread),
atomic updates in single statements or ``BEGIN IMMEDIATE`` transactions.

A call first runs in the event loop's own thread on a connection of its own that never waits:
no busy timeout (a database locked by another process raises at once, before anything is
written) and no automatic checkpoint (no fsync). A local statement takes microseconds, and a
worker thread's hand-off costs more than the statement (the greylisting benchmark,
docs/benchmarks.md). A call that finds the database locked, or that would purge expired rows,
goes to a worker thread as before, within the store's timeout (SQLite's busy handler there
waits no longer than the call's deadline, not on after the call was abandoned); so does the WAL
checkpoint, every ``CHECKPOINT_EVERY`` writes made in the loop's thread. While one of this
store's calls runs in a worker thread, the next calls wait for it and then run in the loop's
thread: they would otherwise find the database locked by it and follow it into worker threads,
where each waits on SQLite's busy handler (sleeps of 1 to 100 ms) for the others, and one purge
made every request wait tens of milliseconds from then on (the greylisting benchmark at 10
connections).

A record is ``(key, value, expires)``; ``expires`` is on the store's clock (unix seconds). An
expired record reads as missing at once; the rows are deleted when the store opens and every
``PURGE_EVERY`` writes.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TypeVar

import trio

from filterd.sdk.state.base import StateStore, StoreFailure
from filterd.sdk.state.sighting import Maturing, Sighting, Tally, next_sighting

T = TypeVar("T")

PURGE_EVERY = 10_000  # writes between deletions of expired rows
CHECKPOINT_EVERY = 1_000  # writes in the loop's thread between WAL checkpoints (in a worker)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    expires REAL NOT NULL
) WITHOUT ROWID
"""

# A sighting's statements: a live record, two (one statement of two primary-key lookups: one
# call into SQLite instead of two; "key IN (?, ?)" is slower), one or two records written.
_LIVE = "SELECT value FROM state WHERE key = ? AND expires > ?"
_LIVE_TWO = f"SELECT ({_LIVE}), ({_LIVE})"
_WRITE = "INSERT OR REPLACE INTO state (key, value, expires) VALUES (?, ?, ?)"
_WRITE_TWO = _WRITE + ", (?, ?, ?)"


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
        self._closed = False  # by aclose(): a connection still in use closes when returned
        self._lock = threading.Lock()
        self._writes = 0
        # .inline: this thread runs a call in the loop's thread; .deadline: a worker's call's
        self._local = threading.local()
        self._inline_db: sqlite3.Connection | None = None  # opened by open()
        self._inline_writes = 0
        self._maintenance_due = False  # purge (and checkpoint) in a worker thread
        self._in_workers = 0  # this store's calls running in worker threads
        self._workers_done: trio.Event | None = None  # set when _in_workers drops to 0

    def open(self) -> None:
        """Create the file and table (blocking; called once, in a worker thread)."""
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)
            self._purge(db)
        # timeout=0: a locked database raises at once; no automatic checkpoint (an fsync)
        inline = sqlite3.connect(
            self.path, timeout=0, isolation_level=None, check_same_thread=False
        )
        inline.execute("PRAGMA synchronous=NORMAL")
        inline.execute("PRAGMA wal_autocheckpoint=0")
        self._inline_db = inline

    async def _run(self, what: str, call: Callable[[], T]) -> T:
        """``call()`` in the loop's thread on the connection that never waits; in a worker
        thread (``StateStore._run``) when the database is locked. Then the maintenance that is
        due, in a worker thread."""
        if self._inline_db is None:  # not opened (or closed): as any store
            return await super()._run(what, call)
        if self._in_workers:  # its lock would send this call to a worker thread too
            await self._wait_for_workers(what)
            if not self._open_inline():  # closed while it waited: as any store
                return await super()._run(what, call)
        self._local.inline = True
        try:
            result = call()
        except sqlite3.OperationalError as exc:
            if not _locked(exc):
                raise StoreFailure(self.description, f"{what}: {exc}") from exc
            locked = True  # nothing was written: run it again in a worker thread, below
        except Exception as exc:  # the file's errors, as StateStore._run reports them
            raise StoreFailure(self.description, f"{what}: {exc}") from exc
        else:
            locked = False
        finally:
            self._local.inline = False
        if locked:
            result = await self._in_worker(what, call)
        if self._maintenance_due:
            self._maintenance_due = False
            try:
                await self._in_worker("maintenance", self._maintain)
            except StoreFailure:  # the call itself is done: tried again when next due
                pass
        return result

    async def _wait_for_workers(self, what: str) -> None:
        """Until none of this store's calls runs in a worker thread, within the timeout (a
        cancel scope costs more than the statement: entered only when there is a wait)."""
        with trio.move_on_after(self.timeout) as waited:
            while self._in_workers:
                if self._workers_done is None:
                    self._workers_done = trio.Event()
                await self._workers_done.wait()
        if waited.cancelled_caught:
            raise StoreFailure(self.description, f"{what}: no answer within {self.timeout:g}s")

    def _open_inline(self) -> bool:
        """Whether the loop thread's connection is open (``aclose`` may run during a wait)."""
        return self._inline_db is not None

    async def _in_worker(self, what: str, call: Callable[[], T]) -> T:
        """``StateStore._run``: the call in a worker thread, counted while it runs, waiting
        for a lock no longer than the call's timeout (``_db``)."""
        self._in_workers += 1
        try:
            return await super()._run(
                what, partial(self._until, time.monotonic() + self.timeout, call)
            )
        finally:
            self._in_workers -= 1
            if not self._in_workers and self._workers_done is not None:
                self._workers_done.set()
                self._workers_done = None

    def _until(self, deadline: float, call: Callable[[], T]) -> T:
        self._local.deadline = deadline
        try:
            return call()
        finally:
            self._local.deadline = None

    def _maintain(self) -> None:
        with self._db() as db:
            self._purge(db)
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """A connection for this call: in the loop's thread, the one that never waits; in a
        worker thread, an idle one of the pool, or a new one (never more than the calls that
        run at once)."""
        inline = self._inline()
        if inline is not None:
            yield inline
            return
        try:
            db = self._idle.get_nowait()
        except queue.Empty:
            # isolation_level=None: autocommit, transactions only where we BEGIN them.
            db = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints, never corrupt
        # SQLite's busy handler gives up when the call does: a call abandoned past its timeout
        # would otherwise take the lock later and write after its caller was told it failed
        deadline = getattr(self._local, "deadline", None)
        wait = self.timeout if deadline is None else max(0.0, deadline - time.monotonic())
        db.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
        try:
            yield db
        finally:
            with self._lock:
                closed = self._closed
                if not closed:
                    self._idle.put(db)
            if closed:  # a call abandoned past its timeout ended after aclose()
                db.close()

    def _inline(self) -> sqlite3.Connection | None:
        """The loop thread's connection when this call runs there (``_run``), else None."""
        if getattr(self._local, "inline", False):
            return self._inline_db
        return None

    def _purge(self, db: sqlite3.Connection) -> None:
        db.execute("DELETE FROM state WHERE expires <= ?", (self.clock(),))

    def _wrote(self, db: sqlite3.Connection) -> None:
        with self._lock:
            self._writes += 1
            due = self._writes % PURGE_EVERY == 0
        if db is self._inline_db:  # the loop's thread: no purge nor checkpoint here
            self._inline_writes += 1
            if due or self._inline_writes % CHECKPOINT_EVERY == 0:
                self._maintenance_due = True
        elif due:
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
            if db.in_transaction:  # not when BEGIN itself failed (a locked database)
                db.execute("ROLLBACK")
            raise
        self._wrote(db)
        return total

    def _record_sighting(
        self, key: str, now: int, maturing: Maturing, tally: Tally | None
    ) -> Sighting:
        inline = self._inline()  # the hot path: no context manager around the loop's own
        if inline is not None:
            return self._record_sighting_on(inline, key, now, maturing, tally)
        with self._db() as db:
            return self._record_sighting_on(db, key, now, maturing, tally)

    def _record_sighting_on(
        self, db: sqlite3.Connection, key: str, now: int, maturing: Maturing, tally: Tally | None
    ) -> Sighting:
        """Both records read (one statement) and written (one) in one ``BEGIN IMMEDIATE``
        transaction."""
        clock = self.clock()
        db.execute("BEGIN IMMEDIATE")
        try:
            if tally is None:
                row = db.execute(_LIVE, (key, clock)).fetchone()
                record, counts = (None if row is None else row[0]), None
            else:  # a missing record's value is NULL (never NULL in a row)
                record, counts = db.execute(_LIVE_TWO, (key, clock, tally.key, clock)).fetchone()
            seen, writes = next_sighting(
                None if record is None else str(record),
                None if counts is None else str(counts),
                now,
                maturing,
                tally,
            )
            if writes.record is not None and writes.tally is not None and tally is not None:
                (value, ttl), (count, keep) = writes.record, writes.tally
                db.execute(_WRITE_TWO, (key, value, clock + ttl, tally.key, count, clock + keep))
            elif writes.record is not None:
                value, ttl = writes.record
                db.execute(_WRITE, (key, value, clock + ttl))
            elif writes.tally is not None and tally is not None:
                value, ttl = writes.tally
                db.execute(_WRITE, (tally.key, value, clock + ttl))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # not when BEGIN itself failed (a locked database)
                db.execute("ROLLBACK")
            raise
        if writes.record is not None or writes.tally is not None:
            self._wrote(db)
        return seen

    def _close(self) -> None:
        """Close the idle connections (one in use by a call abandoned past its timeout is
        closed by that call when it ends: closing it under the call would crash SQLite)."""
        inline, self._inline_db = self._inline_db, None
        connections = [inline] if inline is not None else []
        with self._lock:
            self._closed = True
            while True:
                try:
                    connections.append(self._idle.get_nowait())
                except queue.Empty:
                    break
        for db in connections:
            db.close()


def _locked(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED: another connection holds the lock."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    text = str(exc).lower()
    return "locked" in text or "busy" in text
