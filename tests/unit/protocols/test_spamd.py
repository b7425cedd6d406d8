"""The spamd codec: request heads byte for byte (as spamc 4.0.1 sends them); responses fed whole,
byte by byte and with trailing bytes (h11's ``tr``); limits; and the fuzz properties: random
bytes give events or ``RemoteProtocolError`` only, and any split of a valid response parses the
same. The wire samples are spamd 4.0.1's own output, captured live."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from filterd.protocols.smtp.common import LocalProtocolError, RemoteProtocolError
from filterd.protocols.spamd import (
    NEED_DATA,
    Command,
    ConnectionClosed,
    ExitCode,
    MessageClass,
    NeedData,
    ResponseParser,
    SpamdLimits,
    SpamdResponse,
    SpamStatus,
    Tell,
    TellTarget,
    request_head,
)

Event = SpamdResponse | ConnectionClosed

# --- live captures (spamd 4.0.1) -----------------------------------------------------------------

CHECK_SPAM = b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1002.7 / 5.0\r\n\r\n"
CHECK_HAM = b"SPAMD/1.1 0 EX_OK\r\nSpam: False ; -0.0 / 5.0\r\n\r\n"
SYMBOLS_SPAM = (
    b"SPAMD/1.1 0 EX_OK\r\nContent-length: 68\r\nSpam: True ; 1002.7 / 5.0\r\n\r\n"
    b"GTUBE,MISSING_DATE,MSGID_SHORT,NO_RECEIVED,NO_RELAYS,TVD_SPACE_RATIO"
)
SYMBOLS_HAM = (
    b"SPAMD/1.1 0 EX_OK\r\nContent-length: 70\r\nSpam: False ; 0.6 / 5.0\r\n\r\n"
    b"MISSING_MID,NO_RECEIVED,NO_RELAYS,T_TVD_MIME_EPI,T_TVD_MIME_NO_HEADERS"
)
REPORT_IFSPAM_HAM = b"SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\nSpam: No ; 0.6 / 5.0\r\n\r\n"
PROCESSED = b"Received: from localhost by vm\r\nX-Spam-Flag: YES\r\n\r\nbody\r\n"
PROCESS_SPAM = b"SPAMD/1.1 0 EX_OK\r\nContent-length: %d\r\nSpam: True ; 1002.7 / 5.0\r\n\r\n%s" % (
    len(PROCESSED),
    PROCESSED,
)
TELL_SET = b"SPAMD/1.1 0 EX_OK\r\nDidSet: local\r\n\r\n\r\n"
TELL_REMOVE = b"SPAMD/1.1 0 EX_OK\r\nDidRemove: local\r\n\r\n\r\n"
TELL_NOTHING = b"SPAMD/1.1 0 EX_OK\r\n\r\n\r\n"
PONG = b"SPAMD/1.5 0 PONG\r\n"
MISMATCH = (
    b"SPAMD/1.0 76 Bad header line: (Content-Length mismatch: Expected 173 bytes, got 163 bytes)"
    b"\r\n"
)
UNAVAILABLE = (
    b"SPAMD/1.0 69 Service Unavailable: TELL commands are not enabled, set the --allow-tell"
    b" switch.\r\n"
)
TIMEOUT = b"SPAMD/1.0 79 Timeout: (30 second socket timeout reading input from client)\r\n"


# --- helpers -------------------------------------------------------------------------------------


def events_of(parser: ResponseParser, chunks: Sequence[bytes], eof: bool = True) -> list[Event]:
    """Feed ``chunks`` (then EOF); collect events, checking that NEED_DATA is the only other."""
    out: list[Event] = []
    for chunk in [*chunks, *([b""] if eof else [])]:
        parser.receive_data(chunk)
        while not isinstance(event := parser.next_event(), NeedData):
            out.append(event)
            if isinstance(event, ConnectionClosed):
                break
    return out


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def tr(command: Command, data: bytes, expected: SpamdResponse) -> None:
    """h11's ``tr``: the same response whole, byte by byte, and with trailing bytes after it."""
    assert events_of(ResponseParser(command), [data]) == [expected, ConnectionClosed()]
    assert events_of(ResponseParser(command), bytewise(data)) == [expected, ConnectionClosed()]
    # Trailing CR/LF is tolerated; any other trailing data still leaves the response intact,
    # and is reported by the next call.
    padded = events_of(ResponseParser(command), [data + b"\r\n\r\n"])
    assert padded == [expected, ConnectionClosed()]
    parser = ResponseParser(command)
    parser.receive_data(data + b"SPAMD/1.1 0 EX_OK\r\n")
    assert parser.next_event() == expected
    with pytest.raises(RemoteProtocolError, match="after the spamd response"):
        parser.next_event()


