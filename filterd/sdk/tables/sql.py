"""``sqlite:``, ``mysql:`` and ``pgsql:`` tables: Postfix's sqlite_table(5), mysql_table(5) and
pgsql_table(5) files read unchanged (:mod:`.sql_config`), answering as ``postmap -q`` does.

Lookups run in trio worker threads (:mod:`.sql_drivers`), at most ``settings.max_concurrency``
at once, each on a connection of a small pool (one pool per table; idle connections are
closed after a minute, as Postfix closes them). Each lookup has ``settings.timeout``: past it
the lookup is a :class:`TableFailure`, the thread is abandoned, its query interrupted where
the driver can, and its connection closed, never reused.

``hosts`` are tried as Postfix tries them: hosts with an open connection first, then UNIX
sockets before TCP, in random order within each; a host that fails to connect or to answer
a query is skipped for a minute (:attr:`SqlTable.retry_interval`); when no host answers the
lookup is a :class:`TableFailure`. Any failure (server down, bad credentials, SQL error,
timeout, ``expansion_limit`` exceeded) is a TableFailure, never "not found".

Differences from Postfix, all on the side of safety: a failed ``prepare`` of a sqlite: query
is a TableFailure (Postfix exits); a query with several statements is an SQL error for
sqlite:; the MySQL client's default option files are read only when ``option_file`` names one.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from filterd.sdk.tables.base import Table, TableError, TableFailure, TableSettings
from filterd.sdk.tables.names import TableName
from filterd.sdk.tables.source import fold_key
from filterd.sdk.tables.sql_config import SqlConfig, SqlHost, parse_sql_config
from filterd.sdk.tables.sql_drivers import ConnectFailed, Driver, QueryFailed, driver_for

__all__ = ["SqlTable", "open_table"]

#: Seconds a host that failed is skipped (Postfix's RETRY_CONN_INTV).
RETRY_INTERVAL = 60.0
#: Seconds an idle connection is kept (Postfix's IDLE_CONN_INTV).
IDLE_INTERVAL = 60.0


def open_table(name: TableName, settings: TableSettings) -> Table:
    """Read the .cf file now (a TableError names the file, line, parameter and fix);
    database servers are connected to at the first lookup; a sqlite: database is opened now."""
    table = str(name)
    if not name.name.startswith(("/", ".")):
        raise TableError(
            table,
            "the obsolete form that reads the parameters from main.cf is not supported",
            hint=f"move the {name.name}_* parameters into a file, write {name.type}:/path/file.cf",
        )
    try:
        text = Path(name.name).read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise TableError(
            table,
            f"cannot read the table's configuration: {exc.strerror or exc}",
            file=name.name,
            hint=f"create {name.name} ({name.type}_table(5)) or correct the name",
        ) from None
    config = parse_sql_config(name, text)
    return SqlTable(table, settings, config)


@dataclass
class _Job:
    """One lookup's thread: the connection it holds, and whether the lookup gave up on it."""

    conn: Any = None
    driver: Driver | None = None
    abandoned: bool = False


@dataclass
class _Host:
    spec: SqlHost
    idle: list[tuple[float, Any]] = field(default_factory=list)  # (since, connection)
    down_until: float = 0.0


