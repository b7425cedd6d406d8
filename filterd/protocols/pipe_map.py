"""The pipe(8) door's answer to Postfix: a reply made into an exit status and an output line.

pipe(8) reads the command's exit status and, on failure, its output (stdout and stderr are one
pipe; the first 4096 bytes, tabs and newlines turned into spaces). Postfix's rules
(pipe(8) DIAGNOSTICS, ``global/pipe_command.c``, ``global/sys_exits.c``):

- exit 0: delivered (the output is only logged);
- a non-zero exit whose output begins with an enhanced status code ``X.Y.Z``: that code and
  the text after it are the delivery status, class 4 deferred, class 5 bounced;
- otherwise the sysexits code picks the status: 71 (EX_OSERR) and 75 (EX_TEMPFAIL) defer,
  every other one bounces (65 EX_DATAERR as ``5.6.0 data format error``, 77 EX_NOPERM as
  ``5.7.0 permission denied``).

So filterd exits 0 only once the next stage has the message, 75 for every temporary failure,
and 77 (a policy refusal, ``5.7.x``) or 65 (any other refusal) for a permanent one, and its
output begins with the reply's enhanced status code: the exit status alone already gives
Postfix the right class, the output the exact code and reason.
"""

from __future__ import annotations

from collections.abc import Sequence

from filterd.model.reply import Reply

__all__ = [
    "EX_DATAERR",
    "EX_NOPERM",
    "EX_OK",
    "EX_TEMPFAIL",
    "EX_USAGE",
    "TIME_LIMIT",
    "batch_refusal",
    "exit_status",
    "report",
]

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_TEMPFAIL = 75
EX_NOPERM = 77

TIME_LIMIT = Reply(451, "4.4.2", "Error: filterd pipe time limit exceeded, try again later")
"""``filterd pipe``'s answer when its time is up (``[pipe] time_limit``, or ``--timeout`` with
``--via``): Postfix keeps the message."""

_MAX_OUTPUT = 4096
"""What pipe(8) keeps of the output; the status line stays shorter than that."""


def exit_status(reply: Reply) -> int:
    """The exit status that makes pipe(8) treat the message as ``reply`` says: 0 for a
    2xx, 75 for a 4xx (and anything else that is not a 5xx), 77 or 65 for a 5xx."""
    if reply.is_positive:
        return EX_OK
    if reply.code // 100 != 5:
        return EX_TEMPFAIL
    return EX_NOPERM if _status(reply).startswith("5.7.") else EX_DATAERR


def batch_refusal(refusals: Sequence[Reply]) -> Reply:
    """One status for a batch some of whose recipients were refused (pipe(8) takes one for
    all): the first temporary refusal if there is one (retrying is always safe), else the
    first refusal. None of the batch is handed on."""
    return next((r for r in refusals if r.is_transient), refusals[0])


def report(reply: Reply) -> str | None:
    """The output line for a refused message, beginning with the enhanced status code that
    pipe(8) takes as the delivery status (``5.7.1 Message content rejected``); None for a
    delivered one (pipe(8) does not read it)."""
    if reply.is_positive:
        return None
    text = " ".join(reply.text.split())  # one line, as pipe(8) would make it
    line = f"{_status(reply)} {text}".rstrip()
    return line[: _MAX_OUTPUT - 1]


def _status(reply: Reply) -> str:
    """The reply's enhanced status code; its class's (``4.0.0``, ``5.0.0``) if it has none."""
    return reply.status or f"{5 if reply.code // 100 == 5 else 4}.0.0"
