"""The trio session shell on memory streams: replies, delivery contract, deadlines, stop."""

from __future__ import annotations

import trio
import trio.testing

from filterd.delivery.interface import collapse_replies
from filterd.frontdoors.shutdown import Shutdown
from filterd.model import replies
from tests.support.fakes import DELIVERED, ScriptedDelivery
from tests.support.session import make_config, session

EHLO_LINES = 10


async def ehlo(client) -> None:  # type: ignore[no-untyped-def]
    assert (await client.line()).startswith("220 ")
    await client.send_lines("EHLO client.example")
    await client.reply()


async def test_message_content_is_delivered_unstuffed_with_our_received_header() -> None:
    delivery = ScriptedDelivery()
    config = make_config(received=True)
    async with session(delivery, config) as client:
        await ehlo(client)
        await client.send_lines("MAIL FROM:<a@example.com>", "RCPT TO:<b@example.org>", "DATA")
        assert [await client.code() for _ in range(3)][-1].startswith("354")
        await client.send(b"Subject: x\r\n\r\n..one\r\ntwo\r\n.\r\n")
        assert await client.code() == str(DELIVERED)
    (message,) = delivery.messages
    assert message.sender == "a@example.com"
    assert message.recipients == ["b@example.org"]
    head, _, body = message.content.partition(b"Subject: x\r\n")
    assert head.startswith(b"Received: from client.example (client.example [192.0.2.10])\r\n")
    assert b"by filterd.test (filterd) with ESMTP id " in head
    assert b"for <b@example.org>;" in head
    assert body == b"\r\n.one\r\ntwo\r\n"


async def test_xforward_sets_the_client_seen_in_the_received_header() -> None:
    delivery = ScriptedDelivery()
    async with session(delivery, make_config(received=True)) as client:
        await ehlo(client)
        await client.send_lines(
            "XFORWARD NAME=mx.sender.example ADDR=198.51.100.7 PORT=4711",
            "XFORWARD PROTO=ESMTP HELO=helo.sender.example IDENT=ABC123 SOURCE=REMOTE",
            "MAIL FROM:<a@example.com>",
            "RCPT TO:<b@example.org>",
            "DATA",
        )
        for _ in range(5):
            await client.code()
        await client.send(b"x\r\n.\r\n")
        await client.code()
        # XFORWARD is reset after the transaction: the next one is from the real peer.
        await client.send_lines("MAIL FROM:<a@example.com>", "RCPT TO:<b@example.org>", "DATA")
        for _ in range(3):
            await client.code()
        await client.send(b"y\r\n.\r\n")
        await client.code()
    first, second = delivery.messages
    assert first.content.startswith(
        b"Received: from helo.sender.example (mx.sender.example [198.51.100.7])"
    )
    assert second.content.startswith(b"Received: from client.example (client.example")


async def test_xforward_from_untrusted_client_is_refused() -> None:
    async with session(ScriptedDelivery(), xforward_allowed=False) as client:
        await ehlo(client)
        await client.send_lines("XFORWARD ADDR=1.2.3.4")
        assert await client.code() == str(replies.XFORWARD_DENIED)


async def test_next_stage_failure_after_data_is_a_4xx_never_250() -> None:
    delivery = ScriptedDelivery()
    async with session(delivery) as client:
        await ehlo(client)
        await client.send_lines("MAIL FROM:<a@b.example>", "RCPT TO:<late-defer@b.example>", "DATA")
        for _ in range(3):
            await client.code()
        await client.send(b"x\r\n.\r\n")
        assert (await client.code()).startswith("451 4.3.0")
    assert delivery.messages == []


async def test_mixed_results_with_smtp_client_answer_4xx_so_nothing_is_lost() -> None:
    delivery = ScriptedDelivery()
    async with session(delivery) as client:
        await ehlo(client)
        await client.send_lines(
            "MAIL FROM:<a@b.example>", "RCPT TO:<ok@b.example>", "RCPT TO:<late-reject@b.example>",
            "DATA",
        )  # fmt: skip
        for _ in range(4):
            await client.code()
        await client.send(b"x\r\n.\r\n")
        assert await client.code() == str(replies.PARTIAL_DELIVERY)


async def test_lmtp_client_gets_one_reply_per_recipient() -> None:
    delivery = ScriptedDelivery()
    async with session(delivery, make_config(protocol="lmtp")) as client:
        assert (await client.line()).endswith("LMTP filterd")
        await client.send_lines("LHLO client.example")
        await client.reply()
        await client.send_lines(
            "MAIL FROM:<a@b.example>", "RCPT TO:<ok@b.example>", "RCPT TO:<reject@b.example>",
            "RCPT TO:<late-defer@b.example>", "RCPT TO:<late-reject@b.example>", "DATA",
        )  # fmt: skip
        codes = [(await client.code())[:3] for _ in range(6)]
        assert codes == ["250", "250", "550", "250", "250", "354"]
        await client.send(b"x\r\n.\r\n")
        finals = [(await client.code())[:9] for _ in range(3)]
        assert finals == ["250 2.0.0", "451 4.3.0", "554 5.7.1"]


