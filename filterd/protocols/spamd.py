"""Sans-I/O spamd (SpamAssassin) client codec: SPAMC/1.5 requests out, SPAMD responses in.

One request per connection, as spamd requires. The shell sends ``request_head(...)``, then the
message itself (streamed, exactly ``content_length`` bytes), then half-closes; it feeds what it
reads to a ``ResponseParser`` until ``next_event()`` gives the ``SpamdResponse``::

    head = request_head(Command.SYMBOLS, content_length=size, user="filterd")
    parser = ResponseParser(Command.SYMBOLS)
    await stream.send_all(head); for chunk in message: await stream.send_all(chunk)
    await stream.send_eof()
    while isinstance(event := parser.next_event(), NeedData):
        parser.receive_data(await stream.receive_some(65536))      # b"" = spamd closed

Wire facts (spamd 4.0.1: ``/usr/sbin/spamd`` ``parse_headers``/``parse_body``/``check``,
``Mail::SpamAssassin::Message::new``, libspamc ``message_filter``; all checked live):

- Request header lines must end in CRLF: spamd strips only ``\\r\\n`` from them, so a bare-LF
  empty line is "not in 'Name: value' format" (76). Header names are matched case-sensitively:
  ``Content-length`` (lower-case ``l``); ``content-length`` is silently ignored.
- ``Content-length`` is the number of bytes sent, CRs included. spamd reads the body with
  ``getline`` until it has at least that many bytes, then compares: any difference is
  ``SPAMD/1.0 76 Bad header line: (Content-Length mismatch: Expected N bytes, got M bytes)``.
- Because the body is read by lines, a message that does not end in LF (or is empty) is only
  complete when the client half-closes; until then spamd waits (``--timeout-child``, 300 s).
  spamc does ``shutdown(SHUT_WR)``; so must we (a TLS stream cannot, see the client).
- CRLF messages are fine as they are (SMTP content is CRLF): SpamAssassin looks at the first and
  last line, and when they end in CRLF it parses the message with CRLF squashed to LF (bug
  4363), so CRLF and LF copies of a message score the same. PROCESS/HEADERS write the rewritten
  message back with the input's line ending (CRLF in, CRLF out); REPORT text is always LF.
- Responses: ``SPAMD/1.1 0 EX_OK`` + header block for scans and TELL; CHECK and TELL carry no
  ``Content-length`` and no body, TELL ends with an extra CRLF; SYMBOLS/REPORT/REPORT_IFSPAM/
  PROCESS/HEADERS carry ``Content-length`` and a body (the SYMBOLS list has no line end).
  ``PING`` gets only ``SPAMD/1.5 0 PONG``. Errors are one status line with a sysexits code
  (``SPAMD/1.0 76 Bad header line: ...``, ``69 Service Unavailable: ...``, ``79 Timeout: ...``),
  then spamd closes. ``Spam: True ; 1000.0 / 5.0`` (``Yes``/``No`` for REPORT_IFSPAM).

The parser accepts LF or CRLF line ends in the response head (as libspamc does), tolerates
unknown headers and extra CR/LF after the response, and raises ``RemoteProtocolError`` for
anything else it cannot frame; ``LocalProtocolError`` is for requests we must not send.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from filterd.protocols.smtp.common import (
    NEED_DATA,
    ConnectionClosed,
    LocalProtocolError,
    NeedData,
    RemoteProtocolError,
)

__all__ = [
    "NEED_DATA",
    "PROTOCOL_VERSION",
    "SCAN_COMMANDS",
    "Command",
    "ConnectionClosed",
    "ExitCode",
    "MessageClass",
    "NeedData",
    "ResponseParser",
    "SpamStatus",
    "SpamdLimits",
    "SpamdResponse",
    "Tell",
    "TellTarget",
    "request_head",
]

PROTOCOL_VERSION: Final = "1.5"


class Command(enum.Enum):
    """Request methods spamd 4.0 accepts (SKIP is left out: spamd answers it with nothing)."""

    CHECK = "CHECK"
    SYMBOLS = "SYMBOLS"
    REPORT = "REPORT"
    REPORT_IFSPAM = "REPORT_IFSPAM"
    PROCESS = "PROCESS"
    HEADERS = "HEADERS"
    PING = "PING"
    TELL = "TELL"


# Commands that scan: a successful response carries a "Spam:" header (and, but for CHECK, a
# Content-length body).
SCAN_COMMANDS: Final = frozenset(
    {
        Command.CHECK,
        Command.SYMBOLS,
        Command.REPORT,
        Command.REPORT_IFSPAM,
        Command.PROCESS,
        Command.HEADERS,
    }
)
_WITHOUT_BODY: Final = frozenset({Command.CHECK, Command.TELL, Command.PING})


class ExitCode(enum.IntEnum):
    """Status codes in spamd's status line: ``<sysexits.h>`` plus spamd's EX_TIMEOUT."""

    EX_OK = 0
    EX_USAGE = 64
    EX_DATAERR = 65
    EX_NOINPUT = 66
    EX_NOUSER = 67
    EX_NOHOST = 68
    EX_UNAVAILABLE = 69
    EX_SOFTWARE = 70
    EX_OSERR = 71
    EX_OSFILE = 72
    EX_CANTCREAT = 73
    EX_IOERR = 74
    EX_TEMPFAIL = 75
    EX_PROTOCOL = 76
    EX_NOPERM = 77
    EX_CONFIG = 78
    EX_TIMEOUT = 79


class MessageClass(enum.Enum):
    SPAM = "spam"
    HAM = "ham"


class TellTarget(enum.Enum):
    """Where TELL learns: the local Bayes database, or remote reporting (Razor, Pyzor...)."""

    LOCAL = "local"
    REMOTE = "remote"


@dataclass(frozen=True, slots=True)
class Tell:
    """The TELL headers (spamd ``dotell``): ``Message-class``, ``Set`` and ``Remove``.

    spamc's ``-L spam|ham`` is ``Tell.learn(...)``, ``-L forget`` is ``Tell.forget()``,
    ``-C report`` is ``Tell.report()`` and ``-C revoke`` is ``Tell.revoke()``.
    """

    message_class: MessageClass | None = None
    set_targets: frozenset[TellTarget] = frozenset()
    remove_targets: frozenset[TellTarget] = frozenset()

    def __post_init__(self) -> None:
        if not self.set_targets and not self.remove_targets:
            raise LocalProtocolError("TELL needs something to set or remove")
        if self.set_targets & self.remove_targets:
            raise LocalProtocolError("TELL cannot set and remove the same target")
        if self.set_targets and self.message_class is None:
            raise LocalProtocolError("TELL Set needs a Message-class")

    @classmethod
    def learn(cls, message_class: MessageClass) -> Tell:
        return cls(message_class, frozenset({TellTarget.LOCAL}))

    @classmethod
    def forget(cls) -> Tell:
        return cls(None, remove_targets=frozenset({TellTarget.LOCAL}))

    @classmethod
    def report(cls) -> Tell:
        return cls(MessageClass.SPAM, frozenset({TellTarget.LOCAL, TellTarget.REMOTE}))

    @classmethod
    def revoke(cls) -> Tell:
        return cls(MessageClass.HAM, frozenset({TellTarget.LOCAL}), frozenset({TellTarget.REMOTE}))

    def header_lines(self) -> list[str]:
        lines = []
        if self.message_class is not None:
            lines.append(f"Message-class: {self.message_class.value}")
        if self.set_targets:
            lines.append(f"Set: {_targets(self.set_targets)}")
        if self.remove_targets:
            lines.append(f"Remove: {_targets(self.remove_targets)}")
        return lines


def _targets(targets: Iterable[TellTarget]) -> str:
    return ", ".join(sorted(target.value for target in targets))  # "local, remote"


# --- requests ------------------------------------------------------------------------------------

# spamd refuses control characters in User (got_user_header); we also refuse spaces and
# non-ASCII so the name means the same to every spamd user-config backend.
_USER_RE: Final = re.compile(r"[!-~]{1,255}")


def request_head(
    command: Command,
    content_length: int | None = None,
    *,
    user: str | None = None,
    tell: Tell | None = None,
) -> bytes:
    """The request line and header block; the caller sends exactly ``content_length`` bytes next.

    ``PING`` takes no length, user or body (``PING SPAMC/1.5\\r\\n\\r\\n``); every other command
    needs ``content_length`` (the message's size in bytes as sent, CRLFs counted). ``TELL``
    needs ``tell``; no other command takes it. Headers come in spamc's order.
    """
    if command is Command.PING:
        if content_length is not None or user is not None or tell is not None:
            raise LocalProtocolError("PING takes no content length, user or TELL headers")
        return f"PING SPAMC/{PROTOCOL_VERSION}\r\n\r\n".encode("ascii")
    if content_length is None or content_length < 0:
        raise LocalProtocolError(f"{command.value} needs a content length >= 0")
    if command is Command.TELL and tell is None:
        raise LocalProtocolError("TELL needs its Message-class/Set/Remove headers")
    if command is not Command.TELL and tell is not None:
        raise LocalProtocolError(f"{command.value} takes no TELL headers")
    lines = [f"{command.value} SPAMC/{PROTOCOL_VERSION}"]
    if tell is not None:
        lines += tell.header_lines()
    if user is not None:
        if not _USER_RE.fullmatch(user):
            raise LocalProtocolError(f"spamd user must be 1-255 printable ASCII: {user[:40]!r}")
        lines.append(f"User: {user}")
    lines.append(f"Content-length: {content_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


# --- responses -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpamStatus:
    """``Spam: True ; 1000.0 / 5.0``. The score is what spamd prints (one decimal; a ham
    scoring at or over the threshold is shown as threshold - 0.1, see Util.pm
    ``get_tag_value_for_score``)."""

    is_spam: bool
    score: float
    threshold: float


@dataclass(frozen=True, slots=True)
class SpamdResponse:
    """One spamd response. ``code`` 0 is EX_OK; any other code is an error status line whose
    ``message`` says why (no headers follow it). ``headers`` keeps every header in order,
    names as sent; ``symbols`` is the parsed SYMBOLS body, ``did_set``/``did_remove`` come from
    TELL's ``DidSet``/``DidRemove`` (e.g. ``{"local"}``)."""

    version: str
    code: int
    message: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    spam: SpamStatus | None = None
    symbols: tuple[str, ...] = ()
    did_set: frozenset[str] = field(default_factory=frozenset)
    did_remove: frozenset[str] = field(default_factory=frozenset)

    @property
    def ok(self) -> bool:
        return self.code == ExitCode.EX_OK

    @property
    def code_name(self) -> str:
        """``EX_PROTOCOL`` for 76 and so on; ``EX_<n>`` for a code sysexits does not name."""
        try:
            return ExitCode(self.code).name
        except ValueError:
            return f"EX_{self.code}"

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (any case), or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)


