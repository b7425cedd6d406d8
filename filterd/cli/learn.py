"""``filterd learn --spam|--ham FILE...``: teach the chain's learning plugins.

Every plugin of the configured chain that implements ``learn`` (the ``Learns`` protocol of
the SDK: spamassassin TELLs spamd like ``spamc -L``, pyzor reports like ``pyzor report``)
gets each message. ``--spamd HOST:PORT`` teaches that spamd directly instead, without a chain.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TextIO

import trio

from filterd.chain.build import build_chain
from filterd.chain.runner import Entry
from filterd.config.schema import Config
from filterd.protocols.spamd import MessageClass, Tell
from filterd.sdk.spamd_client import SpamdClient
from filterd.sdk.stages import Learns
from filterd.testing.harness import load_message

EXIT_FAILED = 1
LEARN_TIMEOUT = 60.0


def learn(config: Config, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    files = [Path(p) for p in args.files]
    if args.spamd:
        return trio.run(_tell_spamd, args.spamd, bool(args.spam), files, out, err)
    learners = [e for e in build_chain(config).entries if isinstance(e.plugin, Learns)]
    if not learners:
        err.write(
            "filterd learn: no plugin of the chain can learn (spamassassin, pyzor); "
            "add one, or give --spamd HOST:PORT\n"
        )
        return EXIT_FAILED
    return trio.run(_learn_all, learners, bool(args.spam), files, out, err)


async def _learn_all(
    learners: list[Entry], spam: bool, files: list[Path], out: TextIO, err: TextIO
) -> int:
    status = 0
    for entry in learners:
        await entry.plugin.start()
    try:
        for path in files:
            try:
                raw = load_message(path)
            except OSError as exc:
                err.write(f"{path}: {exc.strerror or exc}\n")
                status = EXIT_FAILED
                continue
            for entry in learners:
                plugin = entry.plugin
                assert isinstance(plugin, Learns)
                try:
                    with trio.fail_after(LEARN_TIMEOUT):
                        said = await plugin.learn(raw, spam)
                except Exception as exc:
                    err.write(f"{path}: {entry.label}: {exc or type(exc).__name__}\n")
                    status = EXIT_FAILED
                    continue
                out.write(f"{path}: {entry.label}: {said}\n")
    finally:
        for entry in learners:
            await entry.plugin.stop()
    return status


async def _tell_spamd(address: str, spam: bool, files: list[Path], out: TextIO, err: TextIO) -> int:
    target: str | tuple[str, int] = address
    if not address.startswith(("unix:", "/")):
        host, _, port = address.rpartition(":")
        target = (host.strip("[]"), int(port))
    client = SpamdClient(target)
    message_class = MessageClass.SPAM if spam else MessageClass.HAM
    status = 0
    for path in files:
        try:
            raw = load_message(path)
            with trio.fail_after(LEARN_TIMEOUT):
                response = await client.tell(raw, len(raw), Tell.learn(message_class))
        except Exception as exc:
            err.write(f"{path}: {exc or type(exc).__name__}\n")
            status = EXIT_FAILED
            continue
        did = ", ".join(sorted(response.did_set)) or "nothing (already known)"
        out.write(f"{path}: learnt as {message_class.value}: {did}\n")
    return status
