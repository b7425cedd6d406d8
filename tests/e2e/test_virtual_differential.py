"""The Maildir stage against Postfix's virtual(8): the same MariaDB tables (mailbox domains,
mailboxes, aliases with a catch-all; tests/support/vmail.py), the same messages sent over SMTP
to a private Postfix (smtpd, cleanup's virtual alias expansion, virtual(8)) and to filterd;
then the same answers at RCPT and DATA, and the same Maildirs, files, modes and owners, each
file identical but for its name, the values of the lines delivery adds and each server's own
Received: (tests/support/maildir_compare.py says exactly what is left out and why).

Both write the files as nobody (uid/gid from static: maps, above virtual_minimum_uid 1000 on
both sides): Postfix's virtual(8) runs as root and writes as that user; filterd runs as root
and gives each file and directory it makes to that user. Without maps filterd writes as itself,
and the owners are left out of that comparison.

The cases (``DIRECT_CASES``, and ``MAPPED_CASES`` with the tables): real messages from
tests/data (a digest, a multipart with an image, a message with a Received: chain, Return-Path:
and a Delivered-To: for another address), 8-bit headers and body, a 5000-byte line (filterd's
``max_text_line`` raised to take it, as Postfix does; its default refuses lines over RFC
5321's 1000), the null sender, a sender whose local part needs quotes, an upper-case recipient,
an extension with recipient_delimiter; aliases to a list, nested over two rows, with an
extension (propagated), the catch-all (which takes a mailbox without an alias to itself too, as
in Postfix), a mailbox and an alias to it in one transaction (two copies), unknown, inactive
and foreign recipients. The documented disagreements (``DOCUMENTED`` and a case's
``filterd_refuses``) are compared as documented, never skipped.
"""

from __future__ import annotations

import shutil
import smtplib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.data import MAIL_CORPUS
from tests.support.filterd_proc import FilterdFactory
from tests.support.maildir_compare import (
    snapshot,
    tree_differences,
    without_field,
    without_message,
)
from tests.support.mariadb import MariaDB, mariadb, mariadb_installed  # noqa: F401 - fixture
from tests.support.postfix import (
    PostfixFactory,
    PostfixInstance,
    free_port,
    postfix_available,
    to_crlf,
)
from tests.support.vmail import (
    Tables,
    VirtualMail,
    filterd_delivery,
    load_mysql,
    postfix_settings,
    write_tables,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not postfix_available(), reason="Postfix is not installed"),
    pytest.mark.skipif(not mariadb_installed(), reason="MariaDB is not installed"),
    pytest.mark.timeout(180),
]

OWNER_NAME = "nobody"
DOMAINS = ("example.org", "example.net")

MAIL = VirtualMail(
    domains=DOMAINS,
    mailboxes=[
        ("alice@example.org", "example.org/alice/", 1),
        ("bob@example.org", "example.org/bob/", 1),
        ("carol@example.net", "example.net/carol/", 1),
        ("catchall@example.net", "example.net/catchall/", 1),
        ("dave@example.net", "example.net/dave/", 1),  # no alias to himself: see CASES
        ("inactive@example.org", "example.org/inactive/", 0),
    ],
    aliases=[
        ("team@example.org", "alice@example.org,bob@example.org"),  # one row, a list
        ("staff@example.org", "team@example.org"),  # nested, and two rows
        ("staff@example.org", "carol@example.net"),
        ("carol@example.net", "carol@example.net"),  # mailboxes of a catch-all domain
        ("catchall@example.net", "catchall@example.net"),  # alias themselves
        ("@example.net", "catchall@example.net"),
    ],
)
"""The tables: mailboxes of two domains, aliases (a list, nesting, several rows) and a
catch-all for example.net."""


def _corpus(name: str) -> bytes:
    return (MAIL_CORPUS / name).read_bytes()


def _message(subject: str, body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"From: Sender <sender@example.com>\nTo: someone@example.org\n"
        b"Subject: "
        + subject.encode()
        + b"\nMessage-ID: <"
        + subject.replace(" ", ".").encode()
        + b"@example.com>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n"
        + extra
        + b"\n"
        + body
    )


