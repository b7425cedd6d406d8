"""A trio client for spamd, on the sans-I/O codec in ``filterd.protocols.spamd``.

One connection per request (spamd answers one request per connection and closes), at most
``max_connections`` at a time: set it to spamd's ``--max-children`` so requests queue here
instead of in spamd's listen backlog. The message is streamed chunk by chunk from bytes, an
iterable or an async iterable of bytes; the client never joins it into one object.

No call takes a timeout: wrap calls in ``trio.fail_after``/``move_on_after`` (the deadline also
covers waiting for a free connection slot). Failures of spamd — cannot connect, connection lost,
a response that breaks the protocol, an error status such as ``76 Bad header line`` — raise
``SpamdError``; misuse (a length that does not match the chunks, a bad user name) raises
``ValueError``/``LocalProtocolError`` as the bug it is.

Over TLS there is no half-close (``trio.SSLStream`` has no ``send_eof``), and spamd reads the
body by lines: a message that is empty or does not end in LF would leave spamd waiting, so the
client refuses it with ``SpamdError`` (SMTP content always ends in CRLF).
"""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Iterator
from functools import partial
from typing import TypeAlias

import trio

from filterd.config.types import Endpoint
from filterd.errors import FilterdError
from filterd.protocols.smtp.common import RECEIVE_SIZE, RemoteProtocolError
from filterd.protocols.spamd import (
    SCAN_COMMANDS,
    Command,
    ConnectionClosed,
    NeedData,
    ResponseParser,
    SpamdLimits,
    SpamdResponse,
    Tell,
    request_head,
)

__all__ = ["MessageSource", "SpamdAddress", "SpamdClient", "SpamdError"]


SpamdAddress: TypeAlias = Endpoint | tuple[str, int] | str | os.PathLike[str]
"""``Endpoint``, ``(host, port)`` for TCP, or a unix socket path (``"unix:"`` prefix optional)."""

MessageSource: TypeAlias = bytes | bytearray | memoryview | Iterable[bytes] | AsyncIterable[bytes]
"""The message: one bytes-like object, or its chunks from an iterable or async iterable."""


class SpamdError(FilterdError):
    """spamd could not give an answer. ``code`` is spamd's sysexits status when it sent one
    (e.g. 76 EX_PROTOCOL, 69 EX_UNAVAILABLE, 79 EX_TIMEOUT), else None; ``response`` is that
    error response."""

    def __init__(self, message: str, *, response: SpamdResponse | None = None) -> None:
        super().__init__(message)
        self.response = response
        self.code = response.code if response is not None else None


