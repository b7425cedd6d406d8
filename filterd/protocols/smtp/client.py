"""Sans-I/O SMTP/LMTP client codec: commands out as bytes, server replies in as ``Reply``.

The contract is h11's: ``receive_data(bytes)`` (``b""`` = the server closed),
``next_reply()`` returning a ``Reply``, ``NEED_DATA`` or ``ConnectionClosed``; each command method
returns the bytes to send and records that a reply is owed, so replies come back in command order
and pipelining (RFC 2920) needs nothing more. A relay session looks like::

    client = SmtpClient(lmtp=False)
    greeting = await read_reply(client)         # loop: next_reply(), receive_data() on NEED_DATA
    await send(client.ehlo("filterd.test"))
    caps = client.capabilities                  # parsed from the EHLO reply by the codec
    await send(b"".join([*client.xforward(attrs), client.mail(sender, params),
                         *(client.rcpt(r, p) for r, p in rcpts), client.data()]))
    ...one reply per command, in order; content only after 354 (RFC 2920 §3.1)...
    stuffer = DotStuffer(bare_newline="normalize")
    await send(stuffer.feed(chunk)) ...; await send(stuffer.finish())
    for _ in range(client.end_of_data()):       # 1 for SMTP; LMTP: one per accepted RCPT
        final = await read_reply(client)

LMTP (RFC 2033 §4.2): the codec counts the 2xx replies to RCPT itself, so ``end_of_data()``
knows and returns how many replies the final "." gets; the shell reads exactly that many.

Errors: ``RemoteProtocolError`` (hint ``replies.NEXT_HOP_PROTOCOL``) when the server breaks the
protocol; ``LocalProtocolError`` when the caller asks for something that would (a CR/LF/NUL in an
argument, a command after a group-ending one before its reply, a command during DATA content).
"""

from __future__ import annotations

import enum
import functools
import re
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from filterd.model import replies
from filterd.model.reply import Reply
from filterd.model.xtext import is_xtext
from filterd.protocols.smtp.common import (
    NEED_DATA,
    ConnectionClosed,
    LocalProtocolError,
    NeedData,
    RemoteProtocolError,
)

__all__ = [
    "Capabilities",
    "ConnectionClosed",
    "ReplyTo",
    "SmtpClient",
    "parse_ehlo",
]


class ReplyTo(enum.Enum):
    """What a pending reply answers (the greeting first, then one per command sent)."""

    GREETING = "greeting"
    EHLO = "EHLO"
    LHLO = "LHLO"
    HELO = "HELO"
    XFORWARD = "XFORWARD"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    END_OF_DATA = "end of data"
    RSET = "RSET"
    NOOP = "NOOP"
    STARTTLS = "STARTTLS"
    QUIT = "QUIT"


# --- EHLO capabilities -------------------------------------------------------------------------

_KEYWORD_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")


@dataclass(frozen=True, slots=True)
class Capabilities:
    """Service extensions from an EHLO/LHLO reply: upper-case keyword → its parameters."""

    keywords: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    _xforward: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # asked for every relayed message: computed once per EHLO reply
        names = frozenset(name.upper() for name in self.keywords.get("XFORWARD", ()))
        object.__setattr__(self, "_xforward", names)

    def has(self, keyword: str) -> bool:
        return keyword.upper() in self.keywords

    @property
    def size_limit(self) -> int | None:
        """``SIZE <n>`` (RFC 1870 §4); ``None`` when absent, 0 ("no fixed maximum") or invalid."""
        params = self.keywords.get("SIZE", ())
        if not params or not params[0].isascii() or not params[0].isdigit():
            return None
        return int(params[0]) or None

    @property
    def xforward_attrs(self) -> frozenset[str]:
        """Attribute names announced with ``XFORWARD`` (XFORWARD_README), upper-cased."""
        return self._xforward


