"""``filterd scan``: the configured chain, offline, on one message (like ``spamassassin -t``)."""

from __future__ import annotations

import argparse
from typing import TextIO

import trio

from filterd.config.schema import Config
from filterd.model.verdict import Accept, Continue, Discard, Quarantine, Reject, TempFail, Verdict
from filterd.testing.harness import ScanResult, run_chain


def describe(verdict: Verdict) -> str:
    match verdict:
        case Reject(reply=reply) | TempFail(reply=reply):
            return f"{type(verdict).__name__.lower()} ({reply})"
        case Discard(reason=reason) | Quarantine(reason=reason):
            return f"{type(verdict).__name__.lower()} ({reason})"
        case Accept(final=True):
            return "accept (final)"
        case Accept() | Continue():
            return type(verdict).__name__.lower()


def scan(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    rcpts = args.rcpts or ["rcpt@example.org"]
    result: ScanResult = trio.run(
        lambda: run_chain(
            config,
            message=args.message,
            mail_from=args.sender,
            rcpts=rcpts,
            client_ip=args.client_ip,
            client_name=args.client_name,
            helo=args.helo,
        )
    )
    out.write(f"# filterd scan: {args.message} from=<{args.sender}> to=<{'>, <'.join(rcpts)}>\n")
    out.write("# plugins\n")
    for item in result.results:
        line = f"{item.label:20} {item.stage:13} {describe(item.verdict)}  ({item.seconds:.3f}s)"
        if item.error:
            line += f"  error: {item.error}"
        out.write(line + "\n")
    if not result.results:
        out.write("(the chain is empty)\n")
    out.write("# findings\n")
    for finding in result.findings:
        out.write(f"{finding}\n")
    out.write("# edits\n")
    for edit in result.edits:
        out.write(f"{edit}\n")
    stage = f" at {result.decided_at}" if result.decided_at else ""
    out.write(f"# result: {describe(result.final)}{stage}\n")
    if result.reply is None and result.message:
        out.write(f"# envelope: from=<{result.sender}> to=<{'>, <'.join(result.recipients)}>\n")
        out.write("# message as it would be relayed\n")
        out.write(result.message.decode("utf-8", "replace").replace("\r\n", "\n"))
    return 0
