"""One connection to the next hop (SMTP or LMTP, TCP or unix socket), on the client codec.

Every wait has a deadline from the relay configuration; every failure becomes a
``NextHopError`` carrying the 4xx reply the client should get.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Iterator, Sequence

import trio

from filterd.config.schema import RelayDelivery
from filterd.config.types import Endpoint
from filterd.delivery.socket_io import SocketIO
from filterd.maillog import sanitize
from filterd.model import replies
from filterd.model.reply import Reply
from filterd.protocols.smtp.client import SmtpClient
from filterd.protocols.smtp.common import RECEIVE_SIZE, ConnectionClosed, ProtocolError

_HOSTNAME = socket.gethostname()

CLOSE_TIMEOUT = 2.0
STARTTLS_MISSING = Reply(451, "4.7.5", "Error: next hop does not offer STARTTLS")


class NextHopError(Exception):
    """The next hop failed; ``reply`` is the (transient) answer for our client."""

    def __init__(self, reply: Reply, detail: str) -> None:
        super().__init__(detail)
        self.reply = reply
        self.detail = detail


def _translate(exc: BaseException, what: str) -> NextHopError | None:
    """Map an I/O, timeout or protocol failure to NextHopError with the right reply."""
    if isinstance(exc, trio.TooSlowError):
        return NextHopError(replies.NEXT_HOP_TIMEOUT, f"timeout during {what}")
    if isinstance(exc, ProtocolError):
        return NextHopError(replies.NEXT_HOP_PROTOCOL, f"protocol error during {what}: {exc}")
    if isinstance(
        exc, trio.BrokenResourceError | trio.ClosedResourceError | ssl.SSLError | OSError
    ):
        return NextHopError(replies.NEXT_HOP_DOWN, f"{what}: {exc or type(exc).__name__}")
    return None


@contextlib.contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """For the rare paths (connect, TLS): failures → NextHopError."""
    try:
        yield
    except Exception as exc:
        failure = _translate(exc, what)
        if failure is None:
            raise
        raise failure from None


def transient(reply: Reply) -> Reply:
    """A next hop's 421 closes *its* connection, not ours: the client gets a plain 4xx."""
    if reply.code == 421:
        return Reply(451, reply.status or "4.4.0", reply.text)
    return reply


