"""What a plugin answers at a stage: a closed set of frozen verdicts (Haraka's result set,
typed). The first verdict that is not ``Continue`` ends the stage.

Also the few questions every front door asks of a verdict, answered once: is it a refusal
(``is_refusal``), is it a disposition decided early (``disposition_of``), and what stands at
the end of a message that got one (``final_verdict``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeGuard

from filterd.model.edits import Edit
from filterd.model.findings import Finding
from filterd.model.reply import Reply


@dataclass(frozen=True, slots=True)
class Continue:
    """Nothing against it: later plugins run. Edits and findings accumulate."""

    edits: tuple[Edit, ...] = ()
    findings: tuple[Finding, ...] = ()


@dataclass(frozen=True, slots=True)
class Accept:
    """Accept at this stage. ``final=True`` also skips every later check of the message."""

    edits: tuple[Edit, ...] = ()
    findings: tuple[Finding, ...] = ()
    final: bool = False


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
    """Refuse for now with a 4xx reply: the sender keeps the message and retries.

    ``policy_action``: the access(5) action the policy door answers instead of the numeric
    reply, when a plugin must answer Postfix as a reference policy server does (the greylist
    plugin: postgrey's ``DEFER_IF_PERMIT 4.2.0 Greylisted, ...``); the other doors answer
    ``reply``."""

    reply: Reply
    findings: tuple[Finding, ...] = ()
    policy_action: str | None = None

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


def is_refusal(verdict: Verdict) -> TypeGuard[Reject | TempFail]:
    """True for ``Reject`` and ``TempFail``: the client is told no (its ``reply``)."""
    return isinstance(verdict, Reject | TempFail)


def disposition_of(verdict: Verdict) -> Disposition | None:
    """The verdict itself when it is a ``Discard`` or ``Quarantine``, else None."""
    return verdict if isinstance(verdict, Discard | Quarantine) else None


def final_verdict(verdict: Verdict, earlier: Disposition | None) -> Verdict:
    """What stands when a stage decided ``verdict`` after an ``earlier`` Discard or Quarantine:
    the earlier disposition wins unless this stage refuses (a refusal keeps the message with
    its sender; a discard or quarantine already accepted it)."""
    if earlier is None or is_refusal(verdict):
        return verdict
    return earlier


def verdict_name(verdict: Verdict) -> str:
    return type(verdict).__name__.lower()
