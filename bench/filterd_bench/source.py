"""Postfix's smtp-source as the load generator: one bounded run, timed.

Options chosen (see ``man smtp-source``):

- ``-s N``: N parallel SMTP sessions; ``-m COUNT``: COUNT messages in all, over those sessions.
- ``-d`` (``persistent=True``): each session keeps its connection and sends its next message
  over it (as Postfix reuses connections to a content filter). Without it, each message gets a
  connection of its own (greeting, EHLO, the transaction, QUIT). Either way every message is one
  transaction (MAIL FROM, one RCPT TO, DATA).
- ``-l SIZE``: SIZE bytes of body (80-byte lines) after a few header lines.
- ``-f``/``-t``: fixed sender and recipient in a domain the relays accept.
- ``-c``: a running count of completed DATA commands on stdout (flushed each time), so a run
  killed at its time limit still tells how many messages got through.

Without ``-A`` smtp-source stops at the first unexpected reply (for example a 4xx) and exits
non-zero with the reply on stderr: that is reported as the cell's error.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass

SMTP_SOURCE = "/usr/sbin/smtp-source"
SENDER = "bench-sender@example.com"
RECIPIENT = "bench-rcpt@example.com"
DOMAIN = "example.com"
HELO = "bench.localhost"


@dataclass
class SourceRun:
    requested: int
    completed: int
    seconds: float
    returncode: int | None
    timed_out: bool
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and self.completed == self.requested

    @property
    def rate(self) -> float:
        """Messages per second: completed messages over the wall time of the run."""
        return self.completed / self.seconds if self.seconds > 0 else 0.0

    @property
    def problem(self) -> str:
        if self.timed_out:
            return f"time limit: killed after {self.completed}/{self.requested} messages"
        if self.returncode != 0:
            lines = [line for line in self.stderr.splitlines() if line.strip()]
            detail = lines[-1] if lines else "(no stderr)"
            return f"smtp-source exit {self.returncode} after {self.completed}: {detail}"
        if self.completed != self.requested:
            return f"only {self.completed}/{self.requested} messages counted"
        return ""


def run_source(
    port: int, *, size: int, sessions: int, count: int, timeout: float, persistent: bool = True
) -> SourceRun:
    """Send ``count`` messages of ``size`` body bytes over ``sessions`` parallel sessions, each
    keeping its connection (``persistent``) or opening one per message."""
    argv = [
        SMTP_SOURCE,
        "-c",
        *(["-d"] if persistent else []),
        "-s",
        str(sessions),
        "-m",
        str(count),
        "-l",
        str(size),
        "-M",
        HELO,
        "-f",
        SENDER,
        "-t",
        RECIPIENT,
        f"127.0.0.1:{port}",
    ]
    started = time.perf_counter()
    popen = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    timed_out = False
    try:
        out, err = popen.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        out, err = _kill(popen)
    except BaseException:  # Ctrl-C: never leave a load generator behind
        _kill(popen)
        raise
    seconds = time.perf_counter() - started
    return SourceRun(
        requested=count,
        completed=_last_count(out),
        seconds=seconds,
        returncode=popen.returncode,
        timed_out=timed_out,
        stderr=err.decode(errors="replace"),
    )


def _kill(popen: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    try:
        os.killpg(popen.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return popen.communicate(timeout=10)


def _last_count(out: bytes) -> int:
    numbers = re.findall(rb"\d+", out)
    return int(numbers[-1]) if numbers else 0
