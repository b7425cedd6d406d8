"""The blocking database calls behind sqlite:, mysql: and pgsql: tables, one driver per type:
connect to one ``hosts`` entry, quote a key as Postfix's client library does, run one query
and hand back its column values (row by row; None for NULL). Called only in worker threads
(:mod:`.sql`). A :class:`ConnectFailed` or :class:`QueryFailed` is what Postfix would log as
a warning before answering DICT_ERR_RETRY.
"""

from __future__ import annotations

import getpass
import sqlite3
import urllib.parse
from typing import Any, Protocol

from filterd.sdk.tables.sql_config import SqlConfig, SqlHost

__all__ = [
    "ConnectFailed",
    "Driver",
    "MysqlDriver",
    "PgsqlDriver",
    "QueryFailed",
    "SqliteDriver",
    "driver_for",
]

#: Debian's libmariadb default socket: where ``hosts = localhost`` (or no hosts) connects.
MYSQL_DEFAULT_SOCKET = "/run/mysqld/mysqld.sock"


class ConnectFailed(Exception):
    """The host could not be reached or refused the login."""


class QueryFailed(Exception):
    """The query failed on an open connection."""


class Driver(Protocol):
    def connect(self, host: SqlHost, timeout: float) -> Any: ...

    def quote(self, conn: Any, text: str) -> str: ...

    def execute(self, conn: Any, sql: str) -> list[str | None]: ...

    def close(self, conn: Any) -> None: ...

    def interrupt(self, conn: Any) -> None: ...


def driver_for(config: SqlConfig) -> Driver:
    if config.type == "sqlite":
        return SqliteDriver(config)
    if config.type == "mysql":
        return MysqlDriver(config)
    return PgsqlDriver(config)


class SqliteDriver:
    """sqlite3 from the standard library; only a row's first column counts, as in Postfix."""

    def __init__(self, config: SqlConfig) -> None:
        self.config = config

    def connect(self, host: SqlHost, timeout: float) -> sqlite3.Connection:
        # mode=rw: never create a missing database (Postfix's "Can't open database");
        # SQLite falls back to read-only access for a write-protected file by itself.
        uri = "file:" + urllib.parse.quote(self.config.dbpath) + "?mode=rw"
        try:
            conn = sqlite3.connect(
                uri, uri=True, timeout=timeout, check_same_thread=False, isolation_level=None
            )
        except sqlite3.Error as exc:
            raise ConnectFailed(f"Can't open database {self.config.dbpath}: {exc}") from None
        conn.text_factory = _text
        return conn

    def quote(self, conn: sqlite3.Connection, text: str) -> str:
        return text.replace("'", "''")

    def execute(self, conn: sqlite3.Connection, sql: str) -> list[str | None]:
        try:
            rows = conn.execute(sql).fetchall()
        except (sqlite3.Error, sqlite3.Warning) as exc:
            raise QueryFailed(f"SQL step failed for query '{sql}': {exc}") from None
        values: list[str | None] = []
        for row in rows:
            value = row[0] if row else None
            if isinstance(value, float):  # SQLite's own text form of a REAL
                value = conn.execute("SELECT CAST(? AS TEXT)", (value,)).fetchone()[0]
            elif isinstance(value, bytes):  # a BLOB's text is its bytes up to the first NUL
                value = _text(value.split(b"\0", 1)[0])
            values.append(None if value is None else str(value))
        return values

    def close(self, conn: sqlite3.Connection) -> None:
        conn.close()

    def interrupt(self, conn: sqlite3.Connection) -> None:
        conn.interrupt()


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