def tr_error(
    command: Command, data: bytes, match: str, *, limits: SpamdLimits | None = None
) -> None:
    """``data`` + EOF raises RemoteProtocolError, whole or byte by byte; the parser stays broken."""
    for chunks in ([data], bytewise(data)):
        parser = ResponseParser(command, limits)
        with pytest.raises(RemoteProtocolError, match=match):
            events_of(parser, chunks)
        with pytest.raises(RemoteProtocolError, match="already failed"):
            parser.next_event()


def ok(
    headers: tuple[tuple[str, str], ...],
    body: bytes = b"",
    spam: SpamStatus | None = None,
    **fields: object,
) -> SpamdResponse:
    return SpamdResponse("1.1", 0, "EX_OK", headers, body, spam, **fields)  # type: ignore[arg-type]


# --- request heads -------------------------------------------------------------------------------


def test_check_head_matches_spamc() -> None:
    # spamc 4.0.1 sends User before Content-length.
    assert request_head(Command.CHECK, 215, user="root") == (
        b"CHECK SPAMC/1.5\r\nUser: root\r\nContent-length: 215\r\n\r\n"
    )


@pytest.mark.parametrize(
    "command",
    [Command.CHECK, Command.SYMBOLS, Command.REPORT, Command.REPORT_IFSPAM, Command.PROCESS,
     Command.HEADERS],
)  # fmt: skip
def test_scan_heads_carry_the_exact_length(command: Command) -> None:
    message = b"Subject: x\r\n\r\nbody\r\n"  # CRLF counts as two bytes, as spamd counts them
    head = request_head(command, len(message))
    assert head == f"{command.value} SPAMC/1.5\r\nContent-length: 20\r\n\r\n".encode()


def test_zero_length_is_a_length() -> None:
    assert request_head(Command.CHECK, 0) == b"CHECK SPAMC/1.5\r\nContent-length: 0\r\n\r\n"


def test_ping_head_has_the_empty_header_block_protocol_1_5_needs() -> None:
    assert request_head(Command.PING) == b"PING SPAMC/1.5\r\n\r\n"


@pytest.mark.parametrize(
    ("tell", "lines"),
    [
        (Tell.learn(MessageClass.SPAM), b"Message-class: spam\r\nSet: local\r\n"),
        (Tell.learn(MessageClass.HAM), b"Message-class: ham\r\nSet: local\r\n"),
        (Tell.forget(), b"Remove: local\r\n"),
        (Tell.report(), b"Message-class: spam\r\nSet: local, remote\r\n"),
        (Tell.revoke(), b"Message-class: ham\r\nSet: local\r\nRemove: remote\r\n"),
    ],
)
def test_tell_heads(tell: Tell, lines: bytes) -> None:
    head = request_head(Command.TELL, 163, user="filterd", tell=tell)
    assert head == b"TELL SPAMC/1.5\r\n" + lines + b"User: filterd\r\nContent-length: 163\r\n\r\n"


@pytest.mark.parametrize(
    ("command", "kwargs"),
    [
        (Command.PING, {"content_length": 5}),
        (Command.PING, {"user": "joe"}),
        (Command.PING, {"tell": Tell.forget()}),
        (Command.CHECK, {}),
        (Command.CHECK, {"content_length": -1}),
        (Command.CHECK, {"content_length": 1, "tell": Tell.forget()}),
        (Command.TELL, {"content_length": 1}),
        (Command.CHECK, {"content_length": 1, "user": ""}),
        (Command.CHECK, {"content_length": 1, "user": "joe smith"}),
        (Command.CHECK, {"content_length": 1, "user": "joe\r\nContent-length: 0"}),
        (Command.CHECK, {"content_length": 1, "user": "jöe"}),
        (Command.CHECK, {"content_length": 1, "user": "x" * 256}),
    ],
)
def test_requests_we_must_not_send(command: Command, kwargs: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError):
        request_head(command, **kwargs)  # type: ignore[arg-type]


