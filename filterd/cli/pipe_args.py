"""``filterd pipe``'s command line (``filterd.cli.pipe`` runs it): apart, so that the other
commands' parser does not load trio and the chain."""

from __future__ import annotations

import argparse

__all__ = ["DEFAULT_VIA_TIMEOUT", "PIPE_HELP", "add_parser", "pipe_arguments"]

PIPE_HELP = """\
exit status (pipe(8)'s sysexits): 0 the next stage has the message (or it was discarded or
quarantined); 75 EX_TEMPFAIL, Postfix defers it (a temporary failure, a bad configuration or
command line, with --via a filterd that cannot be reached or does not answer in time); 77
EX_NOPERM or 65 EX_DATAERR, Postfix bounces it; the output begins with the enhanced status
code and the reason."""

DEFAULT_VIA_TIMEOUT = 900.0
"""``--timeout``'s default: ``[pipe] time_limit``'s, under Postfix's command_time_limit."""


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], config_help: str
) -> None:
    """``filterd pipe``'s arguments, on the command line's subcommands."""
    pipe = commands.add_parser(
        "pipe",
        help="filter one message from Postfix's pipe(8) and hand it on (master.cf)",
        epilog=PIPE_HELP,
    )
    pipe_arguments(pipe, config_help)


def pipe_arguments(parser: argparse.ArgumentParser, config_help: str) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("-c", "--config", metavar="FILE", help=config_help)
    where.add_argument(
        "--via",
        metavar="ADDRESS",
        help="hand the message to a running filterd's LMTP listener (unix:/path, host:port or "
        "[ipv6]:port), which runs the chain and delivers it, instead of running the chain in "
        "this process; reads no configuration file",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help=f"with --via: the time the listener gets for the whole message, its replies "
        f"included (default {DEFAULT_VIA_TIMEOUT:g}); past it, exit 75",
    )
    parser.add_argument(
        "-f", dest="sender", required=True, metavar="SENDER", help='${sender} ("": null sender)'
    )
    parser.add_argument("--client-address", default="unknown", metavar="IP")
    parser.add_argument("--client-name", default="unknown", metavar="NAME")
    parser.add_argument("--helo", default=None, metavar="NAME", help="${client_helo}")
    parser.add_argument("--queue-id", default=None, metavar="ID", help="${queue_id}")
    parser.add_argument("recipients", nargs="+", metavar="RECIPIENT", help="${recipient}")
