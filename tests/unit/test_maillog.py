"""The Postfix-style lines every front door writes (``filterd.maillog``): admins' log parsers
read them, so their text is fixed here."""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Iterator

import pytest

from filterd.maillog import LineHandler, MailLog, lines, queue_id_var, setup_logging, smtpd_line
from filterd.maillog import logger as maillog
from filterd.model.envelope import Client
from filterd.model.reply import Reply

PEER = Client("192.0.2.1", 40123, "client.example.net", "helo.example.net", "ESMTP")
REFUSED = Reply(550, "5.7.1", "<bad@example.org>: Recipient address rejected")


def test_a_refused_recipient_reads_as_postfix_smtpd_writes_it() -> None:
    line = smtpd_line(
        "reject", "RCPT", PEER, REFUSED, sender="a@example.net", rcpt="bad@example.org"
    )
    assert line == (
        "reject: RCPT from client.example.net[192.0.2.1]: 550 5.7.1 <bad@example.org>: "
        "Recipient address rejected; from=<a@example.net> to=<bad@example.org> proto=ESMTP "
        "helo=<helo.example.net>"
    )


def test_before_mail_there_is_no_sender_and_the_null_sender_is_empty() -> None:
    no_helo = Client("192.0.2.1", None, "unknown", None, "SMTP")
    assert smtpd_line("reject", "CONNECT", no_helo, "554 5.7.1 go away", sender=None) == (
        "reject: CONNECT from unknown[192.0.2.1]: 554 5.7.1 go away; proto=SMTP helo=<>"
    )
    assert smtpd_line("action", "DATA", PEER, "DUNNO", sender="") == (
        "action: DATA from client.example.net[192.0.2.1]: DUNNO; from=<> proto=ESMTP "
        "helo=<helo.example.net>"
    )


def test_peer_supplied_text_cannot_break_the_line() -> None:
    sly = Client("192.0.2.1", None, "unknown", "x\r\nreject: forged", "ESMTP")
    line = smtpd_line("reject", "RCPT", sly, REFUSED, sender="a\nb@example.net", rcpt="c@d")
    assert "\n" not in line
    assert "\r" not in line
    assert "helo=<x\\x0d\\x0areject: forged>" in line


def test_connect_and_disconnect_lines(caplog: pytest.LogCaptureFixture) -> None:
    log = MailLog("smtpd")
    with caplog.at_level(logging.INFO, logger="filterd"):
        log.connect("client.example.net[192.0.2.1]")
        log.disconnect("client.example.net[192.0.2.1]", requests=3)
    assert caplog.messages == [
        "connect from client.example.net[192.0.2.1]",
        "disconnect from client.example.net[192.0.2.1], requests=3",
    ]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """setup_logging changes the process's "filterd" logger: put it back afterwards."""
    root = logging.getLogger("filterd")
    saved = (root.handlers[:], root.level, root.propagate, maillog._handler)
    yield
    root.handlers[:], root.level, root.propagate, maillog._handler = saved


LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d [^ ]+ (filterd/.*)")
"""rsyslog's file format (RFC 3339 time, host, program[pid]: text), which pflogsumm reads."""


def written(stream: io.StringIO) -> list[str]:
    """The lines after their timestamp (which is checked)."""
    lines = stream.getvalue().splitlines()
    matches = [LINE.fullmatch(line) for line in lines]
    assert all(matches), lines
    return [m.group(1) for m in matches if m]


@pytest.mark.usefixtures("restore_logging")
def test_mail_lines_read_as_the_logging_formatter_writes_them() -> None:
    """MailLog writes its finished lines straight to the handler (no LogRecord per line):
    the text is that of the same line logged as a record, to the character."""
    stream = io.StringIO()
    setup_logging("info", stream)
    log = MailLog("smtpd")
    token = queue_id_var.set("4B2D0A71C3")
    try:
        log.info("from=<a@example.net>", size=4259, nrcpt=1)
        log.line("from=<a@example.net>, size=4259, nrcpt=1")  # the same, finished by the caller
        log.warning("odd", text="x\r\ny")
        log.connect("unknown[127.0.0.1]")
        # the same line through the logging module, as any other record is formatted
        logging.getLogger("filterd.smtpd").info(
            "%s", "4B2D0A71C3: from=<a@example.net>, size=4259, nrcpt=1",
            extra={"component": "smtpd"},
        )  # fmt: skip
    finally:
        queue_id_var.reset(token)
    pid = os.getpid()
    assert written(stream) == [
        f"filterd/smtpd[{pid}]: 4B2D0A71C3: from=<a@example.net>, size=4259, nrcpt=1",
        f"filterd/smtpd[{pid}]: 4B2D0A71C3: from=<a@example.net>, size=4259, nrcpt=1",
        f"filterd/smtpd[{pid}]: warning: 4B2D0A71C3: odd, text=x\\x0d\\x0ay",
        f"filterd/smtpd[{pid}]: connect from unknown[127.0.0.1]",
        f"filterd/smtpd[{pid}]: 4B2D0A71C3: from=<a@example.net>, size=4259, nrcpt=1",
    ]
    assert isinstance(logging.getLogger("filterd").handlers[0], LineHandler)


