"""The questions every front door asks of a verdict, answered once (``filterd.model.verdict``)."""

from __future__ import annotations

import pytest

from filterd.model.reply import Reply
from filterd.model.verdict import (
    CONTINUE,
    Accept,
    Discard,
    Quarantine,
    Reject,
    TempFail,
    Verdict,
    disposition_of,
    final_verdict,
    is_refusal,
)

REJECT = Reject(Reply(550, "5.7.1", "no"))
TEMPFAIL = TempFail(Reply(451, "4.3.0", "later"))
DISCARD = Discard("spam")
QUARANTINE = Quarantine("suspect")
ACCEPT = Accept(final=True)
EVERY: list[Verdict] = [CONTINUE, ACCEPT, REJECT, TEMPFAIL, DISCARD, QUARANTINE]


@pytest.mark.parametrize("verdict", EVERY, ids=lambda v: type(v).__name__)
def test_only_reject_and_tempfail_are_refusals(verdict: Verdict) -> None:
    assert is_refusal(verdict) == (verdict in (REJECT, TEMPFAIL))


@pytest.mark.parametrize("verdict", EVERY, ids=lambda v: type(v).__name__)
def test_only_discard_and_quarantine_are_dispositions(verdict: Verdict) -> None:
    expected = verdict if verdict in (DISCARD, QUARANTINE) else None
    assert disposition_of(verdict) is expected


@pytest.mark.parametrize("verdict", EVERY, ids=lambda v: type(v).__name__)
def test_without_an_earlier_disposition_the_stage_decides(verdict: Verdict) -> None:
    assert final_verdict(verdict, None) is verdict


@pytest.mark.parametrize("earlier", [DISCARD, QUARANTINE], ids=lambda v: type(v).__name__)
@pytest.mark.parametrize("verdict", EVERY, ids=lambda v: type(v).__name__)
def test_an_earlier_disposition_wins_unless_the_stage_refuses(
    verdict: Verdict, earlier: Discard | Quarantine
) -> None:
    expected = verdict if verdict in (REJECT, TEMPFAIL) else earlier
    assert final_verdict(verdict, earlier) is expected
