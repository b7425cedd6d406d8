"""Greylisting on a shared Redis store (a private redis-server): every decision is one round
trip to the server (one EVALSHA of the sighting script), whatever it finds: a new triplet, an
early retry, the first pass (which also counts the client towards auto-whitelisting), a known
triplet, an auto-whitelisted client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio
from filterd_greylist.config import GreylistConfig
from filterd_greylist.greylisting import Greylisting

from filterd.sdk import MailLog, PluginEnv
from tests.support.redis import RedisInstance, redis_installed, running_redis

pytestmark = [
    pytest.mark.skipif(not redis_installed(), reason="redis-server is not installed"),
    pytest.mark.timeout(60),
]

START = 1_700_000_000
HOUR = 3600


@pytest.fixture
def redis_server() -> Iterator[RedisInstance]:
    with running_redis() as server:
        yield server


async def test_every_decision_is_one_round_trip(redis_server: RedisInstance) -> None:
    config = GreylistConfig(
        delay=300,
        auto_whitelist_clients=2,
        whitelist_clients=[],
        whitelist_recipients=[],
        state={"backend": "redis", "url": redis_server.url},
    )
    env = PluginEnv("greylist", MailLog("greylist"), trio.CapacityLimiter(1))
    greylisting = Greylisting(config, env)
    await greylisting.start()
    try:
        await greylisting.decide("192.0.2.99", "", "warm@example.com", "up@example.org", START)
        steps = [  # (client, sender, seconds after START, outcome, why)
            ("192.0.2.1", "a@example.com", 0, "greylisted", "new"),
            ("192.0.2.1", "a@example.com", 10, "greylisted", "early-retry"),
            ("192.0.2.1", "a@example.com", 300, "first-pass", "pass delay=300"),
            ("192.0.2.1", "a@example.com", 400, "go-on", "pass"),
            ("192.0.2.1", "b@example.com", 2 * HOUR, "greylisted", "new"),
            ("192.0.2.1", "b@example.com", 2 * HOUR + 300, "first-pass", "pass delay=300"),
            ("192.0.2.1", "c@example.com", 3 * HOUR, "go-on", "client-awl"),
        ]
        for client, sender, after, outcome, why in steps:
            with redis_server.monitor() as sent:
                decision = await greylisting.decide(
                    client, "", sender, "bob@example.org", START + after
                )
            assert (decision.outcome, decision.why) == (outcome, why)
            assert len(sent) == 1, sent
            assert '"evalsha"' in sent[0].lower(), sent
    finally:
        await greylisting.stop()
