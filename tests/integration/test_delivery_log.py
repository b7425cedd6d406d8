"""The lines filterd's SMTP door and its deliveries write for each message, as Postfix's smtpd,
qmgr and delivery agents write them: ``client=``, ``from=<>, size=, nrcpt=``, one ``to=<>,
relay=, delay=, delays=, dsn=, status=`` line per recipient (sent, deferred, bounced), and
smtpd's ``reject:`` line. A real filterd (its supervisor, in process) relays to Postfix's
smtp-sink, a scripted next hop or a Maildir; the lines are read from the log records."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import trio

from tests.integration.test_relay import connect, relay_config, running, send_message
from tests.support.nexthop import ScriptedNextHop, smtp_sink

pytestmark = pytest.mark.skipif(
    not Path("/usr/sbin/smtp-sink").exists(), reason="Postfix's smtp-sink is not installed"
)

QID = r"[0-9A-F]{10}"
TIMES = r"delay=[0-9.]+, delays=[0-9.]+/0/[0-9.]+/[0-9.]+"


def lines(caplog: pytest.LogCaptureFixture, component: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == f"filterd.{component}"]


def matching(pattern: str, found: list[str]) -> list[re.Match[str]]:
    return [m for line in found if (m := re.fullmatch(pattern, line))]


async def test_a_relayed_message_is_client_from_and_one_to_line_per_recipient(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hop = ScriptedNextHop()
    caplog.set_level(logging.INFO, logger="filterd")
    async with trio.open_nursery() as nursery:
        hop_port = await nursery.start(hop.serve)
        async with running(relay_config(hop_port)) as port:
            for _ in range(2):  # the second on the pooled connection: conn_use=2
                client = await connect(port)
                await send_message(client, ["a@x.example", "refuse@x.example", "b@x.example"])
                await client.send_lines("QUIT")
                await client.code()
        nursery.cancel_scope.cancel()
    relay = rf"127\.0\.0\.1\[127\.0\.0\.1\]:{hop_port}"
    smtpd, smtp = lines(caplog, "smtpd"), lines(caplog, "smtp")
    clients = matching(rf"({QID}): client=unknown\[127\.0\.0\.1\]", smtpd)
    assert len(clients) == 2
    first, second = (m.group(1) for m in clients)
    assert matching(
        rf"{first}: reject: RCPT from unknown\[127\.0\.0\.1\]: 550 5\.1\.1 <refuse@x\.example>: "
        r"unknown user; from=<alice@example\.com> to=<refuse@x\.example> proto=ESMTP "
        r"helo=<client\.example>",
        smtpd,
    )
    envelope = r"from=<alice@example\.com>, size=\d+, nrcpt=2"
    sent = (
        rf"to=<[ab]@x\.example>, relay={relay}, {TIMES}, dsn=2\.0\.0, "
        r"status=sent \(250 2\.0\.0 Ok: queued as NH\d\)"
    )
    reused = sent.replace(f"relay={relay}, ", f"relay={relay}, conn_use=2, ")
    # as qmgr and smtp write them: the envelope handed on, then each recipient's result
    expected = [envelope, sent, sent] * 2
    expected[4:6] = [reused, reused]
    assert len(smtp) == 6, smtp
    for n, (pattern, line) in enumerate(zip(expected, smtp, strict=True)):
        assert re.fullmatch(rf"{first if n < 3 else second}: {pattern}", line), line


async def test_a_next_hops_refusal_after_the_data_is_bounced_in_its_own_words(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="filterd")
    with smtp_sink(tmp_path, "-f", ".") as sink:  # 5xx to the final dot
        async with running(relay_config(sink.port)) as port:
            answers = await send_message(await connect(port), ["a@x.example"])
    assert answers[-1].startswith("5")
    (line,) = [line for line in lines(caplog, "smtp") if "to=<" in line]
    relay = rf"127\.0\.0\.1\[127\.0\.0\.1\]:{sink.port}"
    assert re.fullmatch(
        rf"{QID}: to=<a@x\.example>, relay={relay}, {TIMES}, dsn=5\.\d\.\d+, status=bounced "
        rf"\(host {relay} said: 5\d\d .* \(in reply to end of DATA command\)\)",
        line,
    ), line


async def test_a_next_hop_lost_after_the_dot_is_deferred(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hop = ScriptedNextHop(die_after_data=True)
    caplog.set_level(logging.INFO, logger="filterd")
    async with trio.open_nursery() as nursery:
        hop_port = await nursery.start(hop.serve)
        async with running(relay_config(hop_port)) as port:
            await send_message(await connect(port), ["a@x.example"])
        nursery.cancel_scope.cancel()
    (line,) = [line for line in lines(caplog, "smtp") if "to=<" in line]
    assert re.fullmatch(
        rf"{QID}: to=<a@x\.example>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:{hop_port}, {TIMES}, "
        r"dsn=4\.\d\.\d+, status=deferred \(4\d\d 4\.\d\.\d+ [^()]*\)",
        line,
    ), line
    assert any(line.startswith("warning: ") for line in lines(caplog, "smtp"))


async def test_an_lmtp_next_hop_answers_each_recipient(caplog: pytest.LogCaptureFixture) -> None:
    hop = ScriptedNextHop(lmtp=True)
    caplog.set_level(logging.INFO, logger="filterd")
    async with trio.open_nursery() as nursery:
        hop_port = await nursery.start(hop.serve)
        async with running(relay_config(hop_port, next_proto="lmtp")) as port:
            await send_message(await connect(port), ["a@x.example", "lmtp-defer@x.example"])
        nursery.cancel_scope.cancel()
    relay = rf"127\.0\.0\.1\[127\.0\.0\.1\]:{hop_port}"
    found = lines(caplog, "lmtp")
    assert matching(rf"{QID}: to=<a@x\.example>, relay={relay}, {TIMES}, dsn=2\.0\.0, "
                    r"status=sent \(250 .*\)", found)  # fmt: skip
    assert matching(
        rf"{QID}: to=<lmtp-defer@x\.example>, relay={relay}, {TIMES}, dsn=4\.2\.0, "
        rf"status=deferred \(host {relay} said: 451 4\.2\.0 mailbox busy \(in reply to end of "
        r"DATA command\)\)",
        found,
    ), found


async def test_xforward_names_the_origin_on_the_client_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """As Postfix's smtpd after XFORWARD: the peer, then Postfix's queue id and client."""
    caplog.set_level(logging.INFO, logger="filterd")
    with smtp_sink(tmp_path) as sink:
        async with running(relay_config(sink.port)) as port:
            client = await connect(port)
            await client.send_lines("XFORWARD NAME=mx.example ADDR=192.0.2.9 IDENT=4F2A81B3C")
            assert (await client.code()).startswith("250")
            await send_message(client, ["a@x.example"])
    assert matching(
        rf"{QID}: client=unknown\[127\.0\.0\.1\], orig_queue_id=4F2A81B3C, "
        r"orig_client=mx\.example\[192\.0\.2\.9\]",
        lines(caplog, "smtpd"),
    )


async def test_maildir_delivery_lines(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="filterd")
    listen = relay_config(1).split("[delivery]")[0]
    config = f'{listen}[delivery]\nmethod = "maildir"\nroot = "{tmp_path}"\n'
    async with running(config) as port:
        await send_message(await connect(port), ["a@x.example", "b@x.example"])
    found = lines(caplog, "maildir")
    assert matching(rf"{QID}: from=<alice@example\.com>, size=\d+, nrcpt=2", found[:1])
    names = [
        m.group(1)
        for m in matching(
            rf"{QID}: to=<[ab]@x\.example>, relay=maildir, {TIMES}, dsn=2\.0\.0, "
            r"status=sent \(250 2\.0\.0 Ok: delivered to maildir as (\S+)\)",
            found,
        )
    ]
    assert len(names) == 2
    assert all((tmp_path / "x.example" / box / "new" / name).is_file()
               for box, name in zip("ab", names, strict=True))  # fmt: skip
