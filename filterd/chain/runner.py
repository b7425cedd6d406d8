"""Runs one stage of the chain: the rules of the chain, all in one place.

- Order is the ``[[chain]]`` order; the first verdict that is not ``Continue`` ends the stage.
- Edits and findings of ``Continue`` (and of the deciding verdict) accumulate in order.
- Each entry has a timeout (default 30 s) and a concurrency limit; a timeout or an exception
  follows the entry's ``on_error``: tempfail (451, default), continue, or reject (554) — always
  logged, never a silent pass.
- ``Accept(final=True)`` skips every later check of the transaction.
- ``on_close`` always runs for every plugin that has it.
- DEFER_IF_REJECT / DEFER_IF_PERMIT (``DeferIf`` on a ``Continue`` or ``Accept``), as Postfix's
  smtpd applies them to its restriction lists, a stage being one list: the first of each kind
  counts. "reject" holds for the rest of its stage: a later ``Reject`` (5xx) of that stage
  becomes its 4xx. "permit" holds for the rest of the session's checks up to RCPT (a client
  or HELO one for every message, a MAIL one for its message): a stage ``on_rcpt`` that ends
  without a refusal ends in its 4xx instead; so does ``on_message`` for one raised there.
- A plugin that raises gets its traceback logged (at ERROR) once per incident: the first time
  that exception comes from that place, and again only after ``INCIDENT_GAP`` without it. A
  storm of the same failure logs its ``status=plugin-error`` lines, one traceback.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from filterd.chain.outcome import NOTHING, Outcome, PluginResult
from filterd.config.schema import ChainEntryConfig
from filterd.maillog import MailLog
from filterd.model import metrics
from filterd.model.edits import Edit
from filterd.model.envelope import Recipient, Session, Transaction
from filterd.model.findings import Finding
from filterd.model.message import MessageView
from filterd.model.notes import NoteKey, Notes
from filterd.model.reply import Reply
from filterd.model.verdict import (
    CONTINUE,
    Accept,
    Continue,
    DeferIf,
    Discard,
    Quarantine,
    Reject,
    TempFail,
    Verdict,
    is_refusal,
)
from filterd.sdk.plugin import Plugin, PluginConfig
from filterd.sdk.stages import STAGES, inline_stages

log = MailLog("chain")

PLUGIN_TIMEOUT = Reply(451, "4.4.5", "Error: message check timed out, try again later")
PLUGIN_FAILED = Reply(451, "4.3.0", "Error: message check failed, try again later")
PLUGIN_FAILED_REJECT = Reply(554, "5.3.0", "Error: message check failed")

FINAL_ACCEPT = NoteKey[bool]("filterd.final_accept")
# The DEFER_IF_PERMIT pending after the client, HELO and MAIL stages (each includes the ones
# before it; Postfix's defer_if_permit_client / _helo / _sender).
_IF_PERMIT_CLIENT = NoteKey[DeferIf | None]("filterd.defer_if_permit.client")
_IF_PERMIT_HELO = NoteKey[DeferIf | None]("filterd.defer_if_permit.helo")
_IF_PERMIT_SENDER = NoteKey[DeferIf | None]("filterd.defer_if_permit.sender")

INCIDENT_GAP = 600.0  # seconds without a failure before it counts as a new incident
MAX_FAILURE_KINDS = 100  # failure kinds remembered per entry (the oldest are forgotten)

StageCall = Callable[[Plugin[PluginConfig]], Awaitable[Verdict]]


class Incidents:
    """Which plugin failures deserve a traceback: a kind of failure (exception type and the
    place it was raised) is new the first time, and again after ``INCIDENT_GAP`` without it."""

    def __init__(self) -> None:
        self._last_seen: dict[tuple[str, str, int], float] = {}  # oldest first

    def is_new(self, exc: BaseException, now: float) -> bool:
        innermost = exc.__traceback__
        while innermost is not None and innermost.tb_next is not None:
            innermost = innermost.tb_next
        where = (
            (innermost.tb_frame.f_code.co_filename, innermost.tb_lineno) if innermost else ("", 0)
        )
        kind = (type(exc).__qualname__, *where)
        last = self._last_seen.pop(kind, None)
        if len(self._last_seen) >= MAX_FAILURE_KINDS:
            del self._last_seen[next(iter(self._last_seen))]
        self._last_seen[kind] = now
        return last is None or now - last > INCIDENT_GAP


@dataclass(slots=True)
class Entry:
    config: ChainEntryConfig
    plugin: Plugin[PluginConfig]
    limiter: trio.CapacityLimiter
    stages: frozenset[str]
    incidents: Incidents = field(default_factory=Incidents)
    # the stages of ``stages`` marked ``@inline``: run without limiter and timeout
    inline: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        self.inline = self.stages & inline_stages(type(self.plugin))

    @property
    def label(self) -> str:
        return self.config.label

    def failed(self, what: str, exc: Exception) -> None:
        """Log the traceback of a failure of this plugin, if it starts an incident."""
        if self.incidents.is_new(exc, time.monotonic()):
            log.traceback(
                f"{self.label}: {what} raised (traceback once per incident)",
                exc,
                error=_describe(exc),
            )


class ChainRunner:
    def __init__(self, entries: list[Entry] | None = None) -> None:
        self.entries: tuple[Entry, ...] = tuple(entries or ())
        # Per stage, the entries that implement it (in order): a stage none implements costs
        # a message nothing (the empty chain, or header_checks' one stage).
        self._by_stage = {
            stage: tuple(entry for entry in self.entries if stage in entry.stages)
            for stage in STAGES
        }
        self._inline = frozenset(
            stage
            for stage, entries in self._by_stage.items()
            if entries and all(stage in entry.inline for entry in entries)
        )

    def only(self, wanted: Callable[[Entry], bool]) -> ChainRunner:
        """A runner of the entries ``wanted`` picks (in order, the same entries: their limits,
        timeouts and incidents are shared), for a front door that runs a stage again for some
        plugins only. Its ``start``/``stop`` are this runner's business, not to be called."""
        return ChainRunner([entry for entry in self.entries if wanted(entry)])

    def has_stage(self, stage: str) -> bool:
        """Whether any entry implements ``stage`` (``"on_rcpt"``...). A stage no entry implements
        always ends in ``Continue`` with nothing accumulated, so a front door may skip it."""
        return bool(self._by_stage.get(stage)) or any(stage in e.stages for e in self.entries)

    def runs_inline(self, stage: str) -> bool:
        """Whether every entry implementing ``stage`` marked it ``@inline`` (and one does): the
        stage's coroutine then never suspends, and ``filterd.chain.inline.run_now`` may run it
        on any thread."""
        return stage in self._inline

    async def start(self) -> None:
        for entry in self.entries:
            await entry.plugin.start()
            log.plain(f"plugin {entry.label} started", stages=",".join(sorted(entry.stages)))

    async def stop(self) -> None:
        for entry in reversed(self.entries):
            try:
                await entry.plugin.stop()
            except Exception as exc:
                entry.failed("stop", exc)
                log.warning(f"{entry.label}: stop failed: {_describe(exc)}")

    # ------------------------------------------------------------- stages
    async def connect(self, session: Session) -> Outcome:
        entries = self._by_stage["on_connect"]
        if not entries:
            return NOTHING
        call: StageCall = lambda p: p.on_connect(session)  # type: ignore[attr-defined]  # noqa: E731
        outcome = await self._run(entries, "on_connect", None, call)
        return _hold(outcome, session.notes, _IF_PERMIT_CLIENT)

    async def helo(self, session: Session, name: str) -> Outcome:
        entries = self._by_stage["on_helo"]
        if not entries:
            return NOTHING
        call: StageCall = lambda p: p.on_helo(session, name)  # type: ignore[attr-defined]  # noqa: E731
        earlier = session.notes.get(_IF_PERMIT_CLIENT)
        outcome = await self._run(entries, "on_helo", None, call, earlier)
        return _hold(outcome, session.notes, _IF_PERMIT_HELO)

    async def mail_from(self, t: Transaction) -> Outcome:
        entries = self._by_stage["on_mail_from"]
        if not entries:
            return NOTHING
        call: StageCall = lambda p: p.on_mail_from(t)  # type: ignore[attr-defined]  # noqa: E731
        outcome = await self._run(entries, "on_mail_from", t, call, _session_if_permit(t))
        return _hold(outcome, t.notes, _IF_PERMIT_SENDER)

    async def rcpt(self, t: Transaction, rcpt: Recipient) -> Outcome:
        earlier = t.notes.get(_IF_PERMIT_SENDER) or _session_if_permit(t)
        entries = self._by_stage["on_rcpt"]
        if not entries:
            return NOTHING if earlier is None else _permitted(NOTHING, earlier)
        call: StageCall = lambda p: p.on_rcpt(t, rcpt)  # type: ignore[attr-defined]  # noqa: E731
        outcome = await self._run(entries, "on_rcpt", t, call, earlier)
        return _permitted(outcome, outcome.conditional)

    async def message(self, t: Transaction, message: MessageView) -> Outcome:
        entries = self._by_stage["on_message"]
        if not entries:
            return NOTHING
        call: StageCall = lambda p: p.on_message(t, message)  # type: ignore[attr-defined]  # noqa: E731
        outcome = await self._run(entries, "on_message", t, call)
        return _permitted(outcome, outcome.conditional)

    async def close(self, session: Session) -> None:
        for entry in self._by_stage["on_close"]:
            started = time.monotonic()
            failure: metrics.PluginFailure | None = None
            try:
                with trio.fail_after(entry.config.timeout):
                    await entry.plugin.on_close(session)  # type: ignore[attr-defined]
            except Exception as exc:
                failure = "timeout" if isinstance(exc, trio.TooSlowError) else "error"
                if failure == "error":
                    entry.failed("on_close", exc)
                log.warning(f"{entry.label}: on_close failed: {_describe(exc)}")
            metrics.recorder.plugin_call(
                entry.label, "on_close", time.monotonic() - started, failure
            )

    # -------------------------------------------------------------- rules
    async def _run(
        self,
        entries: tuple[Entry, ...],
        stage: str,
        t: Transaction | None,
        call: StageCall,
        if_permit: DeferIf | None = None,
    ) -> Outcome:
        """The stage's outcome; its ``conditional`` is the DEFER_IF_PERMIT pending at its end
        (``if_permit``, from earlier stages, or the first raised here), else a DEFER_IF_REJECT
        still pending (the stage ended without a 5xx)."""
        if t is not None and t.notes.get(FINAL_ACCEPT):
            return NOTHING if if_permit is None else Outcome(conditional=if_permit)
        edits: list[Edit] = []
        findings: list[Finding] = []
        results: list[PluginResult] = []
        if_reject: DeferIf | None = None
        for entry in entries:
            result = await self._call(entry, stage, call)
            results.append(result)
            verdict = result.verdict
            _log(result, t)
            edits.extend(_edits(verdict))
            findings.extend(verdict.findings)
            if isinstance(verdict, _PASSING):
                for deferral in verdict.defer_if:
                    if deferral.when == "permit":
                        if_permit = if_permit or deferral
                    else:
                        if_reject = if_reject or deferral
            if isinstance(verdict, Continue):
                continue
            if isinstance(verdict, Accept) and verdict.final and t is not None:
                t.notes.set(FINAL_ACCEPT, True)
            if isinstance(verdict, Accept) and not verdict.final:
                continue
            if isinstance(verdict, Reject) and if_reject is not None:
                log.info(f"{entry.label}: {stage} reject turned into defer_if_reject's reply")
                verdict = TempFail(if_reject.reply, verdict.findings)
            pending = if_permit or (None if is_refusal(verdict) else if_reject)
            return Outcome(
                verdict, tuple(edits), tuple(findings), entry.label, tuple(results), pending
            )
        pending = if_permit or if_reject
        return Outcome(CONTINUE, tuple(edits), tuple(findings), None, tuple(results), pending)

    async def _call(self, entry: Entry, stage: str, call: StageCall) -> PluginResult:
        started = time.monotonic()
        if stage in entry.inline:  # only computes: nothing to bound, nothing to interrupt
            try:
                answer: object = await call(entry.plugin)
            except Exception as exc:
                return _failed(entry, stage, exc, started)
            return _answered(entry, stage, answer, started)
        limiter = entry.limiter
        # The hot path of every plugin call: take the limiter without a checkpoint when a slot
        # is free, and bound the call with a bare cancel scope (cheaper than fail_after).
        try:
            limiter.acquire_nowait()
        except trio.WouldBlock:
            await limiter.acquire()
        try:
            with trio.CancelScope(deadline=trio.current_time() + entry.config.timeout) as scope:
                answer = await call(entry.plugin)  # a plugin may return anything
            if scope.cancelled_caught:
                verdict = _on_error(entry.config.on_error, PLUGIN_TIMEOUT)
                error = f"timeout after {entry.config.timeout:g}s"
                return _result(entry, stage, verdict, started, error, "timeout")
            return _answered(entry, stage, answer, started)
        except Exception as exc:  # Cancelled is a BaseException: it passes through
            return _failed(entry, stage, exc, started)
        finally:
            limiter.release()


