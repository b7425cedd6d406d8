"""Checks of the chain against the way it is wired.

- Reject actions after the queue: Postfix already accepted the message, so a 5xx from filterd
  makes Postfix bounce it to its envelope sender, an address spam and viruses forge
  (backscatter; FILTER_README: "it is a BAD IDEA to send known viruses or spam back to the
  sender"). After the queue, tag or quarantine; reject only before the queue (milter or
  smtpd_proxy_filter), where the refusal goes to the connected client.
- spamd's children: every filterd process that runs the chain has a spamassassin entry of its
  own, each sending up to ``min(concurrency, max_connections)`` requests at a time; spamd
  serves ``--max-children`` at once, and the rest wait in its listen queue until they time out.
"""

from __future__ import annotations

from filterd.cli.doctor.chain_facts import chain_processes, reject_actions
from filterd.cli.doctor.context import Context
from filterd.cli.doctor.endpoints import proxy_destination
from filterd.cli.doctor.spamd_probe import find_spamd_children

__all__ = ["check_chain"]

SPAMASSASSIN = "spamassassin"


def check_chain(ctx: Context) -> None:
    _after_queue_rejects(ctx)
    _spamd_children(ctx)


def _after_queue_rejects(ctx: Context) -> None:
    if not ctx.wiring.after_queue:
        return
    route = ctx.wiring.after_queue[0]
    wired = f"{route.references[0].source} = {route.references[0].value}"
    for action in reject_actions(ctx.chain):
        ctx.report.add(
            "warning",
            "after-queue-reject",
            f"chain[{action.entry}] ({action.label}): {action.what} refuses mail with a 5xx, "
            f"but filterd runs after the queue ({wired}): Postfix then bounces the message to "
            "its sender, an address spam forges (backscatter)",
            [
                ctx.toml(action.path, action.fix),
                "or reject before the queue instead: filterd as a milter or smtpd_proxy_filter "
                "(docs/deploy.md), where the refusal goes to the connected client",
            ],
        )


def _spamd_target(address: str) -> tuple[str, int] | str | None:
    if address.startswith("unix:"):
        return address.removeprefix("unix:")
    target = proxy_destination(address)
    return None if target is None else (target.host, target.port)


def _spamd_children(ctx: Context) -> None:
    processes = chain_processes(ctx.config)
    inbound = sum(
        listener.max_connections
        for listener in ctx.config.listen
        if listener.protocol in ("smtp", "lmtp", "milter")
    )
    for index, (entry, _, settings) in enumerate(ctx.chain.resolved):
        if entry.plugin != SPAMASSASSIN:
            continue
        address = str(getattr(settings, "address", ""))
        per_process = min(entry.concurrency, int(getattr(settings, "max_connections", 5)))
        wanted = min(processes * per_process, inbound) if inbound else processes * per_process
        target = _spamd_target(address)
        found = None if target is None else find_spamd_children(target)
        if found is None:
            ctx.report.note(
                f"chain[{index}] ({entry.label}): cannot tell how many children the spamd at "
                f"{address} runs (no spamd running here listens there, and /etc/default/spamd "
                f"does not say): give it --max-children {wanted} or more"
            )
            continue
        if found.children >= wanted:
            continue
        fit = found.children // processes
        fixes = [
            f"spamd --max-children {wanted} (Debian: OPTIONS in /etc/default/spamd, then "
            "systemctl restart spamd)",
        ]
        if fit >= 1:
            fixes.append(
                "or "
                + ctx.toml(
                    ("chain", index, "config", "max_connections"), f"max_connections = {fit}"
                )
            )
        ctx.report.add(
            "warning",
            "spamd-children",
            f"chain[{index}] ({entry.label}) may send {wanted} requests at a time to spamd at "
            f"{address} ({processes} process{'es' * (processes != 1)} x {per_process}), but "
            f"that spamd runs {found.children} children ({found.source}): the others wait in "
            "its listen queue, and time out as 451 (the message is tried again later)",
            fixes,
        )
