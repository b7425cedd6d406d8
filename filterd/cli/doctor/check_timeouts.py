"""Timeouts: Postfix must wait longer for filterd than filterd may take.

- After the queue, Postfix's smtp(8)/lmtp(8) client waits ``*_helo_timeout`` (``lmtp_lhlo_``)
  for the greeting and the EHLO reply, ``*_mail_timeout``, ``*_rcpt_timeout`` and, after the
  message, ``*_data_done_timeout``, each for one reply. filterd's reply waits for the chain's
  entries at that stage, one after the other: their timeouts added up. When Postfix gives up
  first, it defers the message and sends it again later, while filterd may still finish and
  relay the first copy: the message arrives twice.
- Before the queue, ``smtpd_proxy_timeout`` bounds each of filterd's replies alike.
- Milter: Postfix's ``milter_command_timeout`` and ``milter_content_timeout`` (or the milter's
  own ``{ command_timeout=..., content_timeout=... }``) must exceed filterd's
  ``[limits] milter_command_timeout`` and ``milter_content_timeout``.
- Policy: ``smtpd_policy_service_timeout`` (``timeout=``) must exceed filterd's
  ``policy_request_timeout``, and ``smtpd_policy_service_max_idle`` (``max_idle=``) must stay
  below ``policy_idle_timeout``, so that Postfix closes idle connections, not filterd.
"""

from __future__ import annotations

from filterd.cli.doctor.chain_facts import seconds
from filterd.cli.doctor.context import Context, postfix_seconds
from filterd.cli.doctor.syntax import parse_time
from filterd.cli.doctor.wiring import Reference

__all__ = ["check_timeouts"]

MARGIN = 30.0
"""Seconds a suggested Postfix timeout leaves over the chain's worst case (relaying the
message to the next hop happens within it too)."""

_CLIENT_STAGES = (
    ("on_connect", "helo_timeout", "the greeting"),
    ("on_helo", "helo_timeout", "EHLO"),
    ("on_mail_from", "mail_timeout", "MAIL FROM"),
    ("on_rcpt", "rcpt_timeout", "RCPT TO"),
    ("on_message", "data_done_timeout", "the end of the message"),
)


def check_timeouts(ctx: Context) -> None:
    _transports(ctx)
    _proxies(ctx)
    _milters(ctx)
    _policies(ctx)


def _chain_fix(ctx: Context, stage: str) -> str:
    return (
        "or lower the timeout of the [[chain]] entries at that stage "
        f"({ctx.chain.describe(stage)}) in {ctx.config.source}"
    )


def _transports(ctx: Context) -> None:
    for route in ctx.wiring.after_queue:
        transport = route.transport
        prefix = transport.command
        for stage, suffix, what in _CLIENT_STAGES:
            worst = ctx.chain.worst_case.get(stage, 0.0)
            if prefix == "lmtp" and suffix == "helo_timeout":
                suffix = "lhlo_timeout"  # lmtp(8) names it after LHLO
            name = f"{prefix}_{suffix}"
            limit = parse_time(ctx.postfix.value(name, transport))
            if not worst or limit is None or limit > worst:
                continue
            ctx.report.add(
                "error",
                "transport-timeout",
                f'master.cf "{transport.key}" waits {seconds(limit)} for filterd\'s reply to '
                f"{what} ({ctx.postfix.source(name, transport)}), but the chain may take "
                f"{seconds(worst)} there ({ctx.chain.describe(stage)}): Postfix gives up, "
                "defers the message and sends it again while filterd may still pass the first "
                "copy on (the message arrives twice)",
                [
                    *ctx.set_override(transport, name, postfix_seconds(worst + MARGIN)),
                    _chain_fix(ctx, stage),
                ],
            )


def _proxies(ctx: Context) -> None:
    stage, worst = ctx.chain.slowest()
    for _, ref in ctx.wiring.proxies:
        service = ref.service
        limit = parse_time(ctx.postfix.value("smtpd_proxy_timeout", service))
        if service is None or not worst or limit is None or limit > worst:
            continue
        ctx.report.add(
            "error",
            "proxy-timeout",
            f'master.cf "{service.key}" waits {seconds(limit)} for each reply of filterd '
            f"({ctx.postfix.source('smtpd_proxy_timeout', service)}), but the chain may take "
            f"{seconds(worst)} ({ctx.chain.describe(stage)}): Postfix gives up and answers the "
            "client 451, which sends the message again, while filterd may pass the first copy "
            "on (the message arrives twice)",
            [
                _chain_fix(ctx, stage).removeprefix("or "),
                "or "
                + ctx.set_override(service, "smtpd_proxy_timeout", postfix_seconds(worst + MARGIN))[
                    0
                ]
                + " (pointless past the client's own patience)",
            ],
        )


