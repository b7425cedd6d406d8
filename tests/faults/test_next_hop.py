"""filterd's next hop fails while a private Postfix sends through filterd (its after-queue
content filter): refusing connections, accepting and never greeting, stalling after the final
dot, answering 421 at RCPT or after the dot, resetting the connection after the dot.

Each case first makes every transaction fail (the messages stay queued at the sender, nothing
reaches the sink, every deferral is filterd's 4xx), then every third one (the sender retries
until each message passed), then none: every message is at the sink exactly once. The reset
after the dot is the exception: the next hop kept the message but the answer was lost, so filterd
answers 4xx and the sender tries again: a second copy is the expected SMTP behaviour there
(RFC 5321 §6.1, "at least once"), and only there."""

from __future__ import annotations

import pytest

from tests.faults.ledger import Ledger
from tests.support.filterd_proc import FilterdFactory, FilterdProcess
from tests.support.nexthop import Fault, ScriptedNextHop, hop_in_thread
from tests.support.postfix import PostfixFactory, PostfixInstance, free_port, postfix_available

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not postfix_available(), reason="Postfix (master) is not installed"),
    pytest.mark.timeout(240),
]

MESSAGES = 12
HOP_TIMEOUT = "3s"  # filterd's every wait on the next hop: a stalled hop costs this much


def relay_config(port: int, next_hop: int) -> str:
    return f"""
[[listen]]
address = "127.0.0.1:{port}"
hostname = "filterd.test"
[delivery]
method = "relay"
next_hop = "127.0.0.1:{next_hop}"
connect_timeout = "{HOP_TIMEOUT}"
command_timeout = "{HOP_TIMEOUT}"
data_timeout = "{HOP_TIMEOUT}"
"""


def setup(
    postfix_factory: PostfixFactory, filterd_factory: FilterdFactory, hop_port: int
) -> tuple[PostfixInstance, FilterdProcess, int]:
    port = free_port()
    postfix = postfix_factory(content_filter="smtp", filter_port=port)
    return postfix, filterd_factory(relay_config(port, hop_port)), port


def test_next_hop_refusing_connections(
    postfix_factory: PostfixFactory, filterd_factory: FilterdFactory
) -> None:
    hop = ScriptedNextHop(port=free_port())  # nothing listens there yet
    postfix, filterd, port = setup(postfix_factory, filterd_factory, hop.port)
    ledger = Ledger(postfix, port, lambda: list(hop.messages), MESSAGES)
    ledger.inject()
    ledger.wait_until_attempted()
    ledger.check_held()
    with hop_in_thread(hop):
        ledger.wait_all_delivered()
    assert filterd.running()


@pytest.mark.parametrize(
    "fault", ["no_greeting", "stall_after_dot", "421_at_rcpt", "421_after_dot", "reset_after_dot"]
)
def test_next_hop_misbehaving(
    postfix_factory: PostfixFactory, filterd_factory: FilterdFactory, fault: Fault
) -> None:
    hop = ScriptedNextHop(fault=fault)
    with hop_in_thread(hop):
        postfix, filterd, port = setup(postfix_factory, filterd_factory, hop.port)
        ledger = Ledger(postfix, port, lambda: list(hop.messages), MESSAGES)
        ledger.inject()
        ledger.wait_until_attempted()
        reset = fault == "reset_after_dot"
        if reset:  # the hop kept each message it reset: they are at the sink, yet queued
            snap = ledger.check(duplicates_allowed=True)
            assert snap.sent == set(), snap.describe()
            assert snap.queued == ledger.recipients, snap.describe()
            assert snap.at_sink, "the next hop kept nothing: the reset was never exercised"
            assert all(
                "said: 4" in line or "refused to talk to me: 4" in line for line in snap.deferred
            ), snap.deferred
        else:
            ledger.check_held()
        hop.fault_every = 3
        ledger.wait_all_delivered(duplicates_allowed=reset)
        hop.fault = None
        last = Ledger(postfix, port, lambda: list(hop.messages), 3, first=MESSAGES)
        last.inject()
        last.wait_all_delivered()
        snap = ledger.check(duplicates_allowed=reset)
        if not reset:
            assert all(copies == 1 for copies in snap.at_sink.values()), snap.describe()
        assert filterd.running()
