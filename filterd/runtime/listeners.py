"""Listening sockets and the accept loop shared by every front door."""

from __future__ import annotations

import errno
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Protocol

import trio

from filterd.config.types import Endpoint
from filterd.maillog import MailLog

log = MailLog("main")

ACCEPT_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


class ConnectionHandler(Protocol):
    def over_limit(self) -> bool:
        """True: refuse this connection (``refuse`` is called instead of the handler)."""
        ...

    def __call__(self, stream: trio.abc.Stream) -> Awaitable[None]: ...

    async def refuse(self, stream: trio.abc.Stream) -> None: ...


async def accept_loop(
    listener: trio.SocketListener, handler: ConnectionHandler, connections: trio.Nursery
) -> None:
    """Accept forever; each connection runs in ``connections`` (apart from the accept nursery,
    so stopping the accept loop leaves sessions running)."""
    await accept_each(listener, partial(start_connection, handler, connections=connections))


async def accept_each(
    listener: trio.SocketListener, dispatch: Callable[[trio.SocketStream], None]
) -> None:
    """Accept forever and hand each connection to ``dispatch``, which starts its task at once
    (``start_connection``; after a reload, in the generation then current). Out of
    descriptors or memory: log, pause 100 ms, go on (trio's serve_listeners does the same)."""
    while True:
        try:
            stream = await listener.accept()
        except OSError as exc:
            if exc.errno in ACCEPT_ERRNOS:
                log.warning(f"accept: {os.strerror(exc.errno or 0)}; pausing 100 ms")
                await trio.sleep(0.1)
                continue
            raise
        dispatch(stream)


def start_connection(
    handler: ConnectionHandler, stream: trio.abc.Stream, *, connections: trio.Nursery
) -> None:
    """Serve a new connection in ``connections``, or refuse it beyond the handler's limit."""
    if handler.over_limit():
        connections.start_soon(handler.refuse, stream)
    else:
        connections.start_soon(handler, stream)


async def open_listener(endpoint: Endpoint) -> trio.SocketListener:
    if endpoint.kind == "unix":
        remove_socket(endpoint.path)
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.bind(endpoint.path)
        sock.listen(socket.SOMAXCONN)
        return trio.SocketListener(sock)
    listeners = await trio.open_tcp_listeners(endpoint.port, host=endpoint.host, backlog=1024)
    return listeners[0]


def bound_address(listener: trio.SocketListener, endpoint: Endpoint) -> str:
    if endpoint.kind == "unix":
        return str(endpoint)
    host, port = listener.socket.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def remove_socket(path: str) -> None:
    """Remove a stale unix socket (never a regular file). One filterd cannot remove (it became
    ``[run] user``, who cannot write the directory) stays: the next start removes it."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except (FileNotFoundError, PermissionError):
        pass
