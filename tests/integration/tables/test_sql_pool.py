"""The connection pool: UNIX-socket hosts (mysql: unix:SOCKET, pgsql: a postgresql:// URI), at most
``max_concurrency`` connections however many lookups are in flight, connections reused, and
aclose() closing them."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from filterd.sdk.tables import TableFailure, TableSettings, open_table
from filterd.sdk.tables.sql import SqlTable
from tests.support.mariadb import PASSWORD, USER, MariaDB, mariadb  # noqa: F401 - fixture
from tests.support.postgresql import PostgreSQL, postgresql  # noqa: F401 - fixture


def _server_count(kind: str, mariadb: MariaDB, postgresql: PostgreSQL) -> int:  # noqa: F811
    """Client connections the server has now, this test's own counting connection excluded."""
    if kind == "mysql":
        conn = mariadb.connect(root=True, database=None)
        try:
            with conn.cursor() as cursor:
                cursor.execute(
                    f"SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{USER}'"
                )
                return int(cursor.fetchone()[0])
        finally:
            conn.close()
    with postgresql.connect() as conn:
        row = conn.execute(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE usename = %s AND pid <> pg_backend_pid()",
            (USER,),
        ).fetchone()
        assert row is not None
        return int(row[0])


@pytest.mark.parametrize("kind", ["mysql", "pgsql"])
async def test_unix_socket_pool_bounded_reused_and_closed(
    kind: str,
    tmp_path: Path,
    mariadb: MariaDB,  # noqa: F811
    postgresql: PostgreSQL,  # noqa: F811
) -> None:
    host = f"unix:{mariadb.socket}"
    if kind == "pgsql":  # unix:DIR would mean port 5432: a URI (user, password and dbname its own)
        host = f"postgresql://{USER}@/filterd?host={postgresql.socket_dir}&port={postgresql.port}"
    cf = tmp_path / "t.cf"
    cf.write_text(
        f"hosts = {host}\nuser = {USER}\npassword = {PASSWORD}\ndbname = filterd\n"
        "query = SELECT CONCAT('v-', '%s')\n".replace(
            "CONCAT('v-', '%s')", "'v-' || '%s'" if kind == "pgsql" else "CONCAT('v-', '%s')"
        )
    )
    before = _server_count(kind, mariadb, postgresql)
    table = open_table(f"{kind}:{cf}", TableSettings(max_concurrency=3))
    assert isinstance(table, SqlTable)
    answers: dict[str, str | None] = {}

    async def one(key: str) -> None:
        answers[key] = await table.lookup(key)

    try:
        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(one, f"K{i}")
        assert answers == {f"K{i}": f"v-k{i}" for i in range(40)}
        assert 1 <= table.idle_connections() <= 3
        assert _server_count(kind, mariadb, postgresql) - before == table.idle_connections()
        for i in range(10):  # one at a time: one connection, reused
            assert await table.lookup(f"x{i}") == f"v-x{i}"
        assert 1 <= table.idle_connections() <= 3
    finally:
        await table.aclose()
    assert table.idle_connections() == 0
    for _ in range(300):  # the server notices the close a moment later (seconds under load)
        if _server_count(kind, mariadb, postgresql) <= before:
            break
        await trio.sleep(0.1)
    assert _server_count(kind, mariadb, postgresql) <= before
    with pytest.raises(TableFailure, match="closed"):
        await table.lookup("k")
