"""Reading and writing one connection on the SMTP hot path, cheaply.

trio makes every socket operation a checkpoint: a ``send`` that the kernel takes at once, or a
``recv`` whose bytes are already there, still yields to the scheduler (one more pass of the run
loop and an ``epoll_wait``), and each bounded wait costs a cancel scope. A relayed message is
about sixteen such operations (a command and a reply each way per SMTP step, on two
connections), and those passes were a large part of its cost.

``SocketIO`` makes the system call first, directly on the socket's descriptor, and goes through
trio only to wait (``wait_readable`` / ``wait_writable`` under the caller's deadline). A read
that finds nothing yields once (a plain checkpoint) and tries again before it waits: SMTP is
request and response, the peer answers within microseconds, and under load the other tasks'
turns give it the time, so most answers are read without a wait. So that a connection whose
bytes are always ready cannot hold the scheduler, at most ``SPARE_OPERATIONS`` operations in a
row complete without yielding; the next one waits, which yields. Streams other than a plain
``trio.SocketStream`` (TLS) go through the stream itself.

Failures are what the callers already handle: ``OSError`` (a reset, a broken pipe, a closed
descriptor; trio's ``BrokenResourceError``/``ClosedResourceError`` on the stream path) and
``trio.TooSlowError`` when a deadline passes.
"""

from __future__ import annotations

import os

import trio

__all__ = ["SPARE_OPERATIONS", "SocketIO"]

SPARE_OPERATIONS = 16
"""Operations in a row that may complete without a checkpoint."""


class SocketIO:
    __slots__ = ("_socket", "_spare", "stream")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        # Only a plain socket stream is read directly: TLS has its own buffers and state.
        self._socket: trio.socket.SocketType | None = (
            stream.socket if isinstance(stream, trio.SocketStream) else None
        )
        self._spare = SPARE_OPERATIONS

    def receive_ready(self, max_bytes: int) -> bytes | None:
        """Up to ``max_bytes`` already received, without waiting (``b""``: the peer closed
        its side); None when there are none, when a checkpoint is due, or for a TLS stream."""
        sock = self._socket
        if sock is None or not self._spare:
            return None
        try:
            data = os.read(sock.fileno(), max_bytes)
        except BlockingIOError:
            return None
        self._spare -= 1
        return data

    async def receive_soon(self, max_bytes: int) -> bytes | None:
        """``receive_ready``, then once more after one checkpoint: the other tasks run in
        between, and an answer the peer was about to send is there without a wait (which
        costs a cancel scope and an epoll registration). None: still nothing, wait."""
        data = self.receive_ready(max_bytes)
        if data is None and self._socket is not None:
            await trio.lowlevel.checkpoint()
            self._spare = SPARE_OPERATIONS
            data = self.receive_ready(max_bytes)
        return data

    async def receive_waiting(self, max_bytes: int) -> bytes:
        """Wait for bytes (a checkpoint; bounded by the caller's cancel scope), then read."""
        sock = self._socket
        if sock is None:
            return bytes(await self.stream.receive_some(max_bytes))
        while True:
            await trio.lowlevel.wait_readable(sock)
            self._spare = SPARE_OPERATIONS
            try:
                return os.read(sock.fileno(), max_bytes)
            except BlockingIOError:
                continue

    async def receive_some(self, max_bytes: int, deadline: float) -> bytes:
        """Up to ``max_bytes``, waiting until ``deadline`` (``trio.current_time()``) at most."""
        data = await self.receive_soon(max_bytes)
        if data is not None:
            return data
        with trio.CancelScope(deadline=deadline) as scope:
            return await self.receive_waiting(max_bytes)
        assert scope.cancelled_caught
        raise trio.TooSlowError

    async def send_all(self, data: bytes, deadline: float) -> None:
        """Send all of ``data``, waiting until ``deadline`` at most."""
        sock = self._socket
        sent = 0
        if sock is not None and self._spare:
            try:
                sent = os.write(sock.fileno(), data)
            except BlockingIOError:
                pass
            if sent == len(data):
                self._spare -= 1
                return
        with trio.CancelScope(deadline=deadline) as scope:
            if sock is None:
                await self.stream.send_all(data)
                return
            view = memoryview(data)
            while sent < len(view):
                await trio.lowlevel.wait_writable(sock)
                self._spare = SPARE_OPERATIONS
                try:
                    sent += os.write(sock.fileno(), view[sent:])
                except BlockingIOError:
                    continue
            return
        assert scope.cancelled_caught
        raise trio.TooSlowError
