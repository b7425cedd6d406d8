"""Memory use for one very large message: filterd's RSS growth while it relays it.

filterd may run several processes (``processes = N``): every process of its group is read
before and after, and the one that grew most is reported (the one that took the message).
Before the large message, ``WARM_MESSAGES`` small ones, each on a connection of its own, so
that every process has relayed a message already. The message (headers, then lines of 998
characters + CRLF, none starting with ".") is written to a file once and streamed by a minimal
SMTP client in 1 MiB writes, so the client never holds it whole (smtplib would build several
in-memory copies).
"""

from __future__ import annotations

import io
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from filterd_bench.procs import BenchError, group_memory_kib
from filterd_bench.source import HELO, RECIPIENT, SENDER

LINE_LENGTH = 998  # characters before CRLF: the RFC 5321 maximum
SEND_CHUNK = 1024 * 1024
WARM_MESSAGES = 8
CLIENT_TIMEOUT = 300.0


def write_message(path: Path, size: int) -> int:
    """A message of about ``size`` bytes at ``path``; returns its exact size."""
    header = (
        f"From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: filterd benchmark, large message\r\n"
        f"Message-ID: <big.{time.time_ns()}@{HELO}>\r\n\r\n"
    ).encode()
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    lines = [
        (b"%08d " % n + alphabet * 16)[:LINE_LENGTH] + b"\r\n" for n in range(1000)
    ]  # 1000 distinct lines, repeated
    block = b"".join(lines)
    with path.open("wb") as out:
        out.write(header)
        written = len(header)
        while written + len(block) <= size:
            out.write(block)
            written += len(block)
        tail = (size - written) // (LINE_LENGTH + 2)
        out.write(b"".join(lines[:tail]))
        written += tail * (LINE_LENGTH + 2)
    return written


@dataclass
class BigMessageResult:
    message_bytes: int
    pid: int  # the process that grew most
    processes: int  # in filterd's process group
    rss_before_kib: int
    hwm_before_kib: int
    hwm_after_kib: int
    rss_after_kib: int
    seconds: float
    reply: str

    @property
    def growth_mib(self) -> float:
        """Peak RSS during the message over RSS just before it."""
        return (self.hwm_after_kib - self.rss_before_kib) / 1024


def relay_big_message(pgid: int, port: int, message: Path) -> BigMessageResult:
    """Send the warm-up messages, read every process's VmRSS, send ``message``, read VmHWM."""
    small = message.with_suffix(".small")
    write_message(small, 4096)
    for _ in range(WARM_MESSAGES):
        reply = send_file(port, small)
        if not reply.startswith("250"):
            raise BenchError(f"warm-up message refused by filterd: {reply}")
    before = group_memory_kib(pgid)
    started = time.perf_counter()
    reply = send_file(port, message)
    seconds = time.perf_counter() - started
    after = group_memory_kib(pgid)
    growth = {
        pid: memory["VmHWM"] - before[pid]["VmRSS"]
        for pid, memory in after.items()
        if "VmHWM" in memory and "VmRSS" in before.get(pid, {})
    }
    if not growth:
        raise BenchError(f"no process of group {pgid} could be read before and after")
    pid = max(growth, key=lambda key: growth[key])
    return BigMessageResult(
        message_bytes=message.stat().st_size,
        pid=pid,
        processes=len(after),
        rss_before_kib=before[pid]["VmRSS"],
        hwm_before_kib=before[pid]["VmHWM"],
        hwm_after_kib=after[pid]["VmHWM"],
        rss_after_kib=after[pid]["VmRSS"],
        seconds=seconds,
        reply=reply,
    )


def send_file(port: int, path: Path) -> str:
    """One SMTP transaction carrying the file's bytes (no dot-stuffing needed: no line starts
    with "."); returns the final reply to the end of data."""
    with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT) as sock:
        replies = sock.makefile("rb")

        def expect(command: bytes | None, code: str) -> str:
            if command is not None:
                sock.sendall(command + b"\r\n")
            reply = _read_reply(replies)
            if not reply.startswith(code):
                what = command.decode() if command else "greeting"
                raise BenchError(f"{what}: unexpected reply {reply!r}")
            return reply

        expect(None, "220")
        expect(b"EHLO " + HELO.encode(), "250")
        size = path.stat().st_size
        expect(f"MAIL FROM:<{SENDER}> SIZE={size}".encode(), "250")
        expect(f"RCPT TO:<{RECIPIENT}>".encode(), "250")
        expect(b"DATA", "354")
        with path.open("rb") as content:
            while chunk := content.read(SEND_CHUNK):
                sock.sendall(chunk)
        sock.sendall(b".\r\n")
        final = _read_reply(replies)
        try:
            sock.sendall(b"QUIT\r\n")
            _read_reply(replies)
        except OSError:
            pass
        return final


def _read_reply(replies: io.BufferedReader) -> str:
    lines: list[str] = []
    while True:
        line = replies.readline()
        if not line:
            raise BenchError("connection closed while waiting for a reply")
        text = line.decode(errors="replace").rstrip("\r\n")
        lines.append(text)
        if len(text) < 4 or text[3] != "-":
            return " / ".join(lines)
