"""``filterd pipe``: the pipe(8) door, as master.cf's pipe transport runs it for each message::

    filterd unix - n n - 10 pipe
      flags=Rq user=filterd null_sender=
      argv=/usr/local/bin/filterd pipe -c /etc/filterd/filterd.toml -f ${sender} -- ${recipient}

The message comes on standard input. Two modes:

- standalone (``-c FILE`` or nothing): the chain runs in this process
  (``filterd.cli.pipe_local``), and the next stage is ``[pipe] deliver_to``'s;
- client (``--via ADDRESS``): the message goes to a running filterd's LMTP listener, which
  runs the chain and delivers as it is configured to (``filterd.cli.pipe_client``), as spamc
  hands a message to spamd. It reads no configuration file and loads neither trio nor the
  plugins: each message costs a short Python start instead of a whole filterd start.

The exit status is what pipe(8) understands (``filterd.protocols.pipe_map``), the same in both
modes: 0 delivered (or discarded, or quarantined), 75 (EX_TEMPFAIL) for every temporary failure,
77 (EX_NOPERM) or 65 (EX_DATAERR) for a refusal, whose enhanced status code and text begin the
output. A mistake pipe(8) cannot fix by retrying, but the administrator can (a bad command line,
a bad configuration), also exits 75 with ``4.3.5``: the mail waits in Postfix's queue instead of
bouncing.

pipe(8) reads stdout and stderr as one, and only the first 4096 bytes, so with ``[log]
destination = "stderr"`` filterd's log lines are held back and written after the status line.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Sequence
from typing import NoReturn, TextIO

from filterd.cli.pipe_args import DEFAULT_VIA_TIMEOUT, PIPE_HELP, pipe_arguments
from filterd.model.reply import Reply
from filterd.protocols.pipe_map import exit_status, report

__all__ = ["CONFIGURATION_ERROR", "main"]

CONFIGURATION_ERROR = Reply(451, "4.3.5", "filterd pipe: configuration error")
OUTPUT_LIMIT = 4000
"""Bytes written to stderr at most: pipe(8) keeps 4096, and its pipe must never fill (pipe(8)
makes it non-blocking and reads it only once filterd has ended)."""


class _Usage(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # not exit 2: pipe(8) would bounce
        raise _Usage(message)


def main(
    argv: Sequence[str],
    stdin_fd: int = 0,
    stderr: TextIO | None = None,
) -> int:
    """Run ``filterd pipe`` with ``argv`` (after ``pipe``); the exit status."""
    err = stderr or sys.stderr
    parser = _Parser(prog="filterd pipe", epilog=PIPE_HELP)
    pipe_arguments(parser, "configuration file (default: the embedded default configuration)")
    try:
        args = parser.parse_args(list(argv))
        if args.via is None and args.timeout is not None:
            raise _Usage("--timeout applies to --via only ([pipe] time_limit otherwise)")
        if args.timeout is not None and not args.timeout > 0:
            raise _Usage(f"--timeout: expected a number of seconds above 0, got {args.timeout:g}")
    except _Usage as exc:
        return _answer(_configuration_error(str(exc)), "", err)
    if args.via is not None:
        from filterd.cli.pipe_client import BadAddress, hand_over

        try:
            reply = hand_over(args, stdin_fd, args.timeout or DEFAULT_VIA_TIMEOUT)
        except BadAddress as exc:
            return _answer(_configuration_error(f"--via: {exc}"), "", err)
        return _answer(reply, "", err)
    from filterd.cli.pipe_local import BadConfiguration, filter_here

    try:
        reply, logged = filter_here(args, stdin_fd)
    except BadConfiguration as exc:
        return _answer(_configuration_error(str(exc)), "", err)
    return _answer(reply, logged, err)


def _configuration_error(why: str) -> Reply:
    return CONFIGURATION_ERROR.with_text(f"filterd pipe: {why}")


def _answer(reply: Reply, logged: str, err: TextIO) -> int:
    """Write the status line (a refusal's), then what was logged, within ``OUTPUT_LIMIT``."""
    line = report(reply)
    text = (f"{line}\n" if line else "") + logged
    data = text.encode("utf-8", "replace")[:OUTPUT_LIMIT]
    try:
        err.flush()
        fd = err.fileno()
    except (OSError, ValueError, io.UnsupportedOperation):
        err.write(data.decode("utf-8", "replace"))
    else:
        try:
            os.write(fd, data)
        except OSError:  # a full or closed pipe: the exit status still says it all
            pass
    return exit_status(reply)
