"""A worker process of a listener (``[[listen]] processes = N``; see ``worker_pool``).

    python -m filterd.runtime.worker_process --listener INDEX --number N --control-fd FD
        [--listening-fd FD --tally-fd FD --tally-slot SLOT] [--metrics-dir DIR]

The configuration comes on standard input (the TOML text the main process parsed). The worker
builds what the main process builds for that listener (``filterd.runtime.handlers``): its own
chain, and behind an smtp or lmtp listener its own delivery and quarantine store. It starts its
plugins, says ``R`` on the control socket, then serves:

- smtp, lmtp, policy: each connection the main process hands over (``F`` + a descriptor), with
  the listener's handler, reporting how many it has ended (``C<n>``);
- milter: its own libmilter, accepting from the listening socket every process shares
  (``--listening-fd``), counting connections in its slot of the shared count (``--tally-fd``,
  ``--tally-slot``).

``D`` on the control socket (a reload replaced this worker): it takes no new connection (a
milter worker stops its libmilter's listener) and serves those it has to their natural end,
without a deadline and without telling idle sessions 421, then exits as below.

End of file on the control socket (the main process stopping, or gone) and SIGTERM stop it
gracefully, as one process stops: idle sessions are closed, sessions in the middle of a message
get ``shutdown_grace``; a second SIGTERM stops it at once. As soon as it stops, it shuts the
control socket down both ways, so the main process hands it nothing more (its next hand-over
fails and it serves that connection itself). SIGINT (a terminal's Ctrl-C reaches the whole
process group) is left to the main process, which then closes the control socket; so is SIGHUP
(reload: the main process starts new workers), which would otherwise end the process (or, in a
milter worker, libmilter's listener).
"""

from __future__ import annotations

import signal

signal.signal(signal.SIGINT, signal.SIG_IGN)  # first of all: before the slow imports below
signal.signal(signal.SIGHUP, signal.SIG_IGN)

import argparse  # noqa: E402
import array  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
from collections.abc import Awaitable, Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import trio  # noqa: E402

from filterd.chain.build import build_chain  # noqa: E402
from filterd.chain.runner import ChainRunner  # noqa: E402
from filterd.config.load import parse_config  # noqa: E402
from filterd.config.schema import Config, ListenConfig  # noqa: E402
from filterd.delivery.interface import Delivery  # noqa: E402
from filterd.delivery.quarantine import QuarantineStore  # noqa: E402
from filterd.frontdoors.milter.bridge import MilterBridge  # noqa: E402
from filterd.frontdoors.shutdown import Shutdown  # noqa: E402
from filterd.maillog import MailLog, setup_logging  # noqa: E402
from filterd.runtime.handlers import (  # noqa: E402
    build_delivery,
    handler_for,
    serve_milter_listener,
)
from filterd.runtime.recording import record_into, stop_recording  # noqa: E402
from filterd.runtime.tally import SharedTally  # noqa: E402
from filterd.runtime.worker_pool import CLOSED, CONNECTION, DRAIN, PARKED, READY  # noqa: E402

log = MailLog("main")

MAX_FDS = 16  # descriptors read per message (the main process sends one)
ANCILLARY = socket.CMSG_SPACE(MAX_FDS * 4)
CLOSE_TIMEOUT = 5.0  # for the plugins' stop and the delivery's connections


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="filterd worker")
    parser.add_argument("--listener", type=int, required=True)
    parser.add_argument("--number", type=int, required=True)
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--listening-fd", type=int)
    parser.add_argument("--tally-fd", type=int)
    parser.add_argument("--metrics-dir", type=Path)  # it records metrics there (runtime.recording)
    parser.add_argument("--tally-slot", type=int)
    args = parser.parse_args(argv)
    config = read_config(sys.stdin.buffer.read())
    setup_logging(config.log)
    # A plugin's subprocess must not keep these open.
    for fd in (args.control_fd, args.listening_fd, args.tally_fd):
        if fd is not None:
            os.set_inheritable(fd, False)
    control = socket.socket(fileno=args.control_fd)
    listening = None if args.listening_fd is None else socket.socket(fileno=args.listening_fd)
    slot = args.number if args.tally_slot is None else args.tally_slot
    tally = None if args.tally_fd is None else SharedTally(args.tally_fd, slot)
    worker = Worker(config, args.listener, args.number, control, listening, tally)
    worker.metrics_dir = args.metrics_dir
    trio.run(worker.serve)
    return 0


