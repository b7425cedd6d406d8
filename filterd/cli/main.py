"""The command line: ``filterd run | check-config | scan | pipe | plugins | learn | quarantine
| status | doctor | query``, ``filterd --version``."""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from filterd import __version__
from filterd.cli.pipe_args import add_parser as add_pipe_parser
from filterd.cli.quarantine_args import add_parser as add_quarantine_parser
from filterd.cli.query_args import add_parser as add_query_parser

if TYPE_CHECKING:
    from filterd.config.render import PluginSettings
    from filterd.config.schema import Config

# Each command imports what it needs when it runs (the configuration, pydantic, trio, the
# chain): `filterd pipe`, which pipe(8) starts once per message, and `filterd --version` pay
# only for the parser.

__all__ = ["main"]

EXIT_CONFIG = 2
"""Exit status for a configuration error (and for a bad command line, as argparse does)."""

SCAN_EXIT_HELP = """\
exit status (like spamc -c): 0 the message passes; 1 it would be rejected, quarantined or
discarded; 75 it would be deferred (a 4xx: a TempFail verdict, or a plugin error under
on_error = "tempfail"); 2 a bad command line or configuration; 66 the message cannot be read;
70 filterd failed."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="filterd", description="A pluggable mail content filter for Postfix."
    )
    parser.add_argument("--version", action="version", version=f"filterd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config_help = "configuration file (default: the embedded default configuration)"
    run = commands.add_parser("run", help="serve until stopped (SIGTERM, SIGINT)")
    run.add_argument("-c", "--config", metavar="FILE", help=config_help)
    check = commands.add_parser(
        "check-config", help="validate the configuration and print the effective settings"
    )
    check.add_argument("-c", "--config", metavar="FILE", help=config_help)
    check.add_argument(
        "--commented",
        action="store_true",
        help="print every setting, with its description and default as comments (the form of "
        "deploy/filterd.example.toml)",
    )
    scan = commands.add_parser(
        "scan",
        help="run the configured chain on a message file and show what it did",
        epilog=SCAN_EXIT_HELP,
    )
    scan.add_argument("-c", "--config", metavar="FILE", help=config_help)
    scan.add_argument("message", help='the message file (.eml; LF or CRLF line ends); "-": stdin')
    scan.add_argument("--from", dest="sender", default="sender@example.com", metavar="ADDR")
    scan.add_argument(
        "--to", dest="rcpts", action="append", metavar="ADDR", help="recipient (repeatable)"
    )
    scan.add_argument("--client-ip", default="192.0.2.1", metavar="IP")
    scan.add_argument("--client-name", default="unknown", metavar="NAME")
    scan.add_argument("--helo", default="client.example", metavar="NAME")
    add_pipe_parser(commands, config_help)
    commands.add_parser("plugins", help="list installed plugins, their stages and settings")
    learn = commands.add_parser("learn", help="teach spamd (TELL) that messages are spam or ham")
    learn.add_argument("-c", "--config", metavar="FILE", help=config_help)
    kind = learn.add_mutually_exclusive_group(required=True)
    kind.add_argument("--spam", action="store_true", help="the files are spam")
    kind.add_argument("--ham", action="store_true", help="the files are ham")
    learn.add_argument("--spamd", metavar="ADDR", help="spamd address (default: from the chain)")
    learn.add_argument("files", nargs="+", metavar="FILE")
    status = commands.add_parser(
        "status", help="show the running server's processes, uptime and figures"
    )
    status.add_argument("-c", "--config", metavar="FILE", help=config_help)
    status.add_argument(
        "--socket", metavar="PATH", help="the control socket (default: [control] socket)"
    )
    status.add_argument("--json", action="store_true", help="print the figures as JSON")
    doctor = commands.add_parser(
        "doctor",
        help="check how Postfix hands mail to filterd and back, and say how to fix each mistake "
        "(exit status 0: no findings, 1: findings, 2: cannot check)",
    )
    doctor.add_argument("-c", "--config", metavar="FILE", help=config_help)
    doctor.add_argument(
        "-C",
        "--postfix-config",
        metavar="DIR",
        help="Postfix's configuration directory (postconf -c DIR; default: postconf's own)",
    )
    add_quarantine_parser(commands, config_help)
    add_query_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit status."""
    try:
        return _run(argv)
    except BrokenPipeError:  # `filterd plugins | head`: the reader has gone, so stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _run(argv: Sequence[str] | None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments[:1] == ["pipe"]:  # its own errors: pipe(8) must defer, never bounce, on them
        from filterd.cli.pipe import main as pipe

        return pipe(arguments[1:])
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_CONFIG)
    if args.command == "quarantine":  # needs neither the chain nor its plugins
        from filterd.cli.quarantine import run as quarantine

        return quarantine(args, sys.stdout, sys.stderr)
    if args.command == "query":  # a table alone: no configuration, no chain
        from filterd.cli.query import query

        if isinstance(sys.stdout, io.TextIOWrapper):  # keys and values as the bytes they were
            sys.stdout.reconfigure(errors="surrogateescape")
        return query(args, sys.stdin.buffer, sys.stdout, sys.stderr)
    if args.command == "plugins":
        from filterd.cli.plugins import list_plugins

        return list_plugins(sys.stdout)
    from filterd.config.load import load_config
    from filterd.errors import ConfigError

    try:
        # scan and learn run only the chain: their file needs no [[listen]] and no [delivery]
        serving = args.command in ("run", "check-config", "doctor")
        config = load_config(args.config, serving=serving)
        if args.command == "status":  # it only needs the control socket's path
            from filterd.cli.status import status

            return status(config, args, sys.stdout, sys.stderr)
        plugins = _check_chain(config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check-config":
        from filterd.config.render import render_commented, render_config

        text = render_commented(config, plugins) if args.commented else render_config(config)
        sys.stdout.write(text)
        return 0
    if args.command == "scan":
        from filterd.cli.scan import scan

        return scan(config, args, sys.stdout)
    if args.command == "learn":
        from filterd.cli.learn import learn

        return learn(config, args, sys.stdout, sys.stderr)
    if args.command == "doctor":
        from filterd.cli.doctor import doctor

        return doctor(config, args, sys.stdout, sys.stderr)
    return _serve(config, args.config)


def _check_chain(config: Config) -> PluginSettings:
    """Load and validate every plugin the chain names (ConfigError naming file and line);
    each entry's plugin settings model, by the entry's index."""
    if not config.chain:
        return {}
    from filterd.chain.registry import resolve_chain
    from filterd.cli.plugins import check_installed

    check_installed(config)
    resolved = resolve_chain(config)
    return {index: plugin.Config for index, (_, plugin, _) in enumerate(resolved)}


def _reread(path: str | None) -> Config:
    """The configuration file again, for a reload: checked as ``check-config`` checks it."""
    from filterd.config.load import load_config

    config = load_config(path, serving=True)
    _check_chain(config)
    return config


def _serve(config: Config, path: str | None) -> int:
    # Imported here so that check-config never loads trio and the serving machinery.
    from functools import partial

    from filterd.runtime.supervisor import main as serve_main  # type: ignore[import-not-found, unused-ignore]

    status: int = serve_main(config, reread=partial(_reread, path))
    return status