def test_collapse_rule() -> None:
    ok, temp, perm = DELIVERED, replies.QUEUE_WRITE, replies.TOO_BIG
    assert collapse_replies([ok, ok]) == ok
    assert collapse_replies([perm, temp]) == temp
    assert collapse_replies([perm, perm]) == perm
    assert collapse_replies([ok, perm]) == replies.PARTIAL_DELIVERY
    assert collapse_replies([temp, ok]) == replies.PARTIAL_DELIVERY


async def test_rset_and_quit_abort_the_next_stage_transaction() -> None:
    delivery = ScriptedDelivery()
    async with session(delivery) as client:
        await ehlo(client)
        await client.send_lines("MAIL FROM:<a@b.example>", "RSET")
        await client.code()
        assert await client.code() == str(replies.RESET_OK)
        await client.send_lines("MAIL FROM:<a@b.example>", "QUIT")
        await client.code()
        await client.code()
    assert delivery.aborted == 2


async def test_idle_client_times_out_with_421(autojump_clock: trio.testing.MockClock) -> None:
    async with session(ScriptedDelivery(), make_config(limits='command_timeout = "60s"')) as c:
        await ehlo(c)
        start = trio.current_time()
        assert await c.code() == str(replies.TIMEOUT)
        assert 59 < trio.current_time() - start < 61
        assert await c.closed()


async def test_dribbling_a_command_is_cut_by_the_command_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """command_timeout bounds a whole command, not each read (slowloris)."""
    async with session(ScriptedDelivery(), make_config(limits='command_timeout = "60s"')) as client:
        await ehlo(client)
        for byte in b"NOOP\r\n":  # slow, but whole within 60 s: answered
            await client.send(bytes([byte]))
            await trio.sleep(5)
        assert await client.code() == str(replies.OK)
        start = trio.current_time()
        with trio.move_on_after(1000):
            try:
                while True:  # one byte every 30 s: each wait is under 60 s, the command is not
                    await client.send(b"N")
                    await trio.sleep(30)
            except trio.BrokenResourceError:
                pass  # the server closed on us
        elapsed = trio.current_time() - start
        assert await client.code() == str(replies.TIMEOUT)
        assert elapsed < 130


async def test_dribbling_client_is_cut_by_the_minimum_data_rate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limits = 'command_timeout = "60s"\ndata_timeout = "60s"\nmin_data_rate = 100'
    delivery = ScriptedDelivery()
    async with session(delivery, make_config(limits=limits)) as client:
        await ehlo(client)
        await client.send_lines("MAIL FROM:<a@b.example>", "RCPT TO:<c@b.example>", "DATA")
        for _ in range(3):
            await client.code()
        start = trio.current_time()
        with trio.move_on_after(1000):
            try:
                while True:  # one byte every 30 s: each wait is under 60 s, the rate is not
                    await client.send(b"x")
                    await trio.sleep(30)
            except trio.BrokenResourceError:
                pass  # the server closed on us
        elapsed = trio.current_time() - start
        assert await client.code() == str(replies.TIMEOUT)
        assert elapsed < 130
    assert delivery.messages == []


async def test_shutdown_tells_idle_sessions_421() -> None:
    stop = Shutdown()
    async with session(ScriptedDelivery(), shutdown=stop) as client:
        await ehlo(client)
        stop.begin()
        assert await client.code() == str(replies.SHUTTING_DOWN)
        assert await client.closed()


async def test_shutdown_lets_a_message_in_progress_finish() -> None:
    stop = Shutdown()
    delivery = ScriptedDelivery()
    async with session(delivery, shutdown=stop) as client:
        await ehlo(client)
        await client.send_lines("MAIL FROM:<a@b.example>", "RCPT TO:<c@b.example>", "DATA")
        for _ in range(3):
            await client.code()
        stop.begin()
        await client.send(b"x\r\n.\r\n")
        assert await client.code() == str(DELIVERED)
        assert await client.code() == str(replies.SHUTTING_DOWN)
    assert len(delivery.messages) == 1


async def test_oversize_message_is_refused_after_reading_to_the_end() -> None:
    delivery = ScriptedDelivery()
    async with session(delivery, make_config(limits='max_message_size = "10KiB"')) as client:
        await ehlo(client)
        await client.send_lines("MAIL FROM:<a@b.example>", "RCPT TO:<c@b.example>", "DATA")
        for _ in range(3):
            await client.code()
        await client.send((b"y" * 900 + b"\r\n") * 20)
        await client.send(b".\r\n")
        assert await client.code() == str(replies.TOO_BIG)
        await client.send_lines("NOOP")
        assert await client.code() == str(replies.OK)
    assert delivery.messages == []
