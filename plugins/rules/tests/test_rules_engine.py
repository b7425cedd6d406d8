"""The engine's pieces on their own: the seam for rule actions other packages provide
(filterd.sdk.rule_actions), postfwd's comparisons with Perl's ways, postfwd's file syntax."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import pytest
from filterd_rules.compare import LocalTime, compare, local_time
from filterd_rules.engine import Engine
from filterd_rules.postfwd_syntax import parse_postfwd
from filterd_rules.ruleset import RuleProblem

NOW = 1_800_000_000.0
NOON = local_time(datetime(2026, 6, 3, 12, 0, 0))  # a Wednesday


class Recording:
    """A rule action as a package would provide one: answers from a script, records calls."""

    def __init__(self, answers: list[str | None]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, dict[str, str], float]] = []
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def __call__(self, argument: str, request: Mapping[str, str], now: float) -> str | None:
        self.calls.append((argument, dict(request), now))
        return self.answers.pop(0)


RULES = """
id=MARK; action=set(greylisted=$$client_address)
id=GREY; recipient=~^grey@; action=greylist(delay=300)
id=AFTER; action=REJECT after greylist
"""


async def test_a_rule_action_answers_or_goes_on() -> None:
    action = Recording(["DEFER_IF_PERMIT 4.2.0 Greylisted", None])
    engine = Engine(parse_postfwd(RULES, "t.cf"), {}, {"greylist": action})
    request = {"recipient": "grey@example.org", "client_address": "192.0.2.9", "sender": ""}
    decision = await engine.decide(dict(request), NOW)
    assert decision.action == "DEFER_IF_PERMIT 4.2.0 Greylisted"
    assert decision.rule is not None
    assert decision.rule.id == "GREY"
    argument, seen, now = action.calls[0]
    assert (argument, now) == ("delay=300", NOW)
    assert seen["greylisted"] == "192.0.2.9"  # after set()
    assert seen["sender"] == "<>"  # postfwd's null sender
    decision = await engine.decide(dict(request), NOW)  # no decision: the next rule answers
    assert decision.action == "REJECT after greylist"
    assert decision.hits == ("MARK", "GREY", "AFTER")


@pytest.mark.parametrize(
    ("item", "op", "value", "attribute", "expected"),
    [
        ("sender", "==", "A@B.example", "a@b.EXAMPLE", True),
        ("sender", "==", "x", "", False),
        ("sender", "!=", "x", "", False),  # postfwd: an empty attribute is neither
        ("sender", "=", "/^joe@/", "JOE@example.com", True),  # default: regex, slashes allowed
        ("sender", "=~", "example", "joe@example.com", True),  # unanchored
        ("sender", "!~", "example", "joe@other.test", True),
        ("size", "=", "1000", "1000", True),  # numeric default: >=
        ("size", "=", "1000", "999", False),
        ("size", "!<", "1000", "1000", False),  # not <=
        ("size", "!>", "1000", "1000", False),  # not >=
        ("size", "<", "1000", "", True),  # empty is 0
        ("size", "=<", "10", "10abc", True),  # Perl's leading number
        ("client_address", "=", "192.0.2.0/24", "192.0.2.77", True),
        ("client_address", "=", "192.0.2.7", "192.0.2.7", True),  # a bare address is /32
        ("client_address", "!=", "192.0.2.0/24", "192.0.2.77", False),
        ("client_address", "=", "0.0.0.0/0", "", False),  # an empty attribute is in no network
        ("client_address", "!=", "192.0.2.0/24", "", True),
        ("client_address", "=", "192.0.2.0/24", "2001:db8::1", False),  # not IPv4: a regex
        ("client_address", "=", "2001:db8::", "2001:db8::1", True),
        ("client_address", "=", "192.0.2.0/33", "192.0.2.1", False),  # no network
        ("recipient_count", "=>", "2", "3", True),
    ],
)
def test_comparisons_as_postfwd(
    item: str, op: str, value: str, attribute: str, expected: bool
) -> None:
    assert compare(item, op, value, attribute, NOON) is expected


@pytest.mark.parametrize(
    ("item", "value", "expected"),
    [
        ("days", "Wed", True),
        ("days", "wed", True),
        ("days", "WED", True),
        ("days", "wEd", False),  # postfwd knows three spellings only (unknown: 0, Sunday)
        ("days", "Mon-Fri", True),
        ("days", "-Tue", False),
        ("days", "Wed-", True),
        ("days", "3", True),
        ("months", "Jun", True),
        ("months", "5", True),  # postfwd's months count from 0
        ("months", "Jul-Dec", False),
        ("time", "11:59:59-12:00:00", True),
        ("time", "12:00:01-", False),
        ("date", "03.06.2026", True),
        ("date", "04.06.2026-", False),
        ("date", "01.01.2026-31.12.2026", True),
    ],
)
def test_windows_as_postfwd(item: str, value: str, expected: bool) -> None:
    assert compare(item, "=", value, "", NOON) is expected
    assert compare(item, "!=", value, "", NOON) is not expected


def test_local_time_is_postfwds() -> None:
    assert LocalTime(2026, 5, 3, 3, 12, 0, 0) == NOON


def test_postfwd_syntax_reads_as_postfwd_does() -> None:
    rules = parse_postfwd(
        "id=A; size<=1000; size>=5000; helo_name~=\\.example$; action=REJECT a\n"
        "&&M { sender==x@y; };\n"
        "id=B; &&M; client_address=192.0.2.0/24 ,198.51.100.1; action=DUNNO # comment\n"
        "action=OK\n",
        "t.cf",
    )
    first, second, third = rules
    assert [(c.item, [(t.op, t.value) for t in c.tests]) for c in first.conditions] == [
        ("size", [("=<", "1000"), ("=>", "5000")]),
        ("helo_name", [("=~", "\\.example$")]),
    ]
    assert [(c.item, len(c.tests)) for c in second.conditions] == [
        ("sender", 1),
        ("client_address", 2),
    ]
    assert (third.id, third.action, third.conditions) == ("", "OK", ())


def test_postfwd_syntax_refuses_what_postfwd_skips() -> None:
    with pytest.raises(RuleProblem, match=r"t\.cf:2: postfwd cannot read this rule"):
        parse_postfwd("id=A; action=DUNNO\nthis is no rule\n", "t.cf")


async def test_score_survives_a_set_request_score() -> None:
    rules = parse_postfwd("id=S; action=set(request_score=lots)\nid=T; action=score(+6)\n", "t.cf")
    engine = Engine(rules, {}, {}, {"5.0": "REJECT too much"})
    assert (await engine.decide({}, NOW)).action == "REJECT too much"
