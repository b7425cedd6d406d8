"""``filterd query TABLE KEY...``: look keys up in a Postfix table as ``postmap -q`` does.

One key: its value on stdout and exit status 0; not found: nothing and 1. ``-`` as the only
key reads keys from stdin (one a line) and prints ``key<TAB>value`` per key found, exit status
0 when at least one was found; several keys are answered the same way. A table that cannot
be opened or answer: ``filterd: fatal: ...`` on stderr and exit status 1 (postmap's wording).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import BinaryIO, TextIO

import trio

from filterd.sdk.tables import TableError, TableFailure, TableSettings, open_table

__all__ = ["add_parser", "query"]

EXIT_FOUND = 0
EXIT_NOT_FOUND = 1  # also for a failure, as postmap -q


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


def query(args: argparse.Namespace, stdin: BinaryIO, stdout: TextIO, stderr: TextIO) -> int:
    """Run ``filterd query``; the exit status."""
    keys: Iterable[str]
    if args.keys == ["-"]:
        lines = iter(stdin.readline, b"")
        keys = (line.rstrip(b"\n").decode("utf-8", "surrogateescape") for line in lines)
        several = True
    else:
        keys = args.keys
        several = len(args.keys) > 1
    settings = TableSettings(fold_case=args.fold_case)
    try:
        found = trio.run(_lookups, args.table, settings, keys, several, stdout)
    except (TableError, TableFailure) as exc:
        stdout.flush()
        print(f"filterd: fatal: {exc}", file=stderr)
        return EXIT_NOT_FOUND
    return EXIT_FOUND if found else EXIT_NOT_FOUND


async def _lookups(
    spec: str, settings: TableSettings, keys: Iterable[str], several: bool, out: TextIO
) -> bool:
    table = open_table(spec, settings)
    found = False
    try:
        for key in keys:
            value = await table.lookup(key)
            if value is None:
                continue
            found = True
            out.write(f"{key}\t{value}\n" if several else f"{value}\n")
    finally:
        await table.aclose()
    return found