@dataclass(frozen=True, slots=True)
class SpamdLimits:
    """``max_header_size``: status line plus header block, in bytes; ``max_body_size``: the
    largest response body accepted (PROCESS returns the whole rewritten message)."""

    max_header_size: int = 16 * 1024
    max_body_size: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_header_size < 64 or self.max_body_size < 0:
            raise ValueError("max_header_size must be >= 64 and max_body_size >= 0")


class _Phase(enum.Enum):
    STATUS = "status line"
    HEADERS = "headers"
    BODY = "body"
    COMPLETE = "complete"  # the response is in; next_event() returns it
    DELIVERED = "delivered"  # returned; only CR/LF and EOF may follow
    CLOSED = "closed"  # EOF seen after the response
    BROKEN = "broken"


_STATUS_RE: Final = re.compile(rb"SPAMD/([0-9]{1,3}\.[0-9]{1,3}) +([0-9]{1,3})(?: +(.*))?")
_HEADER_RE: Final = re.compile(rb"([!-9;-~]+):[ \t]*(.*?)[ \t]*")
_NUMBER: Final = r"[-+]?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?"
_SPAM_RE: Final = re.compile(rf"(True|False|Yes|No) *; *({_NUMBER}) */ *({_NUMBER})", re.IGNORECASE)
_SYMBOL_RE: Final = re.compile(r"[!-+\--~]+")  # printable ASCII except the comma separator
_DIGITS_RE: Final = re.compile(r"[0-9]{1,12}")


