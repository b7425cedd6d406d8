"""Running a checker program (razor-check, pyzor, ...) on a message, for plugins: bounded, and
killed for good on cancellation.

The child gets a session (and process group) of its own, and when the chain's timeout cancels
the call, the whole group gets SIGKILL at once: a shell wrapper and whatever it started die
with it, and nothing keeps the output pipes open behind our back. (trio's default would send
SIGTERM and wait up to 5 s more before SIGKILL, to the child only.)
"""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass

import trio

MAX_ERROR_TEXT = 300


@dataclass(frozen=True, slots=True)
class Completed:
    returncode: int
    stdout: bytes
    stderr: bytes

    def describe(self, program: str) -> str:
        """``razor-check exited with 2: nextserver: Bootstrap discovery failed...``."""
        code = self.returncode
        what = f"was killed by signal {-code}" if code < 0 else f"exited with {code}"
        text = last_lines(self.stderr) or last_lines(self.stdout)
        return f"{program} {what}" + (f": {text}" if text else "")


def last_lines(data: bytes, limit: int = MAX_ERROR_TEXT) -> str:
    text = " | ".join(line.strip() for line in data.decode("utf-8", "replace").splitlines())
    text = text.strip(" |")
    return text if len(text) <= limit else "..." + text[-limit:]


async def _kill_group(process: trio.Process) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:  # pragma: no cover - already gone
        pass


async def run(argv: Sequence[str], stdin: bytes) -> Completed:
    """Run ``argv`` with ``stdin``; its exit status and output (a child that does not read
    its input is fine). Cancellation kills the child's whole process group."""
    result = await trio.run_process(
        list(argv),
        stdin=stdin,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        start_new_session=True,
        deliver_cancel=_kill_group,
    )
    return Completed(result.returncode, result.stdout, result.stderr)


__all__ = ["Completed", "last_lines", "run"]