@pytest.mark.usefixtures("restore_logging")
def test_lines_below_the_level_are_not_written() -> None:
    stream = io.StringIO()
    setup_logging("warning", stream)
    log = MailLog("relay")
    log.info("to=<b@example.org>, status=sent")
    log.connect("unknown[127.0.0.1]")
    log.warning("connect to 127.0.0.1:10026: refused")
    assert written(stream) == [
        f"filterd/relay[{os.getpid()}]: warning: NOQUEUE: connect to 127.0.0.1:10026: refused"
    ]


@pytest.mark.usefixtures("restore_logging")
def test_a_handler_of_a_component_still_gets_its_records() -> None:
    """Lines go straight to the handler only when nothing else would see them."""
    stream = io.StringIO()
    setup_logging("info", stream)
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    component = logging.getLogger("filterd.maildir")
    collect = Collect()
    component.addHandler(collect)
    try:
        MailLog("maildir").info("delivered")
    finally:
        component.removeHandler(collect)
    assert seen == ["NOQUEUE: delivered"]
    assert written(stream) == [f"filterd/maildir[{os.getpid()}]: NOQUEUE: delivered"]


@pytest.mark.usefixtures("restore_logging")
def test_a_log_that_cannot_be_written_does_not_fail_the_caller(
    capsys: pytest.CaptureFixture[str],
) -> None:
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(28, "No space left on device")

    setup_logging("info", Broken())
    MailLog("smtpd").info("client=unknown[127.0.0.1]")  # does not raise
    assert "No space left on device" in capsys.readouterr().err


@pytest.mark.usefixtures("restore_logging")
def test_a_forked_child_writes_its_own_pid() -> None:
    stream = io.StringIO()
    setup_logging("info", stream)
    handler = logging.getLogger("filterd").handlers[0]
    assert isinstance(handler, LineHandler)
    MailLog("policy").plain("before")
    handler.pid = 4242  # what the fork hook sets in a child
    MailLog("policy").plain("after")
    assert written(stream) == [
        f"filterd/policy[{os.getpid()}]: before",
        "filterd/policy[4242]: after",
    ]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0"),
        (0.0049, "0"),  # below Postfix's 10 ms resolution
        (0.005, "0.01"),
        (0.0123, "0.01"),
        (0.05, "0.05"),
        (0.105, "0.11"),
        (0.201, "0.2"),  # trailing zeros dropped
        (0.456, "0.46"),
        (0.994, "0.99"),
        (0.995, "1"),  # rounds up to the next unit
        (0.996, "1"),
        (1.049, "1"),
        (1.05, "1.1"),
        (9.949, "9.9"),
        (9.95, "10"),
        (1.01, "1"),  # two significant digits
        (1.234, "1.2"),
        (9.96, "10"),
        (12.3, "12"),  # whole seconds from 10 s on
        (12.6, "13"),
        (123.4, "123"),
        (10.5, "11"),  # half up
        (10.49, "10"),
    ],
)
def test_delays_read_as_postfix_writes_them(seconds: float, text: str) -> None:
    assert lines.format_delay(seconds) == text