EIGHT_BIT = _message(
    "eight bit",
    "Grüße aus Köln, naïve café.\n".encode()
    + "\u0417\u0434\u0440\u0430\u0432\u0441\u0442\u0432\u0443\u0439\u0442\u0435.\n".encode(),
    b"MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
    b"Content-Transfer-Encoding: 8bit\nX-Comment: \xe4\xf6\xfc latin-1 in a header\n",
)
LONG_LINES = _message(
    "long lines",
    b"short\n" + b"x" * 5000 + b"\n" + b"y" * 998 + b"\n.starts with a dot\n",
    b"X-Long: " + b" ".join([b"word"] * 400) + b"\n",
)


@dataclass(frozen=True)
class Case:
    name: str
    rcpts: tuple[str, ...]
    message: bytes
    sender: str = "sender@example.com"
    params: tuple[str, ...] = ()
    filterd_refuses: tuple[int, str] | None = None  # a documented disagreement at DATA


DIRECT_CASES = [
    Case("digest", ("alice@example.org",), _corpus("msg_02.txt")),
    Case("multipart with an image", ("Bob@Example.ORG",), _corpus("msg_07.txt")),
    Case("received chain and delivered-to elsewhere", ("bob@example.org",), _corpus("msg_16.txt")),
    Case("8-bit", ("alice+news@example.org",), EIGHT_BIT, params=("BODY=8BITMIME",)),
    Case("long lines", ("carol@example.net", "alice@example.org"), LONG_LINES),
    Case("null sender", ("carol@example.net",), _corpus("msg_10.txt"), sender=""),
    Case(
        "quoted sender",
        ("alice@example.org",),
        _message("quoted", b"hi\n"),
        sender='"john doe"@example.com',
    ),
    Case(
        "delivered to the recipient before",
        ("bob@example.org",),
        _message("loop", b"again\n", b"Delivered-To: bob@example.org\n"),
        filterd_refuses=(554, "5.4.6"),
    ),
]
"""Recipients that are mailboxes, in the mailbox domains (the stage without maps too)."""

MAPPED_CASES = [
    Case("alias to a list", ("team@example.org",), _message("team", b"to the team\n")),
    Case("nested alias", ("staff@example.org",), _message("staff", b"to the staff\n")),
    Case("alias with extension", ("team+x@example.org",), _message("team x", b"ext\n")),
    Case("catch-all", ("whoever@example.net",), _message("catch all", b"anyone\n")),
    Case("mailbox caught by the catch-all", ("dave@example.net",), _message("dave", b"d\n")),
    Case(
        "a mailbox and an alias to it",
        ("alice@example.org", "team@example.org"),
        _message("twice", b"alice twice\n"),
    ),
    Case(
        "unknown, inactive and foreign recipients",
        ("nobody@example.org", "inactive@example.org", "x@elsewhere.test", "bob@example.org"),
        _message("partly", b"only bob\n"),
    ),
]
"""What needs the tables: aliases (cleanup's virtual_alias_maps expansion in Postfix), the
catch-all (which also takes the mail of a mailbox that has no alias to itself), users the
tables do not know."""

DOCUMENTED: dict[str, str] = {}
"""The disagreements filterd has with virtual(8) in what it writes, each with its reason: the
field filterd keeps and Postfix drops. The test removes exactly those fields from filterd's
files and checks that there were some (a fix makes the test fail: then drop the entry).
None now: the Return-Path: fields a message arrives with, which filterd kept, are dropped as
cleanup(8) drops them (tests/unit/delivery/test_return_path_dropped.py).

The other documented disagreement is a case's ``filterd_refuses``: a message that already
carries ``Delivered-To:`` for its recipient is refused as a mail loop (554 5.4.6, as local(8)
does; issue 16 asks for it), while virtual(8), which has no such check, delivers it. The test
checks filterd's answer and takes Postfix's copy (found by its Message-ID) out."""


@dataclass
class Outcome:
    rcpt: list[tuple[int, str]]
    data: tuple[int, str] | None  # code and enhanced status code