def parse_ehlo(reply: Reply) -> Capabilities:
    """Capabilities from an EHLO/LHLO reply (RFC 5321 §4.1.1.1).

    ``ehlo-line = ehlo-keyword *( SP ehlo-param )``, one per line after the first (the greeting
    line). Lines whose keyword is malformed are skipped; the first of duplicate keywords counts.
    A reply that is not 2xx announces nothing.
    """
    if not 200 <= reply.code < 300:
        return Capabilities()
    keywords: dict[str, tuple[str, ...]] = {}
    for line in reply.lines()[1:]:
        keyword, *params = line.split() or [""]
        if _KEYWORD_RE.fullmatch(keyword):
            keywords.setdefault(keyword.upper(), tuple(params))
    return Capabilities(MappingProxyType(keywords))


# --- reply parsing -----------------------------------------------------------------------------

# RFC 5321 §4.2: Reply-code [ ("-" / SP) textstring ] CRLF, Reply-code = %x32-35 %x30-35 %x30-39.
_REPLY_LINE_RE: Final = re.compile(rb"([2-5][0-5][0-9])(?:([ -])(.*))?", re.DOTALL)
# RFC 2034 §4 / RFC 3463 §2: class "." subject "." detail, followed by SP or the end of the line.
_STATUS_RE: Final = re.compile(r"([245]\.[0-9]{1,3}\.[0-9]{1,3})(?: |\Z)")


def _parse_reply_line(line: bytes) -> tuple[int, bool, str]:
    """(code, is_last, text) of one reply line without its CRLF (RFC 5321 §4.2).

    The text is taken as UTF-8 with ``surrogateescape``; only NUL and CR are refused in it
    (a bare CR is a line-end ambiguity; other oddities in reply text are not worth turning a
    delivered message into a failure and a duplicate).
    """
    match = _REPLY_LINE_RE.fullmatch(line)
    if match is None:
        raise _remote(f"malformed reply line: {line[:80]!r}")
    code, separator, text = match.group(1, 2, 3)
    if text and (b"\r" in text or b"\x00" in text):
        raise _remote(f"bare CR or NUL in reply line: {line[:80]!r}")
    decoded = text.decode("utf-8", "surrogateescape") if text else ""
    return int(code), separator != b"-", decoded


def _split_status(code: int, text: str) -> tuple[str, str]:
    """(enhanced status, rest) when ``text`` starts with one whose class matches ``code``."""
    match = _STATUS_RE.match(text)
    if match is None or match.group(1)[0] != str(code)[0]:
        return "", text
    return match.group(1), text[match.end() :]


def _strip_status(status: str, text: str) -> str:
    if status and (text == status or text.startswith(status + " ")):
        return text[len(status) + 1 :]
    return text


def _build_reply(code: int, texts: Sequence[str]) -> Reply:
    """One ``Reply``: the first line's enhanced status, stripped from every line that repeats it."""
    status, first = _split_status(code, texts[0])
    lines = [first, *(_strip_status(status, text) for text in texts[1:])]
    try:
        return Reply(code, status, "\n".join(lines))
    except ValueError as exc:  # defensive: the line parser already enforces Reply's rules
        raise _remote(f"invalid reply: {exc}") from None


_CACHED_LINE: Final = 200  # longer one-line replies are parsed each time


@functools.lru_cache(maxsize=256)
def _single_line_reply(line: bytes) -> Reply:
    """A one-line reply, parsed once: a next hop gives the same few (``250 2.0.0 Ok``,
    ``354 ...``) for every message. Replies are immutable, so one object serves them all."""
    code, _, text = _parse_reply_line(line)
    return _build_reply(code, (text,))


def _remote(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, reply=replies.NEXT_HOP_PROTOCOL)


# --- the state table ---------------------------------------------------------------------------


class _Phase(enum.Enum):
    COMMANDS = "commands"  # commands may be sent
    CONTENT = "content"  # DATA got 354: send the content, then call end_of_data()
    TLS = "tls"  # STARTTLS got 220: call start_tls(), then EHLO again
    CLOSING = "closing"  # QUIT sent or 421 received: nothing more may be sent
    BROKEN = "broken"  # a protocol error ended the session