class MysqlDriver:
    """PyMySQL. Escaping is the connection's (mysql_real_escape_string()); every column of
    every row counts; several result sets with data, or none (``require_result_set``), are
    failures, as in Postfix."""

    def __init__(self, config: SqlConfig) -> None:
        self.config = config

    def connect(self, host: SqlHost, timeout: float) -> Any:
        import pymysql

        c = self.config
        kwargs: dict[str, Any] = {
            "user": c.user or getpass.getuser(),  # libmysqlclient: "" is the login name
            "password": c.password,
            "database": c.dbname,
            "charset": "utf8mb4",
            "connect_timeout": max(timeout, 0.001),
            "read_timeout": max(timeout, 0.001),
            "write_timeout": max(timeout, 0.001),
            "autocommit": True,
            "conv": {},  # every value as the server's text, as libmysqlclient returns it
        }
        if c.option_file:
            kwargs["read_default_file"] = c.option_file
            kwargs["read_default_group"] = c.option_group or "client"
        if host.kind == "unix":
            kwargs["unix_socket"] = host.address or MYSQL_DEFAULT_SOCKET
        else:
            kwargs["host"] = host.address
            if host.port:
                kwargs["port"] = _port(host.port)
        try:
            return pymysql.connect(**kwargs)
        except Exception as exc:
            raise ConnectFailed(f"connect to mysql server {host.text}: {exc}") from None

    def quote(self, conn: Any, text: str) -> str:
        # escape() quotes as the server's sql_mode asks (NO_BACKSLASH_ESCAPES: '' only)
        return str(conn.escape(text))[1:-1]

    def execute(self, conn: Any, sql: str) -> list[str | None]:
        import pymysql

        name = f"{self.config.type}:{self.config.file}"
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql)
                first: list[str | None] | None = None
                while True:
                    if cursor.description is not None:
                        rows = cursor.fetchall()
                        if first is not None:
                            raise QueryFailed(
                                f"{name}: query failed: multiple result sets returning "
                                "data are not supported"
                            )
                        first = [_mysql_text(v) for row in rows for v in row]
                    if not cursor.nextset():
                        break
        except pymysql.MySQLError as exc:
            raise QueryFailed(f"{name}: query failed: {exc}") from None
        except OSError as exc:
            raise QueryFailed(f"{name}: query failed: {exc}") from None
        if first is None:
            if self.config.require_result_set:
                raise QueryFailed(
                    f"{name}: query failed: query returned no result set (require_result_set = yes)"
                )
            return []
        return first

    def close(self, conn: Any) -> None:
        try:
            conn.close()
        except Exception:
            pass

    def interrupt(self, conn: Any) -> None:
        """Nothing to do: the read timeout ends a stuck query."""


def _mysql_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return _text(value.split(b"\0", 1)[0])
    return str(value)


def _port(text: str) -> int:
    if text.isdigit():
        return int(text)
    import socket

    try:
        return socket.getservbyname(text, "tcp")
    except OSError:
        raise ConnectFailed(f"unknown service: {text}") from None


class PgsqlDriver:
    """psycopg's libpq wrapper at the libpq level (PQexec, PQescapeStringConn), with the
    client encoding Postfix 3.7 sets: LATIN1. Keys go out as their UTF-8 bytes and answers
    come back as the bytes the server sends in LATIN1, exactly as postmap sees them."""

    def __init__(self, config: SqlConfig) -> None:
        self.config = config

    def connect(self, host: SqlHost, timeout: float) -> Any:
        from psycopg import pq
        from psycopg.conninfo import make_conninfo

        c = self.config
        seconds = max(int(timeout + 0.999), 2)  # libpq's minimum useful connect_timeout
        try:
            if host.kind == "uri":
                info = make_conninfo(
                    host.address, client_encoding="LATIN1", connect_timeout=seconds
                )
            else:
                params: dict[str, Any] = {"dbname": c.dbname, "client_encoding": "LATIN1"}
                if host.address:
                    params["host"] = host.address
                if host.port:
                    params["port"] = host.port
                if c.user:
                    params["user"] = c.user
                if c.password:
                    params["password"] = c.password
                info = make_conninfo(connect_timeout=seconds, **params)
            conn = pq.PGconn.connect(info.encode())
        except Exception as exc:
            raise ConnectFailed(f"connect to pgsql server {host.text}: {exc}") from None
        if conn.status != pq.ConnStatus.OK:
            message = _text(conn.error_message).strip()
            conn.finish()
            raise ConnectFailed(f"connect to pgsql server {host.text}: {message}")
        return conn

    def quote(self, conn: Any, text: str) -> str:
        from psycopg import pq

        try:
            quoted = pq.Escaping(conn).escape_string(text.encode("utf-8", "surrogateescape"))
        except Exception as exc:
            raise QueryFailed(f"cannot escape input string: {exc}") from None
        return _text(quoted)

    def execute(self, conn: Any, sql: str) -> list[str | None]:
        from psycopg import pq

        result = conn.exec_(sql.encode("utf-8", "surrogateescape"))
        status = result.status
        if status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
            message = _text(result.error_message or conn.error_message).strip()
            result.clear()
            raise QueryFailed(f"pgsql query failed: {message or status.name}")
        values: list[str | None] = []
        for row in range(result.ntuples):
            for column in range(result.nfields):
                raw = result.get_value(row, column)
                values.append(None if raw is None else _text(bytes(raw)))
        result.clear()
        return values

    def close(self, conn: Any) -> None:
        conn.finish()

    def interrupt(self, conn: Any) -> None:
        try:
            conn.get_cancel().cancel()
        except Exception:
            pass
