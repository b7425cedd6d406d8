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

__all__ = ["query"]

EXIT_FOUND = 0
EXIT_NOT_FOUND = 1  # also for a failure, as postmap -q


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
