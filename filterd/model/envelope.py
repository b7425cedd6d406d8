"""Session (one client connection) and Transaction (one MAIL..end of data), as every front
door fills them: from the socket and XFORWARD (SMTP proxy), from macros (milter), from policy
attributes. Plugins read these; they never see a socket."""

from __future__ import annotations

import itertools
import secrets
import time
from dataclasses import dataclass, field

from filterd.model.notes import NoteKey, Notes
from filterd.model.reply import Reply
from filterd.model.xtext import xtext_decode

_id_base = int.from_bytes(secrets.token_bytes(5), "big")
_id_counter = itertools.count()


def new_queue_id() -> str:
    """A Postfix-looking queue id (10 upper-case hex digits), unique within the process: a
    random start (so restarts do not repeat ids) plus a counter (no syscall per message)."""
    return f"{(_id_base + next(_id_counter)) & 0xFFFFFFFFFF:010X}"


@dataclass(slots=True)
class Client:
    """Who is on the other end: the real peer, or the client named by XFORWARD."""

    address: str = "unknown"  # IP address text, or "unknown"
    port: int | None = None
    name: str = "unknown"  # reverse name as known, else "unknown"
    helo: str | None = None
    protocol: str = "SMTP"

    def describe(self) -> str:
        """Postfix style: name[addr]."""
        return f"{self.name}[{self.address}]"


@dataclass(slots=True)
class Session:
    """One connection to a listener."""

    id: str
    listener: str
    peer: Client
    tls: bool = False
    notes: Notes = field(default_factory=Notes)


SMTP_LOGIN = NoteKey[tuple[str, str]]("filterd.smtp.login")
"""Session note the SMTP door sets when its client authenticated (``AUTH``, answered 235):
``(sasl_method, sasl_username)``, as Postfix's policy requests name them
(filterd.sdk.policy_request shows them to plugins)."""


@dataclass(slots=True)
class Recipient:
    address: str
    params: tuple[str, ...] = ()
    reply: Reply | None = None  # the RCPT answer given to the client


@dataclass(slots=True)
class Xforwarded:
    """XFORWARD attributes of one transaction, as received (xtext), in arrival order."""

    attributes: dict[str, str] = field(default_factory=dict)

    def update(self, attributes: tuple[tuple[str, str], ...]) -> None:
        self.attributes.update(attributes)

    def decoded(self, name: str) -> str | None:
        raw = self.attributes.get(name)
        if raw is None:
            return None
        value = xtext_decode(raw)
        return None if value.upper() == "[UNAVAILABLE]" else value

    def client(self, fallback: Client) -> Client:
        """The original client as Postfix forwarded it (XFORWARD_README semantics: forwarded
        attributes replace the real ones, missing ones are unavailable, never mixed)."""
        addr = self.decoded("ADDR") or "unknown"
        if addr.upper().startswith("IPV6:"):
            addr = addr[5:]
        port_text = self.decoded("PORT")
        return Client(
            address=addr,
            port=int(port_text) if port_text and port_text.isdigit() else None,
            name=self.decoded("NAME") or "unknown",
            helo=self.decoded("HELO"),
            protocol=self.decoded("PROTO") or fallback.protocol,
        )


@dataclass(slots=True)
class Transaction:
    """One message: envelope so far. ``client`` is who the message came from (see Xforwarded)."""

    queue_id: str
    session: Session
    sender: str = ""
    mail_params: tuple[str, ...] = ()
    recipients: list[Recipient] = field(default_factory=list)
    xforward: Xforwarded | None = None
    size: int = 0
    notes: Notes = field(default_factory=Notes)
    # time.monotonic() at MAIL: the log's delay= (filterd.maillog.lines.Timing)
    arrived: float = field(default_factory=time.monotonic, compare=False, repr=False)

    @property
    def client(self) -> Client:
        if self.xforward is not None:
            return self.xforward.client(self.session.peer)
        return self.session.peer

    @property
    def accepted(self) -> list[Recipient]:
        return [r for r in self.recipients if r.reply is not None and r.reply.is_positive]
