"""The latency pass's load generator: SMTP sessions that stamp every message (see ``latency``).

``run_load(port, sessions=S, count=N, size=B, rate=R, time_limit=T)`` opens S persistent
connections (not timed), then sends N messages (a few headers, about B bytes of body) over
them, one transaction each (MAIL FROM, RCPT TO, DATA, without pipelining, as smtp-source
does). ``rate=None`` is a closed loop: each session sends its next message as soon as the last
one is answered (the maximum load). A rate paces the load open-loop: message i is due at
start + i / R, whatever the answers; a due message waits for a free session, and the latest
start after a due time is reported (``lag``), so a pace the client could not keep shows. Every
message's envelope sender is unique (``lat-<first_id + i>@example.com``): the sink stamps by it.

Bounded: the pass stops taking messages after ``time_limit`` seconds, every read and write
has ``IO_TIMEOUT``, and the whole run is cancelled ``GRACE`` seconds past the time limit.
Loopback only.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from filterd_bench.latency import Stamps
from filterd_bench.source import HELO, RECIPIENT

IO_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10.0
GRACE = 30.0
MAX_ERRORS_KEPT = 10
LINE = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 latency pass body.\r\n"


def sender(number: int) -> str:
    return f"lat-{number}@example.com"


@dataclass
class LoadResult:
    requested: int
    sessions: int
    rate: float | None  # the pace asked for; None: closed loop
    completed: int = 0
    seconds: float = 0.0  # from the start to the last answer
    lag: float = 0.0  # paced: the latest start after a message's due time (seconds)
    stamps: dict[str, Stamps] = field(default_factory=dict)  # sender -> (dot, reply)
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    timed_out: bool = False

    @property
    def achieved(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return self.completed == self.requested and not self.error_count and not self.timed_out

    def problem(self) -> str:
        parts = []
        if self.timed_out:
            parts.append("time limit reached")
        if self.error_count:
            parts.append(f"{self.error_count} error(s), first: {self.errors[0]}")
        if self.completed != self.requested:
            parts.append(f"{self.completed}/{self.requested} answered")
        return "; ".join(parts)

    def error(self, text: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(text)


def headers(number: int) -> bytes:
    """The message's header section and the blank line after it."""
    return (
        f"From: <{sender(number)}>\r\nTo: <{RECIPIENT}>\r\nSubject: latency pass {number}\r\n"
        f"Message-ID: <lat.{number}@{HELO}>\r\n\r\n"
    ).encode()


def body(size: int) -> bytes:
    """Lines of text, about ``size`` bytes in all (at least one; none starts with ".")."""
    return LINE * max(1, size // len(LINE))


class _Session:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> _Session:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), CONNECT_TIMEOUT
        )
        session = cls(reader, writer)
        await session.expect(None, b"220")
        await session.expect(f"EHLO {HELO}".encode(), b"250")
        return session

    async def reply(self) -> bytes:
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), IO_TIMEOUT)
            if not line:
                raise ConnectionError("connection closed while waiting for a reply")
            lines.append(line.rstrip(b"\r\n"))
            if len(line) < 4 or line[3:4] != b"-":
                return b" / ".join(lines)

    async def expect(self, command: bytes | None, code: bytes) -> bytes:
        if command is not None:
            self.writer.write(command + b"\r\n")
        answer = await self.reply()
        if not answer.startswith(code):
            what = command.decode() if command else "greeting"
            raise RuntimeError(f"{what}: {answer.decode(errors='replace')}")
        return answer

    async def send(self, number: int, content: bytes) -> Stamps:
        await self.expect(f"MAIL FROM:<{sender(number)}>".encode(), b"250")
        await self.expect(f"RCPT TO:<{RECIPIENT}>".encode(), b"250")
        await self.expect(b"DATA", b"354")
        self.writer.write(content)
        dot = time.monotonic()
        self.writer.write(b".\r\n")
        await asyncio.wait_for(self.writer.drain(), IO_TIMEOUT)
        answer = await self.reply()
        replied = time.monotonic()
        if not answer.startswith(b"250"):
            raise RuntimeError(f"end of data: {answer.decode(errors='replace')}")
        return dot, replied

    async def close(self) -> None:
        try:
            self.writer.write(b"QUIT\r\n")
            await asyncio.wait_for(self.reply(), 5.0)
        except (OSError, RuntimeError, TimeoutError):
            pass
        self.writer.close()


def run_load(
    port: int,
    *,
    sessions: int,
    count: int,
    size: int,
    rate: float | None,
    time_limit: float,
    first_id: int = 0,
) -> LoadResult:
    """One bounded pass; see the module docstring."""
    result = LoadResult(count, sessions, rate)
    try:
        run = _run(result, port, size, time_limit, first_id)
        asyncio.run(asyncio.wait_for(run, time_limit + GRACE))
    except TimeoutError:
        result.timed_out = True
    return result


async def _run(result: LoadResult, port: int, size: int, time_limit: float, first_id: int) -> None:
    opened = await asyncio.gather(
        *(_Session.open(port) for _ in range(result.sessions)), return_exceptions=True
    )
    sessions = [item for item in opened if isinstance(item, _Session)]
    for item in opened:
        if isinstance(item, BaseException):
            result.error(f"opening a session: {type(item).__name__}: {item}")
    if not sessions:
        return
    text = body(size)  # the same for every message
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    start = time.monotonic()
    deadline = start + time_limit
    last_answer = start

    async def work(session: _Session) -> None:
        nonlocal last_answer
        while (item := await queue.get()) is not None:
            number, due = item
            if time.monotonic() >= deadline:
                result.timed_out = True
                break
            result.lag = max(result.lag, time.monotonic() - due)
            number += first_id
            try:
                stamps = await session.send(number, headers(number) + text)
            except (OSError, RuntimeError, TimeoutError, ConnectionError) as exc:
                result.error(f"{type(exc).__name__}: {exc}")
                break  # the session is in an unknown state: the others take the rest
            result.stamps[sender(number)] = stamps
            result.completed += 1
            last_answer = time.monotonic()
        await session.close()

    async def dispatch() -> None:
        for number in range(result.requested):
            due = start if result.rate is None else start + number / result.rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if time.monotonic() >= deadline:
                break
            queue.put_nowait((number, due))
        for _ in sessions:
            queue.put_nowait(None)

    workers = [asyncio.create_task(work(session)) for session in sessions]
    await dispatch()
    await asyncio.gather(*workers)
    result.seconds = last_answer - start
    if result.completed < result.requested and not result.error_count:
        result.timed_out = True
