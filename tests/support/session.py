"""Run the real SmtpSession on an in-memory stream and talk to it line by line."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio
import trio.testing

from filterd.chain.runner import ChainRunner
from filterd.config.load import parse_config
from filterd.config.schema import Config
from filterd.delivery.interface import Delivery
from filterd.delivery.quarantine import QuarantineStore
from filterd.frontdoors.shutdown import Shutdown
from filterd.frontdoors.smtp.session import SessionSettings, SmtpSession
from filterd.model.envelope import Client, Session

BASE_CONFIG = """
[[listen]]
address = "127.0.0.1:0"
hostname = "filterd.test"
protocol = "{protocol}"
add_received_header = {received}
[limits]
{limits}
[delivery]
method = "maildir"
root = "/nonexistent-filterd-test"
"""


def make_config(protocol: str = "smtp", limits: str = "", received: bool = False) -> Config:
    text = BASE_CONFIG.format(
        protocol=protocol, limits=limits, received="true" if received else "false"
    )
    return parse_config(text)


@dataclass
class LineClient:
    """The client end of a memory stream: send lines, read reply lines."""

    stream: trio.abc.Stream
    buffer: bytes = b""

    async def send(self, *lines: bytes | str) -> None:
        data = b"".join((x.encode() if isinstance(x, str) else x) for x in lines)
        await self.stream.send_all(data)

    async def send_lines(self, *lines: str) -> None:
        await self.send(*(line + "\r\n" for line in lines))

    async def line(self) -> str:
        while b"\r\n" not in self.buffer:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError(f"closed; unread {self.buffer!r}")
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line.decode()

    async def reply(self) -> list[str]:
        """One whole (possibly multi-line) reply."""
        lines = [await self.line()]
        while lines[-1][3:4] == "-":
            lines.append(await self.line())
        return lines

    async def code(self) -> str:
        return (await self.reply())[-1]

    async def closed(self) -> bool:
        """True if the server closed the stream (after any pending bytes)."""
        with trio.move_on_after(5):
            while True:
                data = await self.stream.receive_some(65536)
                if not data:
                    return True
                self.buffer += data
        return False


@asynccontextmanager
async def session(
    delivery: Delivery,
    config: Config | None = None,
    chain: ChainRunner | None = None,
    *,
    xforward_allowed: bool = True,
    relay_allowed: bool | None = True,
    shutdown: Shutdown | None = None,
) -> AsyncIterator[LineClient]:
    config = config or make_config()
    client_end, server_end = trio.testing.memory_stream_pair()
    settings = SessionSettings(config.listen[0], config.limits)
    peer = Client(address="192.0.2.10", port=40000, name="client.example")
    sess = Session(id="S1", listener="memory", peer=peer)
    smtp = SmtpSession(
        server_end,
        sess,
        settings,
        chain or ChainRunner(),
        delivery,
        QuarantineStore(config.quarantine.root),
        shutdown or Shutdown(),
        xforward_allowed=xforward_allowed,
        relay_allowed=relay_allowed,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(smtp.run)
        yield LineClient(client_end)
        await client_end.aclose()
