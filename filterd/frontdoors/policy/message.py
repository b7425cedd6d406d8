"""A policy message: the requests of one message on one policy connection, and how a
request's stage outcomes become its one outcome (filterd/frontdoors/policy/service.py runs the
stages)."""

from __future__ import annotations

from dataclasses import dataclass, field

from filterd.chain.outcome import NOTHING, Outcome, PluginResult
from filterd.model.edits import Edit
from filterd.model.envelope import Session, Transaction
from filterd.model.findings import Finding
from filterd.model.verdict import (
    CONTINUE,
    Accept,
    Continue,
    disposition_of,
    final_verdict,
    is_refusal,
)
from filterd.protocols.policy_map import POLICY_ATTRIBUTES, PolicyEnvelope, Stage

__all__ = ["Message", "combine", "decider"]


@dataclass(slots=True)
class Message:
    """Requests that belong together: one message (keyed), or one lone request (key None)."""

    key: tuple[str, ...] | None
    session: Session
    transaction: Transaction
    outcomes: dict[Stage, Outcome] = field(default_factory=dict)
    rcpt_outcomes: dict[str, Outcome] = field(default_factory=dict)
    prepended: set[tuple[str, str]] = field(default_factory=set)

    def refresh(self, envelope: PolicyEnvelope) -> None:
        """A later request of the same message: take what Postfix learned since (queue id
        once the queue file exists, the real size at END-OF-MESSAGE, the latest attributes)."""
        attrs = envelope.session.notes.get(POLICY_ATTRIBUTES)
        if attrs is not None:
            self.session.notes.set(POLICY_ATTRIBUTES, attrs)
        if envelope.transaction.queue_id != "NOQUEUE":
            self.transaction.queue_id = envelope.transaction.queue_id
        if envelope.transaction.size:
            self.transaction.size = envelope.transaction.size


def combine(steps: list[tuple[Outcome, bool]]) -> Outcome:
    """One outcome for a request from its stages' outcomes (``fresh`` = ran for this request;
    edits and findings of reused outcomes were already answered). The first refusal wins,
    then the first Discard/Quarantine (SMTP proxy: decided early, applied to the message:
    ``final_verdict``), then the first Accept, else Continue."""
    edits: list[Edit] = []
    findings: list[Finding] = []
    results: list[PluginResult] = []
    disposition: Outcome | None = None  # the first Discard/Quarantine
    standing: Outcome | None = None  # the refusal, else the first Accept
    said = False  # some step is not NOTHING
    for outcome, fresh in steps:
        if outcome is NOTHING:  # a stage no plugin implements: it adds nothing
            continue
        said = True
        if fresh:
            edits.extend(outcome.edits)
            findings.extend(outcome.findings)
            results.extend(outcome.results)
        verdict = outcome.verdict
        if is_refusal(verdict):
            standing = outcome
            break
        if disposition is None and disposition_of(verdict) is not None:
            disposition = outcome
        elif standing is None and isinstance(verdict, Accept):
            standing = outcome
    if not said:
        return NOTHING  # (what the rest makes of nothing: Continue, nothing else)
    earlier = disposition_of(disposition.verdict) if disposition is not None else None
    verdict = final_verdict(standing.verdict if standing is not None else CONTINUE, earlier)
    decider = disposition if verdict is earlier else standing
    decided_by = decider.decided_by if decider is not None else None
    # A pending DEFER_IF_*: the deepest stage's (it holds the ones before it), or the refusal's.
    conditional = None
    if verdict is not earlier:
        held = [outcome.conditional for outcome, _ in steps if outcome.conditional is not None]
        conditional = held[-1] if held else None
        if standing is not None and is_refusal(standing.verdict):
            conditional = standing.conditional
    return Outcome(verdict, tuple(edits), tuple(findings), decided_by, tuple(results), conditional)


def decider(outcome: Outcome) -> str | None:
    """The plugin whose answer made ``outcome`` what it is: the one that decided the stage,
    else the first that held a DEFER_IF_* for it (the stage went on after it), if any."""
    if outcome.decided_by is not None:
        return outcome.decided_by
    for result in outcome.results:
        verdict = result.verdict
        if isinstance(verdict, Continue | Accept) and verdict.defer_if:
            return result.label
    return None
