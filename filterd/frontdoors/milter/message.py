"""The milter door's message in progress on one MTA connection, and its end.

``MilterMessage``: its transaction, what the envelope stages left for end of message (edits, a
Discard or Quarantine), whether a stop waits for it, and the spool its headers and body are
written to (opened at DATA or the first header: a message refused before its content costs no
spool). ``perform``: an end-of-message plan (``milter_map.plan_eom``) carried out on the MTA
connection, in order; ``log_result``: its log lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from filterd.maillog import MailLog, smtpd_line
from filterd.maillog.lines import envelope_line
from filterd.model import metrics
from filterd.model.edits import Edit
from filterd.model.envelope import Transaction
from filterd.model.reply import Reply
from filterd.model.spool import Spool
from filterd.model.verdict import Discard, Disposition, Verdict
from filterd.protocols.milter_map import (
    DISCARD,
    REJECT,
    TEMPFAIL,
    AddHeaderAction,
    AddRcptAction,
    ChangeFromAction,
    ChangeHeaderAction,
    DelRcptAction,
    EomPlan,
    InsertHeaderAction,
    QuarantineAction,
    ReplaceBodyAction,
    Response,
)

__all__ = ["MilterMessage", "Modifier", "log_result", "outcome_of", "perform"]

log = MailLog("milter")

HEADER_BATCH = 64 * 1024
"""Bytes of headers (names and values as libmilter gives them) kept back before they go to the
spool (they go at the end of the header section, or once this many wait: a message's headers
are never held whole in memory)."""


@dataclass(slots=True)
class MilterMessage:
    """One message, MAIL to end of message (or abort)."""

    t: Transaction
    spool_memory: int  # bytes kept in memory before the spool goes to a file
    spool_dir: Path | None
    edits: list[Edit] = field(default_factory=list)  # from MAIL/RCPT, sent at end of message
    disposition: Disposition | None = None
    counted: bool = False  # in bridge.messages (a stop waits for it)
    # Why the message must be refused at its next step with a reply: a stop that began
    # before a MAIL without reply, or a failure in a step without reply.
    refusal: Reply | None = None
    _spool: Spool | None = None
    _in_body: bool = False  # the blank line after the headers is spooled
    # Headers not yet in the spool, as libmilter gave them (name, raw value): turned into
    # lines and written with the blank line after them in one write (a spool write, even a
    # line built, per header cost more than the header), or once they pass HEADER_BATCH.
    _headers: list[tuple[str, bytes]] = field(default_factory=list)
    _headers_size: int = 0

    def spool(self) -> Spool:
        if self._spool is None:
            self._spool = Spool(self.spool_memory, self.spool_dir)
        return self._spool

    def write_header(self, name: str, value: bytes) -> None:
        """One header as libmilter gives it (LF line ends inside folded values; CRLF in the
        spool)."""
        if self._in_body:  # libmilter sends none after the body; kept in order if it did
            self.spool().write(_header_line(name, value))
            return
        if self._spool is None:
            self._spool = Spool(self.spool_memory, self.spool_dir)
        self._headers.append((name, value))
        self._headers_size += len(name) + len(value)
        if self._headers_size >= HEADER_BATCH:
            self._write_headers()

    def _write_headers(self, *after: bytes) -> None:
        spool = self.spool()
        lines = [_header_line(name, value) for name, value in self._headers]
        spool.write(b"".join((*lines, *after)))
        self._headers.clear()
        self._headers_size = 0

    def end_headers(self) -> Spool:
        """The blank line after the headers, once: at EOH, or (EOH not sent, SMFIP_NOEOH)
        before the first body chunk or at end of message."""
        spool = self.spool()
        if not self._in_body:
            self._in_body = True
            self._write_headers(b"\r\n")
        return spool

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None


def _header_line(name: str, value: bytes) -> bytes:
    """``Name: value`` CRLF, libmilter's LF line ends inside the value made CRLF."""
    field_name = name.encode("utf-8", "surrogateescape")
    return b"".join((field_name, b": ", value.replace(b"\n", b"\r\n"), b"\r\n"))


