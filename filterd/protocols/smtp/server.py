"""Sans-I/O SMTP/LMTP server codec.

Bytes go in with ``receive_data``; ``next_event`` returns one event at a time, or ``NEED_DATA``.
Every command event must be answered with ``send`` before the next event is produced (the codec
"pauses"), because the next command's meaning depends on the answer. Replies are returned as
bytes; the caller batches them and flushes whenever it needs to read (RFC 2920 pipelining).

The codec owns every SMTP rule and limit: command order, line lengths, recipient count, error
budget, message size, CRLF.CRLF as the only end of data, bare CR/LF handling, the pipelining
synchronisation rule, and discarding plaintext pipelined behind STARTTLS (CVE-2011-0411).

SMTP AUTH (RFC 4954), when offered: only after STARTTLS, outside a transaction, once per session.
After a 334 answer the next line is the client's SASL response (``AuthResponse``), not a command.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from typing import Literal

from filterd.model import replies
from filterd.model.reply import Reply
from filterd.protocols.smtp import events as ev
from filterd.protocols.smtp.commands import (
    CommandSyntaxError,
    check_mail_params,
    check_rcpt_params,
    parse_xforward,
    split_path_argument,
    validate_mailbox,
)
from filterd.protocols.smtp.common import NEED_DATA, LocalProtocolError, NeedData

# Extra room for MAIL/RCPT lines carrying ESMTP parameters (SIZE, BODY, ENVID ≤100, ORCPT ≤500,
# NOTIFY, SMTPUTF8): RFC 5321 §4.5.3.1.4 lets extensions raise the 512-octet command limit.
PARAMETER_ALLOWANCE = 1024

# RFC 2920 §3.1: these must be the last command in a pipelined group. Bytes already received
# behind them were sent before our reply could be seen: a synchronisation error (Postfix
# smtpd_forbid_unauth_pipelining). For STARTTLS it is the CVE-2011-0411 injection.
_MUST_BE_LAST = frozenset({"EHLO", "HELO", "LHLO", "DATA", "NOOP", "QUIT", "STARTTLS", "VRFY"})

_NOT_IMPLEMENTED = frozenset({"EXPN", "TURN", "ETRN", "AUTH", "BDAT", "ATRN", "SEND", "SOML"})


class State(enum.Enum):
    CONNECTED = "connected"  # greeting sent, no HELO yet
    GREETED = "greeted"  # HELO/EHLO accepted, no transaction
    MAIL = "mail"  # MAIL accepted
    RCPT = "rcpt"  # at least one RCPT accepted
    DATA = "data"  # receiving content
    TLS_PENDING = "tls-pending"  # 220 to STARTTLS sent; waiting for start_tls()
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class ServerLimits:
    max_command_line: int = 512
    max_text_line: int = 1000
    max_message_size: int = 0  # 0 = unlimited
    max_recipients: int = 1000
    max_errors: int = 20
    bare_newline: Literal["reject", "normalize"] = "reject"


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the server offers in its EHLO reply (besides the fixed set)."""

    hostname: str
    starttls: bool = False
    xforward: bool = False
    auth: tuple[str, ...] = ()  # SASL mechanisms, offered once TLS is active


# One greeting and a few EHLO replies per listener, the same for every connection: made once.
@functools.lru_cache(maxsize=64)
def _greeting(hostname: str, lmtp: bool) -> bytes:
    proto = "LMTP" if lmtp else "ESMTP"
    return Reply(220, "", f"{hostname} {proto} filterd").to_bytes()


