"""The Maildir stage with the seed's virtual-mail tables, over SMTP and LMTP, in SQLite and in a
private MariaDB: unknown users refused at RCPT (550 5.1.1, before DATA), aliases delivered,
every path under mailbox_base as the mailbox query gives it; MariaDB stopped: 451 4.3.0 at RCPT
and, for recipients accepted before, a 451 at the end of DATA: nothing accepted and lost. And
the relay's recipient_maps over the same tables. The MySQL queries are those docs/deploy.md
shows for the seed's .cf files."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.integration.test_relay import relay_config, running
from tests.support.mariadb import PASSWORD, USER, MariaDB, mariadb, running_mariadb  # noqa: F401
from tests.support.nexthop import ScriptedNextHop
from tests.support.session import LineClient

# The seed's layout: domains, users (the mailbox is domain/address/), aliases.
SCHEMA = (
    "CREATE TABLE virtual_domains (id INTEGER PRIMARY KEY, name VARCHAR(50) NOT NULL)",
    "CREATE TABLE virtual_users (id INTEGER PRIMARY KEY, domain_id INTEGER NOT NULL, "
    "password VARCHAR(106) NOT NULL, email VARCHAR(100) NOT NULL)",
    "CREATE TABLE virtual_aliases (id INTEGER PRIMARY KEY, domain_id INTEGER NOT NULL, "
    "source VARCHAR(100) NOT NULL, destination VARCHAR(100) NOT NULL)",
)
DOMAINS = [(1, "virtualdomain.tld"), (2, "spam.me"), (3, "test.com")]
USERS = [
    (1, 1, "x", "cactus@virtualdomain.tld"),
    (2, 1, "x", "lisi@virtualdomain.tld"),
    (3, 3, "x", "lisi@test.com"),
]
ALIASES = [
    (1, 1, "postmaster@virtualdomain.tld", "cactus@virtualdomain.tld"),
    (2, 1, "team@virtualdomain.tld", "cactus@virtualdomain.tld"),
    (3, 1, "team@virtualdomain.tld", "lisi@virtualdomain.tld"),
]
DEPLOY_MD = Path(__file__).parents[2] / "docs" / "deploy.md"


def documented_queries() -> dict[str, str]:
    """The ``query`` of each ``mysql_virtual_*.cf`` block of docs/deploy.md, by name."""
    blocks = re.findall(
        r"# /etc/postfix/mysql_virtual_(\w+)\.cf\n(.*?)```", DEPLOY_MD.read_text(), re.S
    )
    return {
        name: next(line for line in body.splitlines() if line.startswith("query = "))[8:]
        for name, body in blocks
    }


MYSQL = documented_queries()  # the seed's files, as docs/deploy.md shows them
SQLITE = {  # the same in SQLite's dialect
    "domains": MYSQL["domains"],
    "mailboxes": "SELECT substr(email, instr(email, '@') + 1) || '/' || email || '/' "
    "FROM virtual_users WHERE email='%s'",
    "alias_maps": MYSQL["alias_maps"],
    "email2email": MYSQL["email2email"],
}
MESSAGE = b"Subject: maps\r\n\r\nhello\r\n"


def write_cf_files(directory: Path, connection: str, mysql: bool) -> dict[str, str]:
    kind = "mysql" if mysql else "sqlite"
    tables = {}
    for name, query in (MYSQL if mysql else SQLITE).items():
        path = directory / f"{kind}_virtual_{name}.cf"
        path.write_text(connection + f"query = {query}\n")
        tables[name] = f"{kind}:{path}"
    return tables


def fill(execute: object, marks: str) -> None:
    for table, rows in (
        ("virtual_domains", DOMAINS),
        ("virtual_users", USERS),
        ("virtual_aliases", ALIASES),
    ):
        places = ",".join([marks] * len(rows[0]))
        execute(f"INSERT INTO {table} VALUES ({places})", rows)  # type: ignore[operator]


@pytest.fixture
def sqlite_tables(tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "mail.sqlite"
    conn = sqlite3.connect(path)
    for statement in SCHEMA:
        conn.execute(statement)
    fill(conn.executemany, "?")
    conn.commit()
    conn.close()
    return write_cf_files(tmp_path, f"dbpath = {path}\n", mysql=False)


def mysql_setup(server: MariaDB, directory: Path) -> dict[str, str]:
    names = [s.split()[2] for s in SCHEMA]
    server.execute(*(f"DROP TABLE IF EXISTS {n}" for n in names), *SCHEMA)
    fill(lambda sql, rows: server.execute(sql, params=rows), "%s")
    connection = (
        f"hosts = inet:127.0.0.1:{server.port}\nuser = {USER}\npassword = {PASSWORD}\n"
        "dbname = filterd\n"
    )
    return write_cf_files(directory, connection, mysql=True)


@pytest.fixture
def mysql_tables(mariadb: MariaDB, tmp_path: Path) -> dict[str, str]:  # noqa: F811
    return mysql_setup(mariadb, tmp_path)


@pytest.fixture(params=["sqlite", "mysql"])
def tables(request: pytest.FixtureRequest) -> dict[str, str]:
    fixture: dict[str, str] = request.getfixturevalue(f"{request.param}_tables")
    return fixture


def config(base: Path, tables: dict[str, str], protocol: str = "smtp") -> str:
    return f"""
