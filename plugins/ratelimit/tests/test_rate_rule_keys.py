"""What the rate rule actions count per, as postfwd 1.35 keys its rate objects: the rule (its
id) and the limit, the attribute's value (lower case; the ``5321`` kinds keep an address's local
part); and the one state store the actions naming the same file share in a process."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from filterd_ratelimit.rule_action import RateAction, rfc5321_value

from filterd.sdk import MailLog, PluginEnv
from filterd.sdk.rule_actions import load_rule_action, takes_rule

START = 1_699_999_200.0


def clock() -> float:
    return START


def env() -> PluginEnv:  # one clock: the rules plugin gives its actions one env
    return PluginEnv("rules", MailLog("rules"), trio.CapacityLimiter(4), clock)


async def started(name: str, path: Path) -> RateAction:
    action = load_rule_action(name, {"state": {"path": str(path)}}, env())
    assert isinstance(action, RateAction)
    await action.start()
    return action


def request(**attrs: str) -> dict[str, str]:
    return {"client_address": "192.0.2.10", "sender": "alice@example.com", **attrs}


async def test_two_rules_with_the_same_limit_count_apart(tmp_path: Path) -> None:
    rate = await started("rate", tmp_path / "rates.sqlite")
    assert takes_rule(rate)
    argument = "sender/2/3600/REJECT $$ratecount"
    try:
        answers = [await rate(argument, request(), START, rule=rule) for rule in "AABBA"]
        assert answers == [None, None, None, None, "REJECT 3"]
        # the same rule id shares its counter (as postfwd: duplicate ids, one rate object)
        assert await rate(argument, request(), START, rule="B") == "REJECT 3"
        # another limit in the same rule counts on its own
        assert await rate("sender/3/3600/REJECT", request(), START, rule="A") is None
    finally:
        await rate.stop()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Bob@Example.ORG", "Bob@example.org"),
        ("bob@example.org", "bob@example.org"),
        ("a@b@C", "a@b@c"),  # Perl's ^([^@]+)@(\S+)$: the first @ splits
        ("Bob@exa mple.org", "bob@exa mple.org"),  # no address: all lower case
        ("@Example.org", "@example.org"),
        ("192.0.2.10", "192.0.2.10"),
        ("MX.Example.COM", "mx.example.com"),
        ("", ""),
    ],
)
def test_rfc5321_values(value: str, expected: str) -> None:
    assert rfc5321_value(value) == expected


async def test_rate5321_keeps_the_local_part(tmp_path: Path) -> None:
    path = tmp_path / "rates.sqlite"
    strict, folded = await started("rate5321", path), await started("rate", path)
    argument = "sender/1/3600/REJECT $$ratecount"
    try:
        assert await strict(argument, request(sender="Bob@Example.ORG"), START, rule="S") is None
        assert await strict(argument, request(sender="Bob@example.org"), START, rule="S") == (
            "REJECT 2"
        )
        assert await strict(argument, request(sender="bob@example.org"), START, rule="S") is None
        # rate() folds the local part too
        assert await folded(argument, request(sender="Bob@Example.ORG"), START, rule="F") is None
        assert await folded(argument, request(sender="bob@example.org"), START, rule="F") == (
            "REJECT 2"
        )
    finally:
        await strict.stop()
        await folded.stop()


async def test_size5321_and_rcpt5321_count_their_amounts(tmp_path: Path) -> None:
    path = tmp_path / "rates.sqlite"
    size, rcpt = await started("size5321", path), await started("rcpt5321", path)
    try:
        big = request(sender="Carol@Example.net", size="700", recipient_count="2")
        assert await size("sender/1000/3600/REJECT $$ratecount bytes", big, START) is None
        assert await size("sender/1000/3600/REJECT $$ratecount bytes", big, START) == (
            "REJECT 1400 bytes"
        )
        other = request(sender="carol@example.net", size="700", recipient_count="2")
        assert await size("sender/1000/3600/REJECT $$ratecount bytes", other, START) is None
        assert await rcpt("sender/3/3600/REJECT $$ratecount rcpts", big, START) is None
        assert await rcpt("sender/3/3600/REJECT $$ratecount rcpts", big, START) == (
            "REJECT 4 rcpts"
        )
    finally:
        await size.stop()
        await rcpt.stop()


async def test_actions_naming_one_file_share_one_store(tmp_path: Path) -> None:
    path = tmp_path / "rates.sqlite"
    rate, size = await started("rate", path), await started("size", path)
    elsewhere = await started("rcpt", tmp_path / "other.sqlite")
    try:
        assert rate._store is not None
        assert rate._store is size._store
        assert elsewhere._store is not rate._store
        store = rate._store
        await size.stop()  # rate() still holds it: it stays open
        assert await rate("sender/5/60/REJECT", request(), START) is None
        assert await store.get("missing") is None
    finally:
        await rate.stop()
        await size.stop()
        await elsewhere.stop()
    # the last user closed it: a new action opens the file afresh and finds the counts
    again = await started("rate", path)
    try:
        assert again._store is not store
        answers = [await again("sender/5/60/REJECT $$ratecount", request(), START) for _ in "12345"]
        assert answers == [None, None, None, None, "REJECT 6"]
    finally:
        await again.stop()
