"""Dovecot's auth service over a socket: the I/O around ``filterd.protocols.dovecot_auth``.

One connection per SMTP AUTH exchange (connect, handshake, one request, close), so that no
connection is shared between sessions or left half-way through a request: an AUTH is rare next
to a message, and the handshake is one round trip on a local socket. Every wait is bounded by
``AUTH_TIMEOUT``; whatever goes wrong with the service (not there, too slow, not speaking the
protocol) is an ``AuthUnavailable`` carrying the reason, which the SMTP client hears as a
temporary failure.
"""

from __future__ import annotations

import os
from types import TracebackType

import trio

from filterd.config.types import Endpoint
from filterd.protocols.dovecot_auth import (
    Challenge,
    DovecotAuthClient,
    Failure,
    Ready,
    Success,
)
from filterd.protocols.smtp.common import ConnectionClosed, NeedData, ProtocolError

__all__ = ["AUTH_TIMEOUT", "AuthUnavailable", "DovecotAuth", "DovecotExchange", "Step"]

AUTH_TIMEOUT = 20.0
"""Longest wait for Dovecot: more than its own longest failure delay (an auth penalty of up to
15 s per client address)."""

Step = Challenge | Success | Failure
"""What one request or response leads to."""


class AuthUnavailable(Exception):
    """Dovecot could not be asked: ``str()`` says why (for the log and the client)."""


class DovecotAuth:
    """The auth-client socket of one listener (``auth_socket``)."""

    def __init__(self, address: Endpoint, timeout: float = AUTH_TIMEOUT) -> None:
        self.address = address
        self.timeout = timeout

    async def begin(self) -> DovecotExchange:
        """Connect and shake hands. Raises ``AuthUnavailable``."""
        with trio.move_on_after(self.timeout) as scope:
            try:
                if self.address.kind == "unix":
                    stream: trio.abc.Stream = await trio.open_unix_socket(self.address.path)
                else:
                    stream = await trio.open_tcp_stream(self.address.host, self.address.port)
            except OSError as exc:
                raise AuthUnavailable(
                    f"cannot connect to Dovecot's auth socket {self.address}: {exc.strerror or exc}"
                ) from None
        if scope.cancelled_caught:
            raise AuthUnavailable(f"timeout connecting to Dovecot's auth socket {self.address}")
        exchange = DovecotExchange(stream, self)
        try:
            await exchange.shake_hands()
        except BaseException:
            await exchange.aclose()
            raise
        return exchange


class DovecotExchange:
    """One connection: the handshake, then requests. Close it (``async with`` or ``aclose``)."""

    def __init__(self, stream: trio.abc.Stream, auth: DovecotAuth) -> None:
        self._stream = stream
        self._auth = auth
        self._codec = DovecotAuthClient(pid=os.getpid())
        self.mechanisms: frozenset[str] = frozenset()

    async def __aenter__(self) -> DovecotExchange:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await self._stream.aclose()

    async def shake_hands(self) -> None:
        event = await self._talk(self._codec.handshake())
        if not isinstance(event, Ready):
            raise AuthUnavailable("Dovecot's auth service did not finish its handshake")
        self.mechanisms = event.mechanisms

    async def start(
        self,
        mechanism: str,
        initial_response: str | None,
        *,
        local_ip: str | None,
        remote_ip: str | None,
        secured: bool,
    ) -> Step:
        """``AUTH``: the mechanism must be one of ``mechanisms``, the response base64."""
        line = self._codec.authenticate(
            mechanism,
            local_ip=local_ip,
            remote_ip=remote_ip,
            secured=secured,
            initial_response=initial_response,
        )
        return self._step(await self._talk(line))

    async def respond(self, data: str) -> Step:
        """``CONT``: the client's answer to the last ``Challenge`` (base64)."""
        return self._step(await self._talk(self._codec.respond(data)))

    def _step(self, event: object) -> Step:
        if isinstance(event, Challenge | Success | Failure):
            return event
        raise AuthUnavailable("Dovecot's auth service closed the connection")

    async def _talk(self, line: bytes) -> object:
        """Send ``line`` and read up to the next event, within the timeout."""
        address = self._auth.address
        with trio.move_on_after(self._auth.timeout):
            try:
                await self._stream.send_all(line)
                while isinstance(event := self._codec.next_event(), NeedData):
                    self._codec.receive_data(bytes(await self._stream.receive_some(4096)))
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise AuthUnavailable(f"connection to Dovecot's auth socket lost: {exc}") from None
            except ProtocolError as exc:
                raise AuthUnavailable(f"Dovecot's auth socket {address}: {exc}") from None
            if isinstance(event, ConnectionClosed):
                raise AuthUnavailable(f"Dovecot's auth socket {address} closed the connection")
            return event
        raise AuthUnavailable(f"timeout waiting for Dovecot's auth socket {address}")