def test_user_may_be_an_address() -> None:
    head = request_head(Command.CHECK, 1, user="joe@example.com")
    assert b"\r\nUser: joe@example.com\r\n" in head


@pytest.mark.parametrize(
    "make",
    [
        lambda: Tell(MessageClass.SPAM),  # nothing to do
        lambda: Tell(None, frozenset({TellTarget.LOCAL})),  # Set without a class
        lambda: Tell(  # spamd: "Unable to set local and remove local in the same operation."
            MessageClass.SPAM, frozenset({TellTarget.LOCAL}), frozenset({TellTarget.LOCAL})
        ),
    ],
)
def test_invalid_tell(make: object) -> None:
    with pytest.raises(LocalProtocolError):
        make()  # type: ignore[operator]


# --- responses -----------------------------------------------------------------------------------


def test_check_spam() -> None:
    tr(
        Command.CHECK,
        CHECK_SPAM,
        ok((("Spam", "True ; 1002.7 / 5.0"),), spam=SpamStatus(True, 1002.7, 5.0)),
    )


def test_check_ham_with_negative_zero() -> None:
    response = events_of(ResponseParser(Command.CHECK), [CHECK_HAM])[0]
    assert isinstance(response, SpamdResponse)
    assert response.spam == SpamStatus(False, -0.0, 5.0)
    assert response.ok
    assert response.body == b""


def test_symbols() -> None:
    body = b"GTUBE,MISSING_DATE,MSGID_SHORT,NO_RECEIVED,NO_RELAYS,TVD_SPACE_RATIO"
    expected = ok(
        (("Content-length", "68"), ("Spam", "True ; 1002.7 / 5.0")),
        body,
        SpamStatus(True, 1002.7, 5.0),
        symbols=tuple(body.decode().split(",")),
    )
    tr(Command.SYMBOLS, SYMBOLS_SPAM, expected)
    assert "GTUBE" in expected.symbols


def test_symbols_ham() -> None:
    response = events_of(ResponseParser(Command.SYMBOLS), [SYMBOLS_HAM])[0]
    assert isinstance(response, SpamdResponse)
    assert response.spam == SpamStatus(False, 0.6, 5.0)
    assert response.symbols[0] == "MISSING_MID"
    assert len(response.symbols) == 5


@pytest.mark.parametrize(
    ("body", "symbols"),
    [
        (b"", ()),  # no rule hit
        (b"GTUBE,NO_RELAYS\r\n", ("GTUBE", "NO_RELAYS")),  # protocol < 1.3 ends it with CRLF
        (b"GTUBE, NO_RELAYS", ("GTUBE", "NO_RELAYS")),
        (b"__LOCAL_RULE.x-1", ("__LOCAL_RULE.x-1",)),
    ],
)
def test_symbols_list_forms(body: bytes, symbols: tuple[str, ...]) -> None:
    wire = b"SPAMD/1.1 0 EX_OK\r\nContent-length: %d\r\nSpam: False ; 0.0 / 5.0\r\n\r\n%s" % (
        len(body),
        body,
    )
    response = events_of(ResponseParser(Command.SYMBOLS), [wire])[0]
    assert isinstance(response, SpamdResponse)
    assert response.symbols == symbols


def test_report_ifspam_says_yes_and_no() -> None:
    tr(
        Command.REPORT_IFSPAM,
        REPORT_IFSPAM_HAM,
        ok((("Content-length", "0"), ("Spam", "No ; 0.6 / 5.0")), spam=SpamStatus(False, 0.6, 5.0)),
    )
    wire = b"SPAMD/1.1 0 EX_OK\r\nContent-length: 4\r\nSpam: Yes ; 1000.0 / 5.0\r\n\r\ntext"
    response = events_of(ResponseParser(Command.REPORT_IFSPAM), [wire])[0]
    assert isinstance(response, SpamdResponse)
    assert response.spam == SpamStatus(True, 1000.0, 5.0)
    assert response.body == b"text"