@functools.lru_cache(maxsize=64)
def _ehlo_reply(
    hostname: str, size: int, starttls: bool, xforward: bool, auth: tuple[str, ...] = ()
) -> Reply:
    lines = [hostname, "PIPELINING"]
    lines.append(f"SIZE {size}" if size else "SIZE")
    lines += ["8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "DSN"]
    if starttls:
        lines.append("STARTTLS")
    if auth:
        lines.append("AUTH " + " ".join(auth))
    if xforward:
        lines.append("XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT")
    return Reply(250, "", "\n".join(lines))


class SmtpServer:
    def __init__(
        self,
        limits: ServerLimits,
        capabilities: Capabilities,
        *,
        lmtp: bool = False,
    ) -> None:
        self.limits = limits
        self.capabilities = capabilities
        self.lmtp = lmtp
        self.state = State.CONNECTED
        self.tls_active = False
        self.esmtp = False
        self.authenticated = False
        self.errors = 0
        self.accepted_recipients = 0
        self._buf = b""
        self._eof = False
        self._pending: ev.ServerEvent | None = None
        self._replies_owed = 0
        self._discarding_line = False  # inside an over-long command line
        self._data: _DataReader | None = None
        self._end_pending: ev.EndOfData | None = None
        self._smtputf8 = False
        self._sasl = False  # a 334 was sent: the next line is a SASL response

    # ------------------------------------------------------------------ input
    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the client; ``b""`` means the client closed its side."""
        if data:
            if self._eof:
                raise LocalProtocolError("data received after EOF")
            self._buf += data
        else:
            self._eof = True

    def next_event(self) -> ev.ServerEvent | NeedData:
        """The next event, ``NEED_DATA`` to read more. Raises if a reply is still owed."""
        if self._pending is not None:
            raise LocalProtocolError(f"reply owed to {type(self._pending).__name__}")
        if self.state is State.CLOSED:
            return self._closed()
        if self.state is State.TLS_PENDING:
            raise LocalProtocolError("call start_tls() after the 220 reply")
        if self.state is State.DATA:
            return self._next_data_event()
        if self._sasl:
            return self._next_sasl_event()
        return self._next_command_event()

    # ----------------------------------------------------------------- output
    def greeting(self) -> bytes:
        return _greeting(self.capabilities.hostname, self.lmtp)

    def ehlo_reply(self) -> Reply:
        """The 250 reply to EHLO/LHLO: our name and extensions."""
        return _ehlo_reply(
            self.capabilities.hostname,
            self.limits.max_message_size,
            self.capabilities.starttls and not self.tls_active,
            self.capabilities.xforward,
            self.capabilities.auth if self.tls_active else (),
        )

    def send(self, reply: Reply) -> bytes:
        """Answer the pending event. A 421 may also be sent unprompted; it closes the session."""
        pending = self._pending
        if pending is None:
            if reply.code != 421:
                raise LocalProtocolError("no command is waiting for a reply")
            self.state = State.CLOSED
            return reply.to_bytes()
        if isinstance(pending, ev.EndOfData) and self._replies_owed > 1:
            self._replies_owed -= 1
            return reply.to_bytes()
        self._pending = None
        self._replies_owed = 0
        self._apply(pending, reply)
        return reply.to_bytes()

    def start_tls(self) -> None:
        """After the 220 to STARTTLS: forget the session (RFC 3207 §4.2).

        Plaintext received behind STARTTLS was discarded when the command was parsed.
        """
        if self.state is not State.TLS_PENDING:
            raise LocalProtocolError("start_tls() without an accepted STARTTLS")
        self._buf = b""
        self.tls_active = True
        self.esmtp = False
        self._sasl = False
        self._reset_transaction()
        self.state = State.CONNECTED

    @property
    def replies_owed(self) -> int:
        return self._replies_owed if self._pending is not None else 0

    # ---------------------------------------------------------- transitions
    def _apply(self, event: ev.ServerEvent, reply: Reply) -> None:
        """Rule 1 (h11): every state change caused by a reply happens here."""
        ok = reply.is_positive
        if reply.code == 421:
            self.state = State.CLOSED
            return
        match event:
            case ev.Hello(verb=verb) if ok:
                self.esmtp = verb in ("EHLO", "LHLO")
                self._reset_transaction()
                self.state = State.GREETED
            case ev.MailFrom() if ok:
                self.state = State.MAIL
            case ev.RcptTo() if ok:
                self.accepted_recipients += 1
                self.state = State.RCPT
            case ev.Data() if reply.code == 354:
                self._data = _DataReader(self.limits)
                self.state = State.DATA
            case ev.EndOfData():
                self._reset_transaction()
                self.state = State.GREETED
            case ev.Reset():
                self._reset_transaction()
                if self.state is not State.CONNECTED:
                    self.state = State.GREETED
            case ev.StartTls() if reply.code == 220:
                self.state = State.TLS_PENDING
            case ev.Auth() | ev.AuthResponse():
                self._sasl = reply.code == 334
                self.authenticated = self.authenticated or reply.code == 235
            case ev.Quit():
                self.state = State.CLOSED
            case ev.BadCommand(fatal=True):
                self.state = State.CLOSED
            case _:
                pass

    def _reset_transaction(self) -> None:
        self.accepted_recipients = 0
        self._smtputf8 = False
        self._data = None
        self._end_pending = None

    def _closed(self) -> ev.ServerEvent:
        return ev.ConnectionClosed()

    def _emit(self, event: ev.ServerEvent) -> ev.ServerEvent:
        if isinstance(event, ev.BodyChunk | ev.ConnectionClosed):
            return event
        self._pending = event
        self._replies_owed = 1
        if isinstance(event, ev.EndOfData) and self.lmtp:
            self._replies_owed = max(1, self.accepted_recipients)
        return event

    def _error(self, reply: Reply) -> ev.ServerEvent:
        """A refused command. Counts against the error budget (aiosmtpd, Postfix hard limit)."""
        self.errors += 1
        if self.errors >= self.limits.max_errors:
            return self._emit(ev.BadCommand(replies.TOO_MANY_ERRORS, fatal=True))
        return self._emit(ev.BadCommand(reply))

    # ------------------------------------------------------------ commands
    def _next_command_event(self) -> ev.ServerEvent | NeedData:
        line = self._take_line()
        if isinstance(line, NeedData):
            if self._eof:
                self.state = State.CLOSED
                return self._closed()
            return NEED_DATA
        if isinstance(line, Reply):
            fatal = line.code == 421 or line is replies.BARE_LF
            return self._emit(ev.BadCommand(line, fatal=True)) if fatal else self._error(line)
        verb, _, argument = line.partition(" ")
        verb = verb.upper()
        if verb in _MUST_BE_LAST and self._buf:
            violation = replies.STARTTLS_INJECTION if verb == "STARTTLS" else None
            self._buf = b""
            return self._emit(ev.BadCommand(violation or replies.PIPELINING_VIOLATION, fatal=True))
        return self._dispatch(verb, argument)

    def _take_line(self) -> str | Reply | NeedData:
        """One complete command line (without CRLF), a Reply for a bad line, or NEED_DATA."""
        limit = self.limits.max_command_line + PARAMETER_ALLOWANCE
        nl = self._buf.find(b"\n")
        if nl < 0:
            if len(self._buf) > limit:
                self._discarding_line = True
                self._buf = self._buf[-1:]  # keep a possible CR
            return NEED_DATA
        raw, self._buf = self._buf[: nl + 1], self._buf[nl + 1 :]
        if self._discarding_line:
            self._discarding_line = False
            return replies.LINE_TOO_LONG
        if raw.endswith(b"\r\n"):
            raw = raw[:-2]
        elif self.limits.bare_newline == "reject":
            return replies.BARE_LF
        else:
            raw = raw[:-1]  # normalise: a bare LF ends the line
        if b"\r" in raw:
            return replies.BARE_LF if self.limits.bare_newline == "reject" else replies.SYNTAX
        if len(raw) + 2 > limit:
            return replies.LINE_TOO_LONG
        if b"\x00" in raw:
            return replies.SYNTAX
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return replies.SYNTAX

    def _dispatch(self, verb: str, argument: str) -> ev.ServerEvent:
        if len(verb) + 1 + len(argument) + 2 > self.limits.max_command_line and verb not in (
            "MAIL",
            "RCPT",
            "AUTH",  # an initial response may be longer (RFC 4954 §4)
        ):
            return self._error(replies.LINE_TOO_LONG)
        try:
            match verb:
                case "EHLO" | "HELO" if not self.lmtp:
                    return self._hello(verb, argument)
                case "LHLO" if self.lmtp:
                    return self._hello(verb, argument)
                case "MAIL":
                    return self._mail(argument)
                case "RCPT":
                    return self._rcpt(argument)
                case "DATA":
                    return self._data_command(argument)
                case "RSET":
                    return self._no_argument(argument, ev.Reset())
                case "NOOP":
                    return self._emit(ev.Noop())
                case "QUIT":
                    return self._no_argument(argument, ev.Quit())
                case "VRFY":
                    if not argument:
                        return self._error(replies.SYNTAX)
                    return self._emit(ev.Vrfy(argument))
                case "HELP":
                    return self._emit(ev.Help())
                case "STARTTLS":
                    return self._starttls(argument)
                case "XFORWARD":
                    return self._xforward(argument)
                case "AUTH" if self.capabilities.auth:
                    return self._auth(argument)
                case _ if verb in _NOT_IMPLEMENTED:
                    return self._error(replies.NOT_IMPLEMENTED)
                case _:
                    return self._error(replies.UNRECOGNIZED)
        except CommandSyntaxError as exc:
            return self._error(exc.reply)

    def _no_argument(self, argument: str, event: ev.ServerEvent) -> ev.ServerEvent:
        if argument.strip():
            return self._error(replies.SYNTAX)
        return self._emit(event)

    def _hello(self, verb: str, argument: str) -> ev.ServerEvent:
        name = argument.strip()
        if not name or " " in name:
            return self._error(replies.SYNTAX)
        return self._emit(ev.Hello(verb, name))

    def _mail(self, argument: str) -> ev.ServerEvent:
        if self.state is State.CONNECTED:
            return self._error(replies.NEED_HELO)
        if self.state in (State.MAIL, State.RCPT):
            return self._error(replies.NESTED_MAIL)
        path = split_path_argument(argument, "FROM:", replies.BAD_SENDER_SYNTAX)
        if path.params and not self.esmtp:
            return self._error(replies.BAD_PARAMETER)
        params = check_mail_params(
            path.params,
            max_size=self.limits.max_message_size,
            auth=bool(self.capabilities.auth) and self.tls_active,
        )
        if path.address:
            validate_mailbox(path.address, replies.BAD_SENDER_SYNTAX, smtputf8=params.smtputf8)
        self._smtputf8 = params.smtputf8
        return self._emit(ev.MailFrom(path.address, path.params, params.size, params.smtputf8))

    def _rcpt(self, argument: str) -> ev.ServerEvent:
        if self.state not in (State.MAIL, State.RCPT):
            return self._error(replies.NEED_MAIL)
        path = split_path_argument(argument, "TO:", replies.BAD_RCPT_SYNTAX)
        if path.params and not self.esmtp:
            return self._error(replies.BAD_PARAMETER)
        check_rcpt_params(path.params)
        validate_mailbox(path.address, replies.BAD_RCPT_SYNTAX, smtputf8=self._smtputf8)
        if self.accepted_recipients >= self.limits.max_recipients:
            return self._emit(ev.BadCommand(replies.TOO_MANY_RECIPIENTS))
        return self._emit(ev.RcptTo(path.address, path.params))

    def _data_command(self, argument: str) -> ev.ServerEvent:
        if argument.strip():
            return self._error(replies.SYNTAX)
        if self.state is State.MAIL:
            return self._error(replies.NEED_RCPT)
        if self.state is not State.RCPT:
            return self._error(replies.NEED_MAIL)
        return self._emit(ev.Data())

    def _starttls(self, argument: str) -> ev.ServerEvent:
        if argument.strip():
            return self._error(replies.SYNTAX)
        if not self.capabilities.starttls or self.tls_active:
            return self._error(replies.NOT_IMPLEMENTED)
        if self.state in (State.MAIL, State.RCPT):
            return self._error(replies.BAD_SEQUENCE)
        return self._emit(ev.StartTls())

    def _auth(self, argument: str) -> ev.ServerEvent:
        """AUTH, answered as Postfix's smtpd with smtpd_tls_auth_only = yes."""
        if self.state is State.CONNECTED:
            return self._error(replies.NEED_HELO)
        if not self.tls_active:
            return self._error(replies.AUTH_NEEDS_TLS)
        if self.state in (State.MAIL, State.RCPT):
            return self._error(replies.AUTH_IN_TRANSACTION)
        if self.authenticated:
            return self._error(replies.AUTH_ALREADY)
        words = argument.split(" ")
        if not 1 <= len(words) <= 2 or not all(words):
            return self._error(replies.AUTH_SYNTAX)
        initial = words[1] if len(words) == 2 else None
        return self._emit(ev.Auth(words[0].upper(), initial))

    def _next_sasl_event(self) -> ev.ServerEvent | NeedData:
        """The client's line after a 334: its response, or the end of the exchange."""
        line = self._take_line()
        if isinstance(line, NeedData):
            if self._eof:
                self.state = State.CLOSED
                return self._closed()
            return NEED_DATA
        if isinstance(line, Reply):
            self._sasl = False
            if line.code == 421 or line is replies.BARE_LF:
                return self._emit(ev.BadCommand(line, fatal=True))
            return self._error(replies.SASL_TOO_LONG if line is replies.LINE_TOO_LONG else line)
        return self._emit(ev.AuthResponse(line))

    def _xforward(self, argument: str) -> ev.ServerEvent:
        if not self.capabilities.xforward:
            return self._error(replies.XFORWARD_DENIED)
        if self.state in (State.MAIL, State.RCPT):
            return self._error(replies.XFORWARD_IN_TRANSACTION)
        return self._emit(ev.Xforward(parse_xforward(argument)))

    # ---------------------------------------------------------------- data
    def _next_data_event(self) -> ev.ServerEvent | NeedData:
        reader = self._data
        assert reader is not None
        if self._end_pending is not None:
            end, self._end_pending = self._end_pending, None
            self._data = None
            return self._emit(end)
        chunk, done, consumed = reader.feed(self._buf)
        self._buf = self._buf[consumed:]
        if done:
            # The last content goes out first; the end comes on the next call.
            self._end_pending = reader.end_event()
            return ev.BodyChunk(chunk) if chunk else self._next_data_event()
        if chunk:
            return ev.BodyChunk(chunk)
        if self._eof:
            self.state = State.CLOSED
            return self._closed()
        return NEED_DATA


class _DataReader:
    """Reads DATA content: finds the CRLF.CRLF terminator, unstuffs dots, checks limits.

    Works on whole runs of complete lines with bytes methods (no per-byte Python loop). Content
    after a limit is broken is dropped, but reading goes on to the terminator so the client stays
    in sync (RFC 5321 §4.2.5); the reply then names the first broken limit.
    """

    def __init__(self, limits: ServerLimits) -> None:
        self.limits = limits
        self.size = 0
        self.at_line_start = True  # the previous byte ended a CRLF (or data just began)
        # A line starts here for dot-unstuffing: after a CRLF, or any LF in normalize mode
        # (then a bare LF ends a line too, though never one before the end of data).
        self.unstuff_next = True
        self.bare_newline = False
        self.line_too_long = False
        self.too_big = False
        self._partial = 0  # length of the current, not yet complete, line

    @property
    def dropping(self) -> bool:
        return self.bare_newline or self.line_too_long or self.too_big

    def feed(self, buf: bytes) -> tuple[bytes, bool, int]:
        """Consume what can be decided from ``buf``: (content, reached_end, bytes_consumed).

        One scan for CRLF "." finds both the end of the data and the dot-stuffed lines; most
        messages have none of the latter, and then no unstuffing scan is made."""
        if self.at_line_start and buf.startswith(b".\r\n"):
            return b"", True, 3
        dot = buf.find(b"\r\n.")
        if dot < 0 or buf.startswith(b"\r\n.\r\n", dot):
            end = dot
        else:
            end = buf.find(b"\r\n.\r\n", dot + 1)
        if end >= 0:
            return self._content(buf[: end + 2], dots=dot < end), True, end + 5
        last_nl = buf.rfind(b"\n")
        if last_nl < 0:
            return self._hold_partial(buf)
        segment = buf[: last_nl + 1]
        content = self._content(segment, dots=dot >= 0 and dot + 2 <= last_nl)
        rest = len(buf) - len(segment)
        chunk2, _, consumed2 = self._hold_partial(buf[last_nl + 1 :]) if rest else (b"", False, 0)
        return content + chunk2, False, len(segment) + consumed2

    def _hold_partial(self, tail: bytes) -> tuple[bytes, bool, int]:
        """An incomplete line stays buffered unless it is already longer than allowed."""
        if len(tail) + self._partial < self.limits.max_text_line:
            return b"", False, 0
        self.line_too_long = True
        # Keep one byte: a CR there may start the CRLF that precedes the terminator.
        consumed = max(0, len(tail) - 1)
        self._partial += consumed
        self.at_line_start = self.unstuff_next = False
        return b"", False, consumed

    def _content(self, segment: bytes, *, dots: bool) -> bytes:
        """Complete lines (ending in LF) → unstuffed content, after checking the limits.
        ``dots``: ``segment`` holds a CRLF "." (a dot-stuffed line after its first)."""
        ends_with_crlf = segment.endswith(b"\r\n")
        crlf = segment.count(b"\r\n")
        if segment.count(b"\n") != crlf or segment.count(b"\r") != crlf:
            if self.limits.bare_newline == "reject":
                self.bare_newline = True
            else:
                segment = _normalize_newlines(segment)
                dots = True  # a bare LF "." is now a CRLF "."
        if not self.line_too_long:
            self._check_line_lengths(segment)
        self._partial = 0
        if self.unstuff_next and segment.startswith(b"."):
            segment = segment[1:]
        if dots:
            segment = segment.replace(b"\r\n.", b"\r\n")
        # Decided on the raw bytes: after a bare LF a "." line is content, never an end (the
        # LF.CRLF smuggling variant), whatever normalisation made of that LF.
        self.at_line_start = ends_with_crlf
        self.unstuff_next = ends_with_crlf or self.limits.bare_newline == "normalize"
        self.size += len(segment)
        limit = self.limits.max_message_size
        if limit and self.size > limit:
            self.too_big = True
        return b"" if self.dropping else segment

    def _check_line_lengths(self, segment: bytes) -> None:
        """Each line (LF included, the first with the bytes of it taken before) at most
        ``max_text_line`` long. From a line's start, the last LF within that many bytes ends
        the lines in between, all short enough: one ``rfind`` per ``max_text_line`` bytes."""
        limit = self.limits.max_text_line
        if len(segment) + self._partial <= limit:
            return
        pos, room, length = 0, limit - self._partial, len(segment)
        while pos < length:
            nl = segment.rfind(b"\n", pos, pos + room)
            if nl < 0:
                self.line_too_long = True
                return
            pos, room = nl + 1, limit

    def end_event(self) -> ev.EndOfData:
        rejection: Reply | None = None
        if self.bare_newline:
            rejection = replies.BARE_LF
        elif self.line_too_long:
            rejection = replies.TEXT_LINE_TOO_LONG
        elif self.too_big:
            rejection = replies.TOO_BIG
        return ev.EndOfData(self.size, rejection)


def _normalize_newlines(segment: bytes) -> bytes:
    """Bare LF and bare CR become CRLF (Postfix smtpd_forbid_bare_newline=normalize)."""
    return segment.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