# (phase, what the reply answers, reply code) → next phase; any other reply keeps the phase,
# except 421, which always means the server is closing (RFC 5321 §3.8).
_REPLY_TRANSITIONS: Final[Mapping[tuple[_Phase, ReplyTo, int], _Phase]] = {
    (_Phase.COMMANDS, ReplyTo.DATA, 354): _Phase.CONTENT,
    (_Phase.COMMANDS, ReplyTo.STARTTLS, 220): _Phase.TLS,
}

# Why nothing may be sent in a phase other than COMMANDS.
_BLOCKED: Final[Mapping[_Phase, str]] = {
    _Phase.CONTENT: "DATA got 354: send the content and call end_of_data() first",
    _Phase.TLS: "STARTTLS got 220: call start_tls() first",
    _Phase.CLOSING: "the connection is closing",
    _Phase.BROKEN: "the connection failed with a protocol error",
}

# RFC 2920 §3.1: these end a pipelined group, so nothing may follow them before their reply.
# (The greeting too: RFC 5321 §3.1, the client waits for it.)
_GROUP_ENDERS: Final = frozenset(
    {
        ReplyTo.GREETING,
        ReplyTo.EHLO,
        ReplyTo.LHLO,
        ReplyTo.HELO,
        ReplyTo.DATA,
        ReplyTo.END_OF_DATA,
        ReplyTo.NOOP,
        ReplyTo.STARTTLS,
        ReplyTo.QUIT,
    }
)

# RFC 2033 §4.1: LHLO replaces EHLO and HELO in LMTP.
_WRONG_MODE: Final[Mapping[bool, frozenset[ReplyTo]]] = {
    False: frozenset({ReplyTo.LHLO}),
    True: frozenset({ReplyTo.EHLO, ReplyTo.HELO}),
}

# XFORWARD_README: attribute order and grouping as Postfix's smtp client sends them.
_XFORWARD_GROUPS: Final = (("NAME", "ADDR", "PORT"), ("PROTO", "HELO", "IDENT", "SOURCE"))
_XFORWARD_NAMES: Final = frozenset(name for group in _XFORWARD_GROUPS for name in group)
_XFORWARD_MAX_VALUE: Final = 255
_MAX_COMMAND_LINE: Final = 512  # RFC 5321 §4.5.3.1.4, octets including CRLF

_FORBIDDEN_RE: Final = re.compile(r"[\r\n\x00]")
_TOKEN_RE: Final = re.compile(r"[^\x00-\x20\x7f]+")


# --- the codec ---------------------------------------------------------------------------------