def test_process_returns_the_message_byte_for_byte() -> None:
    expected = ok(
        (("Content-length", str(len(PROCESSED))), ("Spam", "True ; 1002.7 / 5.0")),
        PROCESSED,
        SpamStatus(True, 1002.7, 5.0),
    )
    tr(Command.PROCESS, PROCESS_SPAM, expected)
    tr(Command.HEADERS, PROCESS_SPAM, expected)


def test_body_may_contain_anything() -> None:
    body = bytes(range(256)) + b"\r\n\r\nSPAMD/1.1 0 EX_OK\r\n"
    wire = b"SPAMD/1.1 0 EX_OK\r\nContent-length: %d\r\nSpam: True ; 9.0 / 5.0\r\n\r\n%s" % (
        len(body),
        body,
    )
    response = events_of(ResponseParser(Command.PROCESS), bytewise(wire))[0]
    assert isinstance(response, SpamdResponse)
    assert response.body == body


@pytest.mark.parametrize(
    ("wire", "did_set", "did_remove"),
    [
        (TELL_SET, {"local"}, set()),
        (TELL_REMOVE, set(), {"local"}),
        (TELL_NOTHING, set(), set()),
        (b"SPAMD/1.1 0 EX_OK\r\nDidSet: local,remote\r\n\r\n\r\n", {"local", "remote"}, set()),
    ],
)
def test_tell(wire: bytes, did_set: set[str], did_remove: set[str]) -> None:
    response = events_of(ResponseParser(Command.TELL), [wire])[0]
    assert isinstance(response, SpamdResponse)
    assert (set(response.did_set), set(response.did_remove)) == (did_set, did_remove)
    assert response.spam is None
    tr(Command.TELL, wire, response)


def test_ping() -> None:
    tr(Command.PING, PONG, SpamdResponse("1.5", 0, "PONG"))


@pytest.mark.parametrize(
    ("wire", "code", "name", "message"),
    [
        (
            MISMATCH,
            76,
            "EX_PROTOCOL",
            "Bad header line: (Content-Length mismatch: Expected 173 bytes, got 163 bytes)",
        ),
        (
            UNAVAILABLE,
            69,
            "EX_UNAVAILABLE",
            "Service Unavailable: TELL commands are not enabled, set the --allow-tell switch.",
        ),
        (
            TIMEOUT,
            79,
            "EX_TIMEOUT",
            "Timeout: (30 second socket timeout reading input from client)",
        ),
        (b"SPAMD/1.0 76 Bad header line: FOO SPAMC/1.5\r\n", 76, "EX_PROTOCOL", None),
        (b"SPAMD/1.0 99 Odd\r\n", 99, "EX_99", "Odd"),
        (b"SPAMD/1.5 74\r\n", 74, "EX_IOERR", ""),
    ],
)
def test_error_status_lines(wire: bytes, code: int, name: str, message: str | None) -> None:
    for command in (Command.CHECK, Command.SYMBOLS, Command.TELL, Command.PING):
        response = events_of(ResponseParser(command), [wire])[0]
        assert isinstance(response, SpamdResponse)
        assert (response.code, response.code_name, response.ok) == (code, name, False)
        if message is not None:
            assert response.message == message
        assert response.spam is None
        tr(command, wire, response)
    assert int(ExitCode.EX_PROTOCOL) == 76


def test_error_is_complete_without_eof() -> None:
    """spamd closes after an error line; the response does not wait for that."""
    parser = ResponseParser(Command.SYMBOLS)
    parser.receive_data(MISMATCH)
    response = parser.next_event()
    assert isinstance(response, SpamdResponse)
    assert response.code == 76
    assert parser.next_event() is NEED_DATA


