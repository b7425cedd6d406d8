"""Events the SMTP/LMTP server codec produces. Frozen data; parsing lives in the parsers."""

from __future__ import annotations

from dataclasses import dataclass, field

from filterd.model.reply import Reply
from filterd.protocols.smtp.common import ConnectionClosed as ConnectionClosed  # an event too


@dataclass(frozen=True, slots=True)
class Hello:
    """EHLO, HELO or LHLO with the client's announced name. Answer with ``ehlo_reply`` or 250."""

    verb: str
    name: str


@dataclass(frozen=True, slots=True)
class MailFrom:
    """MAIL FROM. ``address`` is the reverse-path without brackets ("" = null sender).

    ``params`` keeps the ESMTP parameters exactly as received, for verbatim pass-through.
    """

    address: str
    params: tuple[str, ...] = ()
    size: int | None = None
    smtputf8: bool = False


@dataclass(frozen=True, slots=True)
class RcptTo:
    """RCPT TO. ``address`` without brackets; ``params`` as received (NOTIFY=, ORCPT=)."""

    address: str
    params: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Data:
    """DATA. Answer 354 to start receiving content, anything else to refuse."""


@dataclass(frozen=True, slots=True)
class BodyChunk:
    """Message content as it arrives: dot-unstuffed, CRLF line ends. No reply."""

    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfData:
    """The CRLF.CRLF that ends DATA. ``rejection`` is set when the content broke a limit:
    the content was dropped and that reply must be given. In LMTP mode one reply per accepted
    recipient is owed."""

    size: int
    rejection: Reply | None = None


@dataclass(frozen=True, slots=True)
class Reset:
    """RSET."""


@dataclass(frozen=True, slots=True)
class Noop:
    """NOOP."""


@dataclass(frozen=True, slots=True)
class Quit:
    """QUIT. Answer 221; the connection then closes."""


@dataclass(frozen=True, slots=True)
class Vrfy:
    """VRFY (answered 252 by filterd: it cannot verify, but will accept)."""

    argument: str


@dataclass(frozen=True, slots=True)
class Help:
    """HELP."""


@dataclass(frozen=True, slots=True)
class StartTls:
    """STARTTLS. Answer 220 and call ``start_tls`` once the handshake is under way."""


@dataclass(frozen=True, slots=True)
class Auth:
    """AUTH (RFC 4954), offered and allowed here. ``mechanism`` upper case; ``initial_response``
    as sent (base64, ``"="`` for an empty one), ``None`` without one. Answer 334 with a
    challenge (the next line is then an ``AuthResponse``), or end the exchange with 235 or a
    failure."""

    mechanism: str
    initial_response: str | None = None


@dataclass(frozen=True, slots=True)
class AuthResponse:
    """The client's line after a 334 challenge: base64, or ``"*"`` to give up. Answer as
    ``Auth``."""

    data: str


@dataclass(frozen=True, slots=True)
class Xforward:
    """XFORWARD from an authorised client. ``attributes`` maps upper-case names to xtext values,
    kept exactly as received so they can be re-emitted."""

    attributes: tuple[tuple[str, str], ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class BadCommand:
    """A command the codec refused by itself. Send ``reply``; when ``fatal`` the session ends."""

    reply: Reply
    fatal: bool = False


ServerEvent = (
    Hello
    | MailFrom
    | RcptTo
    | Data
    | BodyChunk
    | EndOfData
    | Reset
    | Noop
    | Quit
    | Vrfy
    | Help
    | StartTls
    | Auth
    | AuthResponse
    | Xforward
    | BadCommand
    | ConnectionClosed
)
