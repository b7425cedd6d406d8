"""The SMTP/LMTP server codec, fed whole, byte by byte and with trailing bytes."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from filterd.model import replies
from filterd.model.reply import Reply
from filterd.protocols.smtp import events as ev
from filterd.protocols.smtp.common import NEED_DATA
from filterd.protocols.smtp.server import Capabilities, ServerLimits, SmtpServer, State

OK = replies.OK
START = replies.START_DATA


def make(lmtp: bool = False, **limits: object) -> SmtpServer:
    return SmtpServer(
        ServerLimits(**limits),  # type: ignore[arg-type]
        Capabilities("mx.test", starttls=True, xforward=True),
        lmtp=lmtp,
    )


def answer(event: ev.ServerEvent) -> Reply | None:
    """A simple accept-everything policy, as the session would answer."""
    match event:
        case ev.BodyChunk() | ev.ConnectionClosed():
            return None
        case ev.Data():
            return START
        case ev.BadCommand(reply=reply):
            return reply
        case ev.EndOfData(rejection=Reply() as rejection):
            return rejection
        case ev.Quit():
            return replies.BYE
        case ev.StartTls():
            return replies.READY_TLS
        case _:
            return OK


def run(
    server: SmtpServer,
    chunks: list[bytes],
    respond: Callable[[ev.ServerEvent], Reply | None] = answer,
) -> tuple[list[ev.ServerEvent], bytes]:
    """Feed chunks, drain events after each; returns events (BodyChunks merged) and output."""
    out = b""
    events: list[ev.ServerEvent] = []
    for chunk in [*chunks, b""]:
        server.receive_data(chunk)
        while True:
            event = server.next_event()
            if event is NEED_DATA:
                break
            assert not isinstance(event, type(NEED_DATA))
            if isinstance(event, ev.BodyChunk) and events and isinstance(events[-1], ev.BodyChunk):
                events[-1] = ev.BodyChunk(events[-1].data + event.data)
            else:
                events.append(event)
            if isinstance(event, ev.ConnectionClosed):
                return events, out
            reply = respond(event)
            if reply is not None:
                for _ in range(max(1, server.replies_owed)):
                    out += server.send(reply)
            if server.state is State.TLS_PENDING:
                server.start_tls()
    return events, out


def splits(data: bytes) -> Iterator[list[bytes]]:
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]
    yield [data[: len(data) // 2], data[len(data) // 2 :]]


def data_of(events: list[ev.ServerEvent]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, ev.BodyChunk))


HEAD = [b"EHLO a\r\n", b"MAIL FROM:<>\r\nRCPT TO:<a@b.c>\r\nDATA\r\n"]

# What a pipelining client sends before each wait for a reply (RFC 2920 groups).
GROUPS = [
    b"EHLO client.test\r\n",
    b"MAIL FROM:<alice@example.com> SIZE=100 BODY=8BITMIME\r\n"
    b"RCPT TO:<bob@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.org\r\n"
    b"DATA\r\n",
    b"Subject: hi\r\n\r\n..leading dot\r\nbody\r\n.\r\nQUIT\r\n",
]
TRANSCRIPT = b"".join(GROUPS)


def grouped(split: Callable[[bytes], Iterator[list[bytes]]], n: int) -> list[bytes]:
    return [c for g in GROUPS for c in list(split(g))[n]]


@pytest.mark.parametrize("n", [0, 1, 2])
def test_full_transaction_any_split(n: int) -> None:
    events, out = run(make(), grouped(splits, n))
    kinds = [type(e) for e in events]
    assert kinds == [
        ev.Hello, ev.MailFrom, ev.RcptTo, ev.Data, ev.BodyChunk, ev.EndOfData, ev.Quit,
        ev.ConnectionClosed,
    ]  # fmt: skip
    assert data_of(events) == b"Subject: hi\r\n\r\n.leading dot\r\nbody\r\n"
    mail = events[1]
    assert isinstance(mail, ev.MailFrom)
    assert mail.address == "alice@example.com"
    assert mail.params == ("SIZE=100", "BODY=8BITMIME")
    rcpt = events[2]
    assert isinstance(rcpt, ev.RcptTo)
    assert rcpt.params == ("NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;bob@example.org")
    assert out.startswith(b"250 2.0.0 Ok\r\n")


def test_trailing_bytes_after_end_of_data_stay_for_the_next_command() -> None:
    server = make()
    chunks = [*GROUPS[:2], GROUPS[2].replace(b"QUIT\r\n", b"RSET\r\nQUIT\r\n")]
    events, _ = run(server, chunks)
    assert [type(e) for e in events][-3:] == [ev.Reset, ev.Quit, ev.ConnectionClosed]


def test_empty_message() -> None:
    events, _ = run(
        make(), [b"HELO x\r\n", b"MAIL FROM:<>\r\nRCPT TO:<a@b.c>\r\nDATA\r\n", b".\r\n"]
    )
    end = [e for e in events if isinstance(e, ev.EndOfData)]
    assert end == [ev.EndOfData(0, None)]
    assert data_of(events) == b""


@pytest.mark.parametrize(
    "terminator",
    [b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r", b"\n.\r"],
)
def test_smuggling_variants_do_not_end_data(terminator: bytes) -> None:
    """SMTP smuggling: only CRLF.CRLF ends DATA; the smuggled MAIL stays content."""
    attack = [
        b"EHLO a\r\n",
        b"MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n",
        b"first"
        + terminator
        + b"MAIL FROM:<forged@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\nsecond\r\n.\r\nQUIT\r\n",
    ]
    for mode in ("reject", "normalize"):
        events, _ = run(make(bare_newline=mode), attack)
        assert sum(isinstance(e, ev.MailFrom) for e in events) == 1
        assert sum(isinstance(e, ev.EndOfData) for e in events) == 1
        end = next(e for e in events if isinstance(e, ev.EndOfData))
        if mode == "reject":
            assert end.rejection == replies.BARE_LF
            assert data_of(events) == b""
        else:
            assert end.rejection is None
            body = data_of(events)
            assert b"MAIL FROM:<forged@b.c>" in body
            # No bare CR or LF survives normalisation.
            assert body.count(b"\n") == body.count(b"\r\n") == body.count(b"\r")


def test_bare_lf_in_command_is_refused_and_closes() -> None:
    events, out = run(make(), [b"EHLO a\nMAIL FROM:<a@b.c>\r\n"])
    assert events[0] == ev.BadCommand(replies.BARE_LF, fatal=True)
    assert out.startswith(b"550 5.5.2")
    assert isinstance(events[-1], ev.ConnectionClosed)


def test_bare_lf_in_command_is_accepted_when_normalizing() -> None:
    events, _ = run(make(bare_newline="normalize"), [b"EHLO a\n", b"QUIT\n"])
    assert [type(e) for e in events] == [ev.Hello, ev.Quit, ev.ConnectionClosed]


def test_command_order_is_enforced() -> None:
    events, _ = run(make(), [b"MAIL FROM:<a@b.c>\r\n", b"EHLO a\r\n", b"RCPT TO:<a@b.c>\r\n",
                               b"DATA\r\n", b"MAIL FROM:<a@b.c>\r\n", b"DATA\r\n",
                               b"MAIL FROM:<a@b.c>\r\n"])  # fmt: skip
    bad = [e.reply for e in events if isinstance(e, ev.BadCommand)]
    assert bad == [
        replies.NEED_HELO, replies.NEED_MAIL, replies.NEED_MAIL, replies.NEED_RCPT,
        replies.NESTED_MAIL,
    ]  # fmt: skip


def test_pipelining_after_data_is_a_synchronisation_error() -> None:
    events, out = run(make(), [b"EHLO a\r\n", b"MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\n"
                               b"DATA\r\nbody before 354\r\n.\r\n"])  # fmt: skip
    assert events[-2] == ev.BadCommand(replies.PIPELINING_VIOLATION, fatal=True)
    assert out.endswith(b"554 5.5.0 Error: SMTP protocol synchronization\r\n")


def test_plaintext_pipelined_behind_starttls_is_discarded_and_refused() -> None:
    """CVE-2011-0411."""
    events, _ = run(make(), [b"EHLO a\r\n", b"STARTTLS\r\nMAIL FROM:<evil@x.y>\r\n"])
    assert events[-2] == ev.BadCommand(replies.STARTTLS_INJECTION, fatal=True)
    assert not any(isinstance(e, ev.MailFrom) for e in events)


def test_starttls_resets_the_session() -> None:
    server = make()
    events, _ = run(server, [b"EHLO a\r\n", b"STARTTLS\r\n", b"MAIL FROM:<a@b.c>\r\n"])
    assert server.tls_active
    assert events[-2] == ev.BadCommand(replies.NEED_HELO)
    assert b"STARTTLS" not in server.ehlo_reply().to_bytes()


def test_command_line_too_long_keeps_session_in_sync() -> None:
    events, _ = run(make(), [b"EHLO a\r\n", b"NOOP " + b"x" * 5000 + b"\r\n", b"QUIT\r\n"])
    assert events[1] == ev.BadCommand(replies.LINE_TOO_LONG)
    assert isinstance(events[2], ev.Quit)


def test_error_budget_ends_session() -> None:
    events, out = run(make(max_errors=3), [b"FOO\r\n"] * 5)
    assert events[:3] == [
        ev.BadCommand(replies.UNRECOGNIZED),
        ev.BadCommand(replies.UNRECOGNIZED),
        ev.BadCommand(replies.TOO_MANY_ERRORS, fatal=True),
    ]
    assert out.endswith(b"421 4.7.0 Error: too many errors\r\n")


def test_too_many_recipients() -> None:
    rcpts = b"".join(b"RCPT TO:<r%d@x.y>\r\n" % i for i in range(101))
    events, _ = run(make(max_recipients=100), [b"EHLO a\r\n", b"MAIL FROM:<>\r\n" + rcpts])
    assert events[-2] == ev.BadCommand(replies.TOO_MANY_RECIPIENTS)


def test_declared_size_over_limit() -> None:
    events, _ = run(
        make(max_message_size=1000), [b"EHLO a\r\n", b"MAIL FROM:<a@b.c> SIZE=1001\r\n"]
    )
    assert events[1] == ev.BadCommand(replies.TOO_BIG_DECLARED)


def test_message_over_size_is_read_to_the_end_then_refused() -> None:
    body = b"x" * 80 + b"\r\n"
    head = [b"EHLO a\r\n", b"MAIL FROM:<>\r\nRCPT TO:<a@b.c>\r\nDATA\r\n"]
    for chunks in splits(body * 50 + b".\r\nQUIT\r\n"):
        events, out = run(make(max_message_size=1000), head + chunks)
        end = next(e for e in events if isinstance(e, ev.EndOfData))
        assert end.rejection == replies.TOO_BIG
        assert isinstance(events[-2], ev.Quit)
        assert b"552 5.3.4" in out


def test_text_line_too_long() -> None:
    head = [b"EHLO a\r\n", b"MAIL FROM:<>\r\nRCPT TO:<a@b.c>\r\nDATA\r\n"]
    for chunks in splits(b"y" * 1200 + b"\r\n.\r\n"):
        events, _ = run(make(), head + chunks)
        end = next(e for e in events if isinstance(e, ev.EndOfData))
        assert end.rejection == replies.TEXT_LINE_TOO_LONG


def test_line_of_exactly_1000_octets_is_fine() -> None:
    line = b"z" * 998 + b"\r\n"
    events, _ = run(make(), [*HEAD, line + b".\r\n"])
    end = next(e for e in events if isinstance(e, ev.EndOfData))
    assert end.rejection is None
    assert data_of(events) == line


def test_lmtp_owes_one_reply_per_recipient() -> None:
    server = make(lmtp=True)
    seen = []
    for group in (b"LHLO a\r\n", b"MAIL FROM:<>\r\nRCPT TO:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n",
                  b"x\r\n.\r\n"):  # fmt: skip
        server.receive_data(group)
        while (event := server.next_event()) is not NEED_DATA:
            seen.append(event)
            if isinstance(event, ev.EndOfData):
                assert server.replies_owed == 2
                server.send(OK)
                assert server.replies_owed == 1
                server.send(OK)
                assert server.state is State.GREETED
            elif isinstance(event, ev.Data):
                server.send(START)
            elif not isinstance(event, ev.BodyChunk):
                server.send(OK)
    assert sum(isinstance(e, ev.EndOfData) for e in seen) == 1


def test_lmtp_refuses_ehlo() -> None:
    events, _ = run(make(lmtp=True), [b"EHLO a\r\n"])
    assert events[0] == ev.BadCommand(replies.UNRECOGNIZED)


def test_xforward_only_when_authorised_and_outside_transactions() -> None:
    server = SmtpServer(ServerLimits(), Capabilities("mx", xforward=False))
    events, _ = run(server, [b"EHLO a\r\n", b"XFORWARD ADDR=1.2.3.4\r\n"])
    assert events[1] == ev.BadCommand(replies.XFORWARD_DENIED)
    events, _ = run(make(), [b"EHLO a\r\n", b"XFORWARD NAME=x ADDR=1.2.3.4 HELO=a+2Bb\r\n",
                             b"MAIL FROM:<>\r\nXFORWARD ADDR=1.2.3.4\r\n"])  # fmt: skip
    assert events[1] == ev.Xforward((("NAME", "x"), ("ADDR", "1.2.3.4"), ("HELO", "a+2Bb")))
    assert events[3] == ev.BadCommand(replies.XFORWARD_IN_TRANSACTION)


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"MAIL FROM:alice@example.com", replies.BAD_SENDER_SYNTAX),
        (b"MAIL FROM:<alice>", replies.BAD_SENDER_SYNTAX),
        (b"MAIL FROM:<a@b.c> FOO=1", replies.BAD_PARAMETER),
        (b"MAIL FROM:<a@b.c> SIZE=abc", replies.SYNTAX),
        (b"MAIL FROM:<a@b.c> BODY=BINARYMIME", replies.BAD_PARAMETER),
        ("MAIL FROM:<jörg@b.c>".encode(), replies.SMTPUTF8_REQUIRED),
        (b"MAIL TO:<a@b.c>", replies.SYNTAX),
    ],
)
def test_bad_mail_from(line: bytes, reply: Reply) -> None:
    events, _ = run(make(), [b"EHLO a\r\n", line + b"\r\n"])
    assert events[1] == ev.BadCommand(reply)


def test_utf8_sender_with_smtputf8() -> None:
    events, _ = run(make(), [b"EHLO a\r\n", "MAIL FROM:<jörg@b.c> SMTPUTF8\r\n".encode()])
    assert events[1] == ev.MailFrom("jörg@b.c", ("SMTPUTF8",), None, True)


def test_source_route_is_stripped_and_null_sender_allowed() -> None:
    events, _ = run(make(), [b"EHLO a\r\n", b"MAIL FROM: <>\r\nRCPT TO:<@hop1,@hop2:u@d.e>\r\n"])
    assert events[1] == ev.MailFrom("", (), None, False)
    assert events[2] == ev.RcptTo("u@d.e", ())


def test_vrfy_help_noop_rset() -> None:
    events, _ = run(make(), [b"VRFY bob\r\n", b"HELP\r\n", b"NOOP\r\n", b"RSET\r\n"])
    assert [type(e) for e in events][:4] == [ev.Vrfy, ev.Help, ev.Noop, ev.Reset]


def test_send_without_pending_is_a_local_error() -> None:
    from filterd.protocols.smtp.common import LocalProtocolError

    server = make()
    with pytest.raises(LocalProtocolError):
        server.send(OK)
    assert server.send(replies.SHUTTING_DOWN).startswith(b"421")
    assert server.state is State.CLOSED


def test_next_event_while_reply_owed_is_a_local_error() -> None:
    from filterd.protocols.smtp.common import LocalProtocolError

    server = make()
    server.receive_data(b"RSET\r\nQUIT\r\n")
    assert isinstance(server.next_event(), ev.Reset)
    with pytest.raises(LocalProtocolError):
        server.next_event()


# ---------------------------------------------------------------- properties
@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=200), max_size=12))
def test_any_split_yields_the_same_events(cuts: list[int]) -> None:
    chunks = []
    for group in GROUPS:
        points = sorted({c for c in cuts if c < len(group)})
        chunks += [group[a:b] for a, b in zip([0, *points], [*points, len(group)], strict=True)]
    expected, expected_out = run(make(), GROUPS)
    events, out = run(make(), chunks)
    assert events == expected
    assert out == expected_out


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2000), st.sampled_from(["reject", "normalize"]))
def test_random_bytes_never_crash(data: bytes, mode: str) -> None:
    run(make(bare_newline=mode), [data])


_PIECES = [b"\r", b"\n", b".", b"x", b"\r\n", b"..", b"\r\n.", b".\r\n"]


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=30), st.sampled_from(["reject", "normalize"]))
def test_only_crlf_dot_crlf_ends_data(pieces: list[bytes], mode: str) -> None:
    content = b"".join(pieces)
    events, _ = run(make(bare_newline=mode), [*HEAD, content])
    ended = any(isinstance(e, ev.EndOfData) for e in events)
    # Where a real terminator is: data starts at a line start, so "\r\n" + content.
    expect_end = (b"\r\n" + content).find(b"\r\n.\r\n") >= 0
    assert ended == expect_end
    body = data_of(events)
    assert body.count(b"\n") == body.count(b"\r\n") == body.count(b"\r")


_LINES = st.lists(
    st.tuples(st.booleans(), st.integers(min_value=0, max_value=30)), min_size=1, max_size=12
)


@settings(max_examples=500, deadline=None)
@given(_LINES, st.lists(st.integers(min_value=1, max_value=400), max_size=6))
def test_dot_lines_and_line_lengths_however_the_data_arrives(
    lines: list[tuple[bool, int]], cuts: list[int]
) -> None:
    """Lines with and without a leading dot, some over the line limit (20 octets here, as
    sent: the stuffed dot and CRLF count), split anywhere: the content is the lines
    unstuffed; too long exactly when a line is."""
    texts = [(b"." if dotted else b"") + b"x" * length for dotted, length in lines]
    sent = [(b"." + t if t.startswith(b".") else t) + b"\r\n" for t in texts]
    wire = b"".join(sent) + b".\r\n"
    points = sorted({c for c in cuts if c < len(wire)})
    chunks = [wire[a:b] for a, b in zip([0, *points], [*points, len(wire)], strict=True)]
    events, _ = run(make(max_text_line=20), [*HEAD, *chunks])
    end = next(e for e in events if isinstance(e, ev.EndOfData))
    too_long = any(len(line) > 20 for line in sent)
    assert end.rejection == (replies.TEXT_LINE_TOO_LONG if too_long else None)
    if not too_long:
        assert data_of(events) == b"".join(t + b"\r\n" for t in texts)
