"""A reload gives the milter door a new chain (``MilterBridge.swap``): connections open before
it finish with the chain, stages and negotiated steps they started with; new ones take the new
chain; the old chain is ``drained`` once its last connection has closed (then it may stop)."""

from __future__ import annotations

import pytest
import trio

pytest.importorskip("Milter", reason="pymilter (the milter extra) is not installed")

from filterd.protocols.milter_map import protocol_flags
from tests.unit.test_milter_service import (
    Connection,
    EnvelopeProbe,
    MessageProbe,
    chain_of,
    in_thread,
    make_bridge,
)


async def test_connections_keep_the_chain_they_opened_with() -> None:
    old_chain, old_probe = chain_of(MessageProbe)
    new_chain, new_probe = chain_of(EnvelopeProbe)
    await new_chain.start()
    bridge = await make_bridge(old_chain)
    before = Connection(bridge)
    assert before.negotiate()[1] == protocol_flags({"on_message"})
    await in_thread(before.connect)
    old = bridge.swap(new_chain, bridge.settings)
    assert not old.drained.is_set()  # a connection still runs it
    after = Connection(bridge)
    assert after.negotiate()[1] == protocol_flags(
        {"on_connect", "on_helo", "on_mail_from", "on_rcpt", "on_message"}
    )
    await in_thread(after.connect)
    await in_thread(before.message)
    await in_thread(after.message)
    assert (len(old_probe.seen), len(new_probe.seen)) == (1, 1)
    assert bridge.hops == 1 + 5  # the old chain: end of message; the new: every stage
    await in_thread(before.close)
    with trio.fail_after(5):
        await old.drained.wait()
    await in_thread(after.close)
    assert (bridge.attached, bridge.connections) == (0, 0)
    assert not bridge.current.drained.is_set()  # in force: never drained


async def test_a_chain_without_connections_is_drained_at_once() -> None:
    old_chain, _ = chain_of(MessageProbe)
    new_chain, _ = chain_of(MessageProbe)
    bridge = await make_bridge(old_chain)
    assert bridge.swap(new_chain, bridge.settings).drained.is_set()


async def test_waiting_for_every_connection_to_close() -> None:
    chain, _ = chain_of(MessageProbe)
    bridge = await make_bridge(chain)
    await bridge.wait_for_connections()  # none: at once
    conn = Connection(bridge)
    conn.negotiate()
    await in_thread(conn.connect)
    closed = False

    async def close_later() -> None:
        nonlocal closed
        await trio.sleep(0.05)
        closed = True
        await in_thread(conn.close)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(close_later)
            await bridge.wait_for_connections()
            assert closed
