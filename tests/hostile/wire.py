"""Raw clients for the hostile suite: a blocking socket that writes exactly the bytes a test
gives it and reads whole SMTP replies, and the well-behaved SMTP/LMTP client that each test
runs alongside (``smtplib``) to show that the other sessions are unharmed.

Every read is bounded by the socket timeout (``WAIT``): a hang fails the test, it never stalls
the suite. No assertion is made on how long anything took."""

from __future__ import annotations

import contextlib
import smtplib
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from filterd.model.reply import Reply as ModelReply

WAIT = 60.0
"""Upper bound for any one read or connect: only bounds a hang."""


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def enhanced(self) -> str:
        """The enhanced status code of the last line ("" if none)."""
        words = self.lines[-1][4:].split(" ", 1)
        return words[0] if words and words[0][:1].isdigit() and "." in words[0] else ""

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def means(self, expected: ModelReply) -> bool:
        """Same code and enhanced status code as one of filterd's documented replies."""
        return (self.code, self.enhanced) == (expected.code, expected.status)

    def __str__(self) -> str:
        return self.text


@dataclass
class Wire:
    """One raw TCP connection to a filterd door."""

    sock: socket.socket
    buffer: bytes = b""
    eof: bool = False
    log: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, port: int, host: str = "127.0.0.1") -> Wire:
        sock = socket.create_connection((host, port), timeout=WAIT)
        sock.settimeout(WAIT)
        return cls(sock)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_line(self, line: str) -> None:
        self.send(line.encode() + b"\r\n")

    def _fill(self) -> bool:
        """Read more; False at end of file (or a reset: the server is gone either way)."""
        if self.eof:
            return False
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    def line(self) -> str:
        while b"\r\n" not in self.buffer:
            if not self._fill():
                raise EOFError(f"closed by the server; unread {self.buffer[:200]!r}")
        raw, _, self.buffer = self.buffer.partition(b"\r\n")
        text = raw.decode("utf-8", "backslashreplace")
        self.log.append(text)
        return text

    def reply(self) -> Reply:
        """One whole (possibly multi-line) reply."""
        lines = [self.line()]
        while lines[-1][3:4] == "-":
            lines.append(self.line())
        return Reply(int(lines[-1][:3]), tuple(lines))

    def replies(self, count: int) -> list[Reply]:
        return [self.reply() for _ in range(count)]

    def rest(self) -> list[Reply]:
        """Every reply until the server closes the connection."""
        out: list[Reply] = []
        while True:
            while b"\r\n" not in self.buffer:
                if not self._fill():
                    assert not self.buffer, f"a partial line before the close: {self.buffer!r}"
                    return out
            out.append(self.reply())

    def until(self, end: bytes) -> bytes:
        """Everything up to and including the first ``end`` (a policy answer's empty line)."""
        while end not in self.buffer:
            if not self._fill():
                raise EOFError(f"closed by the server before {end!r}; got {self.buffer!r}")
        head, _, self.buffer = self.buffer.partition(end)
        return head + end

    def drain(self) -> bytes:
        """Everything the server still sends until it closes the connection."""
        while self._fill():
            pass
        data, self.buffer = self.buffer, b""
        return data

    def closed(self) -> bool:
        """Reads to the end: True if the server closed without sending anything more."""
        while self._fill():
            pass
        return not self.buffer

    def hello(self, lmtp: bool = False, name: str = "client.example") -> Reply:
        """Read the greeting and say EHLO (LHLO); both must be positive."""
        greeting = self.reply()
        assert greeting.code == 220, greeting
        self.send_line(f"{'LHLO' if lmtp else 'EHLO'} {name}")
        reply = self.reply()
        assert reply.code == 250, reply
        return reply

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def wire(port: int) -> Iterator[Wire]:
    conn = Wire.open(port)
    try:
        yield conn
    finally:
        conn.close()


def marker() -> str:
    """A unique word to find one test's message at the next hop."""
    return uuid.uuid4().hex


def good_mail(port: int, tag: str, *, lmtp: bool = False, starttls_ca: Path | None = None) -> None:
    """The well-behaved client: one message over a connection of its own (standard library
    ``smtplib``), which must be accepted. ``tag`` goes in its Subject."""
    client: smtplib.SMTP = (
        smtplib.LMTP("127.0.0.1", port, timeout=WAIT)
        if lmtp
        else smtplib.SMTP("127.0.0.1", port, timeout=WAIT)
    )
    with client:
        client.ehlo("good.example")
        if starttls_ca is not None:
            import ssl

            context = ssl.create_default_context(cafile=str(starttls_ca))
            client.starttls(context=context)
            client.ehlo("good.example")
        message = f"From: good@example.com\r\nSubject: good {tag}\r\n\r\nwell-behaved\r\n"
        refused = client.sendmail("good@example.com", ["rcpt@example.org"], message)
        assert refused == {}, refused
