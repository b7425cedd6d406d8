"""The Maildir stage end to end: a filterd process with a real spamd behind the spamassassin
plugin, spoken to over SMTP. A delivered message's delivery lines and folder, spam filed into
.Junk by its score, a UTF-8 local part under SMTPUTF8, a mail loop."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.support.filterd_proc import FilterdFactory, FilterdProcess
from tests.support.postfix import free_port
from tests.support.session import LineClient
from tests.support.spamd import GTUBE, SpamdInstance, running_spamd, spamd_installed

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not spamd_installed(), reason="spamd is not installed"),
    pytest.mark.timeout(120),
]

HAM = (
    b"From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: lunch\r\n"
    b"Message-ID: <ham@example.com>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\n"
    b"Shall we meet at noon?\r\n"
)
SPAM = (
    b"From: Spammer <spammer@example.net>\r\nTo: bob@example.org\r\nSubject: cheap watches\r\n"
    b"Message-ID: <gtube@example.net>\r\n\r\nBuy now.\r\n" + GTUBE.encode() + b"\r\n"
)


@pytest.fixture(scope="module")
def spamd() -> Iterator[SpamdInstance]:
    with running_spamd(children=2) as instance:
        yield instance


@pytest.fixture
def filterd(
    filterd_factory: FilterdFactory, spamd: SpamdInstance, tmp_path: Path
) -> FilterdProcess:
    port = free_port()
    return filterd_factory(
        f"""\
[[listen]]
address = "127.0.0.1:{port}"
hostname = "filterd.test"

[delivery]
method = "maildir"
mailbox_base = "{tmp_path / "mail"}"
mailbox_domains = ["example.org"]
recipient_delimiter = "+"

[[delivery.filing]]
finding = "spamassassin"
score = 5.0
folder = ".Junk"

[[chain]]
plugin = "spamassassin"
timeout = "20s"
config = {{ address = "{spamd.host}:{spamd.port}", max_connections = {spamd.children} }}
"""
    )


async def smtp(
    port: int,
    rcpts: list[str],
    message: bytes,
    *,
    sender: str = "alice@example.com",
    utf8: bool = False,
) -> list[str]:
    """One transaction; the replies to MAIL, each RCPT, DATA and the end of data."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    client = LineClient(stream)
    assert (await client.line()).startswith("220 ")
    await client.send_lines("EHLO client.example")
    await client.reply()
    await client.send(f"MAIL FROM:<{sender}>{' SMTPUTF8' if utf8 else ''}\r\n".encode())
    answers = [await client.code()]
    for rcpt in rcpts:
        await client.send(f"RCPT TO:<{rcpt}>\r\n".encode())
        answers.append(await client.code())
    if any(answer.startswith("250") for answer in answers[1:]):
        await client.send_lines("DATA")
        answers.append(await client.code())
        await client.send(message + b".\r\n")
        answers.append(await client.code())
    await client.send_lines("QUIT")
    await stream.aclose()
    return answers


def port_of(filterd: FilterdProcess) -> int:
    return int(filterd.addresses[0].rsplit(":", 1)[1])


def only_file(directory: Path) -> bytes:
    (path,) = list(directory.iterdir())
    return path.read_bytes()


async def test_ham_in_the_inbox_with_virtual8s_lines_spam_in_junk(
    filterd: FilterdProcess, tmp_path: Path
) -> None:
    port = port_of(filterd)
    with trio.fail_after(60):
        ham = await smtp(port, ["Bob+Lunch@example.org"], HAM)
        spam = await smtp(port, ["bob@example.org"], SPAM)
    assert ham[-1].startswith("250 2.0.0 Ok: delivered to maildir as "), ham
    assert spam[-1].startswith("250 2.0.0 Ok: delivered to maildir as "), spam
    box = tmp_path / "mail" / "example.org" / "bob"
    delivered = only_file(box / "new")
    assert delivered.startswith(
        b"Return-Path: <alice@example.com>\nX-Original-To: Bob+Lunch@example.org\n"
        b"Delivered-To: Bob+Lunch@example.org\n"
    )
    assert b"\nReceived: from client.example" in delivered
    assert b"\r\n" not in delivered
    assert b"\nX-Spam-Status: No, " in delivered
    assert delivered.endswith(b"\n\nShall we meet at noon?\n")
    junk = only_file(box / ".Junk" / "new")
    assert junk.startswith(b"Return-Path: <alice@example.com>\nX-Original-To: bob@example.org\n")
    assert b"\nX-Spam-Flag: YES\n" in junk
    assert {p.name for p in (box / ".Junk").iterdir()} == {"tmp", "new", "cur", "maildirfolder"}


async def test_utf8_local_part_with_smtputf8_and_other_domains(
    filterd: FilterdProcess, tmp_path: Path
) -> None:
    port = port_of(filterd)
    with trio.fail_after(60):
        answers = await smtp(port, ["ünï@example.org"], HAM, utf8=True)
        elsewhere = await smtp(port, ["bob@example.net"], HAM)
    assert answers[1] == "250 2.1.5 Ok", answers
    assert answers[-1].startswith("250 2.0.0 "), answers
    delivered = only_file(tmp_path / "mail" / "example.org" / "%C3%BCn%C3%AF" / "new")
    assert "Delivered-To: ünï@example.org\n".encode() in delivered
    assert elsewhere[1] == "554 5.7.1 <bob@example.net>: Relay access denied"


async def test_a_message_that_was_delivered_to_the_recipient_before_is_a_loop(
    filterd: FilterdProcess, tmp_path: Path
) -> None:
    looped = b"Delivered-To: bob@example.org\r\n" + HAM
    with trio.fail_after(60):
        answers = await smtp(port_of(filterd), ["bob@example.org"], looped)
    assert answers[-1] == "554 5.4.6 mail forwarding loop for bob@example.org"
    assert not (tmp_path / "mail" / "example.org" / "bob" / "new").exists()