class SpamdClient:
    def __init__(
        self,
        address: SpamdAddress,
        max_connections: int = 5,
        ssl_context: ssl.SSLContext | None = None,
        *,
        limits: SpamdLimits | None = None,
        server_hostname: str | None = None,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        self._endpoint = _endpoint(address)
        if ssl_context is not None and self._endpoint.kind == "unix":
            raise ValueError("spamd offers TLS on TCP listeners only")
        self._ssl_context = ssl_context
        self._server_hostname = server_hostname or self._endpoint.host or None
        self._limits = limits or SpamdLimits()
        self._limiter = trio.CapacityLimiter(max_connections)

    @property
    def endpoint(self) -> Endpoint:
        return self._endpoint

    @property
    def limiter(self) -> trio.CapacityLimiter:
        """Bounds concurrent connections; its statistics show queued requests."""
        return self._limiter

    def __repr__(self) -> str:
        tls = "+tls" if self._ssl_context else ""
        return f"SpamdClient({self._endpoint}{tls}, max_connections={self._limiter.total_tokens})"

    # --- requests ---

    async def check(
        self,
        message: MessageSource,
        length: int,
        command: Command | str = Command.SYMBOLS,
        user: str | None = None,
    ) -> SpamdResponse:
        """Scan ``message`` (exactly ``length`` bytes) with CHECK, SYMBOLS (default), REPORT,
        REPORT_IFSPAM, PROCESS or HEADERS. The response has ``spam`` set, and ``symbols`` for
        SYMBOLS, ``body`` for the others that return one."""
        command = Command(command)
        if command not in SCAN_COMMANDS:
            raise ValueError(f"check() scans; use ping() or tell() for {command.value}")
        head = request_head(command, length, user=user)
        return await self._request(command, head, message, length)

    async def ping(self) -> SpamdResponse:
        """``PING`` → ``SPAMD/1.5 0 PONG``; SpamdError if spamd does not answer so."""
        return await self._request(Command.PING, request_head(Command.PING), b"", 0)

    async def tell(
        self, message: MessageSource, length: int, tell: Tell, user: str | None = None
    ) -> SpamdResponse:
        """Learn or report ``message`` (spamd needs ``--allow-tell``). What spamd did is in
        ``did_set``/``did_remove``; empty sets mean it did nothing (e.g. already learnt)."""
        head = request_head(Command.TELL, length, user=user, tell=tell)
        return await self._request(Command.TELL, head, message, length)

    # --- one connection ---

    async def _request(
        self, command: Command, head: bytes, message: MessageSource, length: int
    ) -> SpamdResponse:
        parser = ResponseParser(command, self._limits)
        async with self._limiter:
            stream = await self._connect()
            try:
                try:
                    half_closed, ends_with_lf = await self._send(stream, head, message, length)
                except SpamdError as exc:
                    # spamd may have answered early (an error status) and closed: prefer that.
                    early = await self._salvage(stream, parser)
                    if early is not None and not early.ok:
                        raise _status_error(self, early) from exc
                    raise
                if not half_closed and command is not Command.PING and not ends_with_lf:
                    raise SpamdError(
                        f"spamd at {self._endpoint}: over TLS the message must end with LF "
                        "(spamd reads it by lines and TLS cannot half-close)"
                    )
                with self._errors("reading the response"):
                    response = await _receive(stream, parser)
            finally:
                await trio.aclose_forcefully(stream)
        if not response.ok:
            raise _status_error(self, response)
        if command is Command.PING and response.message != "PONG":
            raise SpamdError(f"spamd at {self._endpoint} answered PING with {response.message!r}")
        return response

    async def _connect(self) -> trio.abc.Stream:
        endpoint = self._endpoint
        stream: trio.abc.Stream
        with self._errors("connect"):
            if endpoint.kind == "unix":
                stream = await trio.open_unix_socket(endpoint.path)
            else:
                stream = await trio.open_tcp_stream(endpoint.host, endpoint.port)
        if self._ssl_context is None:
            return stream
        tls = trio.SSLStream(stream, self._ssl_context, server_hostname=self._server_hostname)
        try:
            with self._errors("TLS handshake"):
                await tls.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(tls)
            raise
        return tls

    async def _send(
        self, stream: trio.abc.Stream, head: bytes, message: MessageSource, length: int
    ) -> tuple[bool, bool]:
        """Send the request; (whether we half-closed, whether the message ended in LF).

        Only the socket operations become SpamdError: an error raised by the caller's
        iterable is the caller's and propagates as it is.
        """
        body = _BodySender(partial(self._send_all, stream), length)
        await self._send_all(stream, head)
        if isinstance(message, bytes | bytearray | memoryview):
            await body.send(message)
        elif isinstance(message, AsyncIterable):
            async for chunk in message:
                await body.send(chunk)
        else:
            for chunk in message:
                await body.send(chunk)
        body.finish()
        if not isinstance(stream, trio.abc.HalfCloseableStream):
            return False, body.ends_with_lf
        with self._errors("sending the request"):
            await stream.send_eof()
        return True, body.ends_with_lf

    async def _send_all(
        self, stream: trio.abc.Stream, data: bytes | bytearray | memoryview
    ) -> None:
        with self._errors("sending the request"):
            await stream.send_all(data)

    async def _salvage(
        self, stream: trio.abc.Stream, parser: ResponseParser
    ) -> SpamdResponse | None:
        """Whatever response spamd managed to send before the connection broke, if any."""
        try:
            with self._errors("reading an early response"):
                return await _receive(stream, parser)
        except SpamdError:
            return None

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """I/O and protocol failures → SpamdError naming spamd's address and the step."""
        try:
            yield
        except RemoteProtocolError as exc:
            raise SpamdError(f"spamd at {self._endpoint} broke the protocol: {exc}") from exc
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError) as exc:
            raise SpamdError(f"spamd at {self._endpoint}: {what} failed: {_describe(exc)}") from exc


class _BodySender:
    """Sends the message chunks, checking them against the declared length."""

    def __init__(
        self, send_all: Callable[[bytes | bytearray | memoryview], Awaitable[None]], length: int
    ) -> None:
        if length < 0:
            raise ValueError("length must be >= 0")
        self._send_all = send_all
        self._length = length
        self._sent = 0
        self.ends_with_lf = False

    async def send(self, chunk: bytes | bytearray | memoryview) -> None:
        size = len(chunk)
        if not size:
            return
        if self._sent + size > self._length:
            raise ValueError(f"message is longer than the declared {self._length} bytes")
        await self._send_all(chunk)
        self._sent += size
        self.ends_with_lf = chunk[-1] == 0x0A

    def finish(self) -> None:
        if self._sent != self._length:
            raise ValueError(f"message has {self._sent} bytes, {self._length} were declared")


async def _receive(stream: trio.abc.Stream, parser: ResponseParser) -> SpamdResponse:
    while True:
        event = parser.next_event()
        if isinstance(event, SpamdResponse):
            return event
        if isinstance(event, ConnectionClosed):  # pragma: no cover - only follows a response
            raise RemoteProtocolError("connection closed before the response")
        assert isinstance(event, NeedData)
        parser.receive_data(bytes(await stream.receive_some(RECEIVE_SIZE)))


def _status_error(client: SpamdClient, response: SpamdResponse) -> SpamdError:
    return SpamdError(
        f"spamd at {client.endpoint} answered {response.code} {response.code_name}: "
        f"{response.message}",
        response=response,
    )


def _describe(exc: BaseException) -> str:
    """The most specific reason, e.g. "Connection refused": trio's "all attempts to connect
    failed" and BrokenResourceError keep the errno in their cause."""
    for error in _causes(exc):
        if isinstance(error, OSError) and error.errno:
            return os.strerror(error.errno)
    return str(exc) or type(exc).__name__


def _causes(exc: BaseException | None) -> Iterator[BaseException]:
    for _ in range(10):  # a bound, in case of a cycle
        if exc is None:
            return
        yield exc
        if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
            exc = exc.exceptions[0]
        else:
            exc = exc.__cause__ or exc.__context__


def _endpoint(address: SpamdAddress) -> Endpoint:
    if isinstance(address, Endpoint):
        return address
    if isinstance(address, tuple):
        host, port = address
        return Endpoint("tcp", host=host, port=port)
    path = os.fspath(address)
    return Endpoint("unix", path=path.removeprefix("unix:"))
