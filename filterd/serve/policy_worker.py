"""A policy worker process (``[[listen]] processes = N``; see ``policy_workers``).

    python -m filterd.serve.policy_worker --listener INDEX --number N --control-fd FD

The configuration comes as JSON on standard input (the main process's, already validated). The
worker builds its own chain, starts its plugins, says ``R`` on the control socket, then serves
each connection the main process hands over (``F`` + a descriptor) with the same policy handler
the main process uses, and says ``C`` when one ends. End of file on the control socket (the main
process stopping, or gone) and SIGTERM stop it gracefully; SIGINT (a terminal's Ctrl-C, sent to
the whole process group) is left to the main process, which then closes the control socket.
"""

from __future__ import annotations

import argparse
import array
import signal
import socket
import sys
from collections.abc import Awaitable, Callable

import trio

from filterd.chain.build import build_chain
from filterd.config.schema import Config
from filterd.maillog import MailLog, setup_logging
from filterd.serve.policy_service import PolicyHandler
from filterd.serve.policy_workers import CLOSED, CONNECTION, READY, policy_settings
from filterd.serve.shutdown import Shutdown

log = MailLog("main")

MAX_FDS = 16  # descriptors read per message (the main process sends one)
CHAIN_STOP_TIMEOUT = 5.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="filterd policy worker")
    parser.add_argument("--listener", type=int, required=True)
    parser.add_argument("--number", type=int, required=True)
    parser.add_argument("--control-fd", type=int, required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    config = Config.model_validate_json(sys.stdin.buffer.read())
    setup_logging(config.log.level)
    control = socket.socket(fileno=args.control_fd)
    trio.run(serve_worker, config, args.listener, args.number, control)
    return 0


async def serve_worker(config: Config, index: int, number: int, control: socket.socket) -> None:
    listen = config.listen[index]
    shutdown = Shutdown()
    chain = build_chain(config)
    handler = PolicyHandler(chain, policy_settings(listen, config), shutdown)
    control.setblocking(False)
    channel = trio.socket.from_stdlib_socket(control)

    def report_closed() -> None:
        try:
            control.send(CLOSED)  # one byte on a local socket pair: never blocks for long
        except OSError:
            pass  # the main process has gone: we are stopping anyway

    async def serve_one(stream: trio.SocketStream) -> None:
        try:
            await handler(stream)
        finally:
            report_closed()

    try:
        async with trio.open_nursery() as root:
            root.start_soon(_watch_sigterm, shutdown)
            await chain.start()
            async with trio.open_nursery() as connections:
                await channel.send(READY)
                log.plain(f"policy worker {number} serving {listen.address}")
                with trio.CancelScope() as receiving:
                    root.start_soon(_cancel_on_stop, shutdown, receiving)
                    await _receive_connections(channel, connections, serve_one)
                shutdown.begin()
                connections.cancel_scope.deadline = (
                    trio.current_time() + config.limits.shutdown_grace
                )
            root.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(CHAIN_STOP_TIMEOUT):
            await chain.stop()
        channel.close()
        log.plain(f"policy worker {number} stopped")


async def _receive_connections(
    channel: trio.socket.SocketType,
    connections: trio.Nursery,
    serve_one: Callable[[trio.SocketStream], Awaitable[None]],
) -> None:
    """Serve each handed-over descriptor until end of file on the control socket."""
    while True:
        message, ancillary, _flags, _address = await channel.recvmsg(
            1, socket.CMSG_SPACE(MAX_FDS * 4)
        )
        fds = _descriptors(ancillary)
        if not message:
            for fd in fds:
                socket.close(fd)
            return
        if message != CONNECTION:
            for fd in fds:
                socket.close(fd)
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
