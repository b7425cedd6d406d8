"""The milter front door's pure mappings (Postfix MILTER_README, libmilter's mfapi.h):

- Postfix's milter callbacks and macros → the chain's model (``Session``, ``Client``,
  ``Transaction``, ``Recipient``), so a plugin cannot tell which front door ran it;
- what the chain decided at a stage → a milter return code (``SMFIS_*``) and the
  ``setreply`` arguments (``render_stage``);
- what the chain decided at end of message → modification actions plus a return code
  (``plan_eom``), in the order the MTA must apply them.

Rendering (one table, like the policy map's):

==========================  =====================================================================
verdict                     milter answer
==========================  =====================================================================
Continue                    CONTINUE (at end of message: modifications, then CONTINUE)
Accept                      CONTINUE before end of message; ACCEPT for ``final`` at MAIL/RCPT
                            when nothing is pending (an earlier milter ACCEPT ends filtering and
                            so would lose edits due at end of message); ACCEPT at end of message
Reject(reply)               REJECT + ``setreply(code, status, text lines)`` (lone ``%`` doubled)
TempFail(reply)             TEMPFAIL + ``setreply(...)``
Discard(reason)             decided at any stage, answered at end of message: DISCARD
Quarantine(reason)          decided at any stage, answered at end of message: the edits,
                            ``quarantine(reason)`` (Postfix's hold queue), then ACCEPT
==========================  =====================================================================

Edits → modifications (all at end of message; Postfix applies them in the order sent):
``AddHeader(at_top)`` → ``insheader(0)``; ``AddHeader`` at the end → ``addheader``;
``InsertHeader(i)`` → ``insheader(i + tops added so far)``; ``ChangeHeader`` → ``chgheader`` with
Postfix's 1-based per-name index; ``RemoveHeader`` → ``chgheader(name, index, "")`` (last
occurrence first, so the indexes stay right); an edit naming an absent header is dropped (a
``chgheader`` beyond the last occurrence would *add* the header); ``AddRecipient`` →
``addrcpt``; ``RemoveRecipient`` → ``delrcpt``; ``Redirect`` (the last one) → ``delrcpt`` of each
of the message's recipients and ``addrcpt`` of its address; ``ChangeSender`` → ``chgfrom``;
``ReplaceBody`` → ``replacebody`` in chunks of at most 65535 bytes. The header simulation keeps
the chain's semantics (``filterd.model.headers.apply_header_edits``): headers added at the top
stay above everything, ``InsertHeader``/``ChangeHeader``/``RemoveHeader`` count only the other
headers.

Negotiation (``protocol_flags``): each header, each body chunk, and HELO/MAIL/RCPT when no
plugin implements ``on_helo``/``on_mail_from``/``on_rcpt``, are negotiated "no reply"
(``SMFIP_NR_*``), and end of headers is not sent (``SMFIP_NOEOH``): the callbacks still run
and the model and the spool are built exactly as before (macros still arrive), but Postfix does
not wait — it sends them together with the next step that has a reply. CONNECT, DATA and end
of message always get one.

Pure: no libmilter, no trio; the milter door (``filterd.frontdoors.milter``) performs the
actions. It takes the chain's outcome structurally (``OutcomeLike``), as the policy map does.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

from filterd.model.editing import expand_redirect
from filterd.model.edits import (
    AddHeader,
    AddRecipient,
    ChangeHeader,
    ChangeSender,
    Edit,
    InsertHeader,
    RemoveHeader,
    RemoveRecipient,
    ReplaceBody,
)
from filterd.model.envelope import Client, Recipient, Session, Transaction
from filterd.model.notes import NoteKey
from filterd.model.reply import Reply
from filterd.model.verdict import (
    Accept,
    Continue,
    Discard,
    Disposition,
    Quarantine,
    Reject,
    TempFail,
    Verdict,
    final_verdict,
)

__all__ = [
    "ACCEPT",
    "CONTINUE",
    "DISCARD",
    "FILTER_BUSY",
    "FILTER_FAILED",
    "FILTER_STOPPING",
    "FILTER_TIMEOUT",
    "MACRO_NAMES",
    "MAIL_MACRO_NAMES",
    "MILTER_MACROS",
    "NOREPLY",
    "QUIET_STAGES",
    "REJECT",
    "SMFIP_NOEOH",
    "SMFIP_NOUNKNOWN",
    "SMFIP_NR_BODY",
    "SMFIP_NR_EOH",
    "SMFIP_NR_HDR",
    "SMFIP_NR_HELO",
    "SMFIP_NR_MAIL",
    "SMFIP_NR_RCPT",
    "SMFIP_SKIP",
    "TEMPFAIL",
    "AddHeaderAction",
    "AddRcptAction",
    "ChangeFromAction",
    "ChangeHeaderAction",
    "DelRcptAction",
    "EndpointLike",
    "EomPlan",
    "InsertHeaderAction",
    "MilterAction",
    "OutcomeLike",
    "QuarantineAction",
    "ReplaceBodyAction",
    "Response",
    "SetReply",
    "apply_helo",
    "client_from_connect",
    "edit_actions",
    "escape_percent",
    "header_actions",
    "libmilter_socket",
    "plan_eom",
    "protocol_flags",
    "recipient_from_rcpt",
    "render_refusal",
    "render_stage",
    "session_from_connect",
    "strip_path",
    "transaction_from_mail",
    "update_macros",
]

# SMFIS_* return codes (libmilter's mfapi.h), the values pymilter's constants carry.
CONTINUE = 0
REJECT = 1
DISCARD = 2
ACCEPT = 3
TEMPFAIL = 4
NOREPLY = 7  # "no reply": only for a step negotiated with its SMFIP_NR_* bit

# SMFIP_* protocol bits filterd may ask for (libmilter's mfdef.h).
SMFIP_NOEOH = 0x40
SMFIP_NR_HDR = 0x80
SMFIP_NOUNKNOWN = 0x100
SMFIP_SKIP = 0x400
SMFIP_NR_HELO = 0x2000
SMFIP_NR_MAIL = 0x4000
SMFIP_NR_RCPT = 0x8000
SMFIP_NR_EOH = 0x40000
SMFIP_NR_BODY = 0x80000

QUIET_STAGES: Mapping[str, int] = MappingProxyType(
    {"on_helo": SMFIP_NR_HELO, "on_mail_from": SMFIP_NR_MAIL, "on_rcpt": SMFIP_NR_RCPT}
)
"""Envelope stages answered "no reply" when no plugin of the chain implements them."""

BODY_CHUNK = 65535  # MILTER_CHUNK_SIZE: the largest replacebody chunk

# The milter front door's own refusals (not the chain's): all transient, never cost mail.
FILTER_BUSY = Reply(451, "4.3.2", "Error: mail filter busy, try again later")
FILTER_STOPPING = Reply(451, "4.3.2", "Error: mail filter shutting down, try again later")
FILTER_TIMEOUT = Reply(451, "4.4.5", "Error: message check timed out, try again later")
FILTER_FAILED = Reply(451, "4.3.0", "Error: internal error, try again later")

MACRO_NAMES: tuple[str, ...] = (
    "j",
    "_",
    "v",
    "i",
    "{daemon_name}",
    "{daemon_addr}",
    "{daemon_port}",
    "{client_addr}",
    "{client_name}",
    "{client_port}",
    "{client_ptr}",
    "{tls_version}",
    "{cipher}",
    "{cipher_bits}",
    "{cert_subject}",
    "{cert_issuer}",
    "{auth_type}",
    "{auth_authen}",
    "{auth_author}",
    "{mail_addr}",
    "{mail_host}",
    "{mail_mailer}",
    "{rcpt_addr}",
    "{rcpt_host}",
    "{rcpt_mailer}",
)
"""The macros the service asks libmilter for (it cannot list them): Postfix's defaults plus
``{client_*}`` (sent when the admin lists them in ``milter_connect_macros``)."""

MAIL_MACRO_NAMES: tuple[str, ...] = ("i", "{auth_type}", "{auth_authen}")
"""The macros ``transaction_from_mail`` reads. At MAIL the milter door asks for these alone
when no plugin runs at MAIL: every macro is read again at the next step that needs them (RCPT
with a plugin, end of message), and libmilter still has the MAIL ones then."""

MILTER_MACROS = NoteKey[Mapping[str, str]]("filterd.milter.macros")
"""Session note: every macro Postfix sent so far (name → value, names as in ``MACRO_NAMES``),
for plugins that need more than the model carries (like ``POLICY_ATTRIBUTES``)."""


# ------------------------------------------------------------------------------ negotiation
def protocol_flags(stages: Collection[str]) -> int:
    """The ``SMFIP_*`` bits to ask the MTA for, given the stages the chain implements.

    - No reply to headers and body chunks, and no end-of-headers step at all (the service
      spools the blank line itself; Postfix still sends that step's macros): filterd never
      refuses there — a failure there is answered at the next step that has a reply.
    - No reply to HELO, MAIL and RCPT when no plugin implements ``on_helo``,
      ``on_mail_from``, ``on_rcpt``: the chain cannot refuse there (a stop that begins before
      such a MAIL refuses the message at DATA instead, before any content).
    - A reply always to CONNECT (busy, stopping) and end of message (the verdict), and to
      DATA although filterd refuses there only for an earlier step: DATA is the last step
      smtpd(8) sends before cleanup(8) takes the milter connection over and sends the
      content. With DATA unanswered, cleanup's first small write waits behind smtpd's for the
      delayed ACK (Nagle): ~40 ms per message on loopback TCP, measured 208 instead of 413
      msg/s. The DATA reply costs one round trip.
    - No UNKNOWN commands (nothing to say about them); SKIP allowed (as pymilter asked).

    Every other step is sent: its data or macros build the model plugins see."""
    flags = SMFIP_NOUNKNOWN | SMFIP_SKIP | SMFIP_NR_HDR | SMFIP_NOEOH | SMFIP_NR_EOH
    flags |= SMFIP_NR_BODY
    for stage, bit in QUIET_STAGES.items():
        if stage not in stages:
            flags |= bit
    return flags


# ------------------------------------------------------------------------------ sockets
class EndpointLike(Protocol):
    """The part of ``filterd.config.types.Endpoint`` the socket syntax needs."""

    @property
    def kind(self) -> str: ...

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def path(self) -> str: ...


def libmilter_socket(endpoint: EndpointLike) -> str:
    """filterd's address form → libmilter's ``smfi_setconn`` syntax: ``inet:PORT@HOST``,
    ``inet6:PORT@HOST`` or ``unix:/path`` (smfi_setconn(3): it differs from Postfix's)."""
    if endpoint.kind == "unix":
        return f"unix:{endpoint.path}"
    family = "inet6" if ":" in endpoint.host else "inet"
    return f"{family}:{endpoint.port}@{endpoint.host}"


# ------------------------------------------------------------------------------ envelope
def _port(text: str | None) -> int | None:
    return int(text) if text and text.isascii() and text.isdigit() else None


def client_from_connect(hostname: str, hostaddr: object, macros: Mapping[str, str]) -> Client:
    """The SMTP client as Postfix's CONNECT describes it. ``hostname`` is the verified
    reverse name or ``[address]`` when there is none (Postfix's ``unknown``); ``hostaddr`` is
    ``(ip, port)`` (IPv4), a 4-tuple (IPv6), a path (unix) or None. The ``{client_*}`` macros,
    when sent, win: they are exactly what Postfix's own smtpd logs."""
    address = "unknown"
    port: int | None = None
    if isinstance(hostaddr, tuple) and len(hostaddr) >= 2:
        address, raw_port = str(hostaddr[0]), hostaddr[1]
        port = raw_port if isinstance(raw_port, int) and raw_port > 0 else None
    name = hostname or "unknown"
    if name.startswith("[") and name.endswith("]"):
        name = "unknown"
    address = macros.get("{client_addr}") or address
    if address.upper().startswith("IPV6:"):
        address = address[5:]
    return Client(
        address=address,
        port=_port(macros.get("{client_port}")) or port,
        name=macros.get("{client_name}") or name,
        protocol="SMTP",
    )


def session_from_connect(
    hostname: str,
    hostaddr: object,
    macros: Mapping[str, str],
    *,
    session_id: str,
    listener: str,
) -> Session:
    session = Session(
        id=session_id, listener=listener, peer=client_from_connect(hostname, hostaddr, macros)
    )
    session.notes.set(MILTER_MACROS, MappingProxyType(dict(macros)))
    return session


def update_macros(session: Session, macros: Mapping[str, str]) -> None:
    """Remember macros sent at a later stage (libmilter keeps earlier stages' values too)."""
    previous: Mapping[str, str] = session.notes.get(MILTER_MACROS) or {}
    merged = {**previous, **macros}
    session.notes.set(MILTER_MACROS, MappingProxyType(merged))


def apply_helo(session: Session, heloname: str, macros: Mapping[str, str]) -> None:
    """HELO/EHLO: the name, and TLS (Postfix sends ``{tls_version}``/``{cipher}`` at HELO)."""
    update_macros(session, macros)
    session.peer.helo = heloname
    if macros.get("{tls_version}") or macros.get("{cipher}"):
        session.tls = True


def _protocol(session: Session, params: Sequence[str], macros: Mapping[str, str]) -> str:
    """Postfix does not send the protocol name to milters: ESMTP when MAIL carried ESMTP
    parameters (only EHLO allows them), S for TLS and A for authentication, as Postfix logs."""
    esmtp = bool(params) or session.tls or bool(macros.get("{auth_type}"))
    if not esmtp:
        return "SMTP"
    return "ESMTP" + ("S" if session.tls else "") + ("A" if macros.get("{auth_authen}") else "")


def strip_path(path: str) -> str:
    """``<a@b>`` → ``a@b`` (the SMTP proxy's form); ``<>`` → ``""``."""
    path = path.strip()
    if path.startswith("<") and path.endswith(">"):
        path = path[1:-1]
    return path


def transaction_from_mail(
    session: Session, mailfrom: str, params: Sequence[str], macros: Mapping[str, str]
) -> Transaction:
    """MAIL FROM. The queue id is Postfix's (``i``) once sent — Postfix picks it only after
    the first accepted RCPT, so usually from DATA on — else ``NOQUEUE``."""
    update_macros(session, macros)
    session.peer.protocol = _protocol(session, params, macros)
    return Transaction(
        queue_id=macros.get("i") or "NOQUEUE",
        session=session,
        sender=strip_path(mailfrom),
        mail_params=tuple(params),
    )


def recipient_from_rcpt(to: str, params: Sequence[str]) -> Recipient:
    return Recipient(strip_path(to), tuple(params))


# ------------------------------------------------------------------------------ rendering
class OutcomeLike(Protocol):
    """The part of ``filterd.chain.outcome.Outcome`` rendering needs."""

    @property
    def verdict(self) -> Verdict: ...

    @property
    def edits(self) -> tuple[Edit, ...]: ...


@dataclass(frozen=True, slots=True)
class SetReply:
    """Arguments of ``setreply(rcode, xcode, msg, *more)``, ``%`` already doubled."""

    rcode: str
    xcode: str
    lines: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Response:
    """A callback's answer: the ``SMFIS_*`` code and, for refusals, the reply to set."""

    code: int
    reply: SetReply | None = None


# The answers without a reply, made once (frozen: shared by every message).
_ACCEPT_RESPONSE = Response(ACCEPT)
_CONTINUE_RESPONSE = Response(CONTINUE)
_DISCARD_RESPONSE = Response(DISCARD)


def escape_percent(text: str) -> str:
    """libmilter formats reply text with ``%``: every ``%`` must be doubled."""
    return text.replace("%", "%%")


def render_refusal(code: int, reply: Reply) -> Response:
    status = reply.status or ("5.0.0" if reply.is_permanent else "4.0.0")
    lines = tuple(escape_percent(line) for line in reply.lines())[:32]
    return Response(code, SetReply(str(reply.code), status, lines))


def render_stage(verdict: Verdict, *, may_accept: bool = False) -> Response:
    """The answer before end of message. ``may_accept``: the stage is MAIL or RCPT and no
    edit or disposition waits for end of message, so ``Accept(final=True)`` can be ACCEPT."""
    match verdict:
        case Reject(reply=reply):
            return render_refusal(REJECT, reply)
        case TempFail(reply=reply):
            return render_refusal(TEMPFAIL, reply)
        case Accept(final=True) if may_accept:
            return _ACCEPT_RESPONSE
        case _:  # Continue, Accept, and Discard/Quarantine (answered at end of message)
            return _CONTINUE_RESPONSE


@dataclass(frozen=True, slots=True)
class AddHeaderAction:
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class InsertHeaderAction:
    index: int  # 0 = above every header the milter saw
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class ChangeHeaderAction:
    name: str
    index: int  # 1-based among the headers called ``name``
    value: str  # "" deletes


@dataclass(frozen=True, slots=True)
class AddRcptAction:
    rcpt: str  # <address>
    params: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DelRcptAction:
    rcpt: str


@dataclass(frozen=True, slots=True)
class ChangeFromAction:
    sender: str
    params: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReplaceBodyAction:
    chunk: bytes


@dataclass(frozen=True, slots=True)
class QuarantineAction:
    reason: str


MilterAction = (
    AddHeaderAction
    | InsertHeaderAction
    | ChangeHeaderAction
    | AddRcptAction
    | DelRcptAction
    | ChangeFromAction
    | ReplaceBodyAction
    | QuarantineAction
)


@dataclass(frozen=True, slots=True)
class EomPlan:
    actions: tuple[MilterAction, ...]
    response: Response


# A header in the simulated list: (name, name in lower case, added at the top by an edit: it
# stays above everything and edits do not count it). Tuples, not objects: this runs per message.
_Field = tuple[str, str, bool]


def _per_name_index(fields: list[_Field], position: int) -> int:
    """Postfix's 1-based index of ``fields[position]`` among the fields with its name."""
    key = fields[position][1]
    return [f[1] for f in fields[: position + 1]].count(key)


def _targets(fields: list[_Field], name: str) -> list[int]:
    """The positions of the fields called ``name`` that edits count (not added at the top)."""
    key = name.lower()
    return [i for i, (_, lower, top) in enumerate(fields) if lower == key and not top]


def header_actions(header_names: Sequence[str], edits: Sequence[Edit]) -> list[MilterAction]:
    """Header edits → modifications, simulating the header list as Postfix changes it."""
    fields: list[_Field] = [(name, name.lower(), False) for name in header_names]
    tops = 0
    actions: list[MilterAction] = []
    for edit in edits:
        match edit:
            case AddHeader(name=name, value=value, at_top=True):
                fields.insert(0, (name, name.lower(), True))
                tops += 1
                actions.append(InsertHeaderAction(0, name, value))
            case AddHeader(name=name, value=value):
                fields.append((name, name.lower(), False))
                actions.append(AddHeaderAction(name, value))
            case InsertHeader(index=index, name=name, value=value):
                position = tops + max(0, min(index, len(fields) - tops))
                fields.insert(position, (name, name.lower(), False))
                actions.append(InsertHeaderAction(position, name, value))
            case ChangeHeader(name=name, value=value, occurrence=n):
                targets = _targets(fields, name)
                if len(targets) >= n:
                    position = targets[n - 1]
                    index = _per_name_index(fields, position)
                    actions.append(ChangeHeaderAction(fields[position][0], index, value))
            case RemoveHeader(name=name, occurrence=n):
                targets = _targets(fields, name)
                doomed = targets if n == 0 else targets[n - 1 : n]
                for position in reversed(doomed):
                    index = _per_name_index(fields, position)
                    actions.append(ChangeHeaderAction(fields[position][0], index, ""))
                    del fields[position]
            case _:
                pass
    return actions


def _angle(address: str) -> str:
    return f"<{address}>"


def edit_actions(header_names: Sequence[str], edits: Sequence[Edit]) -> list[MilterAction]:
    """Every edit → modifications: headers in order, then the body, then the envelope."""
    if not edits:  # most messages: nothing to simulate
        return []
    actions = header_actions(header_names, edits)
    bodies = [e.body for e in edits if isinstance(e, ReplaceBody)]
    if bodies:
        body = bodies[-1]
        chunks = [body[i : i + BODY_CHUNK] for i in range(0, len(body), BODY_CHUNK)] or [b""]
        actions.extend(ReplaceBodyAction(chunk) for chunk in chunks)
    for edit in edits:
        match edit:
            case AddRecipient(address=address, params=params):
                actions.append(AddRcptAction(_angle(address), params))
            case RemoveRecipient(address=address):
                actions.append(DelRcptAction(_angle(address)))
            case ChangeSender(address=address, params=params):
                actions.append(ChangeFromAction(_angle(address), params))
            case _:
                pass
    return actions


def plan_eom(
    outcome: OutcomeLike,
    header_names: Sequence[str],
    *,
    earlier_edits: Sequence[Edit] = (),
    disposition: Disposition | None = None,
    recipients: Sequence[str] = (),
) -> EomPlan:
    """The answer at end of message. ``earlier_edits`` come from the envelope stages;
    ``disposition`` is a Discard/Quarantine decided before end of message (it wins unless the
    message stage refuses, as in the SMTP proxy: ``final_verdict``). ``header_names``: the
    headers the milter received, in order; ``recipients``: the message's, which a
    ``Redirect`` removes (``delrcpt``) before adding its address (``addrcpt``)."""
    verdict = final_verdict(outcome.verdict, disposition)
    edits = expand_redirect([*earlier_edits, *outcome.edits], recipients)
    match verdict:
        case Reject(reply=reply):
            return EomPlan((), render_refusal(REJECT, reply))
        case TempFail(reply=reply):
            return EomPlan((), render_refusal(TEMPFAIL, reply))
        case Discard():
            return EomPlan((), _DISCARD_RESPONSE)
        case Quarantine(reason=reason):
            actions = [*edit_actions(header_names, edits), QuarantineAction(reason)]
            return EomPlan(tuple(actions), _ACCEPT_RESPONSE)
        case Accept():
            return EomPlan(tuple(edit_actions(header_names, edits)), _ACCEPT_RESPONSE)
        case Continue():
            return EomPlan(tuple(edit_actions(header_names, edits)), _CONTINUE_RESPONSE)
