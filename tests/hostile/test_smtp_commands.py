"""Hostile SMTP/LMTP clients against a real ``filterd run``: over-long lines, NUL bytes, a flood
of recipients, pipelining abuse, commands after QUIT, malformed addresses and parameters, the
error budget. Each gets its documented reply (filterd.model.replies, docs/testing.md) and a
well-behaved client on another connection is served meanwhile; what reaches the next hop
(smtp-sink) is counted."""

from __future__ import annotations

import threading

import pytest

from filterd.model import replies
from filterd.model.reply import Reply
from tests.hostile.conftest import Door, DoorStarter
from tests.hostile.wire import Wire, good_mail, marker, wire

MAIL = "MAIL FROM:<alice@example.com>"
RCPT = "RCPT TO:<bob@example.org>"


@pytest.fixture(scope="module", params=["smtp", "lmtp"])
def door(request: pytest.FixtureRequest, start_door: DoorStarter) -> Door:
    return start_door(request.param, limits="max_recipients = 1000\nmax_errors = 20")


def message(tag: str, extra_header: str = "") -> bytes:
    return (
        f"From: alice@example.com\r\nSubject: hostile {tag}\r\n{extra_header}\r\nbody\r\n.\r\n"
    ).encode()


def transaction(client: Wire, tag: str, extra_header: str = "") -> list[int]:
    """MAIL, RCPT, DATA (pipelined: PIPELINING is offered), the content: the reply codes."""
    client.send_line(MAIL)
    client.send_line(RCPT)
    client.send_line("DATA")
    codes = [r.code for r in client.replies(3)]
    if codes[-1] == 354:
        client.send(message(tag, extra_header))
        codes.append(client.reply().code)
    return codes


def served_alongside(door: Door) -> None:
    """A well-behaved client on a connection of its own is accepted and delivered."""
    tag = marker()
    good_mail(door.port, tag, lmtp=door.lmtp)
    assert len(door.delivered_with(f"good {tag}")) == 1
    door.assert_running()


# ------------------------------------------------------------------------- long lines
@pytest.mark.parametrize(
    "line",
    [
        "NOOP " + "x" * 10_240,
        "MAIL FROM:<" + "a" * 10_240 + "@example.com>",
        "EHLO " + "h" * 10_240,
    ],
    ids=["noop", "mail", "ehlo"],
)
def test_a_10kb_command_line_is_refused_and_the_session_goes_on(door: Door, line: str) -> None:
    tag = marker()
    with wire(door.port) as client:
        client.hello(lmtp=door.lmtp)
        client.send_line(line)
        assert client.reply().means(replies.LINE_TOO_LONG)
        served_alongside(door)
        assert transaction(client, tag) == [250, 250, 354, 250]
    assert len(door.delivered_with(f"hostile {tag}")) == 1


def test_a_100kb_header_line_refuses_the_message_not_the_session(door: Door) -> None:
    tag, later = marker(), marker()
    with wire(door.port) as client:
        client.hello(lmtp=door.lmtp)
        codes = transaction(client, tag, extra_header="X-Long: " + "y" * 102_400 + "\r\n")
        assert codes[:3] == [250, 250, 354]
        assert codes[3] == replies.TEXT_LINE_TOO_LONG.code
        served_alongside(door)
        assert transaction(client, later) == [250, 250, 354, 250]
    assert door.delivered_with(tag) == []
    assert len(door.delivered_with(f"hostile {later}")) == 1


# ---------------------------------------------------------------------------- NUL bytes
@pytest.mark.parametrize(
    "line",
    [b"NOOP\x00", b"\x00EHLO x", b"MAIL FROM:<al\x00ice@example.com>", b"RSET \x00"],
    ids=["after-verb", "before-verb", "in-address", "argument"],
)
def test_a_nul_in_a_command_is_a_syntax_error(door: Door, line: bytes) -> None:
    with wire(door.port) as client:
        client.hello(lmtp=door.lmtp)
        client.send(line + b"\r\n")
        assert client.reply().means(replies.SYNTAX)
        served_alongside(door)
        client.send_line("NOOP")
        assert client.reply().code == 250


