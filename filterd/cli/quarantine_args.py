"""``filterd quarantine``'s command line (``filterd.cli.quarantine`` runs it): apart, so that
building the parser loads neither the configuration nor the quarantine."""

from __future__ import annotations

import argparse

__all__ = ["EXIT_HELP", "ID_HELP", "add_parser"]

EXIT_HELP = """\
exit status: 0 done; 1 failed (no such message, the next hop refused the release);
2 bad command line, ID or configuration; 75 try again later (the next hop answered 4xx, or
another process holds the message)."""

ID_HELP = "a message's ID, as `filterd quarantine list` shows it"


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], config_help: str
) -> None:
    """``filterd quarantine`` and its actions, on ``commands`` (``filterd``'s subcommands)."""
    quarantine = commands.add_parser(
        "quarantine",
        help="list, show, release, delete or expire quarantined messages",
        description="The messages a Quarantine verdict kept in [quarantine] root.",
        epilog=EXIT_HELP,
    )
    quarantine.add_argument("-c", "--config", metavar="FILE", help=config_help)
    # -c is taken after the action too (`filterd quarantine list -c FILE`)
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument(
        "-c", "--config", metavar="FILE", default=argparse.SUPPRESS, help=config_help
    )
    actions = quarantine.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list",
        parents=[config],
        help="one line per message: ID, time, size, sender, recipients, reason",
    )
    listing.add_argument("--json", action="store_true", help="a JSON array, one object per message")
    show = actions.add_parser("show", parents=[config], help="a message's record and the message")
    show.add_argument("id", metavar="ID", help=ID_HELP)
    show.add_argument("--raw", action="store_true", help="only the message, byte for byte")
    release = actions.add_parser(
        "release",
        parents=[config],
        help="hand a message to the configured delivery (not through the chain) and remove it",
        epilog=EXIT_HELP,
    )
    release.add_argument("id", metavar="ID", help=ID_HELP)
    release.add_argument(
        "--to",
        dest="rcpts",
        action="append",
        metavar="ADDRESS",
        help="deliver to this address instead of the recorded recipients (repeatable)",
    )
    delete = actions.add_parser("delete", parents=[config], help="remove messages for good")
    delete.add_argument("ids", nargs="+", metavar="ID", help=ID_HELP)
    expire = actions.add_parser(
        "expire", parents=[config], help="remove the messages older than [quarantine] max_age"
    )
    expire.add_argument("--max-age", metavar="AGE", help='instead of max_age, e.g. "30d", "4w"')