class NextHopConnection:
    def __init__(self, stream: trio.abc.Stream, config: RelayDelivery) -> None:
        self.stream: trio.abc.Stream = stream
        self.relay = relay_name(config.next_hop, stream)  # as the log's relay= names it
        self.io = SocketIO(stream)
        self.config = config
        self.codec = SmtpClient(lmtp=config.protocol == "lmtp")
        self.healthy = True
        self.transactions = 0

    @property
    def name(self) -> str:
        return str(self.config.next_hop)

    # --------------------------------------------------------------- opening
    @classmethod
    async def open(
        cls, config: RelayDelivery, ssl_context: ssl.SSLContext | None
    ) -> NextHopConnection:
        endpoint = config.next_hop
        with translate_errors("connect"), trio.fail_after(config.connect_timeout):
            stream = await _connect(endpoint)
        conn = cls(stream, config)
        try:
            await conn._greet(ssl_context)
        except BaseException:
            await conn.aclose()
            raise
        return conn

    async def _greet(self, ssl_context: ssl.SSLContext | None) -> None:
        greeting = await self.read_reply("greeting")
        if greeting.code != 220:
            raise NextHopError(replies.NEXT_HOP_DOWN, f"greeting: {greeting}")
        await self._hello()
        mode = self.config.starttls
        if mode == "never":
            return
        if not self.codec.capabilities.has("STARTTLS"):
            if mode == "required":
                raise NextHopError(STARTTLS_MISSING, "next hop does not offer STARTTLS")
            return
        reply = await self.command(self.codec.starttls(), "STARTTLS")
        if reply.code != 220:
            if mode == "required":
                raise NextHopError(STARTTLS_MISSING, f"STARTTLS refused: {reply}")
            return
        with translate_errors("STARTTLS"):
            self.codec.start_tls()
            context = ssl_context or ssl.create_default_context()
            host = self.config.next_hop.host or None
            tls = trio.SSLStream(self.stream, context, server_hostname=host)
            with trio.fail_after(self.config.connect_timeout):
                await tls.do_handshake()
        self.stream = tls
        self.io = SocketIO(tls)
        await self._hello()

    async def _hello(self) -> None:
        name = self.config.helo_name
        if self.codec.lmtp:
            reply = await self.command(self.codec.lhlo(name), "LHLO")
        else:
            reply = await self.command(self.codec.ehlo(name), "EHLO")
            if reply.code in (500, 502):
                reply = await self.command(self.codec.helo(name), "HELO")
        if not reply.is_positive:
            raise NextHopError(replies.NEXT_HOP_DOWN, f"hello refused: {reply}")

    # ------------------------------------------------------------ exchanges
    async def send(self, data: bytes, what: str) -> None:
        await self._exchange(data, 0, what, self.config.command_timeout)

    async def read_reply(self, what: str, *, final: bool = False) -> Reply:
        """The next reply, under the command deadline (the data deadline after the final dot)."""
        limit = self.config.data_timeout if final else self.config.command_timeout
        return (await self._exchange(None, 1, what, limit))[0]

    async def command(self, data: bytes, what: str) -> Reply:
        return (await self._exchange(data, 1, what, self.config.command_timeout))[0]

    async def exchange(self, commands: Sequence[bytes], what: str) -> list[Reply]:
        """Send a group of commands (pipelined when the next hop offers PIPELINING)."""
        if self.codec.capabilities.has("PIPELINING"):
            joined = b"".join(commands)
            return await self._exchange(joined, len(commands), what, self.config.command_timeout)
        return [await self.command(c, what) for c in commands]

    async def _exchange(
        self, data: bytes | None, count: int, what: str, limit: float
    ) -> list[Reply]:
        """Send ``data`` (if any) and read ``count`` replies, all under one deadline. This is
        the relay's hot path: a reply not there yet is read after one checkpoint, and only
        one that is still not there costs a cancel scope and a wait (``SocketIO``)."""
        answers: list[Reply] = []
        io = self.io
        codec = self.codec
        try:
            deadline = trio.current_time() + limit
            if data is not None:
                await io.send_all(data, deadline)
            while len(answers) < count:
                reply = codec.next_reply()
                if isinstance(reply, Reply):
                    if reply.code == 421:
                        self.healthy = False
                    answers.append(reply)
                elif isinstance(reply, ConnectionClosed):
                    raise NextHopError(replies.NEXT_HOP_DOWN, f"connection closed ({what})")
                else:
                    codec.receive_data(await io.receive_some(RECEIVE_SIZE, deadline))
        except NextHopError:
            self.healthy = False
            raise
        except BaseException as exc:
            failure = _translate(exc, what)
            if failure is None:
                raise
            self.healthy = False
            raise failure from None
        return answers

    # --------------------------------------------------------------- closing
    async def quit(self) -> None:
        """Polite close of an idle connection."""
        with trio.move_on_after(CLOSE_TIMEOUT), contextlib.suppress(NextHopError, ProtocolError):
            if self.healthy:
                await self.command(self.codec.quit(), "QUIT")
        await self.aclose()

    async def aclose(self) -> None:
        """Drop the connection; a transaction in progress is abandoned without its final dot."""
        self.healthy = False
        errors = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
        with (
            trio.CancelScope(shield=True),
            trio.move_on_after(CLOSE_TIMEOUT),
            contextlib.suppress(*errors),
        ):
            await self.stream.aclose()


def relay_name(endpoint: Endpoint, stream: trio.abc.Stream) -> str:
    """The next hop as Postfix's delivery agents name it: ``host[address]:port``, the address
    the connection reached; ``myhostname[/path]`` for a unix socket. Escaped for the log
    (``sanitize``) once per connection, not in every ``to=`` line."""
    if endpoint.kind == "unix":
        return sanitize(f"{_HOSTNAME}[{endpoint.path}]")
    sock = getattr(stream, "socket", None)
    try:
        address = str(sock.getpeername()[0]) if sock is not None else endpoint.host
    except OSError:
        address = endpoint.host
    return sanitize(f"{endpoint.host}[{address}]:{endpoint.port}")


async def _connect(endpoint: Endpoint) -> trio.abc.Stream:
    if endpoint.kind == "unix":
        return await trio.open_unix_socket(endpoint.path)
    return await trio.open_tcp_stream(endpoint.host, endpoint.port)