[[listen]]
address = "127.0.0.1:0"
protocol = "{protocol}"
hostname = "filterd.test"
[limits]
shutdown_grace = "1s"
[delivery]
method = "maildir"
mailbox_base = "{base}"
mailbox_domains = ["{tables["domains"]}"]
mailbox_maps = ["{tables["mailboxes"]}"]
alias_maps = ["{tables["alias_maps"]}", "{tables["email2email"]}"]
"""


async def session(port: int, protocol: str = "smtp") -> LineClient:
    client = LineClient(await trio.open_tcp_stream("127.0.0.1", port))
    assert (await client.line()).startswith("220 ")
    await client.send_lines(f"{'LHLO' if protocol == 'lmtp' else 'EHLO'} client.example")
    await client.reply()
    return client


async def transaction(
    client: LineClient, rcpts: list[str], *, lmtp: bool = False, before_data: object = None
) -> tuple[list[str], list[str]]:
    """RCPT answers, then the end-of-data answers (one per accepted recipient with LMTP)."""
    await client.send_lines("MAIL FROM:<alice@example.com>")
    assert (await client.code()).startswith("250")
    answers = []
    for rcpt in rcpts:
        await client.send_lines(f"RCPT TO:<{rcpt}>")
        answers.append(await client.code())
    if not any(a.startswith("250") for a in answers):
        await client.send_lines("RSET")
        await client.code()
        return answers, []
    if before_data is not None:
        await trio.to_thread.run_sync(before_data)  # type: ignore[arg-type]
    await client.send_lines("DATA")
    assert (await client.code()).startswith("354")
    await client.send(MESSAGE + b".\r\n")
    count = sum(a.startswith("250") for a in answers) if lmtp else 1
    return answers, [await client.code() for _ in range(count)]


def delivered(base: Path) -> dict[str, int]:
    """Files in new/ by Maildir (relative to the base)."""
    return {
        str(new.parent.relative_to(base)): len(list(new.iterdir()))
        for new in sorted(base.rglob("new"))
        if new.is_dir()
    }


UNKNOWN = (
    "550 5.1.1 <email@spam.me>: Recipient address rejected: User unknown in virtual mailbox table"
)


async def test_smtp_refuses_unknown_users_before_data_and_delivers_aliases(
    tmp_path: Path, tables: dict[str, str]
) -> None:
    base = tmp_path / "vmail"
    async with running(config(base, tables)) as port:
        client = await session(port)
        answers, final = await transaction(
            client,
            [
                "email@spam.me",
                "Cactus@VirtualDomain.tld",
                "team@virtualdomain.tld",
                "x@other.example",
            ],
        )
    assert answers == [
        UNKNOWN,
        "250 2.1.5 Ok",
        "250 2.1.5 Ok",
        "554 5.7.1 <x@other.example>: Relay access denied",
    ]
    assert len(final) == 1
    assert final[0].startswith("250 2.0.0 Ok: delivered to maildir")
    # cactus gets one copy as Cactus@ and one through team@; lisi one through team@
    assert delivered(base) == {
        "virtualdomain.tld/cactus@virtualdomain.tld": 2,
        "virtualdomain.tld/lisi@virtualdomain.tld": 1,
    }
    headers = sorted(
        p.read_bytes().split(b"\nReceived:", 1)[0]
        for p in (base / "virtualdomain.tld" / "cactus@virtualdomain.tld" / "new").iterdir()
    )
    assert headers == [
        # email2email gives the address as the table has it, as cleanup(8) rewrites it
        b"Return-Path: <alice@example.com>\nX-Original-To: Cactus@VirtualDomain.tld\n"
        b"Delivered-To: cactus@virtualdomain.tld",
        b"Return-Path: <alice@example.com>\nX-Original-To: team@virtualdomain.tld\n"
        b"Delivered-To: cactus@virtualdomain.tld",
    ]


async def test_lmtp_answers_each_recipient_after_data(
    tmp_path: Path, tables: dict[str, str]
) -> None:
    base = tmp_path / "vmail"
    async with running(config(base, tables, "lmtp")) as port:
        client = await session(port, "lmtp")
        answers, final = await transaction(
            client, ["postmaster@virtualdomain.tld", "email@spam.me", "lisi@test.com"], lmtp=True
        )
    assert answers == ["250 2.1.5 Ok", UNKNOWN, "250 2.1.5 Ok"]
    assert len(final) == 2
    assert all(f.startswith("250 2.0.0 Ok: delivered to maildir") for f in final)
    assert delivered(base) == {
        "test.com/lisi@test.com": 1,
        "virtualdomain.tld/cactus@virtualdomain.tld": 1,
    }


@pytest.fixture
def own_mariadb() -> Iterator[MariaDB]:
    """A MariaDB of this test alone: it is stopped halfway."""
    with running_mariadb() as server:
        yield server


@pytest.mark.parametrize("protocol", ["smtp", "lmtp"])
async def test_mariadb_stopped_is_451_at_rcpt_and_nothing_is_lost(
    tmp_path: Path, own_mariadb: MariaDB, protocol: str
) -> None:
    base = tmp_path / "vmail"
    tables = mysql_setup(own_mariadb, tmp_path)
    lmtp = protocol == "lmtp"
    async with running(config(base, tables, protocol)) as port:
        client = await session(port, protocol)
        answers, final = await transaction(client, ["lisi@test.com"], lmtp=lmtp)
        assert answers == ["250 2.1.5 Ok"]
        assert final[0].startswith("250 2.0.0")
        # Accepted at RCPT, then the server goes away before the message is delivered.
        answers, final = await transaction(
            client, ["lisi@test.com"], lmtp=lmtp, before_data=own_mariadb.stop
        )
        assert answers == ["250 2.1.5 Ok"]
        assert final == ["451 4.3.0 <lisi@test.com>: Temporary lookup failure"]
        answers, final = await transaction(client, ["lisi@test.com"], lmtp=lmtp)
    assert answers == ["451 4.3.0 <lisi@test.com>: Temporary lookup failure"]
    assert final == []
    assert delivered(base) == {"test.com/lisi@test.com": 1}  # the first message only
    assert not [p for p in base.rglob("tmp/*")]


async def test_relay_recipient_maps_refuse_unknown_recipients_at_rcpt(
    tables: dict[str, str],
) -> None:
    hop = ScriptedNextHop()
    async with trio.open_nursery() as nursery:
        hop_port = await nursery.start(hop.serve)
        relay = relay_config(hop_port) + f'recipient_maps = ["{tables["email2email"]}"]\n'
        async with running(relay) as port:
            client = await session(port)
            answers, final = await transaction(client, ["lisi@test.com", "email@spam.me"])
        nursery.cancel_scope.cancel()
    assert answers == [
        "250 2.1.5 Ok",
        "550 5.1.1 <email@spam.me>: Recipient address rejected: User unknown in relay "
        "recipient table",
    ]
    assert final == ["250 2.0.0 Ok: queued as NH1"]
    assert hop.envelopes == [("alice@example.com", ["lisi@test.com"])]
