"""One virtual mail system for Postfix's virtual(8) and filterd's Maildir stage side by side:
the same SQL tables (MariaDB or SQLite), the same .cf files, and the settings of each.

The tables are the usual ones of a MySQL virtual-mail set-up (the columns of
``tests.support.sqldata.SCHEMA``): ``domains`` (the mailbox domains), ``mailbox`` (``username``
-> ``maildir``, the path under the mailbox base, ``domain/user/``, only ``active = 1``) and
``alias`` (``address`` -> ``goto``, a comma-separated list or one row per destination,
``@domain`` the catch-all). The .cf files hold the queries as such a set-up writes them, one per
setting: ``virtual_mailbox_domains``, ``virtual_mailbox_maps``, ``virtual_alias_maps``; uid and
gid come from ``static:`` tables.

``postfix_settings`` gives main.cf parameters for tests/support/postfix.py's instance,
``filterd_delivery`` the ``[delivery]`` section of a filterd configuration; both name the
same tables, so the two deliver the same mail to the same Maildirs.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tests.support.mariadb import PASSWORD, USER, MariaDB
from tests.support.sqldata import SCHEMA

Kind = Literal["mysql", "sqlite"]

DATABASE = "vmail"
"""The MariaDB database of these tables (not the tables tests' ``filterd``: they drop and
refill their own ``domains``, ``mailbox`` and ``alias`` in it)."""

QUERIES: dict[str, str] = {
    "domains": "query = SELECT 1 FROM domains WHERE domain='%s'\n",
    "mailboxes": "query = SELECT maildir FROM mailbox WHERE username='%s' AND active = 1\n",
    "aliases": "query = SELECT goto FROM alias WHERE address='%s'\n",
}
"""The .cf files' queries, by role."""

MINIMUM_UID = 1000
"""virtual_minimum_uid of both sides: the mapped uid (nobody's) is above it."""


@dataclass(frozen=True)
class VirtualMail:
    """The rows of the three tables."""

    domains: Sequence[str]
    mailboxes: Sequence[tuple[str, str, int]]  # username, maildir, active
    aliases: Sequence[tuple[str, str]] = field(default=())  # address, goto

    def rows(self) -> dict[str, list[tuple[object, ...]]]:
        return {
            "domains": [(domain, "virtual:") for domain in self.domains],
            "mailbox": [(user, path, active, "0") for user, path, active in self.mailboxes],
            "alias": list(self.aliases),
        }


@dataclass(frozen=True)
class Tables:
    """The .cf files of one database, by role (``QUERIES``), and their type (``mysql``,
    ``sqlite``)."""

    kind: Kind
    cf: dict[str, Path]

    def spec(self, role: str) -> str:
        return f"{self.kind}:{self.cf[role]}"


def load_mysql(server: MariaDB, data: VirtualMail) -> str:
    """The tables in a fresh database ``vmail`` of ``server``; the .cf connection settings."""
    conn = server.connect(root=True, database=None)
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
            cursor.execute(f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4")
            for host in ("127.0.0.1", "localhost"):
                cursor.execute(f"GRANT ALL ON {DATABASE}.* TO '{USER}'@'{host}'")
            cursor.execute(f"USE {DATABASE}")
            for statement in SCHEMA:
                cursor.execute(statement)
            for table, rows in data.rows().items():
                if rows:
                    marks = ",".join(["%s"] * len(rows[0]))
                    cursor.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
    finally:
        conn.close()
    return (
        f"hosts = inet:127.0.0.1:{server.port}\nuser = {USER}\npassword = {PASSWORD}\n"
        f"dbname = {DATABASE}\n"
    )


def load_sqlite(path: Path, data: VirtualMail) -> str:
    """The tables in a new SQLite file at ``path`` (readable by all: Postfix's daemons run as
    its own user); the .cf connection settings."""
    conn = sqlite3.connect(path)
    try:
        for statement in SCHEMA:
            conn.execute(statement)
        for table, rows in data.rows().items():
            if rows:
                conn.executemany(
                    f"INSERT INTO {table} VALUES ({','.join('?' * len(rows[0]))})", rows
                )
        conn.commit()
    finally:
        conn.close()
    path.chmod(0o644)
    return f"dbpath = {path}\n"


def write_tables(directory: Path, kind: Kind, connection: str) -> Tables:
    """One .cf file per role in ``directory`` (0644: smtpd reads them as the postfix user)."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    files = {}
    for role, query in QUERIES.items():
        path = directory / f"{kind}-virtual-{role}.cf"
        path.write_text(f"# {role}\n{connection}{query}")
        path.chmod(0o644)
        files[role] = path
    return Tables(kind, files)


def postfix_settings(
    tables: Tables, owner: tuple[int, int], *, delimiter: str = "+"
) -> dict[str, str]:
    """main.cf: virtual(8) for the mailbox domains, with these tables (the instance's
    virtual_mailbox_base stays its own); only these domains are accepted (no
    permit_mynetworks: the tests' client is on 127.0.0.1)."""
    uid, gid = owner
    return {
        "virtual_mailbox_domains": tables.spec("domains"),
        "virtual_mailbox_maps": tables.spec("mailboxes"),
        "virtual_alias_maps": tables.spec("aliases"),
        "virtual_uid_maps": f"static:{uid}",
        "virtual_gid_maps": f"static:{gid}",
        "virtual_minimum_uid": str(MINIMUM_UID),
        "recipient_delimiter": delimiter,
        "smtpd_relay_restrictions": "reject_unauth_destination",
    }


def filterd_delivery(
    tables: Tables | None, base: Path, owner: tuple[int, int], *, delimiter: str = "+",
    domains: Sequence[str] = (),
) -> str:  # fmt: skip
    """filterd's ``[delivery]``: the Maildir stage with the same tables (``tables``), or
    without maps (``None``: every user of ``domains`` has ``base/domain/user/``)."""
    lines = [
        "[delivery]",
        'method = "maildir"',
        f'mailbox_base = "{base}"',
        f'recipient_delimiter = "{delimiter}"',
        f"minimum_uid = {MINIMUM_UID}",
    ]
    if tables is None:
        names = ", ".join(f'"{domain}"' for domain in domains)
        lines.append(f"mailbox_domains = [{names}]")
    else:
        uid, gid = owner
        lines += [
            f'mailbox_domains = ["{tables.spec("domains")}"]',
            f'mailbox_maps = ["{tables.spec("mailboxes")}"]',
            f'alias_maps = ["{tables.spec("aliases")}"]',
            f'uid_maps = ["static:{uid}"]',
            f'gid_maps = ["static:{gid}"]',
        ]
    return "\n".join(lines) + "\n"