class SqlTable(Table):
    retry_interval: float = RETRY_INTERVAL

    def __init__(self, name: str, settings: TableSettings, config: SqlConfig) -> None:
        super().__init__(name, settings)
        self.config = config
        self._driver = driver_for(config)
        self._limiter = trio.CapacityLimiter(max(1, settings.max_concurrency))
        self._lock = threading.Lock()
        hosts = config.hosts or (SqlHost(config.dbpath, "unix", config.dbpath, None),)
        self._hosts = [_Host(h) for h in hosts]
        self._closed = False
        self._domain_tables: dict[str, Table] = {}
        if config.domain is not None and config.domain.tables:
            from filterd.sdk.tables.registry import open_table as open_any

            for spec in config.domain.tables:
                self._domain_tables[spec] = open_any(spec, settings)
        if config.type == "sqlite":  # Postfix opens the database now: fatal if it cannot
            try:
                self._driver.close(self._driver.connect(self._hosts[0].spec, settings.timeout))
            except ConnectFailed as exc:
                raise TableError(
                    name,
                    str(exc),
                    file=config.file,
                    hint="correct dbpath or create the database",
                ) from None

    # --- the lookup -----------------------------------------------------------------------

    async def lookup(self, key: str) -> str | None:
        if self._closed:
            raise TableFailure(self.name, "the table is closed")
        if self.settings.fold_case:
            key = fold_key(key)
        if self.config.type == "sqlite" and not _valid_utf8(key):
            return None  # Postfix skips non-UTF-8 keys of sqlite: tables
        gate = self.config.domain_gate(key)
        if gate is not None and (gate == "" or not await self._domain_matches(gate)):
            return None
        if self.config.expand_query(key, None) is None:
            return None  # not enough parts for the query: not queried, as in Postfix
        job = _Job()
        try:
            with trio.fail_after(self.settings.timeout):
                values = await trio.to_thread.run_sync(
                    self._run, key, job, abandon_on_cancel=True, limiter=self._limiter
                )
        except trio.TooSlowError:
            self._abandon(job)
            raise TableFailure(self.name, f"no answer within {self.settings.timeout:g} s") from None
        except BaseException:
            self._abandon(job)
            raise
        return self._answer(key, values)

    def _answer(self, key: str, values: list[str | None]) -> str | None:
        parts: list[str] = []
        limit = self.config.expansion_limit
        for value in values:
            expanded = self.config.expand_result(value, key)
            if expanded is None:
                continue
            parts.append(expanded)
            if limit > 0 and len(parts) > limit:
                raise TableFailure(self.name, f"Expansion limit exceeded for key: '{key}'")
        return ",".join(parts) or None

    async def _domain_matches(self, domain: str) -> bool:
        assert self.config.domain is not None
        for matches, pattern in self.config.domain.patterns:
            table = self._domain_tables.get(pattern)
            if table is not None:
                if await table.lookup(domain) is not None:
                    return matches
            elif pattern == domain:
                return matches
        return False

    # --- in the worker thread ---------------------------------------------------------------

    def _run(self, key: str, job: _Job) -> list[str | None]:
        """Try the hosts in Postfix's order until one answers; raise TableFailure if none."""
        errors: list[str] = []
        for host in self._order():
            conn = self._checkout(host)
            if conn is None:
                try:
                    conn = self._driver.connect(host.spec, self.settings.timeout)
                except ConnectFailed as exc:
                    self._down(host)
                    errors.append(str(exc))
                    continue
            with self._lock:
                if job.abandoned:
                    self._driver.close(conn)
                    raise TableFailure(self.name, "abandoned")
                job.conn, job.driver = conn, self._driver
            try:
                sql = self.config.expand_query(key, _quoter(self._driver, conn))
                values = [] if sql is None else self._driver.execute(conn, sql)
            except QueryFailed as exc:
                self._release(job, host, keep=False)
                self._down(host)
                errors.append(str(exc))
                continue
            except BaseException:
                self._release(job, host, keep=False)
                raise
            self._release(job, host, keep=True)
            return values
        raise TableFailure(self.name, "; ".join(errors) or "no database server available")

    def _order(self) -> list[_Host]:
        now = time.monotonic()
        with self._lock:
            usable = [h for h in self._hosts if h.down_until <= now]
            random.shuffle(usable)
            kinds = {"unix": 0, "inet": 1, "uri": 2}
            usable.sort(key=lambda h: (not h.idle, kinds[h.spec.kind]))
            return usable

    def _checkout(self, host: _Host) -> Any:
        now = time.monotonic()
        stale: list[Any] = []
        found = None
        with self._lock:
            while host.idle:
                since, conn = host.idle.pop()
                if now - since > IDLE_INTERVAL:
                    stale.append(conn)
                    continue
                found = conn
                break
        for conn in stale:
            self._driver.close(conn)
        return found

    def _release(self, job: _Job, host: _Host, *, keep: bool) -> None:
        with self._lock:
            conn, job.conn = job.conn, None
            keep = keep and not job.abandoned and not self._closed
            if keep:
                host.idle.append((time.monotonic(), conn))
        if not keep and conn is not None:
            self._driver.close(conn)

    def _down(self, host: _Host) -> None:
        with self._lock:
            host.down_until = time.monotonic() + self.retry_interval
            stale, host.idle = host.idle, []
        for _, conn in stale:
            self._driver.close(conn)

    def _abandon(self, job: _Job) -> None:
        """The lookup gave up: its connection is interrupted and closed when the thread ends."""
        with self._lock:
            job.abandoned = True
            conn, driver = job.conn, job.driver
        if conn is not None and driver is not None:
            trio.lowlevel.start_thread_soon(lambda: driver.interrupt(conn), lambda _: None)

    # --- closing ---------------------------------------------------------------------------

    async def aclose(self) -> None:
        with self._lock:
            self._closed = True
            idle = [conn for host in self._hosts for _, conn in host.idle]
            for host in self._hosts:
                host.idle = []
        for conn in idle:
            self._driver.close(conn)
        for table in self._domain_tables.values():
            await table.aclose()

    def idle_connections(self) -> int:
        """How many connections the pool holds now (for tests and metrics)."""
        with self._lock:
            return sum(len(h.idle) for h in self._hosts)


def _quoter(driver: Driver, conn: Any) -> Callable[[str], str]:
    return lambda text: driver.quote(conn, text)


def _valid_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