def test_a_nul_in_the_content_is_passed_on_unchanged(door: Door) -> None:
    tag = marker()
    with wire(door.port) as client:
        client.hello(lmtp=door.lmtp)
        assert transaction(client, tag, extra_header="X-Nul: a\x00b\r\n") == [250, 250, 354, 250]
        served_alongside(door)
    [delivered] = door.delivered_with(f"hostile {tag}")
    assert b"X-Nul: a\x00b\n" in delivered.raw  # smtp-sink dumps lines with LF


# ---------------------------------------------------------------------- 10,000 recipients
def test_10000_recipients_get_452_beyond_the_limit(door: Door) -> None:
    tag = marker()
    count, limit = 10_000, 1000
    lines = b"".join(f"RCPT TO:<r{i}@example.org>\r\n".encode() for i in range(count))
    with wire(door.port) as client:
        client.hello(lmtp=door.lmtp)
        client.send_line(MAIL)
        assert client.reply().code == 250
        # Written from a thread while the replies are read, as a pipelining client does.
        writer = threading.Thread(target=client.send, args=(lines,))
        writer.start()
        try:
            answers = client.replies(count)
        finally:
            writer.join(timeout=60)
        assert [a.code for a in answers[:limit]] == [250] * limit
        assert all(a.means(replies.TOO_MANY_RECIPIENTS) for a in answers[limit:]), {
            str(a) for a in answers[limit:]
        }
        served_alongside(door)
        client.send_line("DATA")
        assert client.reply().code == 354
        client.send(message(tag))
        finals = client.replies(limit if door.lmtp else 1)
        assert {a.code for a in finals} == {250}
    [delivered] = door.delivered_with(f"hostile {tag}")
    assert len(delivered.recipients) == limit


# ----------------------------------------------------------------------- pipelining abuse
def test_an_early_talker_is_disconnected(door: Door) -> None:
    """Commands before the greeting, more than one of them: a synchronization error."""
    hello = "LHLO" if door.lmtp else "EHLO"
    with wire(door.port) as client:
        client.send(f"{hello} early.example\r\n{MAIL}\r\n".encode())
        answers = client.rest()
    assert [a.code for a in answers[:1]] == [220]
    assert len(answers) == 2, answers
    assert answers[1].means(replies.PIPELINING_VIOLATION), answers
    served_alongside(door)


@pytest.mark.parametrize("extended", [True, False], ids=["ehlo", "helo"])
def test_content_sent_before_the_354_is_never_taken_as_a_message(
    door: Door, extended: bool
) -> None:
    if door.lmtp and not extended:
        pytest.skip("LMTP has no HELO")
    tag = marker()
    with wire(door.port) as client:
        assert client.reply().code == 220
        client.send_line(("LHLO" if door.lmtp else "EHLO" if extended else "HELO") + " x.example")
        assert client.reply().code == 250
        client.send(f"{MAIL}\r\n{RCPT}\r\nDATA\r\n".encode() + message(tag))
        answers = client.rest()
    assert [a.code for a in answers[:2]] == [250, 250], answers
    assert len(answers) == 3, answers
    assert answers[2].means(replies.PIPELINING_VIOLATION), answers
    served_alongside(door)
    assert door.delivered_with(tag) == []


def test_commands_pipelined_after_quit_are_not_run(door: Door) -> None:
    tag = marker()
    with wire(door.port) as client:
        client.hello(lmtp=door.lmtp)
        client.send(f"QUIT\r\n{MAIL}\r\n{RCPT}\r\nDATA\r\n".encode() + message(tag))
        answers = client.rest()
    assert len(answers) == 1, answers
    assert answers[0].means(replies.PIPELINING_VIOLATION), answers
    served_alongside(door)
    assert door.delivered_with(tag) == []


def test_commands_after_the_221_get_nothing(door: Door) -> None:
    with wire(door.port) as client:
        client.hello(lmtp=door.lmtp)
        client.send_line("QUIT")
        assert client.reply().means(replies.BYE)
        assert client.closed()
        try:
            client.send_line(MAIL)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert client.closed()
    served_alongside(door)


