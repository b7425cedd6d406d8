"""``filterd pipe --via ADDRESS``: hand the message to a running filterd's LMTP listener, as
spamc hands one to spamd. That filterd runs the chain and delivers as it is configured to; this
process only carries the envelope and the message over, and makes the replies pipe(8)'s exit
status exactly as the standalone mode does (``filterd.protocols.pipe_map``).

LMTP, so that each recipient gets its own reply after the message: pipe(8)'s one status for the
batch is then ``collapse_replies``' (all 2xx: 0; all refused: the first temporary refusal, else
the first one; some delivered and some not: 451 4.5.0, Postfix retries them all and none is
lost). A refused recipient refuses the batch before the message is sent, as in the standalone
mode. The original client (``--client-address``, ``--client-name``, ``--helo``) and Postfix's
queue id go over as XFORWARD when the listener offers it (to loopback and unix-socket clients by
default, ``[[listen]] xforward_hosts``).

Everything that keeps the listener from answering is a 4xx, so Postfix keeps the message: no
connection, a connection lost, a protocol error, no answer within ``--timeout`` (a deadline for
the whole conversation, reading the message included). Replies are read in bounded pieces by the
sans-I/O client codec (``filterd.protocols.smtp.client``), which also limits their length.

Only the standard library's socket and filterd's codecs are imported: no configuration file, no
pydantic, no trio, no plugins, so the process starts in a few tens of milliseconds.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import time

from filterd.config.endpoint import Endpoint, EndpointError, split_endpoint
from filterd.model import replies
from filterd.model.reply import Reply
from filterd.model.xtext import xtext_encode
from filterd.protocols.pipe_map import TIME_LIMIT, batch_refusal
from filterd.protocols.smtp.client import ConnectionClosed, SmtpClient
from filterd.protocols.smtp.common import RECEIVE_SIZE, LocalProtocolError, RemoteProtocolError
from filterd.protocols.smtp.dotstuff import DotStuffer
from filterd.protocols.smtp.linefold import LineFolder

__all__ = ["BadAddress", "hand_over"]

UNAVAILABLE = "[UNAVAILABLE]"
"""XFORWARD's value for an attribute Postfix does not know (XFORWARD_README)."""


class BadAddress(Exception):
    """``--via`` is not a socket address; the message says why and how to write one."""


class _Lost(Exception):
    """The connection ended before the conversation did."""


def hand_over(args: argparse.Namespace, stdin_fd: int, timeout: float) -> Reply:
    """Send the message on ``stdin_fd`` with ``args``' envelope to ``args.via``; the one reply
    for the batch. Never raises for a failure on the way: that is a 4xx reply."""
    try:
        endpoint = split_endpoint(args.via)
    except EndpointError as exc:
        raise BadAddress(f"{exc.why}, got {args.via!r} ({exc.hint})") from None
    deadline = time.monotonic() + timeout
    try:
        sock = _connect(endpoint, deadline)
    except TimeoutError:
        return TIME_LIMIT
    except OSError as exc:
        return _unavailable(endpoint, "cannot connect", exc)
    try:
        with sock:
            return _Conversation(sock, deadline).run(args, stdin_fd)
    except TimeoutError:
        return TIME_LIMIT
    except (OSError, _Lost) as exc:
        return _unavailable(endpoint, "connection lost", exc)
    except RemoteProtocolError as exc:
        return replies.NEXT_HOP_PROTOCOL.with_text(
            f"Error: filterd at {endpoint} broke the LMTP protocol ({exc}), try again later"
        )
    except LocalProtocolError as exc:  # an envelope the codec cannot send
        return replies.INTERNAL_ERROR.with_text(f"Error: filterd pipe: {exc}, try again later")


def _unavailable(endpoint: Endpoint, what: str, exc: BaseException) -> Reply:
    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return replies.NEXT_HOP_DOWN.with_text(
        f"Error: filterd at {endpoint}: {what} ({why}), try again later"
    )


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _connect(endpoint: Endpoint, deadline: float) -> socket.socket:
    if endpoint.kind == "tcp":
        return socket.create_connection((endpoint.host, endpoint.port), _remaining(deadline))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(_remaining(deadline))
        sock.connect(endpoint.path)
    except BaseException:
        sock.close()
        raise
    return sock