def _postfix_setting(
    ctx: Context, ref: Reference, own: str, parameter: str
) -> tuple[float | None, str]:
    """A milter's or policy client's time setting: its own ``{ own=... }``, else the
    parameter's value for the entry; and where it comes from."""
    if own in ref.settings:
        return parse_time(ref.settings[own]), f"{ref.source} {{ {own}={ref.settings[own]} }}"
    return parse_time(ctx.postfix.value(parameter, ref.service)), ctx.postfix.source(
        parameter, ref.service
    )


def _milters(ctx: Context) -> None:
    limits = ctx.config.limits
    checks = (
        (
            "command_timeout",
            "milter_command_timeout",
            limits.milter_command_timeout,
            "CONNECT..RCPT",
        ),
        (
            "content_timeout",
            "milter_content_timeout",
            limits.milter_content_timeout,
            "end of message",
        ),
    )
    for _, ref in ctx.wiring.milters:
        action = ref.settings.get("default_action") or ctx.postfix.value(
            "milter_default_action", ref.service
        )
        for own, parameter, ours, stage in checks:
            theirs, source = _postfix_setting(ctx, ref, own, parameter)
            if theirs is None or theirs > ours:
                continue
            ctx.report.add(
                "error",
                "milter-timeout",
                f"Postfix waits {seconds(theirs)} for filterd's milter at {stage} ({source}), "
                f"and filterd gives its chain {seconds(ours)} (limits.{parameter}): when the "
                f"chain runs long, Postfix gives up first and milter_default_action ({action}) "
                "decides instead of filterd",
                [
                    ctx.toml(
                        ("limits", parameter),
                        f'[limits] {parameter} = "{seconds(max(1.0, theirs - 5))}"',
                    ),
                    "or " + ctx.postconf("-e", f"'{parameter} = {postfix_seconds(ours + 5)}'"),
                ],
            )


def _policies(ctx: Context) -> None:
    limits = ctx.config.limits
    for _, ref in ctx.wiring.policies:
        theirs, source = _postfix_setting(ctx, ref, "timeout", "smtpd_policy_service_timeout")
        if theirs is not None and theirs <= limits.policy_request_timeout:
            ctx.report.add(
                "error",
                "policy-timeout",
                f"Postfix waits {seconds(theirs)} for filterd's policy answer ({source}), and "
                f"filterd may take {seconds(limits.policy_request_timeout)} "
                "(limits.policy_request_timeout): Postfix gives up first, asks again "
                "(smtpd_policy_service_try_limit; the chain runs twice) and then applies "
                "smtpd_policy_service_default_action instead of filterd's answer",
                [
                    ctx.toml(
                        ("limits", "policy_request_timeout"),
                        f'[limits] policy_request_timeout = "{seconds(max(1.0, theirs - 10))}"',
                    ),
                    "or "
                    + ctx.postconf(
                        "-e",
                        "'smtpd_policy_service_timeout = "
                        f"{postfix_seconds(limits.policy_request_timeout + 10)}'",
                    ),
                ],
            )
        idle, idle_source = _postfix_setting(ctx, ref, "max_idle", "smtpd_policy_service_max_idle")
        if idle is not None and idle >= limits.policy_idle_timeout:
            ctx.report.add(
                "warning",
                "policy-idle",
                f"Postfix keeps an idle connection to filterd's policy service for "
                f"{seconds(idle)} ({idle_source}), and filterd closes it after "
                f"{seconds(limits.policy_idle_timeout)} (limits.policy_idle_timeout): Postfix "
                "finds connections closed under it, logs a warning and asks again",
                [
                    ctx.toml(
                        ("limits", "policy_idle_timeout"),
                        f'[limits] policy_idle_timeout = "{seconds(idle + 30)}"',
                    )
                ],
            )
