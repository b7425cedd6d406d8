"""What a plugin answers at a stage: a closed set of frozen verdicts (Haraka's result set,
typed). The first verdict that is not ``Continue`` ends the stage.

Also the few questions every front door asks of a verdict, answered once: is it a refusal
(``is_refusal``), is it a disposition decided early (``disposition_of``), and what stands at
the end of a message that got one (``final_verdict``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeGuard

from filterd.model.edits import Edit
from filterd.model.findings import Finding
from filterd.model.reply import Reply


@dataclass(frozen=True, slots=True)
class DeferIf:
    """A refusal held back, Postfix's DEFER_IF_PERMIT / DEFER_IF_REJECT (access(5)): ``reply``
    (4xx) replaces a permit (``when="permit"``: the stage, and for RCPT and end of message
    every stage before it, ends without a refusal) or a 5xx rejection by a later plugin of the
    same stage (``when="reject"``). Carried by ``Continue`` and ``Accept``; the chain applies
    it (filterd.chain.runner)."""

    when: Literal["permit", "reject"]
    reply: Reply

    def __post_init__(self) -> None:
        if not self.reply.is_transient:
            raise ValueError(f"DeferIf needs a 4xx reply, got {self.reply.code}")


@dataclass(frozen=True, slots=True)
class Continue:
    """Nothing against it: later plugins run. Edits and findings accumulate."""

    edits: tuple[Edit, ...] = ()
    findings: tuple[Finding, ...] = ()
    defer_if: tuple[DeferIf, ...] = ()


@dataclass(frozen=True, slots=True)
class Accept:
    """Accept at this stage. ``final=True`` also skips every later check of the message."""

    edits: tuple[Edit, ...] = ()
    findings: tuple[Finding, ...] = ()
    final: bool = False
    defer_if: tuple[DeferIf, ...] = ()


@dataclass(frozen=True, slots=True)
class Reject:
    """Refuse permanently with a 5xx reply (at RCPT: this recipient only)."""

    reply: Reply
    findings: tuple[Finding, ...] = ()

    def __post_init__(self) -> None:
        if not self.reply.is_permanent:
            raise ValueError(f"Reject needs a 5xx reply, got {self.reply.code}")


@dataclass(frozen=True, slots=True)
class TempFail:
    """Refuse for now with a 4xx reply: the sender keeps the message and retries."""

    reply: Reply
    findings: tuple[Finding, ...] = ()

    def __post_init__(self) -> None:
        if not self.reply.is_transient:
            raise ValueError(f"TempFail needs a 4xx reply, got {self.reply.code}")


@dataclass(frozen=True, slots=True)
class Discard:
    """Accept (250) and drop the message, with a log line giving ``reason``."""

    reason: str
    findings: tuple[Finding, ...] = ()


@dataclass(frozen=True, slots=True)
class Quarantine:
    """Accept (250) and keep the message out of delivery (quarantine store / hold queue)."""

    reason: str
    edits: tuple[Edit, ...] = ()
    findings: tuple[Finding, ...] = ()


Verdict = Continue | Accept | Reject | TempFail | Discard | Quarantine

CONTINUE = Continue()

Disposition = Discard | Quarantine
"""A verdict that accepts the message but keeps it from its recipients: decided at any stage,
carried out at the end of the message."""


# (tuples, not ``A | B``: a union is built anew at every evaluation)
_REFUSALS = (Reject, TempFail)
_DISPOSITIONS = (Discard, Quarantine)


def is_refusal(verdict: Verdict) -> TypeGuard[Reject | TempFail]:
    """True for ``Reject`` and ``TempFail``: the client is told no (its ``reply``)."""
    return isinstance(verdict, _REFUSALS)


def disposition_of(verdict: Verdict) -> Disposition | None:
    """The verdict itself when it is a ``Discard`` or ``Quarantine``, else None."""
    return verdict if isinstance(verdict, _DISPOSITIONS) else None


def final_verdict(verdict: Verdict, earlier: Disposition | None) -> Verdict:
    """What stands when a stage decided ``verdict`` after an ``earlier`` Discard or Quarantine:
    the earlier disposition wins unless this stage refuses (a refusal keeps the message with
    its sender; a discard or quarantine already accepted it)."""
    if earlier is None or is_refusal(verdict):
        return verdict
    return earlier


def verdict_name(verdict: Verdict) -> str:
    return type(verdict).__name__.lower()
