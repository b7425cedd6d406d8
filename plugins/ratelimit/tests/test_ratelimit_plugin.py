"""The ratelimit plugin's decisions on a fake clock (no sleeping): windows sliding, each key
kind (the SASL user: test_ratelimit_doors.py, at the policy door), bytes and recipients, the
action on excess, refused attempts given back, the store-failure policy, on SQLite and on a
real redis-server."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import pytest
import trio
from filterd_ratelimit.plugin import RateLimit
from filterd_ratelimit.window import take

from filterd.sdk import (
    Client,
    ConfigError,
    Continue,
    MailLog,
    MessageView,
    PluginEnv,
    Recipient,
    Reject,
    Reply,
    Session,
    TempFail,
    Transaction,
    Verdict,
)
from filterd.testing import validate_config
from tests.support.redis import redis_installed, running_redis

START = 1_699_999_200.0  # a whole hour: buckets of 1 min, 10 min and 1 h start here
HOUR = 3600


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


class Message:
    """What the plugin reads of a message: its size."""

    def __init__(self, size: int) -> None:
        self.size = size


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


async def started(
    limits: list[dict[str, object]], state: Mapping[str, object], clock: Clock
) -> RateLimit:
    config = validate_config(RateLimit, {"limits": limits, "state": dict(state)})
    plugin = RateLimit(
        config, PluginEnv("ratelimit", MailLog("ratelimit"), trio.CapacityLimiter(4), clock)
    )
    await plugin.start()
    return plugin


@pytest.fixture
def sqlite(tmp_path: Path) -> dict[str, object]:
    return {"path": str(tmp_path / "ratelimit.sqlite")}


def transaction(
    sender: str = "alice@example.com",
    ip: str = "192.0.2.10",
    rcpts: tuple[str, ...] = ("bob@example.org",),
) -> Transaction:
    session = Session("s1", "test", Client(address=ip, helo="client.example"))
    t = Transaction("QID", session, sender=sender)
    t.recipients.extend(Recipient(r, reply=Reply(250, "2.1.5", "Ok")) for r in rcpts)
    return t


async def message(plugin: RateLimit, size: int = 100, **envelope: Any) -> Verdict:
    return await plugin.on_message(transaction(**envelope), cast(MessageView, Message(size)))


def refused(verdict: Verdict) -> str:
    assert isinstance(verdict, TempFail | Reject), verdict
    return f"{verdict.reply.code} {verdict.reply.status} {verdict.reply.text}"


def passes(verdict: Verdict) -> bool:
    return isinstance(verdict, Continue) and not verdict.findings


SENDER_3_PER_MINUTE = {"name": "sender-msgs", "key": "sender", "count": "messages",
                       "limit": 3, "window": "1m"}  # fmt: skip


async def test_the_window_slides(state: dict[str, object], clock: Clock) -> None:
    plugin = await started([SENDER_3_PER_MINUTE], state, clock)
    for _ in range(3):
        assert passes(await message(plugin))
    assert refused(await message(plugin)) == (
        "450 4.7.1 <alice@example.com>: Sender address rejected: "
        "Rate limit exceeded: more than 3 messages per 1m"
    )
    assert passes(await message(plugin, sender="other@example.com"))
    clock.now += 60  # a new bucket; the whole previous one still counts (3 + 1 > 3)
    refused(await message(plugin))
    clock.now += 30  # half of the previous bucket: 1.5 + 1
    assert passes(await message(plugin))
    refused(await message(plugin))  # 1.5 + 2 + 1 (given back: the previous refusal did not count)
    clock.now += 60  # the previous bucket holds 1, weighted 0.5: 0.5 + 1, 0.5 + 2, 0.5 + 3
    assert passes(await message(plugin))
    assert passes(await message(plugin))
    refused(await message(plugin))
    clock.now += 120  # both buckets gone
    for _ in range(3):
        assert passes(await message(plugin))
    await plugin.stop()


async def test_refused_attempts_do_not_count(state: dict[str, object], clock: Clock) -> None:
    plugin = await started([SENDER_3_PER_MINUTE], state, clock)
    for _ in range(3):
        assert passes(await message(plugin))
    for _ in range(20):  # a client retrying hard
        refused(await message(plugin))
    clock.now += 120
    assert passes(await message(plugin))
    await plugin.stop()


async def test_recipients_are_counted_at_rcpt(sqlite: dict[str, object], clock: Clock) -> None:
    limit = {"name": "rcpts", "key": "sender", "count": "recipients", "limit": 2, "window": "10m"}
    plugin = await started([limit], sqlite, clock)
    t = transaction()
    assert passes(await plugin.on_rcpt(t, Recipient("a@example.org")))
    assert passes(await plugin.on_rcpt(t, Recipient("b@example.org")))
    assert refused(await plugin.on_rcpt(t, Recipient("c@example.org"))) == (
        "450 4.7.1 <c@example.org>: Recipient address rejected: "
        "Rate limit exceeded: more than 2 recipients per 10m"
    )
    # recipient limits are not counted again at the end of the message
    assert passes(await message(plugin, rcpts=("a@example.org", "b@example.org")))
    await plugin.stop()


async def test_bytes(sqlite: dict[str, object], clock: Clock) -> None:
    action = "452 4.3.1 Too much mail from {key}, at most {limit} {count} per {window}"
    limit = {"name": "volume", "key": "sender", "count": "bytes", "limit": "1k", "window": "1h",
             "action": action}  # fmt: skip
    plugin = await started([limit], sqlite, clock)
    assert passes(await message(plugin, 400))
    assert passes(await message(plugin, 400))
    assert refused(await message(plugin, 400)) == (
        "452 4.3.1 <alice@example.com>: Sender address rejected: "
        "Too much mail from alice@example.com, at most 1000 bytes per 1h"
    )
    assert passes(await message(plugin, 200))  # 1000: not more than the limit
    refused(await message(plugin, 1))
    await plugin.stop()


async def test_client_key_by_address_and_by_network(
    sqlite: dict[str, object], clock: Clock
) -> None:
    by_host = {"name": "host", "key": "client", "count": "messages", "limit": 1, "window": "1h"}
    by_net = {"name": "net", "key": "client", "count": "messages", "limit": 2, "window": "1h",
              "client_ipv4_prefix": 24, "client_ipv6_prefix": 64}  # fmt: skip
    plugin = await started([by_host, by_net], sqlite, clock)
    assert passes(await message(plugin, ip="192.0.2.1"))
    assert passes(await message(plugin, ip="192.0.2.2"))
    # 192.0.2.3's own limit is fine, its /24 is at 2: refused by "net", nothing counted for it
    assert "per 1h" in refused(await message(plugin, ip="192.0.2.3"))
    assert "more than 1 messages" in refused(await message(plugin, ip="192.0.2.1"))
    assert passes(await message(plugin, ip="2001:db8::1"))
    assert passes(await message(plugin, ip="2001:db8::2"))
    refused(await message(plugin, ip="2001:db8::3"))
    assert passes(await message(plugin, ip="2001:db8:1::3"))  # another /64
    assert passes(await message(plugin, ip="unknown"))  # no address: not limited
    await plugin.stop()


async def test_recipient_key(sqlite: dict[str, object], clock: Clock) -> None:
    limit = {"name": "inbound", "key": "recipient", "count": "messages", "limit": 1, "window": "1h"}
    plugin = await started([limit], sqlite, clock)
    assert passes(await message(plugin, rcpts=("Bob@example.org", "carol@example.org")))
    refused(await message(plugin, sender="x@example.net", rcpts=("bob@example.org",)))
    assert passes(await message(plugin, rcpts=("dave@example.org",)))
    await plugin.stop()


async def test_an_action_that_does_not_refuse_counts(
    sqlite: dict[str, object], clock: Clock
) -> None:
    limit = {**SENDER_3_PER_MINUTE, "limit": 1, "action": "WARN sender over its rate"}
    plugin = await started([limit], sqlite, clock)
    assert passes(await message(plugin))
    warned = await message(plugin)
    assert isinstance(warned, Continue)
    assert [str(f) for f in warned.findings] == ["ratelimit=sender-msgs exceeded"]
    await plugin.stop()


@pytest.mark.parametrize(("policy", "tempfails"), [("dunno", False), ("tempfail", True)])
async def test_a_store_that_is_down_follows_on_store_failure(
    clock: Clock, policy: str, tempfails: bool
) -> None:
    with trio.socket.socket() as probe:  # a port nothing listens on
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    state = {"backend": "redis", "url": f"redis://127.0.0.1:{port}/0", "timeout": "1s",
             "on_store_failure": policy}  # fmt: skip
    plugin = await started([SENDER_3_PER_MINUTE], state, clock)
    with trio.fail_after(10):
        verdict = await message(plugin)
    if tempfails:
        assert refused(verdict) == "451 4.3.0 Temporary policy state failure"
    else:
        assert isinstance(verdict, Continue)
        assert [str(f) for f in verdict.findings] == ["ratelimit=store-failure"]
    await plugin.stop()


async def test_counts_survive_a_restart(sqlite: dict[str, object], clock: Clock) -> None:
    plugin = await started([SENDER_3_PER_MINUTE], sqlite, clock)
    for _ in range(3):
        assert passes(await message(plugin))
    await plugin.stop()
    restarted = await started([SENDER_3_PER_MINUTE], sqlite, clock)
    refused(await message(restarted))
    await restarted.stop()


async def test_take_is_the_reusable_core(sqlite: dict[str, object], clock: Clock) -> None:
    plugin = await started([SENDER_3_PER_MINUTE], sqlite, clock)
    usage = await take(plugin.store, "rules:r1:alice", 5, limit=8, window=60, now=clock.now)
    assert (usage.estimate, usage.exceeded) == (5, False)
    usage = await take(plugin.store, "rules:r1:alice", 5, limit=8, window=60, now=clock.now + 90)
    assert (usage.estimate, usage.exceeded) == (7.5, False)
    await plugin.stop()


@pytest.mark.parametrize(
    ("limits", "complaint"),
    [
        ([{**SENDER_3_PER_MINUTE, "action": "check_client_access hash:/x"}], "not an action"),
        ([{**SENDER_3_PER_MINUTE, "action": "OK"}], "not an action"),
        ([SENDER_3_PER_MINUTE, SENDER_3_PER_MINUTE], 'two limits are named "sender-msgs"'),
        ([{**SENDER_3_PER_MINUTE, "key": "helo"}], "sender"),
        ([], "at least 1"),
    ],
)
def test_config_errors(limits: list[dict[str, object]], complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        validate_config(RateLimit, {"limits": limits})