# ------------------------------------------------------------ malformed addresses, parameters
MALFORMED_MAIL = {
    "no-brackets": ("MAIL FROM:alice@example.com", replies.BAD_SENDER_SYNTAX),
    "no-domain": ("MAIL FROM:<alice@>", replies.BAD_SENDER_SYNTAX),
    "no-at": ("MAIL FROM:<alice>", replies.BAD_SENDER_SYNTAX),
    "space-in-domain": ("MAIL FROM:<alice@exa mple.com>", replies.BAD_SENDER_SYNTAX),
    "double-dot": ("MAIL FROM:<alice@example..com>", replies.BAD_SENDER_SYNTAX),
    "unclosed": ("MAIL FROM:<alice@example.com", replies.BAD_SENDER_SYNTAX),
    "path-over-256": (
        "MAIL FROM:<" + "a" * 60 + "@" + "d" * 250 + ".com>",
        replies.BAD_SENDER_SYNTAX,
    ),
    "control-char": ("MAIL FROM:<ali\x01ce@example.com>", replies.BAD_SENDER_SYNTAX),
    "unknown-param": ("MAIL FROM:<alice@example.com> FOO=BAR", replies.BAD_PARAMETER),
    "bad-body": ("MAIL FROM:<alice@example.com> BODY=9BIT", replies.BAD_PARAMETER),
    "bad-size": ("MAIL FROM:<alice@example.com> SIZE=lots", replies.SYNTAX),
    "utf8-without-smtputf8": ("MAIL FROM:<ålice@example.com>", replies.SMTPUTF8_REQUIRED),
}
MALFORMED_RCPT = {
    "no-brackets": ("RCPT TO:bob@example.org", replies.BAD_RCPT_SYNTAX),
    "no-at": ("RCPT TO:<bob>", replies.BAD_RCPT_SYNTAX),
    "empty": ("RCPT TO:<>", replies.BAD_RCPT_SYNTAX),
    "local-part-over-64": ("RCPT TO:<" + "b" * 65 + "@example.org>", replies.BAD_RCPT_SYNTAX),
    "unknown-param": ("RCPT TO:<bob@example.org> XYZ=1", replies.BAD_PARAMETER),
    "bad-notify": ("RCPT TO:<bob@example.org> NOTIFY=SOMETIMES", replies.SYNTAX),
    "bad-orcpt": ("RCPT TO:<bob@example.org> ORCPT=rfc822", replies.SYNTAX),
}


@pytest.mark.parametrize(
    ("command", "expected"), list(MALFORMED_MAIL.values()), ids=list(MALFORMED_MAIL)
)
def test_a_malformed_sender_is_refused(door: Door, command: str, expected: Reply) -> None:
    with wire(door.port) as client:
        client.hello(lmtp=door.lmtp)
        client.send(command.encode() + b"\r\n")
        reply = client.reply()
        assert reply.means(expected), reply
        served_alongside(door)
        client.send_line(MAIL)  # the session is still usable
        assert client.reply().code == 250


@pytest.mark.parametrize(
    ("command", "expected"), list(MALFORMED_RCPT.values()), ids=list(MALFORMED_RCPT)
)
def test_a_malformed_recipient_is_refused(door: Door, command: str, expected: Reply) -> None:
    with wire(door.port) as client:
        client.hello(lmtp=door.lmtp)
        client.send_line(MAIL)
        assert client.reply().code == 250
        client.send(command.encode() + b"\r\n")
        reply = client.reply()
        assert reply.means(expected), reply
        served_alongside(door)
        client.send_line(RCPT)
        assert client.reply().code == 250


def test_the_error_budget_ends_a_session_with_421(door: Door) -> None:
    with wire(door.port) as client:
        client.hello(lmtp=door.lmtp)
        client.send(b"BOGUS\r\n" * 20)  # no more: unread input would reset the close
        answers = client.rest()
    assert [a.code for a in answers[:19]] == [replies.UNRECOGNIZED.code] * 19
    assert len(answers) == 20, answers
    assert answers[19].means(replies.TOO_MANY_ERRORS), answers
    served_alongside(door)