class Modifier(Protocol):
    """The modifications pymilter's ``Milter.Base`` offers at end of message."""

    def addheader(self, field: str, value: str, idx: int = -1) -> object: ...
    def chgheader(self, field: str, idx: int, value: str) -> object: ...
    def addrcpt(self, rcpt: str, params: str | None = None) -> object: ...
    def delrcpt(self, rcpt: str) -> object: ...
    def chgfrom(self, sender: str, params: str | None = None) -> object: ...
    def replacebody(self, body: bytes) -> object: ...
    def quarantine(self, reason: str) -> object: ...


def perform(plan: EomPlan, milter: Modifier) -> None:
    """Send the plan's modifications to the MTA, in the plan's order."""
    for action in plan.actions:
        match action:
            case AddHeaderAction(name=name, value=value):
                milter.addheader(name, value)
            case InsertHeaderAction(index=index, name=name, value=value):
                milter.addheader(name, value, index)
            case ChangeHeaderAction(name=name, index=index, value=value):
                milter.chgheader(name, index, value)
            case AddRcptAction(rcpt=rcpt, params=params):
                milter.addrcpt(rcpt, " ".join(params) if params else None)
            case DelRcptAction(rcpt=rcpt):
                milter.delrcpt(rcpt)
            case ChangeFromAction(sender=sender, params=params):
                milter.chgfrom(sender, " ".join(params) if params else None)
            case ReplaceBodyAction(chunk=chunk):
                milter.replacebody(chunk)
            case QuarantineAction(reason=reason):
                milter.quarantine(reason)


_OUTCOMES: dict[int, metrics.Outcome] = {
    0: "accept",
    1: "reject",
    2: "discard",
    3: "accept",
    4: "tempfail",
}


def outcome_of(plan: EomPlan) -> metrics.Outcome:
    """What became of the message, for the metrics: quarantined (held), or by the answer."""
    if _held(plan) is not None:
        return "quarantine"
    return _OUTCOMES.get(plan.response.code, "tempfail")


def _held(plan: EomPlan) -> str | None:
    """The reason of the plan's quarantine (Postfix's hold queue), if it has one."""
    if not plan.actions:  # most messages
        return None
    return next((a.reason for a in plan.actions if isinstance(a, QuarantineAction)), None)


def log_result(t: Transaction, plan: EomPlan, verdict: Verdict) -> None:
    """The message's one line: for a message that goes on, ``from=<>, size=N, nrcpt=N`` as
    Postfix's qmgr logs it (with the same queue id) once Postfix has queued it; else the
    decision as smtpd words it, ``reject:`` (a 4xx too), ``discard:`` or ``hold:`` (Postfix
    keeps the message on hold), ``END-OF-MESSAGE from host[addr]: reply or reason; from=<>
    to=<> proto= helo=<>``. ``verdict``: the final one, for a discard's reason."""
    response = plan.response
    hold = _held(plan)
    answer: object
    if hold is not None:
        what, answer = "hold", hold
    elif response.code == DISCARD:
        what, answer = "discard", verdict.reason if isinstance(verdict, Discard) else "discard"
    elif response.code in (REJECT, TEMPFAIL):
        what, answer = "reject", _reply_text(response)
    else:
        log.line(envelope_line(t.sender, t.size, len(t.accepted)))
        return
    rcpt = t.recipients[-1].address if t.recipients else None
    log.line(smtpd_line(what, "END-OF-MESSAGE", t.session.peer, answer, sender=t.sender, rcpt=rcpt))


def _reply_text(response: Response) -> str:
    """``550 5.7.1 text``: the reply set for a refusal (libmilter's ``%%`` undone)."""
    reply = response.reply
    if reply is None:  # libmilter's own words for a refusal without a reply
        return (
            "550 5.7.1 Command rejected"
            if response.code == REJECT
            else "451 4.7.1 Service unavailable - try again later"
        )
    text = reply.lines[0].replace("%%", "%") if reply.lines else ""
    return f"{reply.rcode} {reply.xcode} {text}"