class _Conversation:
    """One LMTP transaction with the listener, every step bounded by the one deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.client = SmtpClient(lmtp=True)

    def run(self, args: argparse.Namespace, stdin_fd: int) -> Reply:
        client = self.client
        greeting = self._reply()
        if not greeting.is_positive:  # 421: too many connections, shutting down
            return _transient(greeting)
        self._send(client.lhlo(_our_name()))
        if not (hello := self._reply()).is_positive:
            return _transient(hello)
        caps = client.capabilities
        xforward = client.xforward(_xforward_attributes(args))
        for line in xforward:
            self._send(line)
            if not (answer := self._reply()).is_positive:
                return _transient(answer)
        recipients: list[str] = args.recipients
        params = ["BODY=8BITMIME"] if caps.has("8BITMIME") else []
        if caps.has("SMTPUTF8") and not all(a.isascii() for a in [args.sender, *recipients]):
            params.append("SMTPUTF8")
        commands = [client.mail(args.sender, params), *(client.rcpt(r) for r in recipients)]
        mail, *answers = self._exchange(commands, pipelined=caps.has("PIPELINING"))
        if not mail.is_positive:  # the chain's refusal of the sender, as in the standalone mode
            self._quit()
            return mail
        refusals = [answer for answer in answers if not answer.is_positive]
        if refusals:  # none of the batch is handed on, as in the standalone mode
            self._quit()
            return batch_refusal(refusals)
        self._send(client.data())
        if (go_ahead := self._reply()).code != 354:
            return _transient(go_ahead)
        self._send_message(stdin_fd)
        per_recipient = [self._reply() for _ in range(client.end_of_data())]
        self._quit()
        return replies.collapse_replies(per_recipient)

    def _exchange(self, commands: list[bytes], *, pipelined: bool) -> list[Reply]:
        """The replies to ``commands`` (MAIL and the RCPTs), sent together when the listener
        offers PIPELINING (RFC 2920), else one at a time."""
        if pipelined:
            self._send(b"".join(commands))
            return [self._reply() for _ in commands]
        answers: list[Reply] = []
        for command in commands:
            self._send(command)
            answers.append(self._reply())
        return answers

    def _send_message(self, stdin_fd: int) -> None:
        """Standard input, lines over 998 bytes broken as Postfix's smtp(8) breaks them,
        dot-stuffed, with CRLF line ends (LF or CRLF in), and its end mark."""
        folder = LineFolder()
        stuffer = DotStuffer(bare_newline="normalize")
        while chunk := self._read_stdin(stdin_fd):
            self._send(stuffer.feed(folder.feed(chunk)))
        self._send(stuffer.feed(folder.finish()) + stuffer.finish())

    def _read_stdin(self, fd: int) -> bytes:
        ready, _, _ = select.select([fd], [], [], _remaining(self.deadline))
        if not ready:
            raise TimeoutError
        return os.read(fd, RECEIVE_SIZE)

    def _send(self, data: bytes) -> None:
        self.sock.settimeout(_remaining(self.deadline))
        self.sock.sendall(data)

    def _reply(self) -> Reply:
        """The next reply; reads the socket in bounded pieces until it is complete."""
        while True:
            event = self.client.next_reply()
            if isinstance(event, Reply):
                return event
            if isinstance(event, ConnectionClosed):
                raise _Lost("the listener closed the connection")
            self.sock.settimeout(_remaining(self.deadline))
            self.client.receive_data(self.sock.recv(RECEIVE_SIZE))

    def _quit(self) -> None:
        """QUIT, and its reply, politely; the outcome is decided already."""
        try:
            self._send(self.client.quit())
            self._reply()
        except (OSError, _Lost, RemoteProtocolError, LocalProtocolError):
            pass


def _transient(reply: Reply) -> Reply:
    """A refusal that is not the chain's verdict on the message (the greeting, LHLO, XFORWARD,
    DATA): a 4xx as it is, a 5xx as a 4xx, so that Postfix keeps the message."""
    if reply.is_transient:
        return reply
    return replies.NEXT_HOP_PROTOCOL.with_text(
        f"Error: filterd answered {str(reply)[:200]}, try again later"
    )


def _xforward_attributes(args: argparse.Namespace) -> dict[str, str]:
    """The original client and Postfix's queue id, as Postfix's smtp client forwards them."""

    def value(text: str | None) -> str:
        return xtext_encode(text) if text and text != "unknown" else UNAVAILABLE

    attributes = {"NAME": value(args.client_name), "ADDR": value(args.client_address)}
    if args.helo:
        attributes["HELO"] = value(args.helo)
    if args.queue_id:
        attributes["IDENT"] = value(args.queue_id)
    return {name: text if len(text) <= 255 else UNAVAILABLE for name, text in attributes.items()}


def _our_name() -> str:
    name = socket.gethostname()
    return name if name and name.isascii() and " " not in name else "localhost"
