"""filterd relaying over real loopback sockets: into Postfix's smtp-sink, and into a scripted
next hop for the faults (refused recipient, death after the final dot, LMTP results)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio

from filterd.config.load import parse_config
from filterd.frontdoors.shutdown import Shutdown
from filterd.model import replies
from filterd.runtime.supervisor import serve
from tests.support.nexthop import ScriptedNextHop, smtp_sink
from tests.support.postfix import free_port
from tests.support.session import LineClient

pytestmark = pytest.mark.skipif(
    not Path("/usr/sbin/smtp-sink").exists(), reason="Postfix's smtp-sink is not installed"
)


def relay_config(next_hop_port: int, protocol: str = "smtp", next_proto: str = "smtp",
                 extra_listen: str = "") -> str:  # fmt: skip
    return f"""
[[listen]]
address = "127.0.0.1:0"
hostname = "filterd.test"
protocol = "{protocol}"
{extra_listen}
[limits]
command_timeout = "20s"
shutdown_grace = "1s"
[delivery]
method = "relay"
next_hop = "127.0.0.1:{next_hop_port}"
protocol = "{next_proto}"
command_timeout = "10s"
data_timeout = "10s"
connect_timeout = "5s"
"""


@asynccontextmanager
async def running(config_text: str) -> AsyncIterator[int]:
    """filterd's real supervisor in-process; yields the listener's port (0 for unix)."""
    config = parse_config(config_text)
    stop = Shutdown()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            infos = await nursery.start(partial(serve, config, shutdown=stop))
            address = infos[0].address
            yield 0 if address.startswith("unix:") else int(address.rsplit(":", 1)[1])
            stop.begin()


async def connect(port: int) -> LineClient:
    client = LineClient(await trio.open_tcp_stream("127.0.0.1", port))
    assert (await client.line()).startswith("220 ")
    await client.send_lines("EHLO client.example")
    await client.reply()
    return client


async def send_message(
    client: LineClient, rcpts: list[str], body: bytes = b"Subject: t\r\n\r\nhi\r\n"
) -> list[str]:
    """One transaction; returns the reply lines: MAIL, each RCPT, DATA, end of data."""
    await client.send_lines("MAIL FROM:<alice@example.com>")
    answers = [await client.code()]
    for rcpt in rcpts:
        await client.send_lines(f"RCPT TO:<{rcpt}>")
        answers.append(await client.code())
    await client.send_lines("DATA")
    answers.append(await client.code())
    if answers[-1].startswith("354"):
        await client.send(body + b".\r\n")
        answers.append(await client.code())
    return answers


async def test_relays_into_smtp_sink_with_the_next_hops_reply(tmp_path: Path) -> None:
    with smtp_sink(tmp_path) as sink:
        async with running(relay_config(sink.port)) as port:
            client = await connect(port)
            answers = await send_message(client, ["bob@example.org", "carol@example.org"],
                                         b"Subject: t\r\n\r\n..dot line\r\nhi\r\n")  # fmt: skip
            await client.send_lines("QUIT")
            await client.code()
        (dump,) = sink.dumps()
    assert answers[-1] == "250 2.0.0 Ok"  # smtp-sink's own reply to the final dot
    assert b"Received: from client.example" in dump
    assert b"\r\n.dot line\r\nhi\r\n" in dump or b"\n.dot line\nhi\n" in dump


async def test_next_hop_down_is_451_at_mail() -> None:
    async with running(relay_config(free_port())) as port:
        client = await connect(port)
        await client.send_lines("MAIL FROM:<a@example.com>")
        assert await client.code() == str(replies.NEXT_HOP_DOWN)


async def test_refused_recipient_is_refused_at_rcpt_others_delivered() -> None:
    hop = ScriptedNextHop()
    async with trio.open_nursery() as nursery:
        hop_port = await nursery.start(hop.serve)
        async with running(relay_config(hop_port)) as port:
            client = await connect(port)
            answers = await send_message(client, ["a@x.example", "refuse@x.example", "b@x.example"])
        nursery.cancel_scope.cancel()
    assert answers[2] == "550 5.1.1 <refuse@x.example>: unknown user"
    assert answers[-1] == "250 2.0.0 Ok: queued as NH1"
    assert len(hop.messages) == 1


async def test_next_hop_dying_after_the_final_dot_is_a_4xx() -> None:
    hop = ScriptedNextHop(die_after_data=True)
    async with trio.open_nursery() as nursery:
        hop_port = await nursery.start(hop.serve)
        async with running(relay_config(hop_port)) as port:
            client = await connect(port)
            answers = await send_message(client, ["a@x.example"])
        nursery.cancel_scope.cancel()
    assert answers[-1][:1] == "4", answers


async def test_smtp_sink_disconnecting_at_end_of_data_is_a_4xx(tmp_path: Path) -> None:
    with smtp_sink(tmp_path, "-q", ".") as sink:
        async with running(relay_config(sink.port)) as port:
            answers = await send_message(await connect(port), ["a@x.example"])
    assert answers[-1][:1] == "4", answers


async def test_lmtp_next_hop_mixed_results() -> None:
    hop = ScriptedNextHop(lmtp=True)
    async with trio.open_nursery() as nursery:
        hop_port = await nursery.start(hop.serve)
        # SMTP client: one reply; partial success must not be acknowledged.
        async with running(relay_config(hop_port, next_proto="lmtp")) as port:
            answers = await send_message(
                await connect(port), ["a@x.example", "lmtp-defer@x.example"]
            )
            assert answers[-1] == str(replies.PARTIAL_DELIVERY)
            answers = await send_message(await connect(port), ["a@x.example", "b@x.example"])
            assert answers[-1] == "250 2.0.0 Ok: queued as NH1"
        # LMTP client: one reply per recipient, passed through.
        async with running(relay_config(hop_port, "lmtp", "lmtp")) as port:
            client = LineClient(await trio.open_tcp_stream("127.0.0.1", port))
            await client.line()
            await client.send_lines("LHLO client.example")
            await client.reply()
            await client.send_lines("MAIL FROM:<a@b.example>", "RCPT TO:<a@x.example>",
                                    "RCPT TO:<lmtp-defer@x.example>", "DATA")  # fmt: skip
            for _ in range(4):
                await client.code()
            await client.send(b"x\r\n.\r\n")
            assert (await client.code()).startswith("250 ")
            assert await client.code() == "451 4.2.0 mailbox busy"
        nursery.cancel_scope.cancel()


async def test_next_hop_connections_are_reused() -> None:
    hop = ScriptedNextHop()
    async with trio.open_nursery() as nursery:
        hop_port = await nursery.start(hop.serve)
        async with running(relay_config(hop_port)) as port:
            for _ in range(3):
                client = await connect(port)
                assert (await send_message(client, ["a@x.example"]))[-1].startswith("250")
                await client.send_lines("QUIT")
                await client.code()
        nursery.cancel_scope.cancel()
    assert hop.connections == 1
    assert len(hop.messages) == 3


async def test_dribbling_client_does_not_delay_others(tmp_path: Path) -> None:
    with smtp_sink(tmp_path) as sink:
        async with running(relay_config(sink.port)) as port:
            slow = await connect(port)
            await slow.send_lines("MAIL FROM:<a@b.example>", "RCPT TO:<c@d.example>", "DATA")
            for _ in range(3):
                await slow.code()
            async with trio.open_nursery() as nursery:

                async def dribble() -> None:
                    for _ in range(100):
                        await slow.send(b"x")
                        await trio.sleep(0.05)

                nursery.start_soon(dribble)
                start = trio.current_time()
                for _ in range(5):
                    fast = await connect(port)
                    assert (await send_message(fast, ["e@f.example"]))[-1].startswith("250")
                elapsed = trio.current_time() - start
                nursery.cancel_scope.cancel()
            await slow.stream.aclose()
    # Generous: five full transactions must not wait for the slow client's 5 s of dribbling.
    assert elapsed < 4.0


async def test_idle_connections_beyond_the_limit_get_421_and_others_are_served(
    tmp_path: Path,
) -> None:
    with smtp_sink(tmp_path) as sink:
        config = relay_config(sink.port, extra_listen="max_connections = 100")
        async with running(config) as port:
            idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(200)]
            try:
                late = LineClient(await trio.open_tcp_stream("127.0.0.1", port))
                assert await late.line() == str(replies.TOO_MANY_CONNECTIONS)
            finally:
                for stream in idle:
                    await stream.aclose()
        config = relay_config(sink.port, extra_listen="max_connections = 300")
        async with running(config) as port:
            idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(200)]
            try:
                answers = await send_message(await connect(port), ["a@b.example"])
                assert answers[-1].startswith("250")
            finally:
                for stream in idle:
                    await stream.aclose()
