"""Connections to a Redis server on trio itself: no worker thread, no blocking client.

A command goes out packed by redis-py's own serializer (``HiredisRespSerializer``: hiredis's
``pack_command``) and its reply is read by ``hiredis.Reader``, the Redis project's sans-I/O RESP
parser: this module only moves bytes between them and a trio stream (TCP, a UNIX socket, or TLS
for ``rediss://``).

:class:`ConnectionPool` keeps at most ``size`` connections, opens them when needed (``AUTH`` and
``SELECT`` as the URL says, in one round trip) and reuses idle ones, newest first. A connection
whose request did not end cleanly (an error, a timeout, a cancellation) is closed, never reused:
the bytes still in flight would answer the next request. A reused connection the server closed
meanwhile (a restart, ``CLIENT KILL``, an idle timeout) is noticed when the request finds the
connection closed before any byte of the reply, and the request is sent once more on a new
connection. Timeouts are the caller's (a cancel scope around :meth:`ConnectionPool.request`).
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from typing import Any, Protocol

import hiredis
import trio
from redis.connection import HiredisRespSerializer, parse_url

__all__ = [
    "ConnectionLost",
    "ConnectionPool",
    "Endpoint",
    "RedisError",
    "ReplyReader",
    "pack",
    "parse_redis_url",
]

RECEIVE_SIZE = 65_536

# The URL query parameters the store takes (anything else is refused, not silently ignored:
# the store's own settings say how long to wait and how many connections to keep).
_QUERY = frozenset({"db", "username", "password", "ssl_cert_reqs", "ssl_ca_certs"})
_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}

_serializer = HiredisRespSerializer()


class RedisError(Exception):
    """The server could not be reached, broke the connection, or answered something that is
    not RESP. The request's connection is closed."""


class ConnectionLost(RedisError):
    """The server closed the connection (end of file, reset) before the whole reply came."""

    def __init__(self, message: str, *, before_reply: bool) -> None:
        super().__init__(message)
        self.before_reply = before_reply


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the server is and how to log in: a ``host``/``port`` or a UNIX socket ``path``;
    ``tls`` for ``rediss://``."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None

    def __str__(self) -> str:
        return self.path if self.path is not None else f"{self.host}:{self.port}"


def parse_redis_url(url: str) -> Endpoint:
    """A ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS) or
    ``unix:///path?db=N`` URL, as redis-py reads it (``redis.connection.parse_url``).
    ValueError says what is wrong."""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(
            f'url = "{url}" is not a Redis URL: write "redis://host:port/db", '
            '"rediss://host:port/db" or "unix:///path/to/redis.sock"'
        )
    try:
        parsed: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise ValueError(f"url: {exc}") from exc
    parsed.pop("connection_class", None)
    for name in sorted(set(parsed) - _QUERY - {"host", "port", "path"}):
        raise ValueError(
            f'url: the parameter "{name}" is not supported here (the store\'s timeout and '
            "concurrency settings say how long to wait and how many connections to keep); "
            "known: db, username, password, ssl_cert_reqs, ssl_ca_certs"
        )
    tls = None
    if url.startswith("rediss://"):
        tls = _tls_context(parsed.get("ssl_cert_reqs"), parsed.get("ssl_ca_certs"))
    elif "ssl_cert_reqs" in parsed or "ssl_ca_certs" in parsed:
        raise ValueError("url: ssl_cert_reqs and ssl_ca_certs need a rediss:// URL (TLS)")
    if url.startswith("unix://") and not parsed.get("path"):
        raise ValueError(f'url = "{url}" names no socket: write "unix:///path/to/redis.sock"')
    return Endpoint(
        host=parsed.get("host", "127.0.0.1"),
        port=parsed.get("port", 6379),
        path=parsed.get("path"),
        db=int(parsed.get("db", 0)),
        username=parsed.get("username"),
        password=parsed.get("password"),
        tls=tls,
    )


def _tls_context(cert_reqs: object, ca_certs: object) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_certs if isinstance(ca_certs, str) else None)
    if cert_reqs is not None:
        if not isinstance(cert_reqs, str) or cert_reqs.lower() not in _CERT_REQS:
            raise ValueError(
                f'url: ssl_cert_reqs = "{cert_reqs}": write none, optional or required'
            )
        mode = _CERT_REQS[cert_reqs.lower()]
        if mode != ssl.CERT_REQUIRED:
            context.check_hostname = False
        context.verify_mode = mode
    return context


def pack(*args: str | int | float) -> bytes:
    """One command in RESP, packed by redis-py's serializer."""
    return b"".join(_serializer.pack(*args))  # type: ignore[arg-type]  # its hint: List


