"""The policy front door's two pure mappings (Postfix SMTPD_POLICY_README, access(5)):

- a request's attributes → the chain's model (``Session``, ``Transaction``, ``Recipient``) and
  the stages to run (``request_to_envelope``);
- what the chain decided → one access(5) action (``render_action`` / ``plan_action``).

Stages per ``protocol_state`` (each request carries the whole envelope so far, so the stages
before it run too, in SMTP order, and plugins see what the SMTP proxy shows them):

============================  ==========================================================
protocol_state                stages
============================  ==========================================================
CONNECT                       connect
EHLO, HELO, VRFY, ETRN        connect, helo
MAIL                          connect, helo, mail_from
RCPT                          connect, helo, mail_from, rcpt
DATA, END-OF-MESSAGE          connect, helo, mail_from (+ rcpt when ``recipient`` is set,
                              i.e. exactly one recipient)
anything else                 connect, helo
============================  ==========================================================

``helo`` is skipped when ``helo_name`` is empty (no HELO/EHLO yet). VRFY and ETRN open no
transaction, so no ``on_rcpt`` runs for them.

Rendering (one action per answer; access(5) and Postfix ``check_table_result``):

============================  ==========================================================
outcome                       action
============================  ==========================================================
Continue                      ``DUNNO``, or ``PREPEND name: value`` for its first
                              AddHeader (one header per answer: access(5) takes one
                              action; the others are reported as dropped)
Accept                        like Continue; ``OK`` only with ``accept_as_ok`` (an early OK
                              ends Postfix's restriction list and can open a relay)
Reject(reply)                 ``{code} {status} {text}``: the numeric form keeps our exact
                              code (REJECT would become $access_map_reject_code 554)
TempFail(reply)               ``{code} {status} {text}`` too: immediate, exact code (e.g.
                              451 4.4.5 for a plugin timeout). DEFER_IF_PERMIT would become
                              450 and only act if a later restriction permits; DEFER would
                              become $access_map_defer_code 450
Discard(reason)               ``DISCARD reason`` (Postfix: all recipients of the message)
Continue / Accept with a      ``REDIRECT address`` (the last Redirect; Postfix sends the
Redirect edit                 message there instead of all its recipients); a header it
                              cannot carry too is reported as dropped
Quarantine(reason)            ``HOLD reason`` (Postfix's hold queue; all recipients)
a pending DeferIf             ``DEFER_IF_PERMIT {status} {text}`` (or ``DEFER_IF_REJECT``):
                              Continue or Accept with ``conditional`` set, and the TempFail
                              a DEFER_IF_PERMIT made of a permit. Postfix holds it over its
                              own later restrictions, as for an access table's
                              (``$access_map_defer_code``, 450)
============================  ==========================================================

A numeric action always has text after the code: Postfix reads an all-digit action as ``OK``.
A 421/521 code makes Postfix answer it and disconnect the client. Postfix prefixes the text
with ``<address>: Recipient address rejected:`` (or Sender/Client/Helo), as for any access
table. PREPEND is offered only where Postfix honours it: RCPT and DATA (not before MAIL has
succeeded, not at END-OF-MESSAGE) — see ``prepend_allowed``.

Pure: imports only the model. It takes the chain's ``Outcome`` structurally (``OutcomeLike``)
so that ``filterd.protocols`` does not depend on ``filterd.chain`` (the layers in
docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, NamedTuple, Protocol

from filterd.model.edits import AddHeader, Edit, Redirect
from filterd.model.envelope import Client, Recipient, Session, Transaction
from filterd.model.notes import NoteKey
from filterd.model.reply import Reply
from filterd.model.verdict import (
    Accept,
    Continue,
    DeferIf,
    Discard,
    Quarantine,
    Reject,
    TempFail,
    Verdict,
)

__all__ = [
    "POLICY_ATTRIBUTES",
    "STAGE_ORDER",
    "OutcomeLike",
    "PolicyAction",
    "PolicyEnvelope",
    "Stage",
    "header_key",
    "message_key",
    "plan_action",
    "prepend_allowed",
    "render_action",
    "request_to_envelope",
]

Stage = Literal["connect", "helo", "mail_from", "rcpt"]
STAGE_ORDER: tuple[Stage, ...] = ("connect", "helo", "mail_from", "rcpt")

POLICY_ATTRIBUTES = NoteKey[Mapping[str, str]]("filterd.policy.attributes")
"""Session note: every attribute of the request being answered (``reverse_client_name``,
``sasl_username``, ``ccert_*``, ``policy_context``, ...), for plugins that need more than the
model carries."""

_DEEPEST: dict[str, Stage] = {
    "CONNECT": "connect",
    "EHLO": "helo",
    "HELO": "helo",
    "VRFY": "helo",
    "ETRN": "helo",
    "MAIL": "mail_from",
    "RCPT": "rcpt",
    "DATA": "mail_from",
    "END-OF-MESSAGE": "mail_from",
}
_WITH_RECIPIENT = frozenset({"RCPT", "DATA", "END-OF-MESSAGE"})
_IN_MESSAGE = frozenset({"RCPT", "DATA", "END-OF-MESSAGE"})
_PREPEND_STATES = frozenset({"RCPT", "DATA"})

GENERIC_REFUSAL_TEXT = "Access denied"  # Postfix's own text for a reject without one


class PolicyEnvelope(NamedTuple):
    """What one request says, in the chain's terms."""

    session: Session
    transaction: Transaction
    recipient: Recipient | None
    stage: Stage  # the deepest stage this request reaches

    @property
    def stages(self) -> tuple[Stage, ...]:
        """The stages to run, in order: every stage up to ``stage`` (``helo`` only after a
        HELO/EHLO; ``rcpt`` only with a recipient)."""
        return _STAGES[self.stage, self.session.peer.helo is None, self.recipient is not None]


