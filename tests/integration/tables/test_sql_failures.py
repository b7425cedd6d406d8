"""A lookup that cannot be answered is a TableFailure, never "not found", and postmap -q fails
(exit 1) there too: server down (never up, or stopped under a pooled connection), wrong
password, a query slower than the timeout, an SQL error, expansion_limit exceeded. A dead
host among live ones is skipped. A sqlite: database that does not exist is a TableError."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from filterd.sdk.tables import TableError, TableFailure, TableSettings, open_table
from filterd.sdk.tables.sql import SqlTable
from tests.support.dbservers import free_port
from tests.support.mariadb import PASSWORD, USER, MariaDB, mariadb, running_mariadb  # noqa: F401
from tests.support.postgresql import PostgreSQL, postgresql  # noqa: F401 - fixture
from tests.support.postmap import Postmap, postmap  # noqa: F401 - fixture


def _mysql(server: MariaDB, body: str, *, password: str = PASSWORD) -> str:
    return (
        f"hosts = 127.0.0.1:{server.port}\nuser = {USER}\npassword = {password}\n"
        f"dbname = filterd\n{body}"
    )


def _pgsql(server: PostgreSQL, body: str, *, password: str = PASSWORD) -> str:
    return (
        f"hosts = 127.0.0.1:{server.port}\nuser = {USER}\npassword = {password}\n"
        f"dbname = filterd\n{body}"
    )


def _cf(tmp_path: Path, kind: str, text: str) -> str:
    path = tmp_path / f"{kind}.cf"
    path.write_text(text)
    return f"{kind}:{path}"


async def _fails(spec: str, key: str = "a@example.com") -> TableFailure:
    table = open_table(spec, TableSettings(timeout=10))
    try:
        with pytest.raises(TableFailure) as caught:
            await table.lookup(key)
    finally:
        await table.aclose()
    return caught.value


def _postmap_fails(postmap: Postmap, spec: str, key: str = "a@example.com") -> None:  # noqa: F811
    status, out, err = postmap.query(key, spec)
    assert (status, out) == (1, ""), err
    assert "fatal" in err or "error" in err, err


QUERY = "query = SELECT 'found' FROM DUAL WHERE '%s' <> ''\n"


@pytest.mark.parametrize("kind", ["mysql", "pgsql"])
async def test_no_server_listening(kind: str, tmp_path: Path, postmap: Postmap) -> None:  # noqa: F811
    spec = _cf(
        tmp_path,
        kind,
        f"hosts = 127.0.0.1:{free_port()}\nuser = u\npassword = p\ndbname = d\n"
        "query = SELECT 1 WHERE '%s' <> ''\n",
    )
    failure = await _fails(spec)
    assert "connect" in failure.reason
    _postmap_fails(postmap, spec)


async def test_mysql_wrong_password(
    tmp_path: Path,
    mariadb: MariaDB,  # noqa: F811
    postmap: Postmap,  # noqa: F811
) -> None:
    spec = _cf(tmp_path, "mysql", _mysql(mariadb, QUERY, password="wrong"))
    failure = await _fails(spec)
    assert "Access denied" in failure.reason
    _postmap_fails(postmap, spec)


async def test_pgsql_wrong_password(
    tmp_path: Path,
    postgresql: PostgreSQL,  # noqa: F811
    postmap: Postmap,  # noqa: F811
) -> None:
    spec = _cf(tmp_path, "pgsql", _pgsql(postgresql, "query = SELECT '%s'\n", password="wrong"))
    failure = await _fails(spec)
    assert "password authentication failed" in failure.reason
    _postmap_fails(postmap, spec)


@pytest.mark.parametrize(
    ("kind", "query"),
    [("mysql", "SELECT SLEEP(5) WHERE '%s' <> ''"), ("pgsql", "SELECT pg_sleep(5) || '%s'")],
)
async def test_a_query_slower_than_the_timeout_fails_and_its_connection_is_dropped(
    kind: str,
    query: str,
    tmp_path: Path,
    mariadb: MariaDB,  # noqa: F811
    postgresql: PostgreSQL,  # noqa: F811
) -> None:
    server = _mysql(mariadb, "") if kind == "mysql" else _pgsql(postgresql, "")
    spec = _cf(tmp_path, kind, server + f"query = {query}\n")
    table = open_table(spec, TableSettings(timeout=0.5))
    assert isinstance(table, SqlTable)
    try:
        with pytest.raises(TableFailure, match=r"no answer within 0\.5 s"):
            await table.lookup("a@example.com")
        for _ in range(100):  # the abandoned thread ends (interrupted or read timeout)
            if table.idle_connections() == 0 and table._limiter.borrowed_tokens == 0:
                break
            await trio.sleep(0.1)
        assert table.idle_connections() == 0  # never back in the pool
    finally:
        await table.aclose()


@pytest.mark.parametrize("kind", ["sqlite", "mysql", "pgsql"])
async def test_sql_error(
    kind: str,
    tmp_path: Path,
    mariadb: MariaDB,  # noqa: F811
    postgresql: PostgreSQL,  # noqa: F811
    postmap: Postmap,  # noqa: F811
) -> None:
    body = "query = SELECT nosuchcolumn FROM nosuchtable WHERE k = '%s'\n"
    if kind == "sqlite":
        import sqlite3

        sqlite3.connect(tmp_path / "db.sqlite").close()
        text = f"dbpath = {tmp_path / 'db.sqlite'}\n{body}"
    else:
        text = _mysql(mariadb, body) if kind == "mysql" else _pgsql(postgresql, body)
    spec = _cf(tmp_path, kind, text)
    await _fails(spec)
    _postmap_fails(postmap, spec)


@pytest.mark.parametrize("kind", ["mysql", "pgsql"])
async def test_expansion_limit_exceeded(
    kind: str,
    tmp_path: Path,
    mariadb: MariaDB,  # noqa: F811
    postgresql: PostgreSQL,  # noqa: F811
    postmap: Postmap,  # noqa: F811
) -> None:
    body = "query = SELECT 'x@a', 'y@b' WHERE '%s' <> ''\nexpansion_limit = 1\n"
    text = _mysql(mariadb, body) if kind == "mysql" else _pgsql(postgresql, body)
    spec = _cf(tmp_path, kind, text)
    failure = await _fails(spec)
    assert "Expansion limit exceeded" in failure.reason
    _postmap_fails(postmap, spec)
    # at the limit it answers
    (tmp_path / f"{kind}.cf").write_text(text.replace("expansion_limit = 1", "expansion_limit = 2"))
    table = open_table(spec)
    try:
        assert await table.lookup("k") == "x@a,y@b"
    finally:
        await table.aclose()


async def test_a_dead_host_is_skipped(tmp_path: Path, mariadb: MariaDB) -> None:  # noqa: F811
    spec = _cf(
        tmp_path,
        "mysql",
        _mysql(mariadb, QUERY).replace(
            "hosts = ", f"hosts = 127.0.0.1:{free_port()}, inet:127.0.0.1:{free_port()}, "
        ),
    )
    table = open_table(spec)
    try:
        for _ in range(5):
            assert await table.lookup("a") == "found"
    finally:
        await table.aclose()


async def test_server_stopped_under_a_pooled_connection(
    tmp_path: Path,
    postmap: Postmap,  # noqa: F811
) -> None:
    with running_mariadb() as server:
        spec = _cf(tmp_path, "mysql", _mysql(server, QUERY))
        table = open_table(spec)
        assert isinstance(table, SqlTable)
        try:
            assert await table.lookup("a") == "found"
            assert table.idle_connections() == 1
            server.stop()
            with pytest.raises(TableFailure):
                await table.lookup("a")
            with pytest.raises(TableFailure):  # the host is down for a while: no retry now
                await table.lookup("a")
        finally:
            await table.aclose()
        _postmap_fails(postmap, spec)


def test_sqlite_without_its_database_is_an_error_at_open(
    tmp_path: Path,
    postmap: Postmap,  # noqa: F811
) -> None:
    spec = _cf(tmp_path, "sqlite", f"dbpath = {tmp_path}/missing/db.sqlite\nquery = SELECT 1\n")
    with pytest.raises(TableError, match="Can't open database") as caught:
        open_table(spec)
    assert "dbpath" in str(caught.value)
    _postmap_fails(postmap, spec, "x")
    assert not (tmp_path / "missing").exists()
