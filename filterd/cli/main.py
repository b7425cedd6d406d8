"""The command line: ``filterd run | check-config | scan | plugins``, ``filterd --version``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from functools import partial

from filterd import __version__
from filterd.config.load import load_config
from filterd.config.render import PluginSettings, render_commented, render_config
from filterd.config.schema import Config
from filterd.errors import ConfigError

__all__ = ["main"]

EXIT_CONFIG = 2
"""Exit status for a configuration error (and for a bad command line, as argparse does)."""


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
        "scan", help="run the configured chain on a message file and show what it did"
    )
    scan.add_argument("-c", "--config", metavar="FILE", help=config_help)
    scan.add_argument("message", help="the message file (.eml; LF or CRLF line ends)")
    scan.add_argument("--from", dest="sender", default="sender@example.com", metavar="ADDR")
    scan.add_argument(
        "--to", dest="rcpts", action="append", metavar="ADDR", help="recipient (repeatable)"
    )
    scan.add_argument("--client-ip", default="192.0.2.1", metavar="IP")
    scan.add_argument("--client-name", default="unknown", metavar="NAME")
    scan.add_argument("--helo", default="client.example", metavar="NAME")
    commands.add_parser("plugins", help="list installed plugins, their stages and settings")
    learn = commands.add_parser("learn", help="teach spamd (TELL) that messages are spam or ham")
    learn.add_argument("-c", "--config", metavar="FILE", help=config_help)
    kind = learn.add_mutually_exclusive_group(required=True)
    kind.add_argument("--spam", action="store_true", help="the files are spam")
    kind.add_argument("--ham", action="store_true", help="the files are ham")
    learn.add_argument("--spamd", metavar="ADDR", help="spamd address (default: from the chain)")
    learn.add_argument("files", nargs="+", metavar="FILE")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit status."""
    try:
        return _run(argv)
    except BrokenPipeError:  # `filterd plugins | head`: the reader has gone, so stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _run(argv: Sequence[str] | None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_CONFIG)
    if args.command == "plugins":
        from filterd.cli.plugins import list_plugins

        return list_plugins(sys.stdout)
    try:
        # scan and learn run only the chain: their file needs no [[listen]] and no [delivery]
        config = load_config(args.config, serving=args.command in ("run", "check-config"))
        plugins = _check_chain(config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check-config":
        text = render_commented(config, plugins) if args.commented else render_config(config)
        sys.stdout.write(text)
        return 0
    if args.command == "scan":
        from filterd.cli.scan import scan

        return scan(config, args, sys.stdout)
    if args.command == "learn":
        from filterd.cli.learn import learn

        return learn(config, args, sys.stdout, sys.stderr)
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
    config = load_config(path, serving=True)
    _check_chain(config)
    return config


def _serve(config: Config, path: str | None) -> int:
    # Imported here so that check-config never loads trio and the serving machinery.
    from filterd.runtime.supervisor import main as serve_main  # type: ignore[import-not-found, unused-ignore]

    status: int = serve_main(config, reread=partial(_reread, path))
    return status