def _session_if_permit(t: Transaction) -> DeferIf | None:
    notes = t.session.notes
    return notes.get(_IF_PERMIT_HELO) or notes.get(_IF_PERMIT_CLIENT)


def _hold(outcome: Outcome, notes: Notes, key: NoteKey[DeferIf | None]) -> Outcome:
    """Keep the stage's pending DEFER_IF_PERMIT for the stages after it (or forget one of an
    earlier run of the stage: a second EHLO, the next MAIL)."""
    conditional = outcome.conditional
    notes.set(
        key, conditional if conditional is not None and conditional.when == "permit" else None
    )
    return outcome


def _permitted(outcome: Outcome, conditional: DeferIf | None) -> Outcome:
    """At RCPT and end of message: a stage that ends without a refusal while a
    DEFER_IF_PERMIT is pending ends in its reply (Postfix: a permit becomes a deferral)."""
    if conditional is None or conditional.when != "permit" or is_refusal(outcome.verdict):
        return outcome
    # (the fields spelled out: dataclasses.replace inspects every field, at every greylisting)
    o = outcome
    return Outcome(
        TempFail(conditional.reply), o.edits, o.findings, o.decided_by, o.results, conditional
    )


def _answered(entry: Entry, stage: str, answer: object, started: float) -> PluginResult:
    """The result of a plugin call that returned ``answer`` (anything: it should be a verdict)."""
    if isinstance(answer, _VERDICTS):
        return _result(entry, stage, answer, started, None, None)
    error = f"TypeError: {stage} returned {type(answer).__name__}, not a verdict"
    verdict = _on_error(entry.config.on_error, PLUGIN_FAILED)
    return _result(entry, stage, verdict, started, error, "error")


