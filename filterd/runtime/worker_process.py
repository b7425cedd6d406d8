"""A policy worker process (``[[listen]] processes = N``; see ``worker_pool``).

    python -m filterd.runtime.worker_process --listener INDEX --number N --control-fd FD

The configuration comes on standard input (the TOML text the main process parsed). The worker
builds its own chain, starts its plugins, says ``R`` on the control socket, then serves each
connection the main process hands over (``F`` + a descriptor) with the same policy handler the
main process uses, and reports how many it has ended (``C<n>``). End of file on the control
socket (the main process stopping, or gone) and SIGTERM stop it gracefully; as soon as it
stops, it shuts the control socket down both ways, so the main process hands it nothing more
(its next hand-over fails and it serves that connection itself). SIGINT (a terminal's
Ctrl-C reaches the whole process group) is left to the main process, which then closes the
control socket.
"""

from __future__ import annotations

import signal

signal.signal(signal.SIGINT, signal.SIG_IGN)  # first of all: before the slow imports below

import argparse  # noqa: E402
import array  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
from collections.abc import Awaitable, Callable  # noqa: E402

import trio  # noqa: E402

from filterd.chain.build import build_chain  # noqa: E402
from filterd.config.load import parse_config  # noqa: E402
from filterd.config.schema import Config  # noqa: E402
from filterd.frontdoors.policy.service import PolicyHandler  # noqa: E402
from filterd.frontdoors.shutdown import Shutdown  # noqa: E402
from filterd.maillog import MailLog, setup_logging  # noqa: E402
from filterd.runtime.worker_pool import CLOSED, CONNECTION, READY, policy_settings  # noqa: E402

log = MailLog("main")

MAX_FDS = 16  # descriptors read per message (the main process sends one)
ANCILLARY = socket.CMSG_SPACE(MAX_FDS * 4)
CHAIN_STOP_TIMEOUT = 5.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="filterd policy worker")
    parser.add_argument("--listener", type=int, required=True)
    parser.add_argument("--number", type=int, required=True)
    parser.add_argument("--control-fd", type=int, required=True)
    args = parser.parse_args(argv)
    config = read_config(sys.stdin.buffer.read())
    setup_logging(config.log.level)
    os.set_inheritable(args.control_fd, False)  # a plugin's subprocess must not keep it open
    control = socket.socket(fileno=args.control_fd)
    trio.run(serve_worker, config, args.listener, args.number, control)
    return 0


def read_config(message: bytes) -> Config:
    """The configuration as ``worker_pool.config_message`` wrote it."""
    data = json.loads(message)
    if "toml" in data:
        return parse_config(data["toml"], source=data["source"])
    return Config.model_validate_json(data["json"]).model_copy(update={"source": data["source"]})


async def serve_worker(config: Config, index: int, number: int, control: socket.socket) -> None:
    listen = config.listen[index]
    shutdown = Shutdown()
    chain = build_chain(config)
    handler = PolicyHandler(chain, policy_settings(listen, config), shutdown)
    channel = trio.socket.from_stdlib_socket(control)  # non-blocking from here on
    ended = 0

    def report_ended() -> None:
        nonlocal ended
        ended += 1
        try:  # a running total: one lost to a full socket is made good by the next
            control.send(CLOSED + str(ended).encode(), socket.MSG_DONTWAIT)
        except OSError:
            pass

    async def serve_one(stream: trio.SocketStream) -> None:
        try:
            await handler(stream)
        finally:
            report_ended()

    try:
        async with trio.open_nursery() as root:
            root.start_soon(_watch_sigterm, shutdown)
            await chain.start()
            try:
                await channel.send(READY)
            except OSError:  # the main process stopped (or died) while we were starting
                root.cancel_scope.cancel()
                return
            async with trio.open_nursery() as connections:
                log.plain(f"policy worker {number} serving {listen.address}")
                with trio.CancelScope() as receiving:
                    root.start_soon(_cancel_on_stop, shutdown, receiving)
                    await _receive_connections(channel, connections, serve_one)
                shutdown.begin()
                for fd in _stop_taking(control):
                    sock = trio.socket.from_stdlib_socket(socket.socket(fileno=fd))
                    connections.start_soon(serve_one, trio.SocketStream(sock))
                connections.cancel_scope.deadline = (
                    trio.current_time() + config.limits.shutdown_grace
                )
            root.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(CHAIN_STOP_TIMEOUT):
            await chain.stop()
        channel.close()
        log.plain(f"policy worker {number} stopped")


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


async def _receive_connections(
    channel: trio.socket.SocketType,
    connections: trio.Nursery,
    serve_one: Callable[[trio.SocketStream], Awaitable[None]],
) -> None:
    """Serve each handed-over descriptor until end of file on the control socket."""
    while True:
        try:
            message, ancillary, _flags, _address = await channel.recvmsg(
                1, ANCILLARY, socket.MSG_CMSG_CLOEXEC
            )
        except OSError:
            return  # as end of file
        fds = _descriptors(ancillary)
        if not message or message != CONNECTION:
            for fd in fds:
                socket.close(fd)
            if not message:
                return
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


async def _watch_sigterm(shutdown: Shutdown) -> None:
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _signum in signals:
            log.plain("signal SIGTERM: graceful stop")
            shutdown.begin()


async def _cancel_on_stop(shutdown: Shutdown, scope: trio.CancelScope) -> None:
    await shutdown.event.wait()
    scope.cancel()


if __name__ == "__main__":
    sys.exit(main())
