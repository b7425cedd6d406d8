"""What the chain decided at one stage: the deciding verdict plus what accumulated.

Both classes are frozen dataclasses built at every plugin call and stage: their ``__init__`` is
written out and stores each field through its slot (what a frozen dataclass's generated one
does through ``object.__setattr__``, at about twice the cost), so instances stay immutable."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from filterd.model.edits import Edit
from filterd.model.findings import Finding
from filterd.model.verdict import CONTINUE, DeferIf, Verdict


@dataclass(frozen=True, slots=True, init=False)
class PluginResult:
    """One plugin's answer at one stage, for logs, `filterd scan` and the test harness."""

    label: str
    stage: str
    verdict: Verdict
    seconds: float
    error: str | None = None  # set when the verdict came from the on_error policy

    def __init__(
        self, label: str, stage: str, verdict: Verdict, seconds: float, error: str | None = None
    ) -> None:
        _r_label(self, label)
        _r_stage(self, stage)
        _r_verdict(self, verdict)
        _r_seconds(self, seconds)
        _r_error(self, error)


@dataclass(frozen=True, slots=True, init=False)
class Outcome:
    verdict: Verdict = CONTINUE  # the first non-Continue, else Continue
    edits: tuple[Edit, ...] = ()
    findings: tuple[Finding, ...] = ()
    decided_by: str | None = None
    results: tuple[PluginResult, ...] = ()
    # A DEFER_IF_PERMIT / DEFER_IF_REJECT still pending when the stage ended, or the
    # DEFER_IF_PERMIT that turned its permit into ``verdict`` (a TempFail): for the policy door,
    # which passes it on to Postfix (whose own restrictions come after it). The verdict
    # already holds what filterd decides with it.
    conditional: DeferIf | None = None

    def __init__(
        self,
        verdict: Verdict = CONTINUE,
        edits: tuple[Edit, ...] = (),
        findings: tuple[Finding, ...] = (),
        decided_by: str | None = None,
        results: tuple[PluginResult, ...] = (),
        conditional: DeferIf | None = None,
    ) -> None:
        _o_verdict(self, verdict)
        _o_edits(self, edits)
        _o_findings(self, findings)
        _o_decided_by(self, decided_by)
        _o_results(self, results)
        _o_conditional(self, conditional)


def _slot_setters(cls: type) -> list[Callable[[object, Any], None]]:
    """The setters of ``cls``'s field slots, in field order (they bypass the frozen
    ``__setattr__``: only an ``__init__`` may use them)."""
    return [vars(cls)[f.name].__set__ for f in fields(cls)]


_r_label, _r_stage, _r_verdict, _r_seconds, _r_error = _slot_setters(PluginResult)
_o_verdict, _o_edits, _o_findings, _o_decided_by, _o_results, _o_conditional = _slot_setters(
    Outcome
)

NOTHING = Outcome()