class ResponseParser:
    """Parses the one response to a request for ``command`` (see the module doc).

    ``receive_data(b"")`` means spamd closed the connection. ``next_event()`` returns
    ``NEED_DATA`` until the response is complete, then the ``SpamdResponse`` once, then
    ``NEED_DATA`` until EOF and ``ConnectionClosed``. It raises ``RemoteProtocolError`` on a
    malformed or over-limit response, on EOF before the response is complete, or on bytes
    other than CR/LF after it; after that the parser stays broken.
    """

    def __init__(self, command: Command, limits: SpamdLimits | None = None) -> None:
        self._command = command
        self._limits = limits or SpamdLimits()
        self._buffer = bytearray()
        self._scanned = 0  # leading bytes of _buffer known to hold no LF
        self._head_used = 0  # bytes of status line + headers consumed so far
        self._eof = False
        self._phase = _Phase.STATUS
        self._status: tuple[str, int, str] = ("", 0, "")
        self._headers: list[tuple[str, str]] = []
        self._body_length = 0
        self._body = b""

    @property
    def command(self) -> Command:
        return self._command

    def receive_data(self, data: bytes) -> None:
        """Bytes from spamd; ``b""`` means it closed the connection."""
        if self._eof:
            if data:
                raise LocalProtocolError("data received after EOF")
            return
        if data:
            self._buffer += data
        else:
            self._eof = True

    def next_event(self) -> SpamdResponse | NeedData | ConnectionClosed:
        if self._phase is _Phase.BROKEN:
            raise RemoteProtocolError("the spamd response already failed to parse")
        try:
            return self._next_event()
        except RemoteProtocolError:
            self._phase = _Phase.BROKEN
            raise

    # --- the state machine ---

    def _next_event(self) -> SpamdResponse | NeedData | ConnectionClosed:
        while self._phase in (_Phase.STATUS, _Phase.HEADERS):
            line = self._take_line()
            if line is None:
                return self._need_more()
            if self._phase is _Phase.STATUS:
                self._status = _parse_status(line)
                self._phase = self._after_status()
            elif line:
                self._headers.append(_parse_header(line))
            else:
                self._phase = self._after_headers()
        if self._phase is _Phase.BODY:
            if len(self._buffer) < self._body_length:
                return self._need_more()
            self._body = self._take_body()
            self._phase = _Phase.COMPLETE
        if self._phase is _Phase.COMPLETE:
            response = self._build(self._body)
            self._body = b""
            self._phase = _Phase.DELIVERED
            return response
        return self._tail()

    def _need_more(self) -> NeedData:
        if not self._eof:
            return NEED_DATA
        if self._phase is _Phase.STATUS and not self._buffer:
            raise RemoteProtocolError("spamd closed the connection without a response")
        if self._phase is _Phase.BODY:
            raise RemoteProtocolError(
                f"spamd closed the connection after {len(self._buffer)} of "
                f"{self._body_length} body bytes"
            )
        raise RemoteProtocolError(f"spamd closed the connection in the {self._phase.value}")

    def _take_line(self) -> bytes | None:
        """The next line without its LF or CRLF, or None if incomplete; counts the head limit."""
        budget = self._limits.max_header_size - self._head_used
        lf = self._buffer.find(b"\n", self._scanned)
        if lf < 0:
            self._scanned = len(self._buffer)
            if len(self._buffer) >= budget:
                raise RemoteProtocolError(
                    f"spamd response head longer than {self._limits.max_header_size} bytes"
                )
            return None
        if lf + 1 > budget:
            raise RemoteProtocolError(
                f"spamd response head longer than {self._limits.max_header_size} bytes"
            )
        end = lf - 1 if lf and self._buffer[lf - 1] == 0x0D else lf
        line = bytes(self._buffer[:end])
        del self._buffer[: lf + 1]
        self._scanned = 0
        self._head_used += lf + 1
        if b"\r" in line or b"\x00" in line:
            raise RemoteProtocolError(f"bare CR or NUL in spamd response line: {line[:80]!r}")
        return line

    def _after_status(self) -> _Phase:
        """Error statuses and PONG are one line; everything else has a header block."""
        code = self._status[1]
        if code != ExitCode.EX_OK or self._command is Command.PING:
            return _Phase.COMPLETE
        return _Phase.HEADERS

    def _after_headers(self) -> _Phase:
        lengths = [value for name, value in self._headers if name.lower() == "content-length"]
        if len(lengths) > 1:
            raise RemoteProtocolError("spamd response has more than one Content-length")
        if not lengths:
            if self._command not in _WITHOUT_BODY:
                raise RemoteProtocolError(
                    f"spamd response to {self._command.value} has no Content-length"
                )
            return _Phase.COMPLETE
        if not _DIGITS_RE.fullmatch(lengths[0]):
            raise RemoteProtocolError(f"bad Content-length in spamd response: {lengths[0]!r}")
        length = int(lengths[0])
        if length > self._limits.max_body_size:
            raise RemoteProtocolError(
                f"spamd response body of {length} bytes exceeds {self._limits.max_body_size}"
            )
        self._body_length = length
        return _Phase.BODY

    def _take_body(self) -> bytes:
        if len(self._buffer) == self._body_length:
            body = bytes(self._buffer)
            self._buffer.clear()
        else:
            body = bytes(self._buffer[: self._body_length])
            del self._buffer[: self._body_length]
        return body

    def _tail(self) -> NeedData | ConnectionClosed:
        """After the response: tolerate CR/LF padding, wait for EOF."""
        if self._buffer.strip(b"\r\n"):
            raise RemoteProtocolError(
                f"unexpected data after the spamd response: {bytes(self._buffer[:80])!r}"
            )
        self._buffer.clear()
        if not self._eof:
            return NEED_DATA
        self._phase = _Phase.CLOSED
        return ConnectionClosed()

    # --- building the response ---

    def _build(self, body: bytes) -> SpamdResponse:
        version, code, message = self._status
        headers = tuple(self._headers)
        if code != ExitCode.EX_OK or self._command is Command.PING:
            return SpamdResponse(version, code, message, headers)
        spam = _spam_status(headers)
        if spam is None and self._command in SCAN_COMMANDS:
            raise RemoteProtocolError(f"spamd response to {self._command.value} has no Spam header")
        symbols = _parse_symbols(body) if self._command is Command.SYMBOLS else ()
        return SpamdResponse(
            version,
            code,
            message,
            headers,
            body,
            spam,
            symbols,
            did_set=_flags(headers, "didset"),
            did_remove=_flags(headers, "didremove"),
        )