def read_config(message: bytes) -> Config:
    """The configuration as ``worker_pool.config_message`` wrote it."""
    data = json.loads(message)
    if "toml" in data:
        return parse_config(data["toml"], source=data["source"])
    return Config.model_validate_json(data["json"]).model_copy(update={"source": data["source"]})


class Worker:
    """One worker process: what it serves, and how it stops."""

    def __init__(
        self,
        config: Config,
        index: int,
        number: int,
        control: socket.socket,
        listening: socket.socket | None = None,
        tally: SharedTally | None = None,
    ) -> None:
        self.config = config
        self.listen: ListenConfig = config.listen[index]
        self.name = f"{self.listen.protocol} worker {number}"
        self.control = control
        self.listening = listening
        self.tally = tally
        self.shutdown = Shutdown()
        self.quarantine = QuarantineStore(config.quarantine.root)
        self.chain: ChainRunner
        self.delivery: Delivery | None = None
        self.metrics_dir: Path | None = None

    async def serve(self) -> None:
        self.chain = build_chain(self.config)
        if self.listen.protocol in ("smtp", "lmtp"):
            self.delivery = build_delivery(self.config)
        channel = trio.socket.from_stdlib_socket(self.control)  # non-blocking from here on
        files = None if self.metrics_dir is None else record_into(self.metrics_dir)
        try:
            async with trio.open_nursery() as root:
                root.start_soon(_watch_sigterm, self.shutdown, root.cancel_scope)
                if files is not None:
                    root.start_soon(files.run)
                await self.chain.start()
                run = getattr(self.delivery, "run", None)
                if run is not None:
                    root.start_soon(run)
                if self.listen.protocol == "milter":
                    await self._serve_milter(channel)
                else:
                    await self._serve_handed(channel)
                root.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
                if self.delivery is not None:
                    await self.delivery.aclose()
                await self.chain.stop()
            if files is not None:
                stop_recording(files)
            channel.close()
            if self.listening is not None:
                self.listening.close()
            log.plain(f"{self.name} stopped")

    async def _ready(self, channel: trio.socket.SocketType) -> bool:
        try:
            await channel.send(READY)
        except OSError:  # the main process stopped (or died) while we were starting
            return False
        log.plain(f"{self.name} serving {self.listen.address}")
        return True

    async def _serve_handed(self, channel: trio.socket.SocketType) -> None:
        """Serve the connections the main process hands over until end of file on the control
        socket or a stop signal, then stop as one process stops; or, told to drain, until
        the last of them has ended."""
        handler = handler_for(
            self.listen, self.config, self.chain, self.delivery, self.quarantine, self.shutdown
        )
        ended = 0
        sessions = _Sessions()

        def report_ended() -> None:
            nonlocal ended
            ended += 1
            try:  # a running total: one lost to a full socket is made good by the next
                self.control.send(CLOSED + str(ended).encode(), socket.MSG_DONTWAIT)
            except OSError:
                pass

        async def serve_one(stream: trio.SocketStream) -> None:
            sessions.enter()
            try:
                await handler(stream)
            finally:
                sessions.exit()
                report_ended()

        if not await self._ready(channel):
            return
        async with trio.open_nursery() as connections:
            with trio.CancelScope() as receiving:
                connections.start_soon(_cancel_on_stop, self.shutdown, receiving)
                ending = await _receive_connections(channel, connections, serve_one)
                if ending == DRAIN:
                    log.plain(f"{self.name} draining: {sessions.count} connection(s) to finish")
                    if self.delivery is not None:  # keep no idle next-hop connection
                        await self.delivery.aclose()
                    connections.start_soon(_cancel_when_idle, sessions, receiving)
                    await _receive_connections(channel, connections, serve_one)
            self.shutdown.begin()
            for fd in _stop_taking(self.control):
                sock = trio.socket.from_stdlib_socket(socket.socket(fileno=fd))
                connections.start_soon(serve_one, trio.SocketStream(sock))
            connections.cancel_scope.deadline = (
                trio.current_time() + self.config.limits.shutdown_grace
            )

    async def _serve_milter(self, channel: trio.socket.SocketType) -> None:
        """Run libmilter on the shared listening socket until end of file on the control
        socket or a stop signal; the milter service then stops as in one process. Told to
        drain, the service stops its listener and ends with its last connection."""
        listening, self.listening = self.listening, None  # libmilter's from here on
        assert listening is not None, "a milter worker is given the listening socket"
        drain = trio.Event()
        parked = trio.Event()  # libmilter accepts nothing more
        served = trio.Event()  # the service has ended
        async with trio.open_nursery() as service:
            await service.start(self._run_milter, listening, drain, parked, served)
            if await self._ready(channel):
                with trio.CancelScope() as waiting:
                    service.start_soon(_cancel_on_stop, self.shutdown, waiting)
                    service.start_soon(_cancel_when_set, served, waiting)
                    while True:  # the main process sends a milter worker no connection
                        message, fds = await _next_message(channel)
                        for fd in fds:
                            socket.close(fd)
                        if message == DRAIN and not drain.is_set():
                            log.plain(f"{self.name} draining: its connections go on to their end")
                            drain.set()
                            service.start_soon(_confirm_parked, channel, parked)
                        if not message:
                            break
            self.shutdown.begin()
            _stop_taking(self.control)

    async def _run_milter(
        self,
        listening: socket.socket,
        drain: trio.Event,
        parked: trio.Event,
        served: trio.Event,
        *,
        task_status: trio.TaskStatus[MilterBridge] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            await serve_milter_listener(
                self.listen,
                self.config,
                self.chain,
                self.shutdown,
                listening=listening,
                tally=self.tally,
                drain=drain,
                parked=parked,
                task_status=task_status,
            )
        finally:
            served.set()


class _Sessions:
    """The connections a worker is serving, and a wait for the moment it has none."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = trio.Event()

    def enter(self) -> None:
        self.count += 1

    def exit(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()
            self._idle = trio.Event()

    async def wait_idle(self) -> None:
        while self.count:
            await self._idle.wait()


async def _cancel_when_idle(sessions: _Sessions, scope: trio.CancelScope) -> None:
    await sessions.wait_idle()
    scope.cancel()


async def _cancel_when_set(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


def _stop_taking(control: socket.socket) -> list[int]:
    """Shut the control socket down both ways: the main process's next hand-over fails, so it
    serves that connection itself, and it reads end of file. Returns the descriptors it had
    already sent (queued messages stay readable): they are served like the others, under
    the graceful stop."""
    try:
        control.shutdown(socket.SHUT_RDWR)
    except OSError:
        return []
    fds: list[int] = []
    while True:
        try:
            message, ancillary, _flags, _address = control.recvmsg(
                1, ANCILLARY, socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC
            )
        except OSError:
            return fds
        received = _descriptors(ancillary)
        if message == CONNECTION:
            fds.extend(received)
        else:
            for fd in received:
                socket.close(fd)
        if not message:
            return fds


async def _next_message(channel: trio.socket.SocketType) -> tuple[bytes, list[int]]:
    """The next control message and the descriptors that came with it; ``b""`` at end of file
    (and for an error, as end of file)."""
    try:
        message, ancillary, _flags, _address = await channel.recvmsg(
            1, ANCILLARY, socket.MSG_CMSG_CLOEXEC
        )
    except OSError:
        return b"", []
    return message, _descriptors(ancillary)


async def _confirm_parked(channel: trio.socket.SocketType, parked: trio.Event) -> None:
    """Tell the main process once libmilter accepts nothing more (``PARKED``): its reload
    is done only then."""
    await parked.wait()
    try:
        await channel.send(PARKED)
    except OSError:
        pass  # the main process is gone: nothing waits for it


async def _receive_connections(
    channel: trio.socket.SocketType,
    connections: trio.Nursery,
    serve_one: Callable[[trio.SocketStream], Awaitable[None]],
) -> bytes:
    """Serve each handed-over descriptor until end of file on the control socket (``b""``)
    or a drain (``DRAIN``): the message that ended it."""
    while True:
        message, fds = await _next_message(channel)
        if message != CONNECTION:
            for fd in fds:
                socket.close(fd)
            if not message or message == DRAIN:
                return message
            continue
        for fd in fds:
            sock = trio.socket.from_stdlib_socket(socket.socket(fileno=fd))
            connections.start_soon(serve_one, trio.SocketStream(sock))


def _descriptors(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    fds = array.array("i")
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return list(fds)


async def _watch_sigterm(shutdown: Shutdown, root: trio.CancelScope) -> None:
    """SIGTERM: a graceful stop; a second one: stop now (as the main process does)."""
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _signum in signals:
            if shutdown.stopping:
                log.plain("signal SIGTERM again: stopping now")
                shutdown.now.set()
                root.cancel()
                return
            log.plain("signal SIGTERM: graceful stop")
            shutdown.begin()


async def _cancel_on_stop(shutdown: Shutdown, scope: trio.CancelScope) -> None:
    await shutdown.event.wait()
    scope.cancel()


if __name__ == "__main__":
    sys.exit(main())