def test_unknown_headers_are_kept_and_names_are_case_insensitive() -> None:
    wire = (
        b"SPAMD/1.1 0 EX_OK\r\nX-Future: one two\r\ncontent-LENGTH: 3\r\n"
        b"spam:true;1.5/5.0\r\n\r\nA,B"
    )
    response = events_of(ResponseParser(Command.SYMBOLS), [wire])[0]
    assert isinstance(response, SpamdResponse)
    assert response.header("x-future") == "one two"
    assert response.header("Content-Length") == "3"
    assert response.header("Missing") is None
    assert response.spam == SpamStatus(True, 1.5, 5.0)
    assert response.symbols == ("A", "B")


def test_bare_lf_line_ends_are_accepted_as_libspamc_does() -> None:
    wire = b"SPAMD/1.1 0 EX_OK\nContent-length: 5\nSpam: True ; 6.0 / 5.0\n\nGTUBE"
    response = events_of(ResponseParser(Command.SYMBOLS), [wire])[0]
    assert isinstance(response, SpamdResponse)
    assert response.symbols == ("GTUBE",)


def test_response_is_complete_without_eof() -> None:
    for command, wire in [(Command.CHECK, CHECK_SPAM), (Command.SYMBOLS, SYMBOLS_SPAM)]:
        parser = ResponseParser(command)
        parser.receive_data(wire)
        assert isinstance(parser.next_event(), SpamdResponse)
        assert parser.next_event() is NEED_DATA
        parser.receive_data(b"")
        assert parser.next_event() == ConnectionClosed()
        assert parser.next_event() == ConnectionClosed()