def _parse_status(line: bytes) -> tuple[str, int, str]:
    match = _STATUS_RE.fullmatch(line)
    if match is None:
        raise RemoteProtocolError(f"malformed spamd status line: {line[:80]!r}")
    version, code, message = match.group(1, 2, 3)
    text = (message or b"").decode("utf-8", "surrogateescape").strip()
    return version.decode("ascii"), int(code), text


def _parse_header(line: bytes) -> tuple[str, str]:
    match = _HEADER_RE.fullmatch(line)
    if match is None:
        raise RemoteProtocolError(f"malformed spamd response header: {line[:80]!r}")
    name, value = match.group(1, 2)
    return name.decode("ascii"), value.decode("utf-8", "surrogateescape")


def _spam_status(headers: tuple[tuple[str, str], ...]) -> SpamStatus | None:
    values = [value for name, value in headers if name.lower() == "spam"]
    if not values:
        return None
    if len(values) > 1:
        raise RemoteProtocolError("spamd response has more than one Spam header")
    match = _SPAM_RE.fullmatch(values[0])
    if match is None:
        raise RemoteProtocolError(f"malformed Spam header: {values[0][:80]!r}")
    verdict, score, threshold = match.group(1, 2, 3)
    return SpamStatus(verdict.lower() in ("true", "yes"), float(score), float(threshold))


def _parse_symbols(body: bytes) -> tuple[str, ...]:
    """``GTUBE,NO_RECEIVED,NO_RELAYS`` (protocol < 1.3 adds CRLF); ``b""`` is no rules hit."""
    try:
        text = body.decode("ascii").strip(" \t\r\n")
    except UnicodeDecodeError:
        raise RemoteProtocolError("non-ASCII bytes in the SYMBOLS list") from None
    if not text:
        return ()
    names = tuple(name.strip(" \t") for name in text.split(","))
    for name in names:
        if not _SYMBOL_RE.fullmatch(name):
            raise RemoteProtocolError(f"malformed SYMBOLS list: {text[:80]!r}")
    return names


def _flags(headers: tuple[tuple[str, str], ...], wanted: str) -> frozenset[str]:
    """``DidSet: local,remote`` → ``{"local", "remote"}`` (every such header counts)."""
    return frozenset(
        part.strip().lower()
        for name, value in headers
        if name.lower() == wanted
        for part in value.split(",")
        if part.strip()
    )
