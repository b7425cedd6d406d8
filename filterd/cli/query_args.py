"""``filterd query``'s command line (``filterd.cli.query`` runs it): apart, so that building
the parser does not load the tables and trio."""

from __future__ import annotations

import argparse

__all__ = ["add_parser"]


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "query",
        help="look keys up in a Postfix lookup table, as postmap -q does",
        description="Look keys up in a Postfix lookup table (type:name, e.g. "
        "texthash:/etc/postfix/access, lmdb:/etc/postfix/virtual, cidr:/etc/postfix/clients."
        "cidr, mysql:/etc/postfix/mysql-virtual.cf).",
        epilog="exit status (like postmap -q): 0 a key was found; 1 not found, or the table "
        "could not be opened or answer (the reason on stderr).",
    )
    parser.add_argument(
        "-f",
        dest="fold_case",
        action="store_false",
        help="do not fold the keys to lower case (fixed-string tables fold by default)",
    )
    parser.add_argument("table", metavar="TABLE", help="the table, type:name")
    parser.add_argument(
        "keys",
        nargs="+",
        metavar="KEY",
        help='the key; "-": read keys from stdin, one a line, and print key<TAB>value for '
        "each key found (also the output for several keys)",
    )