class SmtpClient:
    """Client side of one SMTP (or, with ``lmtp=True``, LMTP) connection; see the module doc.

    Limits: a reply line is at most ``max_reply_line`` octets including CRLF, a reply at most
    ``max_reply_lines`` lines; beyond either the server is broken (``RemoteProtocolError``).
    """

    def __init__(
        self, lmtp: bool = False, max_reply_line: int = 4096, max_reply_lines: int = 200
    ) -> None:
        if max_reply_line < 5 or max_reply_lines < 1:
            raise ValueError("max_reply_line must be >= 5 and max_reply_lines >= 1")
        self._lmtp = lmtp
        self._max_line = max_reply_line
        self._max_lines = max_reply_lines
        self._buffer = bytearray()
        self._scanned = 0  # leading bytes of _buffer known to hold no LF
        self._eof = False
        self._code = 0  # code of the reply being assembled
        self._texts: list[str] = []  # its lines so far
        self._pending: deque[ReplyTo] = deque([ReplyTo.GREETING])
        self._phase = _Phase.COMMANDS
        self._capabilities = Capabilities()
        self._accepted = 0

    # --- state seen by the shell ---

    @property
    def lmtp(self) -> bool:
        return self._lmtp

    @property
    def pending(self) -> tuple[ReplyTo, ...]:
        """Replies owed by the server, oldest first."""
        return tuple(self._pending)

    @property
    def capabilities(self) -> Capabilities:
        """From the last 2xx EHLO/LHLO reply; empty before it, after HELO and after STARTTLS."""
        return self._capabilities

    @property
    def accepted_recipients(self) -> int:
        """2xx replies to RCPT since the last reply to MAIL."""
        return self._accepted

    # --- bytes in, replies out ---

    def receive_data(self, data: bytes) -> None:
        """Bytes from the server; ``b""`` means it closed the connection."""
        if self._eof:
            if data:
                raise LocalProtocolError("data received after EOF")
            return
        if data:
            self._buffer += data
        else:
            self._eof = True

    def next_reply(self) -> Reply | NeedData | ConnectionClosed:
        """The next complete reply, ``NEED_DATA`` (read more), or ``ConnectionClosed``.

        Raises ``RemoteProtocolError`` for a malformed or over-long reply, a bare LF, a reply
        nobody asked for (other than a 421), or EOF in the middle of a reply or with replies
        still owed; after that the codec stays broken.
        """
        if self._phase is _Phase.BROKEN:
            raise _remote("the connection already failed with a protocol error")
        try:
            return self._next_reply()
        except RemoteProtocolError:
            self._phase = _Phase.BROKEN
            raise

    def _next_reply(self) -> Reply | NeedData | ConnectionClosed:
        while (line := self._take_line()) is not None:
            reply = self._add_line(line)
            if reply is not None:
                return self._deliver(reply)
        if not self._eof:
            return NEED_DATA
        if self._buffer or self._texts:
            raise _remote("connection closed in the middle of a reply")
        if self._pending and self._phase is not _Phase.CLOSING:
            owed = ", ".join(kind.value for kind in self._pending)
            raise _remote(f"connection closed with replies owed to: {owed}")
        return ConnectionClosed()

    def _take_line(self) -> bytes | None:
        """The next line without its CRLF, or None if incomplete (RFC 5321 §2.3.8: CRLF only)."""
        lf = self._buffer.find(b"\n", self._scanned)
        if lf < 0:
            self._scanned = len(self._buffer)
            if len(self._buffer) >= self._max_line:
                raise _remote(f"reply line longer than {self._max_line} octets")
            return None
        if lf + 1 > self._max_line:
            raise _remote(f"reply line longer than {self._max_line} octets")
        if lf == 0 or self._buffer[lf - 1] != 0x0D:
            raise _remote("reply line ends in a bare LF")
        line = bytes(self._buffer[: lf - 1])
        del self._buffer[: lf + 1]
        self._scanned = 0
        return line

    def _add_line(self, line: bytes) -> Reply | None:
        """Add one line to the reply being assembled; the ``Reply`` once its last line is in."""
        if not self._texts and line[3:4] in (b" ", b"") and len(line) <= _CACHED_LINE:
            return _single_line_reply(line)  # the whole reply in one line
        code, last, text = _parse_reply_line(line)
        if self._texts and code != self._code:
            raise _remote(f"reply code changed from {self._code} to {code} within one reply")
        if len(self._texts) >= self._max_lines:
            raise _remote(f"reply longer than {self._max_lines} lines")
        self._code = code
        self._texts.append(text)
        if not last:
            return None
        texts, self._texts = self._texts, []
        return _build_reply(code, texts)

    def _deliver(self, reply: Reply) -> Reply:
        """Match ``reply`` with the oldest pending command and move the state along."""
        if not self._pending:
            # RFC 5321 §3.8: a server may announce its shutdown (421) at any time.
            if reply.code == 421 and self._phase in (_Phase.COMMANDS, _Phase.CONTENT):
                self._phase = _Phase.CLOSING
                return reply
            raise _remote(f"unsolicited reply from the server: {reply}")
        kind = self._pending.popleft()
        self._note(kind, reply)
        if reply.code == 421:
            self._phase = _Phase.CLOSING
            self._pending.clear()
        else:
            self._phase = _REPLY_TRANSITIONS.get((self._phase, kind, reply.code), self._phase)
        return reply

    def _note(self, kind: ReplyTo, reply: Reply) -> None:
        """Learn from a reply: capabilities from EHLO/LHLO, accepted recipients from RCPT."""
        match kind:
            case ReplyTo.EHLO | ReplyTo.LHLO:
                self._capabilities = parse_ehlo(reply)
            case ReplyTo.HELO:
                self._capabilities = Capabilities()
            case ReplyTo.MAIL:
                self._accepted = 0
            case ReplyTo.RCPT if 200 <= reply.code < 300:
                self._accepted += 1
            case ReplyTo.DATA if reply.code == 354 and self._lmtp and not self._accepted:
                raise _remote("LMTP DATA got 354 without an accepted recipient (RFC 2033 §4.2)")
            case _:
                pass

    # --- commands out ---

    def ehlo(self, name: str) -> bytes:
        """``EHLO <name>`` (RFC 5321 §4.1.1.1); SMTP only."""
        return self._command(ReplyTo.EHLO, f"EHLO {_token(name, 'EHLO name')}")

    def lhlo(self, name: str) -> bytes:
        """``LHLO <name>`` (RFC 2033 §4.1); LMTP only."""
        return self._command(ReplyTo.LHLO, f"LHLO {_token(name, 'LHLO name')}")

    def helo(self, name: str) -> bytes:
        """``HELO <name>`` (RFC 5321 §4.1.1.1); SMTP only."""
        return self._command(ReplyTo.HELO, f"HELO {_token(name, 'HELO name')}")

    def mail(self, path: str, params: Sequence[str] = ()) -> bytes:
        """``MAIL FROM:<path> [params]`` (RFC 5321 §4.1.1.2); ``path`` "" is the null sender."""
        line = f"MAIL FROM:<{_text(path, 'reverse-path')}>{_params(params)}"
        return self._command(ReplyTo.MAIL, line)

    def rcpt(self, path: str, params: Sequence[str] = ()) -> bytes:
        """``RCPT TO:<path> [params]`` (RFC 5321 §4.1.1.3)."""
        if not path:
            raise LocalProtocolError("RCPT TO needs a forward-path")
        line = f"RCPT TO:<{_text(path, 'forward-path')}>{_params(params)}"
        return self._command(ReplyTo.RCPT, line)

    def data(self) -> bytes:
        """``DATA`` (RFC 5321 §4.1.1.4). Send content only after its 354 reply."""
        return self._command(ReplyTo.DATA, "DATA")

    def rset(self) -> bytes:
        return self._command(ReplyTo.RSET, "RSET")

    def noop(self) -> bytes:
        return self._command(ReplyTo.NOOP, "NOOP")

    def quit(self) -> bytes:
        return self._command(ReplyTo.QUIT, "QUIT")

    def starttls(self) -> bytes:
        """``STARTTLS`` (RFC 3207 §4). After its 220, call ``start_tls()``."""
        return self._command(ReplyTo.STARTTLS, "STARTTLS")

    def xforward(self, attrs: Mapping[str, str]) -> list[bytes]:
        """XFORWARD commands for the attributes the server announced (XFORWARD_README).

        ``attrs`` maps NAME/ADDR/PORT/PROTO/HELO/IDENT/SOURCE (any case) to xtext values as
        received (≤255 octets each); attributes the server did not announce are left out, as
        Postfix does. Postfix's grouping: (NAME ADDR PORT) then (PROTO HELO IDENT SOURCE), each
        group split further if needed so no command exceeds 512 octets with CRLF. Returns one
        bytes per command (each owes a reply); ``[]`` when there is nothing to send.
        """
        values = _xforward_values(attrs)
        sendable = values.keys() & self._capabilities.xforward_attrs
        lines: list[str] = []
        for group in _XFORWARD_GROUPS:
            items = [f"{name}={values[name]}" for name in group if name in sendable]
            lines += _pack("XFORWARD", items, _MAX_COMMAND_LINE - 2)
        return [self._command(ReplyTo.XFORWARD, line) for line in lines]

    def end_of_data(self) -> int:
        """Note that the content and its final "." were sent; return how many replies it gets.

        1 for SMTP; for LMTP one per recipient whose RCPT got 2xx (RFC 2033 §4.2), in RCPT
        order. The shell calls ``next_reply()`` that many times.
        """
        if self._phase is not _Phase.CONTENT:
            why = _BLOCKED.get(self._phase, "DATA has no 354 reply")
            raise LocalProtocolError(f"cannot call end_of_data(): {why}")
        count = self._accepted if self._lmtp else 1
        self._pending.extend([ReplyTo.END_OF_DATA] * count)
        self._phase = _Phase.COMMANDS
        return count

    def start_tls(self) -> None:
        """Forget the plaintext session once STARTTLS got 220 (RFC 3207 §4.2).

        Bytes the server sent after the 220 are response injection (CVE-2011-0411) and
        raise ``RemoteProtocolError``. Afterwards the capabilities are empty and no greeting is
        expected: send EHLO/LHLO again over TLS.
        """
        if self._phase is not _Phase.TLS:
            raise LocalProtocolError("start_tls() without a 220 reply to STARTTLS")
        if self._buffer:
            self._phase = _Phase.BROKEN
            raise _remote("server data pipelined after its 220 to STARTTLS")
        self._phase = _Phase.COMMANDS
        self._capabilities = Capabilities()
        self._accepted = 0
        self._scanned = 0

    def _command(self, kind: ReplyTo, line: str) -> bytes:
        """Record that ``kind`` owes a reply and render ``line`` with CRLF."""
        if self._phase is not _Phase.COMMANDS:
            raise LocalProtocolError(f"cannot send {kind.value}: {_BLOCKED[self._phase]}")
        if kind in _WRONG_MODE[self._lmtp]:
            raise LocalProtocolError(f"{kind.value} is not a {self._protocol} command")
        if self._pending and self._pending[-1] in _GROUP_ENDERS:
            last = self._pending[-1].value
            raise LocalProtocolError(f"{kind.value} before the reply to {last} (RFC 2920 §3.1)")
        try:
            wire = line.encode("utf-8", "surrogateescape") + b"\r\n"
        except UnicodeEncodeError:
            raise LocalProtocolError(f"{kind.value} argument cannot be encoded") from None
        self._pending.append(kind)
        if kind is ReplyTo.QUIT:
            self._phase = _Phase.CLOSING
        return wire

    @property
    def _protocol(self) -> str:
        return "LMTP" if self._lmtp else "SMTP"