def _stages(deepest: Stage, no_helo: bool, recipient: bool) -> tuple[Stage, ...]:
    last = STAGE_ORDER.index(deepest)
    stages: list[Stage] = [
        s for s in STAGE_ORDER[: last + 1] if s != "rcpt" and not (s == "helo" and no_helo)
    ]
    if recipient:
        stages.append("rcpt")
    return tuple(stages)


_STAGES = {
    (deepest, no_helo, recipient): _stages(deepest, no_helo, recipient)
    for deepest in STAGE_ORDER
    for no_helo in (False, True)
    for recipient in (False, True)
}


def _number(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() else None


def request_to_envelope(
    attrs: Mapping[str, str], *, session_id: str = "", listener: str = "policy"
) -> PolicyEnvelope:
    """Build the model from one request. Missing attributes count as empty (Postfix may send
    an attribute empty, leave it out, or send ``0``); unknown ones are only kept in the
    ``POLICY_ATTRIBUTES`` note. ``queue_id`` is ``NOQUEUE`` until Postfix has one (it is empty
    at RCPT), as in Postfix's own reject logging."""
    state = attrs.get("protocol_state", "").upper()
    client = Client(
        address=attrs.get("client_address") or "unknown",
        port=_number(attrs.get("client_port", "")),
        name=attrs.get("client_name") or "unknown",
        helo=attrs.get("helo_name") or None,
        protocol=attrs.get("protocol_name") or "SMTP",
    )
    session = Session(
        id=session_id,
        listener=listener,
        peer=client,
        tls=bool(attrs.get("encryption_protocol")),
    )
    # The codec hands over a read-only view of a dict it no longer touches: no copy needed.
    view = attrs if isinstance(attrs, MappingProxyType) else MappingProxyType(dict(attrs))
    session.notes.set(POLICY_ATTRIBUTES, view)
    transaction = Transaction(
        queue_id=attrs.get("queue_id") or "NOQUEUE",
        session=session,
        sender=attrs.get("sender", ""),
        size=_number(attrs.get("size", "")) or 0,
    )
    address = attrs.get("recipient", "")
    recipient = Recipient(address) if address and state in _WITH_RECIPIENT else None
    return PolicyEnvelope(session, transaction, recipient, _DEEPEST.get(state, "helo"))


def message_key(attrs: Mapping[str, str]) -> tuple[str, ...] | None:
    """Identifies one message on one policy connection, or None when a request cannot be tied
    to one. Postfix sets ``instance`` only once MAIL FROM has been accepted; before that
    (CONNECT, HELO, MAIL, VRFY, ETRN) it still carries the previous message's value, maybe from
    another client, so only RCPT, DATA and END-OF-MESSAGE requests are keyed. The client and
    sender are part of the key as a guard against a peer that reuses instance values."""
    instance = attrs.get("instance", "")
    if not instance or attrs.get("protocol_state", "").upper() not in _IN_MESSAGE:
        return None
    return (
        instance,
        attrs.get("client_address", ""),
        attrs.get("client_port", ""),
        attrs.get("sender", ""),
    )


def prepend_allowed(protocol_state: str) -> bool:
    """PREPEND works only inside a mail transaction and before the content: Postfix skips it
    (with a warning) while no MAIL FROM has been accepted and ignores it at END-OF-MESSAGE."""
    return protocol_state.upper() in _PREPEND_STATES


# ------------------------------------------------------------------------------ rendering
class OutcomeLike(Protocol):
    """The part of ``filterd.chain.outcome.Outcome`` rendering needs."""

    @property
    def verdict(self) -> Verdict: ...

    @property
    def edits(self) -> tuple[Edit, ...]: ...

    @property
    def conditional(self) -> DeferIf | None: ...


@dataclass(frozen=True, slots=True)
class PolicyAction:
    """An action line and what it could not carry (for the shell to log)."""

    action: str
    header: AddHeader | None = None  # the header the action prepends
    dropped: tuple[Edit, ...] = ()  # edits the policy protocol cannot express here


def _one_line(text: str) -> str:
    """Text safe inside one action line: reply lines joined, no CR/LF/NUL or other C0."""
    if "\n" not in text and text.isprintable():  # the common case: nothing to change
        return text.strip()
    lines = (line.strip() for line in text.split("\n"))
    joined = " ".join(line for line in lines if line)
    return "".join(c if c >= " " or c == "\t" else " " for c in joined).strip()


def _numeric(reply: Reply) -> str:
    text = _one_line(reply.text)
    if not reply.status and not text:
        text = GENERIC_REFUSAL_TEXT  # "550" alone is all-numeric: Postfix would read OK
    return " ".join(part for part in (str(reply.code), reply.status, text) if part)


def _with_text(command: str, text: str) -> str:
    text = _one_line(text)
    return f"{command} {text}" if text else command


def _deferral(held: DeferIf) -> str:
    command = "DEFER_IF_PERMIT" if held.when == "permit" else "DEFER_IF_REJECT"
    return " ".join(
        part for part in (command, held.reply.status, _one_line(held.reply.text)) if part
    )


def _prepend(header: AddHeader) -> str:
    # Unfold (RFC 5322 §2.2.3: remove each line break; continuation lines start with WSP).
    value = _one_line(header.value.replace("\r\n", "").replace("\n", ""))
    return f"PREPEND {header.name}: {value}"


def _key(header: AddHeader) -> tuple[str, str]:
    return (header.name.lower(), header.value)


def plan_action(
    outcome: OutcomeLike,
    *,
    accept_as_ok: bool = False,
    prepend: bool = True,
    already_prepended: Collection[tuple[str, str]] = (),
) -> PolicyAction:
    """The action for ``outcome``. ``prepend=False`` where Postfix ignores PREPEND (see
    ``prepend_allowed``); ``already_prepended`` holds ``header_key``s sent earlier for the same
    message, so a header every recipient's check produces is prepended once."""
    verdict = outcome.verdict
    edits = outcome.edits
    held = outcome.conditional
    match verdict:
        case TempFail(reply=reply) if (
            held is not None and held.when == "permit" and (held.reply == reply)
        ):
            return PolicyAction(_deferral(held), dropped=edits)
        case Reject(reply=reply) | TempFail(reply=reply):
            return PolicyAction(_numeric(reply), dropped=edits)
        case Discard(reason=reason):
            return PolicyAction(_with_text("DISCARD", reason), dropped=edits)
        case Quarantine(reason=reason):
            return PolicyAction(_with_text("HOLD", reason), dropped=edits)
        case Accept() | Continue() if held is not None:
            return PolicyAction(_deferral(held), dropped=edits)
        case Accept() | Continue() if any(isinstance(e, Redirect) for e in edits):
            target = [e for e in edits if isinstance(e, Redirect)][-1]
            others = tuple(e for e in edits if e is not target)
            return PolicyAction(f"REDIRECT {_one_line(target.address)}", dropped=others)
        case Accept() if accept_as_ok:
            return PolicyAction("OK", dropped=edits)
        case Accept() | Continue():
            pass
    if not edits:  # the common case: nothing to prepend or to drop
        return _DUNNO
    header: AddHeader | None = None
    if prepend:
        for edit in edits:
            if isinstance(edit, AddHeader) and _key(edit) not in already_prepended:
                header = edit
                break
    dropped = tuple(
        e
        for e in edits
        if e is not header and not (isinstance(e, AddHeader) and _key(e) in already_prepended)
    )
    if header is None:
        return PolicyAction("DUNNO", dropped=dropped)
    return PolicyAction(_prepend(header), header=header, dropped=dropped)


_DUNNO = PolicyAction("DUNNO")


def header_key(header: AddHeader) -> tuple[str, str]:
    """How ``already_prepended`` identifies a header: name (any case) and value."""
    return _key(header)


def render_action(
    outcome: OutcomeLike,
    *,
    accept_as_ok: bool = False,
    prepend: bool = True,
    already_prepended: Collection[tuple[str, str]] = (),
) -> str:
    """The access(5) action for ``outcome`` (see the module table)."""
    return plan_action(
        outcome, accept_as_ok=accept_as_ok, prepend=prepend, already_prepended=already_prepended
    ).action
