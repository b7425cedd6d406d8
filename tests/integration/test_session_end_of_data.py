"""End of data at the SMTP door.

A message whose envelope a plugin changed (here a REDIRECT) is handed on in a new transaction;
the next hop's answer for the new recipients is the client's answer: a recipient the next hop
refuses must not turn into a 250 for the recipients the client gave (nobody else could bounce
it: the message would be lost). A spool that fails at end of data is a 452, not a lost
connection."""

from __future__ import annotations

import pytest
import trio

from filterd.chain.runner import ChainRunner, Entry
from filterd.config.schema import ChainEntryConfig
from filterd.model.edits import Redirect
from filterd.model.envelope import Transaction
from filterd.model.message import MessageView
from filterd.model.verdict import Continue, Verdict
from tests.support.fakes import DELIVERED, ScriptedDelivery
from tests.support.session import make_config, session


class RedirectTo:
    def __init__(self, address: str) -> None:
        self.address = address

    async def on_message(self, t: Transaction, message: MessageView) -> Verdict:
        return Continue(edits=(Redirect(self.address),))


def redirecting(address: str) -> ChainRunner:
    entry = Entry(
        ChainEntryConfig(plugin="redirect", timeout=30.0),
        RedirectTo(address),  # type: ignore[arg-type]
        trio.CapacityLimiter(10),
        frozenset({"on_message"}),
    )
    return ChainRunner([entry])


async def send_one(delivery: ScriptedDelivery, chain: ChainRunner) -> str:
    async with session(delivery, make_config(), chain) as client:
        assert (await client.line()).startswith("220 ")
        await client.send_lines("EHLO client.example")
        await client.reply()
        await client.send_lines(
            "MAIL FROM:<a@example.com>", "RCPT TO:<b@example.org>", "RCPT TO:<c@example.org>"
        )
        assert [(await client.code())[:3] for _ in range(3)] == ["250", "250", "250"]
        await client.send_lines("DATA")
        assert (await client.code()).startswith("354")
        await client.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        return await client.line()


async def test_a_redirect_the_next_hop_takes_goes_to_the_new_address_only() -> None:
    delivery = ScriptedDelivery()
    reply = await send_one(delivery, redirecting("elsewhere@example.net"))
    assert reply.startswith(str(DELIVERED.code))
    (message,) = delivery.messages
    assert message.recipients == ["elsewhere@example.net"]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("reject-me@example.net", "550 5.1.1"),  # refused at RCPT, permanently
        ("defer-me@example.net", "451 4.3.0"),  # refused at RCPT, for now
        ("late-reject@example.net", "554 5.7.1"),  # refused after DATA
        ("late-defer@example.net", "451 4.3.0"),
    ],
)
async def test_a_redirect_the_next_hop_refuses_is_refused_to_the_client(
    target: str, expected: str
) -> None:
    delivery = ScriptedDelivery()
    reply = await send_one(delivery, redirecting(target))
    assert reply.startswith(expected), reply
    assert delivery.messages == []


async def test_a_spool_that_cannot_flush_at_end_of_data_is_a_452_and_the_session_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The spool's file object buffers its last bytes: a full disk can show only when they are
    flushed, at end of data. That is the same 452 4.3.1 as a failed write, before the chain or
    the next hop reads the message (not a lost connection)."""
    import errno

    from filterd.model.spool import Spool

    def full(self: Spool) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Spool, "flush", full)
    delivery = ScriptedDelivery()
    reply = await send_one(delivery, ChainRunner())
    assert reply.startswith("452 4.3.1"), reply
    assert delivery.messages == []
