"""Next hops for relay tests: Postfix's real ``smtp-sink``, and a scripted trio server for
faults no real server can be told to make (refuse one recipient, die after the final dot, stall,
answer 421, reset the connection), which ``hop_in_thread`` runs beside a synchronous test."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import trio

from filterd.model import replies
from filterd.model.reply import Reply
from filterd.protocols.smtp import events as ev
from filterd.protocols.smtp.common import NeedData
from filterd.protocols.smtp.server import Capabilities, ServerLimits, SmtpServer
from tests.support.postfix import free_port, wait_for_port

SMTP_SINK = "/usr/sbin/smtp-sink"

Fault = Literal["no_greeting", "stall_after_dot", "421_at_rcpt", "421_after_dot", "reset_after_dot"]
"""What ``ScriptedNextHop`` does wrong to a faulty connection or transaction:

- ``no_greeting``: accept the connection and never say anything;
- ``stall_after_dot``: take the message, never answer the final dot (the message is not kept);
- ``421_at_rcpt`` / ``421_after_dot``: answer 421 4.3.2 and close (the message is not kept);
- ``reset_after_dot``: keep the message, then reset the connection (RST) instead of answering:
  the one fault after which the client cannot know whether the message was taken.
"""


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
    - ``die_after_data``: close the connection instead of answering the final dot;
    - ``fault`` (see ``Fault``) for every ``fault_every``-th connection (``no_greeting``) or
      transaction (the others), counted from 1; a test may change both while it serves.
    ``port``: the port to listen on (0 = a free one; ``serve`` sets it).
    """

    lmtp: bool = False
    die_after_data: bool = False
    fault: Fault | None = None
    fault_every: int = 1
    transactions: int = 0
    messages: list[bytes] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)  # one per message
    connections: int = 0
    port: int = 0

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, listeners)

    def _fault_of(self, number: int) -> Fault | None:
        """The fault for the ``number``-th connection or transaction (None: behave)."""
        return self.fault if number % max(1, self.fault_every) == 0 else None

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        if self._fault_of(self.connections) == "no_greeting":
            await _drain(stream)
            return
        fault: Fault | None = None  # the fault of the current transaction
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
                        self.transactions += 1
                        fault = self._fault_of(self.transactions)
                        sender = address
                        rcpts.clear()
                        content.clear()
                        out += codec.send(replies.SENDER_OK)
                    case ev.RcptTo() if fault == "421_at_rcpt":
                        await _close_with_421(stream, codec, out)
                        return
                    case ev.RcptTo(address=address):
                        if address.startswith("refuse"):
                            out += codec.send(Reply(550, "5.1.1", f"<{address}>: unknown user"))
                        else:
                            rcpts.append(address)
                            out += codec.send(replies.RCPT_OK)
                    case ev.Data():
                        out += codec.send(replies.START_DATA)
                    case ev.EndOfData() if fault in ("stall_after_dot", "421_after_dot"):
                        if fault == "stall_after_dot":
                            await _drain(stream)
                        else:
                            await _close_with_421(stream, codec, out)
                        return
                    case ev.EndOfData():
                        if self.die_after_data:
                            return
                        if fault == "reset_after_dot":
                            self.messages.append(bytes(content))
                            self.envelopes.append((sender, list(rcpts)))
                            _reset(stream)
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


async def _drain(stream: trio.SocketStream) -> None:
    """Read and ignore everything until the peer closes: a server that hangs."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        while await stream.receive_some(65536):
            pass


async def _close_with_421(stream: trio.SocketStream, codec: SmtpServer, out: bytearray) -> None:
    out += codec.send(Reply(421, "4.3.2", "nexthop.test shutting down"))
    await stream.send_all(bytes(out))


def _reset(stream: trio.SocketStream) -> None:
    """Make the coming close a reset (RST, SO_LINGER 0) rather than an orderly FIN."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@contextmanager
def hop_in_thread(hop: ScriptedNextHop) -> Iterator[ScriptedNextHop]:
    """Serve ``hop`` from a trio loop in a thread of its own, for a synchronous test; stopped
    (every connection closed) when the block ends, also on failure."""
    ready = threading.Event()
    state: dict[str, object] = {}

    async def main() -> None:
        with trio.CancelScope() as scope:
            state["scope"] = scope
            state["token"] = trio.lowlevel.current_trio_token()
            async with trio.open_nursery() as nursery:
                await nursery.start(hop.serve)
                ready.set()

    def run() -> None:
        try:
            trio.run(main)
        except BaseException as exc:  # reported by the waiting test
            state["error"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=run, name="scripted-next-hop", daemon=True)
    thread.start()
    ready.wait(30)
    try:
        if "error" in state or not hop.port:
            raise RuntimeError(f"the scripted next hop did not start: {state.get('error')!r}")
        yield hop
    finally:
        token = state.get("token")
        scope = state.get("scope")
        if isinstance(token, trio.lowlevel.TrioToken) and isinstance(scope, trio.CancelScope):
            try:
                trio.from_thread.run_sync(scope.cancel, trio_token=token)
            except trio.RunFinishedError:
                pass
        thread.join(30)
