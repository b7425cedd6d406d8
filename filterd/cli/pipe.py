"""``filterd pipe``: the pipe(8) door, as master.cf's pipe transport runs it for each message::

    filterd unix - n n - 10 pipe
      flags=Rq user=filterd null_sender=
      argv=/usr/local/bin/filterd pipe -c /etc/filterd/filterd.toml -f ${sender} -- ${recipient}

The message comes on standard input; the chain runs on it (``filterd.frontdoors.pipe``); the
next stage is ``[pipe] deliver_to``'s. The exit status is what pipe(8) understands
(``filterd.protocols.pipe_map``): 0 delivered (or discarded, or quarantined), 75 (EX_TEMPFAIL)
for every temporary failure, 77 (EX_NOPERM) or 65 (EX_DATAERR) for a refusal, whose enhanced
status code and text begin the output. A mistake pipe(8) cannot fix by retrying, but the
administrator can (a bad command line, a bad configuration), also exits 75 with ``4.3.5``:
the mail waits in Postfix's queue instead of bouncing.

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

import trio

from filterd.chain.build import build_chain
from filterd.cli.pipe_args import PIPE_HELP, pipe_arguments
from filterd.config.load import load_config
from filterd.config.schema import Config
from filterd.delivery.interface import Delivery
from filterd.delivery.quarantine import QuarantineStore
from filterd.delivery.sendmail import Sendmail
from filterd.errors import ConfigError
from filterd.frontdoors.pipe import PipeDoor, PipeRequest
from filterd.maillog import MailLog, setup_logging
from filterd.model import replies
from filterd.model.envelope import Client
from filterd.model.reply import Reply
from filterd.protocols.pipe_map import exit_status, report

__all__ = ["main"]

log = MailLog("pipe")

CONFIGURATION_ERROR = Reply(451, "4.3.5", "filterd pipe: configuration error")
TIME_LIMIT = Reply(451, "4.4.2", "Error: filterd pipe time limit exceeded, try again later")
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
    except _Usage as exc:
        return _answer(CONFIGURATION_ERROR.with_text(f"filterd pipe: {exc}"), "", err)
    try:
        config = load_config(args.config, serving=False)
    except ConfigError as exc:
        text = " ".join(str(exc).split())
        return _answer(CONFIGURATION_ERROR.with_text(f"filterd pipe: {text}"), "", err)
    held = io.StringIO()
    setup_logging(config.log, held if config.log.destination == "stderr" else None)
    request = PipeRequest(
        sender=args.sender,
        recipients=tuple(args.recipients),
        client=Client(address=args.client_address, name=args.client_name, helo=args.helo),
        queue_id=args.queue_id,
    )
    try:
        reply = trio.run(_run, config, request, stdin_fd)
    except Exception as exc:  # whatever it was, Postfix keeps the message
        log.traceback("filterd pipe failed", exc)
        reply = replies.INTERNAL_ERROR
    return _answer(reply, held.getvalue(), err)


async def _run(config: Config, request: PipeRequest, stdin_fd: int) -> Reply:
    with trio.move_on_after(config.pipe.time_limit):
        return await _filter(config, request, stdin_fd)
    log.warning(f"time limit of {config.pipe.time_limit:g}s exceeded")
    return TIME_LIMIT


async def _filter(config: Config, request: PipeRequest, stdin_fd: int) -> Reply:
    chain = build_chain(config)
    delivery = _delivery(config)
    door = PipeDoor(chain, delivery, QuarantineStore(config.quarantine.root), config.limits)
    source = trio.lowlevel.FdStream(os.dup(stdin_fd))
    try:
        await chain.start()
        try:
            return await door.handle(request, source)
        finally:
            with trio.CancelScope(shield=True):
                await chain.stop()
    finally:
        with trio.CancelScope(shield=True):
            await source.aclose()
            await delivery.aclose()


def _delivery(config: Config) -> Delivery:
    if config.pipe.deliver_to == "sendmail":
        return Sendmail(config.pipe)
    from filterd.runtime.handlers import build_delivery

    delivery = build_delivery(config)
    assert delivery is not None, "the configuration checks deliver_to against [delivery]"
    return delivery


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
