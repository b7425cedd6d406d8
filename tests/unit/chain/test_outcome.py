"""``Outcome`` and ``PluginResult`` (written-out ``__init__``) behave as the frozen dataclasses
they are: fields in order with their defaults, keywords, equality, immutability, replace."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from filterd.chain.outcome import NOTHING, Outcome, PluginResult
from filterd.model.edits import AddHeader
from filterd.model.findings import Finding
from filterd.model.reply import Reply
from filterd.model.verdict import CONTINUE, DeferIf, Reject

REFUSED = Reject(Reply(550, "5.7.1", "no"))
LATER = DeferIf("permit", Reply(450, "4.7.1", "later"))


def test_outcome_fields_in_order_with_their_defaults() -> None:
    assert [f.name for f in dataclasses.fields(Outcome)] == [
        "verdict", "edits", "findings", "decided_by", "results", "conditional",
    ]  # fmt: skip
    assert (NOTHING.verdict, NOTHING.edits, NOTHING.findings) == (CONTINUE, (), ())
    assert (NOTHING.decided_by, NOTHING.results, NOTHING.conditional) == (None, (), None)
    result = PluginResult("one", "on_rcpt", REFUSED, 0.5)
    edits, findings = (AddHeader("X-A", "1"),), (Finding("one.x"),)
    by_position = Outcome(REFUSED, edits, findings, "one", (result,), LATER)
    by_keyword = Outcome(
        conditional=LATER, results=(result,), decided_by="one", findings=findings,
        edits=edits, verdict=REFUSED,
    )  # fmt: skip
    assert by_position == by_keyword
    assert hash(by_position) == hash(by_keyword)
    assert by_position != Outcome(REFUSED, edits, findings, "two", (result,), LATER)
    assert (by_position.edits, by_position.findings, by_position.conditional) == (
        edits, findings, LATER,
    )  # fmt: skip
    assert repr(Outcome(decided_by="x")) == (
        f"Outcome(verdict={CONTINUE!r}, edits=(), findings=(), decided_by='x', results=(), "
        "conditional=None)"
    )


def test_plugin_result_fields_and_default() -> None:
    result = PluginResult("one", "on_rcpt", CONTINUE, 0.25)
    assert (result.label, result.stage, result.verdict, result.seconds, result.error) == (
        "one", "on_rcpt", CONTINUE, 0.25, None,
    )  # fmt: skip
    assert PluginResult(label="one", stage="on_rcpt", verdict=CONTINUE, seconds=0.25) == result
    assert PluginResult("one", "on_rcpt", CONTINUE, 0.25, "boom").error == "boom"


def test_both_stay_immutable_and_copyable() -> None:
    result = PluginResult("one", "on_rcpt", CONTINUE, 0.25)
    outcome = Outcome(REFUSED, decided_by="one", results=(result,))
    with pytest.raises(dataclasses.FrozenInstanceError):
        outcome.verdict = CONTINUE  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.error = "x"  # type: ignore[misc]
    with pytest.raises(
        (AttributeError, TypeError)
    ):  # (3.11's frozen slotted dataclass: the latter)
        outcome.extra = 1  # type: ignore[attr-defined]
    assert dataclasses.replace(outcome, decided_by="two") == Outcome(
        REFUSED, decided_by="two", results=(result,)
    )
    assert pickle.loads(pickle.dumps(outcome)) == outcome
    with pytest.raises(TypeError):
        Outcome(CONTINUE, (), (), None, (), None, "too many")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        PluginResult("one", "on_rcpt", CONTINUE)  # type: ignore[call-arg]
