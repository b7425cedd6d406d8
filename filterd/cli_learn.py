"""``filterd learn --spam|--ham FILE...``: teach spamd (TELL, like ``spamc -L``).

The spamd address comes from ``--spamd``, else from the first ``spamassassin`` entry of the
chain (its ``address`` setting). spamd must run with ``--allow-tell``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TextIO

import trio

from filterd.config.schema import Config
from filterd.protocols.spamd import MessageClass, Tell
from filterd.serve.spamd_client import SpamdClient, SpamdError
from filterd.testing.harness import load_message

EXIT_FAILED = 1
TELL_TIMEOUT = 60.0


def spamd_address(config: Config, explicit: str | None) -> str | None:
    if explicit:
        return explicit
    for entry in config.chain:
        if entry.plugin == "spamassassin":
            address = entry.config.get("address")
            return str(address) if address else "127.0.0.1:783"
    return None


def learn(config: Config, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    address = spamd_address(config, args.spamd)
    if address is None:
        err.write("filterd learn: no spamd: give --spamd HOST:PORT or add a spamassassin entry\n")
        return EXIT_FAILED
    message_class = MessageClass.SPAM if args.spam else MessageClass.HAM
    return trio.run(_learn_all, address, message_class, [Path(p) for p in args.files], out, err)


async def _learn_all(
    address: str, message_class: MessageClass, files: list[Path], out: TextIO, err: TextIO
) -> int:
    target: str | tuple[str, int] = address
    if not address.startswith(("unix:", "/")):
        host, _, port = address.rpartition(":")
        target = (host.strip("[]"), int(port))
    client = SpamdClient(target)
    status = 0
    for path in files:
        try:
            raw = load_message(path)
        except OSError as exc:
            err.write(f"{path}: {exc.strerror or exc}\n")
            status = EXIT_FAILED
            continue
        try:
            with trio.fail_after(TELL_TIMEOUT):
                response = await client.tell(raw, len(raw), Tell.learn(message_class))
        except (SpamdError, trio.TooSlowError) as exc:
            err.write(f"{path}: {exc or 'timeout'}\n")
            status = EXIT_FAILED
            continue
        did = ", ".join(sorted(response.did_set)) or "nothing (already known)"
        out.write(f"{path}: learnt as {message_class.value}: {did}\n")
    return status
