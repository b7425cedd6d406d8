"""``filterd doctor``: check how Postfix and filterd are wired together, and say how to fix
every mistake that loops, loses, duplicates or holds up mail.

Postfix's side comes from ``postconf`` (``postconf.py``: ``-n``, ``-x``, ``-M``, ``-P``; ``-c
DIR`` for another instance), filterd's from its configuration and its chain's plugins. The
checks: ``check_wiring`` (what reaches filterd, what filterd hands back, loops, connections),
``check_xforward``, ``check_timeouts``, ``check_chain`` (reject actions after the queue, spamd's
children). Severities and exit status: see ``findings.py``.
"""

from __future__ import annotations

import argparse
from typing import TextIO

from filterd.cli.doctor.chain_facts import chain_facts
from filterd.cli.doctor.check_chain import check_chain
from filterd.cli.doctor.check_timeouts import check_timeouts
from filterd.cli.doctor.check_wiring import check_wiring
from filterd.cli.doctor.check_xforward import check_xforward
from filterd.cli.doctor.context import Context
from filterd.cli.doctor.findings import Report
from filterd.cli.doctor.postconf import PostconfError, PostfixConfig, read_postfix
from filterd.cli.doctor.wiring import Wiring, find_wiring
from filterd.config.schema import Config

__all__ = ["EXIT_FINDINGS", "EXIT_OK", "diagnose", "doctor"]

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_CANNOT_CHECK = 2  # as for a configuration error: nothing was checked


def diagnose(config: Config, postfix: PostfixConfig) -> Report:
    """Every finding for this pair of configurations (ConfigError if the chain does not load)."""
    wiring = find_wiring(config, postfix)
    ctx = Context(config, postfix, wiring, chain_facts(config), Report.empty())
    ctx.report.wiring.extend(_describe(ctx, wiring))
    check_wiring(ctx)
    check_xforward(ctx)
    check_timeouts(ctx)
    check_chain(ctx)
    return ctx.report


def _describe(ctx: Context, wiring: Wiring) -> list[str]:
    lines = []
    for route in wiring.after_queue:
        values = sorted({ref.value for ref in route.references})
        lines.append(
            f"after queue: content_filter {', '.join(values)} -> master.cf "
            f'"{route.transport.key}" -> filterd {ctx.listener(route.index)}'
        )
    for kind, routes in (
        ("before queue", wiring.proxies),
        ("milter", wiring.milters),
        ("policy", wiring.policies),
    ):
        seen = set()
        for index, ref in routes:
            line = f"{kind}: {ref.parameter} {ref.value} -> filterd {ctx.listener(index)}"
            if line not in seen:
                seen.add(line)
                lines.append(line)
    if wiring.next_hop is not None:
        lines.append(f'filterd relays to master.cf "{wiring.next_hop.key}"')
    return lines


def doctor(config: Config, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``filterd doctor [-c FILE] [--postfix-config DIR]``: print the report; exit 0 without
    findings, 1 with any, 2 if Postfix's configuration cannot be read."""
    try:
        postfix = read_postfix(args.postfix_config)
    except PostconfError as exc:
        print(f"filterd doctor: {exc}", file=err)
        return EXIT_CANNOT_CHECK
    report = diagnose(config, postfix)
    report.write(out)
    return EXIT_FINDINGS if report.findings else EXIT_OK