# --- argument checks (command injection defence) -----------------------------------------------


def _text(value: str, what: str) -> str:
    """``value`` unless it holds CR, LF or NUL, which would end or corrupt the command line."""
    if _FORBIDDEN_RE.search(value):
        raise LocalProtocolError(f"{what} contains CR, LF or NUL: {value[:80]!r}")
    return value


def _token(value: str, what: str) -> str:
    """``value`` if it is one non-empty word: no SP, controls or DEL."""
    if not _TOKEN_RE.fullmatch(value):
        raise LocalProtocolError(f"{what} must be one word without controls: {value[:80]!r}")
    return value


def _params(params: Sequence[str]) -> str:
    """ESMTP parameters (RFC 5321 §4.1.2 ``esmtp-param``), each a single word, SP-prefixed."""
    if isinstance(params, str):
        raise TypeError("params must be a sequence of parameters, not one string")
    return "".join(f" {_token(param, 'ESMTP parameter')}" for param in params)


def _xforward_values(attrs: Mapping[str, str]) -> dict[str, str]:
    """Upper-case names → values, checked: known names, xtext values of at most 255 octets."""
    values: dict[str, str] = {}
    for name, value in attrs.items():
        upper = name.upper()
        if upper not in _XFORWARD_NAMES or upper in values:
            raise LocalProtocolError(f"unknown or repeated XFORWARD attribute: {name[:40]!r}")
        if len(value) > _XFORWARD_MAX_VALUE or not is_xtext(value):
            raise LocalProtocolError(f"XFORWARD {upper} is not xtext of ≤255 octets")
        values[upper] = value
    return values


def _pack(verb: str, items: Sequence[str], limit: int) -> list[str]:
    """``verb item item ...`` lines of at most ``limit`` characters, items kept in order."""
    lines: list[str] = []
    line = verb
    for item in items:
        if line != verb and len(line) + 1 + len(item) > limit:
            lines.append(line)
            line = verb
        line += f" {item}"
    if line != verb:
        lines.append(line)
    return lines