class ReplyReader:
    """Replies out of the bytes a connection receives (``hiredis.Reader``, text as UTF-8).
    An error reply (``-ERR ...``) is a ``hiredis.ReplyError`` value, not raised: the connection
    is still good."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader(encoding="utf-8")

    def feed(self, data: bytes | bytearray) -> None:
        self._reader.feed(bytes(data) if isinstance(data, bytearray) else data)

    def next(self) -> Any:
        """The next whole reply, or ``False`` while it has not all come (a RESP reply is never
        the value ``False``: a boolean exists only in RESP3, which the store does not ask for).
        RedisError when the bytes are not RESP or not UTF-8."""
        try:
            return self._reader.gets()
        except (hiredis.ProtocolError, UnicodeDecodeError) as exc:
            raise RedisError(f"unreadable reply: {exc}") from exc

    def pending(self) -> bool:
        """Bytes fed that no reply took yet."""
        return self._reader.has_data()


class Transport(Protocol):
    """What a connection needs of its stream (a trio.abc.Stream has it)."""

    async def send_all(self, data: bytes) -> None: ...

    async def receive_some(self, max_bytes: int) -> bytes | bytearray: ...

    async def aclose(self) -> None: ...


class SocketTransport:
    """A connected TCP or UNIX socket, driven by trio's I/O waits directly: a request is sent
    at once (the socket's buffer takes it; trio waits only if it is full) and its reply read
    after one wait for the socket to be readable. trio's ``SocketStream`` would also
    yield to the scheduler after the send and try a read before that wait (a reply is never
    there yet): a third of the store's own instructions per call (docs/benchmarks.md)."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock

    async def send_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[self._sock.send(view) :]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self._sock)

    async def receive_some(self, max_bytes: int) -> bytes:
        while True:
            await trio.lowlevel.wait_readable(self._sock)
            try:
                return self._sock.recv(max_bytes)
            except BlockingIOError:
                continue

    async def aclose(self) -> None:
        if self._sock.fileno() >= 0:
            trio.lowlevel.notify_closing(self._sock)
            self._sock.close()
        await trio.lowlevel.checkpoint()


class Connection:
    """One connection: a request (one or more commands) out, as many replies back."""

    def __init__(self, stream: Transport, endpoint: Endpoint) -> None:
        self._stream = stream
        self._endpoint = endpoint
        self._replies = ReplyReader()

    async def request(self, payload: bytes, count: int = 1) -> list[Any]:
        """Send ``payload`` and read ``count`` replies. Any failure leaves the connection unfit
        for another request: the caller closes it."""
        try:
            await self._stream.send_all(payload)
        except (trio.BrokenResourceError, OSError) as exc:
            raise ConnectionLost(f"{self._endpoint}: {_reason(exc)}", before_reply=True) from exc
        replies: list[Any] = []
        received = False
        while True:
            reply = self._replies.next()
            if reply is not False:
                replies.append(reply)
                if len(replies) == count:
                    if self._replies.pending():
                        raise RedisError(f"{self._endpoint}: more replies than requests")
                    return replies
                continue
            try:
                data = await self._stream.receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, OSError) as exc:
                raise ConnectionLost(
                    f"{self._endpoint}: {_reason(exc)}", before_reply=not received
                ) from exc
            if not data:
                raise ConnectionLost(
                    f"{self._endpoint}: the server closed the connection", before_reply=not received
                )
            received = True
            self._replies.feed(data)

    async def aclose(self) -> None:
        """Close at once (also when cancelled: a TLS stream is not shut down politely)."""
        with trio.CancelScope() as scope:
            scope.cancel()
            await self._stream.aclose()


async def connect(endpoint: Endpoint) -> Connection:
    """A new connection, logged in (``AUTH``) and on its database (``SELECT``) as the endpoint
    says."""
    try:
        stream: Transport
        if endpoint.tls is not None:
            stream = await trio.open_ssl_over_tcp_stream(
                endpoint.host, endpoint.port, ssl_context=endpoint.tls
            )
        else:
            if endpoint.path is not None:
                opened = await trio.open_unix_socket(endpoint.path)
            else:
                opened = await trio.open_tcp_stream(endpoint.host, endpoint.port)  # TCP_NODELAY
            stream = SocketTransport(socket.socket(fileno=opened.socket.detach()))
    except OSError as exc:
        raise RedisError(f"cannot connect to {endpoint}: {_reason(exc)}") from exc
    connection = Connection(stream, endpoint)
    try:
        setup: list[bytes] = []
        if endpoint.password is not None:
            login = (endpoint.username, endpoint.password) if endpoint.username else ()
            setup.append(pack("AUTH", *(login or (endpoint.password,))))
        if endpoint.db:
            setup.append(pack("SELECT", endpoint.db))
        if setup:
            for reply in await connection.request(b"".join(setup), len(setup)):
                if isinstance(reply, hiredis.ReplyError):
                    raise RedisError(f"{endpoint}: {reply}")
    except BaseException:
        await connection.aclose()
        raise
    return connection


class ConnectionPool:
    """At most ``size`` connections to ``endpoint``; a request waits for one when all are busy
    (within the caller's timeout)."""

    def __init__(self, endpoint: Endpoint, size: int) -> None:
        self.endpoint = endpoint
        self._slots = trio.Semaphore(size)
        self._idle: list[Connection] = []
        self._closed = False

    async def request(self, payload: bytes, count: int = 1) -> list[Any]:
        """``count`` replies to ``payload`` (error replies as ``hiredis.ReplyError`` values).
        RedisError when the server cannot be reached or breaks the connection."""
        try:
            self._slots.acquire_nowait()  # no checkpoint: the I/O below is one
        except trio.WouldBlock:
            await self._slots.acquire()
        try:
            if self._idle:
                connection = self._idle.pop()
                try:
                    return await self._on(connection, payload, count)
                except ConnectionLost as lost:
                    if not lost.before_reply:
                        raise
                    # closed while idle (a restart): the server never had this request
            return await self._on(await connect(self.endpoint), payload, count)
        finally:
            self._slots.release()

    async def _on(self, connection: Connection, payload: bytes, count: int) -> list[Any]:
        try:
            replies = await connection.request(payload, count)
        except BaseException:
            await connection.aclose()
            raise
        if self._closed:
            await connection.aclose()
        else:
            self._idle.append(connection)
        return replies

    async def aclose(self) -> None:
        """Close the idle connections; one in use closes when its request ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.aclose()


def _reason(exc: BaseException) -> str:
    cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else None
    return str(cause or exc) or type(exc).__name__
