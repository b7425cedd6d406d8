"""The spamd client codec under generated input (hypothesis).

tests/unit/protocols/test_spamd.py cuts valid responses anywhere and feeds random bytes.
Here: any bytes, cut anywhere, give the same response and fail (or not) as when fed whole;
and every request head the encoder agrees to build reads back, as spamd reads it, to exactly
the command, user, TELL headers and length it was given (no header can be smuggled in).
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from filterd.protocols.smtp.common import LocalProtocolError, RemoteProtocolError
from filterd.protocols.spamd import (
    NEED_DATA,
    Command,
    ConnectionClosed,
    MessageClass,
    ResponseParser,
    SpamdLimits,
    Tell,
    request_head,
)
from tests.fuzz.chunks import CUTS, cut

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PIECES = [b"SPAMD/1.1 ", b"SPAMD/1.5 ", b"0 EX_OK", b"0 PONG", b"76 EX_PROTOCOL", b"\r\n", b"\n",
          b"\r", b"Content-length: ", b"Content-Length:", b"5", b"12", b"99999999999999999999",
          b"Spam: ", b"True ; 1.0 / 5.0", b"False ; -0.5 / 5.0", b"DidSet: local",
          b"DidRemove: remote", b":", b" ", b",", b"BAYES_00,GTUBE", b"\x00", b"\xff",
          b"x"]  # fmt: skip
BYTES = st.one_of(
    st.binary(max_size=300), st.lists(st.sampled_from(PIECES), max_size=40).map(b"".join)
)


def events(command: Command, chunks: list[bytes], eof: bool) -> list[object]:
    parser = ResponseParser(command, SpamdLimits(max_header_size=120, max_body_size=60))
    out: list[object] = []
    try:
        for chunk in [*chunks, *([b""] if eof else [])]:
            parser.receive_data(chunk)
            while (event := parser.next_event()) is not NEED_DATA:
                out.append(event)
                if isinstance(event, ConnectionClosed):
                    return out
    except RemoteProtocolError:
        out.append("error")
    return out


@FUZZ
@given(st.sampled_from(list(Command)), BYTES, CUTS, st.booleans())
def test_any_bytes_cut_anywhere_give_the_same_response_and_error(
    command: Command, data: bytes, cuts: list[int], eof: bool
) -> None:
    whole = events(command, [data] if data else [], eof)
    assert events(command, cut(data, cuts), eof) == whole
    assert sum(1 for e in whole if e not in ("error",) and not isinstance(e, ConnectionClosed)) <= 1


TELLS = st.sampled_from(
    [None, Tell.learn(MessageClass.SPAM), Tell.learn(MessageClass.HAM), Tell.forget(),
     Tell.report(), Tell.revoke()]
)  # fmt: skip
USERS = st.one_of(
    st.none(), st.text(max_size=30), st.sampled_from(["filterd", "a\r\nUser: root", "x" * 256])
)


def read_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    """The request line and headers as spamd reads them (CRLF lines up to an empty one)."""
    assert head.endswith(b"\r\n\r\n")
    assert head.count(b"\r\n\r\n") == 1
    text = head.decode("ascii")
    lines = text[:-4].split("\r\n")
    assert not any("\r" in line or "\n" in line for line in lines)
    headers = [tuple(line.split(": ", 1)) for line in lines[1:]]
    assert all(len(h) == 2 for h in headers)
    return lines[0], headers  # type: ignore[return-value]


@FUZZ
@given(st.sampled_from(list(Command)), st.one_of(st.none(), st.integers(-5, 10**12)), USERS, TELLS)
def test_a_request_head_reads_back_as_it_was_built(
    command: Command, length: int | None, user: str | None, tell: Tell | None
) -> None:
    try:
        head = request_head(command, length, user=user, tell=tell)
    except LocalProtocolError:
        return
    line, headers = read_head(head)
    assert line == f"{command.value} SPAMC/1.5"
    names = [name for name, _ in headers]
    assert len(names) == len(set(names))
    values = dict(headers)
    if command is Command.PING:
        assert headers == []
        return
    assert values.pop("Content-length") == str(length)
    assert values.pop("User", None) == user
    expected = dict(line.split(": ", 1) for line in tell.header_lines()) if tell else {}
    assert values == expected