def _failed(entry: Entry, stage: str, exc: Exception, started: float) -> PluginResult:
    """The result of a plugin call that raised ``exc``."""
    entry.failed(stage, exc)
    verdict = _on_error(entry.config.on_error, PLUGIN_FAILED)
    return _result(entry, stage, verdict, started, _describe(exc), "error")


def _result(
    entry: Entry,
    stage: str,
    verdict: Verdict,
    started: float,
    error: str | None,
    failure: metrics.PluginFailure | None,
) -> PluginResult:
    """A plugin call's result, recorded (its time, and how it failed if it did)."""
    seconds = time.monotonic() - started
    label = entry.label
    metrics.recorder.plugin_call(label, stage, seconds, failure)
    return PluginResult(label, stage, verdict, seconds, error)


_VERDICTS = (Continue, Accept, Reject, TempFail, Discard, Quarantine)
# (tuples, not ``A | B``: a union is built anew at every evaluation)
_PASSING = (Continue, Accept)
_EDITING = (Continue, Accept, Quarantine)


def _on_error(policy: str, reply: Reply) -> Verdict:
    match policy:
        case "continue":
            return Continue()
        case "reject":
            return Reject(PLUGIN_FAILED_REJECT)
        case _:
            return TempFail(reply)


def _edits(verdict: Verdict) -> tuple[Edit, ...]:
    if isinstance(verdict, _EDITING):
        return verdict.edits
    return ()


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _log(result: PluginResult, t: Transaction | None) -> None:
    """One line per decision: a verdict other than ``Continue``, findings, a failure. A plain
    ``Continue`` (edits or not) decides nothing: it is logged at debug."""
    verdict = result.verdict
    if result.error is None:
        quiet = type(verdict) is Continue and not verdict.findings
        if not (log.enabled_for_debug() if quiet else log.enabled_for_info()):
            return  # the per-message hot path
    parts = [f"{result.label}: {result.stage} {type(verdict).__name__.lower()}"]
    if is_refusal(verdict):
        parts.append(f"({verdict.reply})")
    elif isinstance(verdict, Discard | Quarantine):
        parts.append(f"({verdict.reason})")
    if verdict.findings:
        parts.append("findings=" + ",".join(str(f) for f in verdict.findings))
    fields: dict[str, object] = {"time": f"{result.seconds:.3f}s"}
    if result.error is not None:
        fields["status"] = "plugin-error"
        fields["error"] = result.error
        log.warning(" ".join(parts), **fields)
    elif type(verdict) is Continue and not verdict.findings:
        log.debug(" ".join(parts), **fields)
    else:
        log.info(" ".join(parts), **fields)
    del t
