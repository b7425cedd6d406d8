"""``filterd scan``: the configured chain, offline, on one message (like ``spamassassin -t``).

Its exit status tells a script what the chain decided, as ``spamc -c`` does: 0 the message
passes, 1 it would not be delivered (rejected, quarantined or discarded), 75 it would be
deferred (sysexits' EX_TEMPFAIL). 66 (EX_NOINPUT): the message cannot be read; 70
(EX_SOFTWARE): filterd failed; 2: a bad command line or configuration (``filterd.cli.main``).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import BinaryIO, TextIO

import trio

from filterd.config.schema import Config
from filterd.model.verdict import Accept, Continue, Discard, Quarantine, Reject, TempFail, Verdict
from filterd.testing.harness import ScanResult, run_chain

EXIT_PASS = 0
EXIT_NOT_DELIVERED = 1
EXIT_NO_INPUT = 66
EXIT_SOFTWARE = 70
EXIT_TEMPFAIL = 75


def exit_status(verdict: Verdict) -> int:
    """What ``filterd scan`` exits with when the chain decided ``verdict``."""
    match verdict:
        case TempFail():
            return EXIT_TEMPFAIL
        case Reject() | Quarantine() | Discard():
            return EXIT_NOT_DELIVERED
        case Accept() | Continue():
            return EXIT_PASS


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


def scan(
    config: Config,
    args: argparse.Namespace,
    out: TextIO,
    err: TextIO | None = None,
    stdin: BinaryIO | None = None,
) -> int:
    """Run the chain on ``args.message`` ("-": ``stdin``), report on ``out``; the exit status."""
    err = err or sys.stderr
    rcpts = args.rcpts or ["rcpt@example.org"]
    try:
        if args.message == "-":
            message = (stdin or sys.stdin.buffer).read()
        else:
            with open(args.message, "rb") as file:
                message = file.read()
    except OSError as exc:
        print(f"filterd scan: cannot read {args.message}: {exc.strerror or exc}", file=err)
        return EXIT_NO_INPUT
    try:
        result: ScanResult = trio.run(
            lambda: run_chain(
                config,
                message=message,
                mail_from=args.sender,
                rcpts=rcpts,
                client_ip=args.client_ip,
                client_name=args.client_name,
                helo=args.helo,
            )
        )
    except Exception as exc:
        traceback.print_exception(exc, file=err)
        print(f"filterd scan: failed: {exc}", file=err)
        return EXIT_SOFTWARE
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
    return exit_status(result.final)
