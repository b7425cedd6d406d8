"""Next hops for relay tests: Postfix's real ``smtp-sink``, and a scripted trio server for
faults no real server can be told to make (refuse one recipient, die after the final dot)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from filterd.model import replies
from filterd.model.reply import Reply
from filterd.protocols.smtp import events as ev
from filterd.protocols.smtp.common import NeedData
from filterd.protocols.smtp.server import Capabilities, ServerLimits, SmtpServer
from tests.support.postfix import free_port, wait_for_port

SMTP_SINK = "/usr/sbin/smtp-sink"


@dataclass
class Sink:
    port: int
    dump_dir: Path

    def dumps(self) -> list[bytes]:
        return [p.read_bytes() for p in sorted(self.dump_dir.iterdir()) if p.is_file()]


@contextmanager
def smtp_sink(tmp: Path, *options: str) -> Iterator[Sink]:
    """Postfix's smtp-sink on a free port, dumping each transaction into a file.

    smtp-sink drops to ``nobody``, which cannot enter pytest's private tmp dirs: the dump
    directory is a world-writable one of its own under /tmp, removed afterwards.
    """
    del tmp
    dump_dir = Path(tempfile.mkdtemp(prefix="filterd-sink-"))
    dump_dir.chmod(0o777)
    port = free_port()
    proc = subprocess.Popen(
        [SMTP_SINK, "-u", "nobody", "-d", f"{dump_dir}/msg.", *options, f"127.0.0.1:{port}", "64"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port("127.0.0.1", port)
        yield Sink(port, dump_dir)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(dump_dir, ignore_errors=True)


@dataclass
class ScriptedNextHop:
    """An SMTP/LMTP server on our own codec with scripted misbehaviour.

    - RCPT to an address starting with ``refuse`` → 550 5.1.1;
    - in LMTP mode, a recipient starting with ``lmtp-defer`` gets 451 after the final dot;
    - ``die_after_data``: close the connection instead of answering the final dot.
    """

    lmtp: bool = False
    die_after_data: bool = False
    messages: list[bytes] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)  # one per message
    connections: int = 0
    port: int = 0

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        codec = SmtpServer(ServerLimits(), Capabilities("nexthop.test"), lmtp=self.lmtp)
        sender = ""
        rcpts: list[str] = []
        content = bytearray()
        out = bytearray(codec.greeting())
        try:
            while True:
                event = codec.next_event()
                if isinstance(event, NeedData):
                    await stream.send_all(bytes(out))
                    out.clear()
                    codec.receive_data(bytes(await stream.receive_some(65536)))
                    continue
                match event:
                    case ev.ConnectionClosed():
                        return
                    case ev.BodyChunk(data=data):
                        content += data
                    case ev.Hello():
                        out += codec.send(codec.ehlo_reply())
                    case ev.MailFrom(address=address):
                        sender = address
                        rcpts.clear()
                        content.clear()
                        out += codec.send(replies.SENDER_OK)
                    case ev.RcptTo(address=address):
                        if address.startswith("refuse"):
                            out += codec.send(Reply(550, "5.1.1", f"<{address}>: unknown user"))
                        else:
                            rcpts.append(address)
                            out += codec.send(replies.RCPT_OK)
                    case ev.Data():
                        out += codec.send(replies.START_DATA)
                    case ev.EndOfData():
                        if self.die_after_data:
                            return
                        self.messages.append(bytes(content))
                        self.envelopes.append((sender, list(rcpts)))
                        for rcpt in rcpts if self.lmtp else rcpts[:1]:
                            if rcpt.startswith("lmtp-defer"):
                                out += codec.send(Reply(451, "4.2.0", "mailbox busy"))
                            else:
                                out += codec.send(Reply(250, "2.0.0", "Ok: queued as NH1"))
                    case ev.Quit():
                        out += codec.send(replies.BYE)
                        await stream.send_all(bytes(out))
                        return
                    case ev.BadCommand(reply=reply):
                        out += codec.send(reply)
                    case _:
                        out += codec.send(replies.OK)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            await stream.aclose()