def send(port: int, case: Case) -> Outcome:
    """One SMTP transaction: every RCPT's reply, and DATA's code if a recipient was taken."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example", timeout=60) as smtp:
        smtp.ehlo()
        params = "".join(f" {p}" for p in case.params)
        code, text = smtp.docmd("MAIL", f"FROM:<{case.sender}>{params}")
        assert code == 250, (code, text)
        replies = []
        for rcpt in case.rcpts:
            code, text = smtp.docmd("RCPT", f"TO:<{rcpt}>")
            replies.append((code, text.decode()))
        if not any(code == 250 for code, _ in replies):
            return Outcome(replies, None)
        code, text = smtp.data(to_crlf(case.message))
        return Outcome(replies, (code, text.decode().split(" ", 1)[0]))


@pytest.fixture
def workdir() -> Iterator[Path]:
    """Outside pytest's 0700 tmp_path: Postfix's daemons and nobody must get in."""
    path = Path(tempfile.mkdtemp(prefix="filterd-vdiff-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _owner() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(OWNER_NAME)
    return entry.pw_uid, entry.pw_gid


@pytest.fixture
def tables(workdir: Path, mariadb: MariaDB) -> Tables:  # noqa: F811
    return write_tables(workdir / "cf", "mysql", load_mysql(mariadb, MAIL))


@pytest.fixture
def postfix(postfix_factory: PostfixFactory, tables: Tables) -> PostfixInstance:
    return postfix_factory(
        virtual_domains=DOMAINS, main_cf_extra=postfix_settings(tables, _owner())
    )


def start_filterd(factory: FilterdFactory, workdir: Path, tables: Tables | None) -> int:
    """filterd's Maildir stage with ``tables`` (or without maps); its port. Lines of any
    length, as Postfix takes them (filterd's default refuses lines over RFC 5321's 1000)."""
    base = workdir / "filterd-mail"
    base.mkdir(mode=0o755)
    shutil.chown(base, *_owner())
    port = free_port()
    factory(
        f'[[listen]]\naddress = "127.0.0.1:{port}"\nhostname = "filterd.test"\n\n'
        "[limits]\nmax_text_line = 100000\n\n"
        + filterd_delivery(tables, base, _owner(), domains=DOMAINS)
    )
    return port


def _message_id(message: bytes) -> bytes:
    start = message.index(b"\nMessage-ID: ") + 1
    return message[start : message.index(b"\n", start) + 1]


def compare(
    postfix: PostfixInstance, port: int, workdir: Path, cases: list[Case], *, owners: bool
) -> list[str]:
    """Send every case to both; each disagreement, in words."""
    disagreements = []
    refused: list[Case] = []
    for case in cases:
        theirs = send(postfix.smtp_port, case)
        ours = send(port, case)
        if case.filterd_refuses is not None and theirs.data is not None:
            refused.append(case)
            theirs.data = case.filterd_refuses
        if theirs != ours:
            disagreements.append(f"{case.name}: postfix {theirs}, filterd {ours}")
    postfix.wait_for_empty_queue(timeout=60)
    theirs_tree = snapshot(postfix.mail_dir)
    accepted = sum(1 for case in cases if case.filterd_refuses is None)
    if len(theirs_tree.messages) < accepted:  # each of those delivers at least one copy
        disagreements.append(f"postfix delivered {len(theirs_tree.messages)} files only")
    for case in refused:
        theirs_tree, removed = without_message(theirs_tree, _message_id(case.message))
        if removed != len(case.rcpts):
            disagreements.append(f"{case.name}: postfix delivered {removed} copies")
    ours_tree = snapshot(workdir / "filterd-mail")
    for name in DOCUMENTED:
        ours_tree, removed = without_field(ours_tree, name)
        if not removed:
            disagreements.append(f"documented disagreement {name!r} is gone: {DOCUMENTED[name]}")
    found = tree_differences(theirs_tree, ours_tree, owners=owners)
    return disagreements + found


def test_without_maps_filterd_delivers_what_virtual8_delivers(
    postfix: PostfixInstance, filterd_factory: FilterdFactory, workdir: Path
) -> None:
    """The stage without maps (every user has base/domain/user/) against virtual(8) with the
    tables, for mailbox recipients; filterd writes as itself (root), so owners are left out."""
    port = start_filterd(filterd_factory, workdir, None)
    found = compare(postfix, port, workdir, DIRECT_CASES, owners=False)
    assert not found, "\n".join(found)


def test_with_the_same_tables_filterd_delivers_what_virtual8_delivers(
    postfix: PostfixInstance, filterd_factory: FilterdFactory, workdir: Path, tables: Tables
) -> None:
    """The stage with the same tables as virtual(8) (mailbox_domains, mailbox_maps,
    alias_maps, uid_maps, gid_maps): every case, owners compared."""
    port = start_filterd(filterd_factory, workdir, tables)
    found = compare(postfix, port, workdir, DIRECT_CASES + MAPPED_CASES, owners=True)
    assert not found, "\n".join(found)