# --- malformed responses -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "wire", "match"),
    [
        (Command.CHECK, b"", "without a response"),
        (Command.CHECK, b"SPAMD/1.1 0 EX_OK", "in the status line"),
        (Command.CHECK, b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1.0 / 5.0\r\n", "in the headers"),
        (Command.SYMBOLS, SYMBOLS_SPAM[:-3], "after 65 of 68 body bytes"),
        (Command.CHECK, b"HTTP/1.1 200 OK\r\n", "malformed spamd status line"),
        (Command.CHECK, b"SPAMD/x 0 EX_OK\r\n", "malformed spamd status line"),
        (Command.CHECK, b"SPAMD/1.1 zero EX_OK\r\n", "malformed spamd status line"),
        (Command.CHECK, b"SPAMD/1.1 1000 EX_OK\r\n", "malformed spamd status line"),
        (Command.CHECK, b"SPAMD/1.1 0 EX\rOK\r\n", "bare CR or NUL"),
        (Command.CHECK, b"SPAMD/1.1 0 EX_OK\r\nSpam\x00: x\r\n\r\n", "bare CR or NUL"),
        (Command.CHECK, b"SPAMD/1.1 0 EX_OK\r\n\r\n", "no Spam header"),
        (Command.PROCESS, b"SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\n\r\n", "no Spam header"),
        (Command.CHECK, b"SPAMD/1.1 0 EX_OK\r\nSpam: Maybe ; 1.0 / 5.0\r\n\r\n", "malformed Spam"),
        (Command.CHECK, b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1,0 / 5,0\r\n\r\n", "malformed Spam"),
        (Command.CHECK, b"SPAMD/1.1 0 EX_OK\r\nSpam: True\r\n\r\n", "malformed Spam"),
        (
            Command.CHECK,
            b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1 / 5\r\nSpam: False ; 1 / 5\r\n\r\n",
            "more than one Spam",
        ),
        (
            Command.CHECK,
            b"SPAMD/1.1 0 EX_OK\r\nno colon here\r\n\r\n",
            "malformed spamd response h",
        ),
        (Command.CHECK, b"SPAMD/1.1 0 EX_OK\r\n: empty name\r\n\r\n", "malformed spamd response h"),
        (
            Command.SYMBOLS,
            b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1 / 5\r\n\r\nGTUBE",
            "has no Content-length",
        ),
        (
            Command.SYMBOLS,
            b"SPAMD/1.1 0 EX_OK\r\nContent-length: -1\r\nSpam: True ; 1 / 5\r\n\r\n",
            "bad Content-length",
        ),
        (
            Command.SYMBOLS,
            b"SPAMD/1.1 0 EX_OK\r\nContent-length: 1\r\nContent-length: 1\r\n\r\nA",
            "more than one Content-length",
        ),
        (
            Command.SYMBOLS,
            b"SPAMD/1.1 0 EX_OK\r\nContent-length: 3\r\nSpam: True ; 1 / 5\r\n\r\nA B",
            "malformed SYMBOLS",
        ),
        (
            Command.SYMBOLS,
            b"SPAMD/1.1 0 EX_OK\r\nContent-length: 4\r\nSpam: True ; 1 / 5\r\n\r\nA,,B",
            "malformed SYMBOLS",
        ),
        (
            Command.SYMBOLS,
            b"SPAMD/1.1 0 EX_OK\r\nContent-length: 2\r\nSpam: True ; 1 / 5\r\n\r\n\xc3\xa9",
            "non-ASCII",
        ),
    ],
)
def test_malformed_responses(command: Command, wire: bytes, match: str) -> None:
    tr_error(command, wire, match)


def test_header_size_limit() -> None:
    limits = SpamdLimits(max_header_size=100)
    filler = b"X-Filler: " + b"a" * 60 + b"\r\n"
    tr_error(
        Command.CHECK, b"SPAMD/1.1 0 EX_OK\r\n" + filler + filler, "longer than 100", limits=limits
    )
    tr_error(Command.CHECK, b"SPAMD/1.1 0 EX_OK" + b"x" * 200, "longer than 100", limits=limits)
    # Exactly at the limit is fine.
    head = b"SPAMD/1.1 0 EX_OK\r\nX-Pad: 0123456789012345\r\nSpam: True ; 1.0 / 5.0\r\n\r\n"
    exact = SpamdLimits(max_header_size=len(head))
    tr_error(Command.CHECK, head, "longer than", limits=SpamdLimits(max_header_size=len(head) - 1))
    assert isinstance(events_of(ResponseParser(Command.CHECK, exact), [head])[0], SpamdResponse)


def test_a_line_without_lf_is_refused_as_soon_as_it_passes_the_limit() -> None:
    parser = ResponseParser(Command.CHECK, SpamdLimits(max_header_size=64))
    parser.receive_data(b"S" * 63)
    assert parser.next_event() is NEED_DATA
    parser.receive_data(b"S")
    with pytest.raises(RemoteProtocolError, match="longer than 64"):
        parser.next_event()


def test_body_size_limit_is_checked_before_reading_the_body() -> None:
    limits = SpamdLimits(max_body_size=10)
    parser = ResponseParser(Command.PROCESS, limits)
    parser.receive_data(b"SPAMD/1.1 0 EX_OK\r\nContent-length: 11\r\nSpam: True ; 1 / 5\r\n\r\n")
    with pytest.raises(RemoteProtocolError, match="exceeds 10"):
        parser.next_event()
    ten = b"SPAMD/1.1 0 EX_OK\r\nContent-length: 10\r\nSpam: True ; 1 / 5\r\n\r\n0123456789"
    response = events_of(ResponseParser(Command.PROCESS, limits), [ten])[0]
    assert isinstance(response, SpamdResponse)
    assert response.body == b"0123456789"


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_header_size"):
        SpamdLimits(max_header_size=10)
    with pytest.raises(ValueError, match="max_body_size"):
        SpamdLimits(max_body_size=-1)


def test_data_after_eof_is_a_local_error() -> None:
    parser = ResponseParser(Command.CHECK)
    parser.receive_data(b"")
    parser.receive_data(b"")  # a second EOF is harmless
    with pytest.raises(LocalProtocolError):
        parser.receive_data(b"x")


# --- properties ----------------------------------------------------------------------------------


@st.composite
def valid_response(draw: st.DrawFn) -> tuple[Command, bytes, SpamdResponse]:
    """A response as spamd could write it, and what it must parse to."""
    command = draw(st.sampled_from(list(Command)))
    eol = draw(st.sampled_from([b"\r\n", b"\n"]))
    padding = draw(st.sampled_from([b"", b"\r\n", b"\r\n\r\n"]))
    code = draw(st.sampled_from([0, 0, 0, 64, 69, 76, 79]))
    if code:
        message = draw(st.text("abc :()-", max_size=30)).strip()
        wire = b"SPAMD/1.0 %d %s" % (code, message.encode()) + eol
        return command, wire + padding, SpamdResponse("1.0", code, message)
    if command is Command.PING:
        return command, b"SPAMD/1.5 0 PONG" + eol + padding, SpamdResponse("1.5", 0, "PONG")
    headers: list[tuple[str, str]] = []
    spam = None
    if command is not Command.TELL:
        is_spam = draw(st.booleans())
        score = draw(st.integers(-1000, 20000)) / 10
        word = ("Yes" if is_spam else "No") if command is Command.REPORT_IFSPAM else str(is_spam)
        headers.append(("Spam", f"{word} ; {score:.1f} / 5.0"))
        spam = SpamStatus(is_spam, score, 5.0)
    symbols: tuple[str, ...] = ()
    body = b""
    if command is Command.SYMBOLS:
        symbols = tuple(draw(st.lists(st.from_regex(r"[A-Z_][A-Z0-9_]{0,20}", fullmatch=True))))
        body = ",".join(symbols).encode()
    elif command not in (Command.CHECK, Command.TELL):
        body = draw(st.binary(max_size=200))
    if command not in (Command.CHECK, Command.TELL):
        headers.insert(0, ("Content-length", str(len(body))))
    extra = draw(st.lists(st.sampled_from([("X-Extra", "1"), ("DidSet", "local")]), max_size=2))
    headers += extra
    did_set = frozenset({"local"}) if ("DidSet", "local") in extra else frozenset()
    head = b"SPAMD/1.1 0 EX_OK" + eol
    head += b"".join(f"{name}: {value}".encode() + eol for name, value in headers) + eol
    response = SpamdResponse("1.1", 0, "EX_OK", tuple(headers), body, spam, symbols, did_set)
    return command, head + body + padding, response


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(min(cut, len(data)) for cut in cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if a < b]  # b"" would be EOF


@settings(max_examples=300, deadline=None)
@given(valid_response(), st.lists(st.integers(0, 400), max_size=8))
def test_any_split_of_a_valid_response_parses_the_same(
    case: tuple[Command, bytes, SpamdResponse], cuts: list[int]
) -> None:
    command, wire, expected = case
    whole = events_of(ResponseParser(command), [wire])
    assert whole == [expected, ConnectionClosed()]
    assert events_of(ResponseParser(command), split(wire, cuts)) == whole


FUZZ = st.one_of(
    st.binary(max_size=300),
    st.lists(
        st.sampled_from(
            [b"SPAMD/1.1 ", b"SPAMD/1.5 0 PONG", b"0 EX_OK", b"76 Bad", b"\r\n", b"\n", b"\r",
             b"Content-length: ", b"3", b"99999999999999", b"Spam: ", b"True ; 1.0 / 5.0",
             b"No ; -0.0 / 5.0", b"DidSet: local", b":", b" ", b",", b"GTUBE", b"\x00", b"\xff"]
        ),
        max_size=40,
    ).map(b"".join),
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(list(Command)),
    FUZZ,
    st.lists(st.integers(0, 300), max_size=6),
    st.booleans(),
    st.integers(64, 200),
)
def test_random_bytes_give_events_or_remote_protocol_error_only(
    command: Command, data: bytes, cuts: list[int], eof: bool, max_header: int
) -> None:
    parser = ResponseParser(command, SpamdLimits(max_header_size=max_header, max_body_size=50))
    responses = 0
    try:
        for chunk in [*split(data, cuts), *([b""] if eof else [])]:
            parser.receive_data(chunk)
            while not isinstance(event := parser.next_event(), NeedData | ConnectionClosed):
                assert isinstance(event, SpamdResponse)
                responses += 1
            if isinstance(event, ConnectionClosed):
                assert responses == 1
                break
    except RemoteProtocolError:
        pass
    assert responses <= 1