def test_a_delivery_line_reads_as_postfix_smtp_writes_it() -> None:
    timing = lines.timing(arrival=100.0, handoff=100.42, done=100.631, setup=0.02)
    assert timing == "delay=0.63, delays=0.4/0/0.02/0.21"
    assert lines.timing(100.0, 100.003, 100.004) == "delay=0, delays=0/0/0/0"
    assert lines.timing(100.0, 100.003, 112.6) == "delay=13, delays=0/0/0/13"
    sent = Reply(250, "2.0.0", "Ok: queued as 4F2A81B3C")
    assert lines.delivery_line("b@example.org", "mx[192.0.2.7]:25", timing, sent) == (
        "to=<b@example.org>, relay=mx[192.0.2.7]:25, delay=0.63, delays=0.4/0/0.02/0.21, "
        "dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4F2A81B3C)"
    )
    refused = Reply(550, "5.1.1", "<c@example.org>: unknown user")
    line = lines.delivery_line(
        "c@example.org", "mx[192.0.2.7]:25", timing, refused, said="end of DATA command", conn_use=3
    )
    assert line == (
        "to=<c@example.org>, relay=mx[192.0.2.7]:25, conn_use=3, delay=0.63, "
        "delays=0.4/0/0.02/0.21, dsn=5.1.1, status=bounced (host mx[192.0.2.7]:25 said: 550 "
        "5.1.1 <c@example.org>: unknown user (in reply to end of DATA command))"
    )
    busy = Reply(451, "", "busy")  # no enhanced code: its class's
    assert lines.delivery_line("d@example.org", "none", timing, busy).endswith(
        "dsn=4.0.0, status=deferred (451 busy)"
    )


def test_client_and_envelope_lines() -> None:
    assert lines.client_line("unknown[127.0.0.1]") == "client=unknown[127.0.0.1]"
    assert lines.client_line("unknown[127.0.0.1]", "4F2A81B3C", "mx.example[192.0.2.9]") == (
        "client=unknown[127.0.0.1], orig_queue_id=4F2A81B3C, orig_client=mx.example[192.0.2.9]"
    )
    assert lines.envelope_line("", 4259, 2) == "from=<>, size=4259, nrcpt=2"
    assert (
        lines.envelope_line("a\r\nb@example.net", 1, 1)
        == "from=<a\\x0d\\x0ab@example.net>, size=1, nrcpt=1"
    )


def test_every_peer_supplied_part_of_a_line_is_escaped() -> None:
    """Each part a client or next hop supplies is escaped on its own (filterd's own text around
    them needs none): the recipient, the next hop's reply, XFORWARD's values, the client."""
    sly = Reply(550, "5.1.1", "no\x1b[2J such user\nsecond line")
    line = lines.delivery_line(
        "c\r\n@example.org", "mx[192.0.2.7]:25", "delay=0, delays=0/0/0/0", sly, said="RCPT TO"
    )
    assert line == (
        "to=<c\\x0d\\x0a@example.org>, relay=mx[192.0.2.7]:25, delay=0, delays=0/0/0/0, "
        "dsn=5.1.1, status=bounced (host mx[192.0.2.7]:25 said: 550 5.1.1 no\\x1b[2J such "
        "user (in reply to RCPT TO))"
    )
    assert lines.client_line("x\n[192.0.2.1]", "ID\x00", "y\t[192.0.2.9]") == (
        "client=x\\x0a[192.0.2.1], orig_queue_id=ID\\x00, orig_client=y\\x09[192.0.2.9]"
    )


def test_the_next_hops_name_is_escaped_once_per_connection() -> None:
    """``to=`` lines take the relay's name as ``relay_name`` made it: escaped there."""
    from filterd.config.endpoint import Endpoint
    from filterd.delivery.nexthop import relay_name

    class NoSocket:
        socket = None

    name = relay_name(Endpoint("unix", path="/run/odd\nname"), NoSocket())  # type: ignore[arg-type]
    assert name.endswith("[/run/odd\\x0aname]")
    assert relay_name(Endpoint("tcp", "mx.example", 25), NoSocket()) == (  # type: ignore[arg-type]
        "mx.example[mx.example]:25"
    )


@pytest.mark.usefixtures("restore_logging")
def test_the_level_check_follows_every_change_of_level() -> None:
    """``enabled_for_info`` reads the logger's cache of ``isEnabledFor``'s answers: a new
    level, ``logging.disable`` and a disabled logger each change its answer at once."""
    stream = io.StringIO()
    setup_logging("info", stream)
    log = MailLog("levels")
    component = logging.getLogger("filterd.levels")
    assert log.enabled_for_info()
    logging.getLogger("filterd").setLevel(logging.WARNING)
    assert not log.enabled_for_info()
    log.line("not written")
    logging.getLogger("filterd").setLevel(logging.INFO)
    assert log.enabled_for_info()
    logging.disable(logging.INFO)
    try:
        assert not log.enabled_for_info()
    finally:
        logging.disable(logging.NOTSET)
    assert log.enabled_for_info()
    component.disabled = True
    try:
        assert not log.enabled_for_info()
        log.line("not written either")
    finally:
        component.disabled = False
    log.line("written")
    assert written(stream) == [f"filterd/levels[{os.getpid()}]: NOQUEUE: written"]
