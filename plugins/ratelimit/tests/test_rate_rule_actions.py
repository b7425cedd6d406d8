"""The rules plugin's ``rate()``, ``size()`` and ``rcpt()`` actions (filterd_ratelimit.rule_action)
on a fake clock: postfwd's counting (the request creating the limit counts, an excess does not,
``$$ratecount``), what is counted per, the arguments refused with their fix, the store-failure
policy, SQLite and a real redis-server; and the rules plugin using them at the SMTP door's RCPT."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import pytest
import trio
from filterd_ratelimit.rule_action import (
    RateAction,
    make_rate_action,
    make_size_action,
    parse_limit,
)
from filterd_rules import Rules

from filterd.sdk import MailLog, PluginEnv, Reply
from filterd.sdk.rule_actions import load_rule_action
from filterd.testing import run_plugin
from tests.support.redis import redis_installed, running_redis

START = 1_699_999_200.0  # a whole hour: windows of 1 min, 10 min and 1 h start here
MESSAGE = b"Subject: hi\r\n\r\nbody\r\n"


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def env(clock: Clock) -> PluginEnv:
    return PluginEnv("rules", MailLog("rules"), trio.CapacityLimiter(4), clock)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["sqlite", "redis"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, object]]:
    if request.param == "sqlite":
        yield {"path": str(tmp_path / "ratelimit.sqlite")}
        return
    if not redis_installed():
        pytest.skip("redis-server is not installed")
    with running_redis() as server:
        yield {"backend": "redis", "url": server.url}


@pytest.fixture
async def sqlite_state(tmp_path: Path) -> dict[str, object]:
    return {"path": str(tmp_path / "ratelimit.sqlite")}


async def started(name: str, state: Mapping[str, object], clock: Clock) -> RateAction:
    action = load_rule_action(name, {"state": dict(state)}, env(clock))
    assert isinstance(action, RateAction)
    await action.start()
    return action


@pytest.fixture
async def rate(state: dict[str, object], clock: Clock) -> AsyncIterator[RateAction]:
    action = await started("rate", state, clock)
    yield action
    await action.stop()


def request(**attrs: str) -> dict[str, str]:
    return {
        "protocol_state": "RCPT",
        "client_address": "192.0.2.10",
        "client_name": "unknown",
        "sender": "alice@example.com",
        "recipient": "bob@example.org",
        "sasl_username": "",
        "size": "0",
        "recipient_count": "0",
        **attrs,
    }


async def test_rate_counts_until_exceeded_and_keeps_an_excess_out(
    rate: RateAction, clock: Clock
) -> None:
    argument = "client_address/3/60/450 4.7.1 sorry, $$ratecount requests"
    answers = [await rate(argument, request(), clock.now) for _ in range(5)]
    assert answers == [
        None,
        None,
        None,
        "450 4.7.1 sorry, 4 requests",
        "450 4.7.1 sorry, 4 requests",
    ]
    # another client has its own counter; the value is compared without regard to case
    assert await rate(argument, request(client_address="192.0.2.11"), clock.now) is None
    mixed = "sender/1/60/REJECT $$(ratecount) from one sender"
    assert await rate(mixed, request(sender="Alice@Example.COM"), clock.now) is None
    assert await rate(mixed, request(), clock.now) == "REJECT 2 from one sender"


async def test_the_window_forgets(rate: RateAction, clock: Clock) -> None:
    argument = "sender/2/60/DEFER slow down"
    assert [await rate(argument, request(), clock.now) for _ in range(3)] == [
        None,
        None,
        "DEFER slow down",
    ]
    clock.now += 120  # two windows on: nothing of the earlier requests is left
    assert await rate(argument, request(), clock.now) is None
    assert await rate(argument, request(), clock.now) is None
    assert await rate(argument, request(), clock.now) == "DEFER slow down"


async def test_each_limit_counts_on_its_own(rate: RateAction, clock: Clock) -> None:
    # postfwd's manual: the smaller limit first answers its WARN; the larger never does
    warn, reject = "sender/2/3600/WARN yellow", "sender/3/3600/REJECT red"
    assert [await rate(warn, request(), clock.now) for _ in range(3)] == [None, None, "WARN yellow"]
    assert [await rate(reject, request(), clock.now) for _ in range(4)] == [
        None,
        None,
        None,
        "REJECT red",
    ]


async def test_size_counts_bytes_and_the_first_request_counts_whatever_its_size(
    sqlite_state: dict[str, object], clock: Clock
) -> None:
    size = await started("size", sqlite_state, clock)
    argument = "client_address/1000/3600/552 5.3.4 too much: $$ratecount bytes"
    eom = {"protocol_state": "END-OF-MESSAGE"}
    assert await size(argument, request(size="600", **eom), clock.now) is None
    assert await size(argument, request(size="400", **eom), clock.now) is None
    assert await size(argument, request(size="1", **eom), clock.now) == (
        "552 5.3.4 too much: 1001 bytes"
    )
    # nothing to count (no SIZE= at RCPT): goes on, counts nothing
    assert await size(argument, request(size="0"), clock.now) is None
    other = request(client_address="198.51.100.1", size="5000", **eom)
    assert await size(argument, other, clock.now) == "552 5.3.4 too much: 5000 bytes"
    small = request(client_address="198.51.100.1", size="10", **eom)
    assert await size(argument, small, clock.now) == "552 5.3.4 too much: 5010 bytes"
    await size.stop()


async def test_rcpt_counts_the_recipient_count(
    sqlite_state: dict[str, object], clock: Clock
) -> None:
    rcpt = await started("rcpt", sqlite_state, clock)
    argument = "sasl_username/5/3600/450 4.7.1 at most 5 recipients an hour"
    data = {"protocol_state": "DATA", "sasl_username": "carol"}
    assert await rcpt(argument, request(recipient_count="3", **data), clock.now) is None
    assert await rcpt(argument, request(recipient_count="0", **data), clock.now) is None
    assert await rcpt(argument, request(recipient_count="2", **data), clock.now) is None
    refused = await rcpt(argument, request(recipient_count="1", **data), clock.now)
    assert refused == "450 4.7.1 at most 5 recipients an hour"
    # an empty attribute is a value too (postfwd: every request without a login, together)
    anonymous = {"protocol_state": "DATA", "recipient_count": "4"}
    assert await rcpt(argument, request(**anonymous), clock.now) is None
    assert await rcpt(argument, request(**anonymous), clock.now) is not None
    await rcpt.stop()


async def test_a_request_without_the_attribute_goes_on(rate: RateAction, clock: Clock) -> None:
    argument = "ccert_fingerprint/1/60/REJECT never"
    for _ in range(3):
        assert await rate(argument, request(), clock.now) is None


@pytest.mark.parametrize(
    ("argument", "problem"),
    [
        ("client_address/10/60", "four parts separated by /"),
        ("192.0.2.1/10/60/REJECT", "is no attribute name"),
        ("$$(client_address)/10/60/REJECT", "is no attribute name"),
        ("sender/0/60/REJECT", "MAX '0' is not a whole number above zero"),
        ("sender/ten/60/REJECT", "MAX 'ten' is not a whole number above zero"),
        ("sender/10/1h/REJECT", "SECONDS '1h' is not a whole number above zero"),
        ("sender/10/60/", "no ACTION"),
        ("sender/10/60/slow down", "is no action"),
    ],
)
def test_malformed_arguments_are_refused_with_the_fix(argument: str, problem: str) -> None:
    found = parse_limit("rate", argument)
    assert isinstance(found, str)
    assert problem in found
    assert "write rate(ITEM/MAX/SECONDS/ACTION)" in found or "access(5) action" in found


@pytest.mark.parametrize(
    "argument",
    [
        "client_address/10/60/450 4.7.1 sorry, max 3 requests / 5 minutes",
        "$$sender/1/2/REJECT",
        "sender/500/3600/jump(R9)",
        "sender/500/3600/WARN state YELLOW for sender $$sender",
    ],
)
def test_good_arguments(argument: str) -> None:
    assert not isinstance(parse_limit("rate", argument), str)


@pytest.mark.parametrize(("policy", "answer"), [("dunno", None), ("tempfail", "451 4.3.0 ")])
async def test_a_store_that_is_down_follows_on_store_failure(
    clock: Clock, policy: str, answer: str | None
) -> None:
    with trio.socket.socket() as probe:  # a port nothing listens on
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    state = {"backend": "redis", "url": f"redis://127.0.0.1:{port}/0", "timeout": "1s",
             "on_store_failure": policy}  # fmt: skip
    action = await started("rate", state, clock)
    with trio.fail_after(10):
        got = await action("sender/1/60/REJECT", request(), clock.now)
    if answer is None:
        assert got is None
    else:
        assert got is not None
        assert got.startswith(answer)
    await action.stop()


def test_bad_settings_name_the_key_and_the_fix(clock: Clock) -> None:
    with pytest.raises(ValueError, match=r"actions\.rate\.state\.backend: .*fix: "):
        make_rate_action({"state": {"backend": "memcached"}}, env(clock))
    with pytest.raises(ValueError, match=r"actions\.size\.limit: "):
        make_size_action({"limit": 5}, env(clock))


def rules_at(clock: Clock) -> type[Rules]:
    class Clocked(Rules):
        clock = staticmethod(lambda: clock.now)

    return Clocked


async def test_the_rules_plugin_limits_at_rcpt_and_goes_on_below(
    tmp_path: Path, clock: Clock
) -> None:
    config = {
        "rules": [
            {"id": "RATE", "action": "rate($$client_address/2/60/450 4.7.1 too many: $$ratecount)"},
            {
                "id": "AFTER",
                "recipient": "== last@example.org",
                "action": "REJECT the list went on",
            },
        ],
        "actions": {"rate": {"state": {"path": str(tmp_path / "ratelimit.sqlite")}}},
    }
    plugin = rules_at(clock)
    first = await run_plugin(plugin, config, message=MESSAGE, rcpts=["a@example.org"])
    assert first.reply is None
    went_on = await run_plugin(plugin, config, message=MESSAGE, rcpts=["last@example.org"])
    assert went_on.reply == Reply(
        554, "5.7.1", "<last@example.org>: Recipient address rejected: the list went on"
    )
    third = await run_plugin(plugin, config, message=MESSAGE, rcpts=["b@example.org"])
    assert third.reply == Reply(
        450, "4.7.1", "<b@example.org>: Recipient address rejected: too many: 3"
    )
    other = await run_plugin(plugin, config, message=MESSAGE, client_ip="192.0.2.99")
    assert other.reply is None
    clock.now += 120
    later = await run_plugin(plugin, config, message=MESSAGE, rcpts=["b@example.org"])
    assert later.reply is None


async def test_the_rules_plugin_refuses_a_malformed_limit_at_start_up(tmp_path: Path) -> None:
    config = {
        "rules": [{"id": "RATE", "action": "size(sender/1MB/3600/REJECT)"}],
        "actions": {"size": {"state": {"path": str(tmp_path / "ratelimit.sqlite")}}},
    }
    with pytest.raises(
        ValueError, match=r"size\(sender/1MB/3600/REJECT\): .*MAX '1MB' is not a whole number"
    ):
        await run_plugin(Rules, config, message=MESSAGE)
