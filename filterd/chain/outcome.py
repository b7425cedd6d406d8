"""What the chain decided at one stage: the deciding verdict plus what accumulated."""

from __future__ import annotations

from dataclasses import dataclass, field

from filterd.model.edits import Edit
from filterd.model.findings import Finding
from filterd.model.verdict import CONTINUE, DeferIf, Verdict


@dataclass(frozen=True, slots=True)
class PluginResult:
    """One plugin's answer at one stage, for logs, `filterd scan` and the test harness."""

    label: str
    stage: str
    verdict: Verdict
    seconds: float
    error: str | None = None  # set when the verdict came from the on_error policy


@dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict = CONTINUE  # the first non-Continue, else Continue
    edits: tuple[Edit, ...] = ()
    findings: tuple[Finding, ...] = ()
    decided_by: str | None = None
    results: tuple[PluginResult, ...] = field(default=())
    # A DEFER_IF_PERMIT / DEFER_IF_REJECT still pending when the stage ended, or the
    # DEFER_IF_PERMIT that turned its permit into ``verdict`` (a TempFail): for the policy door,
    # which passes it on to Postfix (whose own restrictions come after it). The verdict
    # already holds what filterd decides with it.
    conditional: DeferIf | None = None


NOTHING = Outcome()
