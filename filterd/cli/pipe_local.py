"""``filterd pipe`` without ``--via``: the chain runs in this short-lived process on the message
from standard input (``filterd.frontdoors.pipe``), and the message goes to ``[pipe]
deliver_to``'s next stage. ``filterd.cli.pipe`` imports this module only in that mode: it loads
the configuration, trio and the plugins."""

from __future__ import annotations

import argparse
import io
import os

import trio

from filterd.chain.build import build_chain
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
from filterd.protocols.pipe_map import TIME_LIMIT

__all__ = ["BadConfiguration", "filter_here"]

log = MailLog("pipe")


class BadConfiguration(Exception):
    """The configuration file cannot be used: the message says why, on one line."""


def filter_here(args: argparse.Namespace, stdin_fd: int) -> tuple[Reply, str]:
    """Run the chain on the message and hand it on; the reply and what was logged to be shown
    after the status line (``[log] destination = "stderr"``). ``BadConfiguration`` if the
    configuration file is wrong."""
    try:
        config = load_config(args.config, serving=False)
    except ConfigError as exc:
        raise BadConfiguration(" ".join(str(exc).split())) from None
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
    return reply, held.getvalue()


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
