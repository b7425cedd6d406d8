"""What the front doors, the chain, the delivery and the spool record for the metrics: a small
interface, and a default that records nothing.

These layers sit below ``filterd.runtime`` and know nothing of Prometheus: they call
``metrics.recorder`` (``from filterd.model import metrics``), which ``filterd run`` replaces
with the runtime's recorder (``filterd.runtime.recording``) in each of its processes. Every
call is on the path of a message, so a recorder must take microseconds at most: the runtime's
adds to plain counters in memory, written out once a second.

Outcome names (``Outcome``): what became of a message, or of a refused envelope step.
"""

from __future__ import annotations

from typing import Literal, Protocol

from filterd.model.reply import Reply
from filterd.model.verdict import Discard, Quarantine, Verdict, is_refusal

__all__ = [
    "NOT_RECORDING",
    "Door",
    "Outcome",
    "PluginFailure",
    "Recorder",
    "install",
    "outcome_of_reply",
    "outcome_of_verdict",
    "recorder",
]

Door = Literal["smtp", "lmtp", "milter", "policy"]
Outcome = Literal["accept", "reject", "tempfail", "discard", "quarantine"]
PluginFailure = Literal["error", "timeout"]


class Recorder(Protocol):
    """What is counted. Each method must be cheap (no I/O) and may be called from any thread
    (the milter door's callbacks run on libmilter's threads)."""

    def message(self, door: Door, outcome: Outcome) -> None:
        """A message reached its end (smtp, lmtp, milter: end of data; policy: one request
        answered) and this became of it."""

    def refusal(self, door: Door, stage: str, outcome: Outcome) -> None:
        """A step before the message's content was refused (``stage``: connect, helo, mail,
        rcpt), by the chain or the next stage."""

    def plugin_call(
        self, plugin: str, stage: str, seconds: float, failure: PluginFailure | None
    ) -> None:
        """One chain entry answered one stage in ``seconds``; ``failure``: it raised or timed
        out (its ``on_error`` policy gave the verdict)."""

    def session(self, door: Door, change: int) -> None:
        """A connection of ``door`` began (+1) or ended (-1)."""

    def next_hop_error(self, stage: str) -> None:
        """The next hop could not be reached or failed at ``stage`` (connect, mail, rcpt, data)."""

    def spool(self, change: int) -> None:
        """Bytes held in message spools (memory or file) grew or shrank by ``change``."""

    def plugin_event(self, plugin: str, event: str, amount: int) -> None:
        """A plugin's own counter (``filterd.sdk.metrics.count_event``) grew by ``amount``."""


class _NotRecording:
    """The default: nothing is recorded (``filterd scan``, tests, a server embedded in code)."""

    def message(self, door: Door, outcome: Outcome) -> None:
        pass

    def refusal(self, door: Door, stage: str, outcome: Outcome) -> None:
        pass

    def plugin_call(
        self, plugin: str, stage: str, seconds: float, failure: PluginFailure | None
    ) -> None:
        pass

    def session(self, door: Door, change: int) -> None:
        pass

    def next_hop_error(self, stage: str) -> None:
        pass

    def spool(self, change: int) -> None:
        pass

    def plugin_event(self, plugin: str, event: str, amount: int) -> None:
        pass


NOT_RECORDING: Recorder = _NotRecording()

recorder: Recorder = NOT_RECORDING
"""The recorder of this process; read it at each call (``metrics.recorder.message(...)``)."""


def install(new: Recorder) -> Recorder:
    """Make ``new`` this process's recorder; returns the one it replaces."""
    global recorder
    old, recorder = recorder, new
    return old


def outcome_of_reply(reply: Reply) -> Outcome:
    """A reply's outcome: 2xx (and 3xx) accept, 4xx tempfail, 5xx reject."""
    if reply.is_transient:
        return "tempfail"
    return "reject" if reply.is_permanent else "accept"


def outcome_of_verdict(verdict: Verdict) -> Outcome:
    """A verdict's outcome: a refusal by its reply, Discard, Quarantine, else accept."""
    if is_refusal(verdict):
        return outcome_of_reply(verdict.reply)
    if isinstance(verdict, Discard):
        return "discard"
    if isinstance(verdict, Quarantine):
        return "quarantine"
    return "accept"
