"""The rules plugin's settings: the rule list (TOML tables, postfwd files spliced in), the
time zone of the time windows, where the SMTP and milter doors ask, the score thresholds and
the settings of installed rule actions."""

from __future__ import annotations

import re
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from filterd.sdk import Field, PluginConfig, field_validator, model_validator
from filterd.sdk.rule_actions import check_action_settings, installed_rule_actions

from .postfwd_syntax import read_postfwd_file
from .ruleset import Rule, RuleProblem, check_rules, rule_from_table

__all__ = ["BUILT_IN_COMMANDS", "RulesConfig", "build_rules"]

BUILT_IN_COMMANDS = ("jump", "set", "score")

RuleTable = dict[str, str | int | list[str | int]]


class RulesConfig(PluginConfig):
    rules: list[RuleTable] = Field(
        default=[],
        description="The rule list, in order; the first rule that matches answers. Each rule: "
        'id = "NAME", action = "ACCESS(5) ACTION" (or "jump(ID)", "set(name=value)", '
        '"score(+N)", "greylist()", ...), and conditions item = "OP value" or a list of them '
        '(a list: any one; different items: all), e.g. client_address = "192.0.2.0/24", '
        'sender = "=~ @example\\\\.com$", size = "> 1000000", days = "Mon-Fri". A table '
        "postfwd_file = \"/etc/postfix/postfwd.cf\" puts that file's rules (postfwd's "
        "syntax) at its place.",
    )
    time_zone: str | None = Field(
        default=None,
        description='The time zone of date, time, days and months, e.g. "Europe/Berlin"; '
        "none: the system's local time (as postfwd)",
    )
    states: list[Literal["CONNECT", "EHLO", "MAIL", "RCPT"]] = Field(
        default=["RCPT"],
        description="SMTP, LMTP and milter doors: the commands at which the rules decide "
        "(protocol_state); the policy door decides every request Postfix sends",
    )
    scores: dict[str, str] = Field(
        default={"5.0": "554 5.7.1 filterd score exceeded"},
        description="score() thresholds: when request_score reaches one, its action answers "
        "(postfwd's --scores)",
    )
    actions: dict[str, dict[str, Any]] = Field(
        default={},
        description="Settings of installed rule actions by name, e.g. actions.greylist = "
        '{ delay = "300s" } (filterd.sdk.rule_actions)',
    )
    access_map_reject_code: int = Field(
        default=554, ge=400, le=599, description="The code of REJECT"
    )
    access_map_defer_code: int = Field(
        default=450,
        ge=400,
        le=599,
        description="The code of DEFER, DEFER_IF_PERMIT, DEFER_IF_REJECT",
    )

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, name: str | None) -> str | None:
        if name is not None:
            try:
                ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    f'unknown time zone "{name}": use an IANA name such as "Europe/Berlin" '
                    "or leave it out for the system's local time"
                ) from None
        return name

    @field_validator("scores")
    @classmethod
    def _scores(cls, scores: dict[str, str]) -> dict[str, str]:
        for threshold in scores:
            try:
                float(threshold)
            except ValueError:
                raise ValueError(
                    f'score threshold "{threshold}" is no number: write e.g. "5.0"'
                ) from None
        return scores

    @field_validator("actions")
    @classmethod
    def _actions(cls, actions: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        check_action_settings(actions, at=())
        return actions

    @model_validator(mode="after")
    def _rules(self) -> RulesConfig:
        try:
            build_rules(self)
        except RuleProblem as exc:
            raise ValueError(str(exc)) from None
        return self


_OLD_RATE = re.compile(r"\A((?:rate|size|rcpt)(?:5321)?\s*\(\s*)\$\$(?=.*\)\Z)", re.I | re.S)


def old_rate_syntax(action: str) -> str:
    """postfwd's ``check_for_old_syntax``: ``rate($$ITEM/...)`` is ``rate(ITEM/...)`` (the
    ITEM names the attribute; ``$$`` there would put its value in the rule)."""
    return _OLD_RATE.sub(r"\1", action, count=1)


def build_rules(config: RulesConfig) -> list[Rule]:
    """The whole rule list: TOML rules and spliced postfwd files, in order; rules without id
    named ``R-<index>`` as postfwd names them; checked (jumps, action names)."""
    rules: list[Rule] = []
    for index, table in enumerate(config.rules):
        if "postfwd_file" in table:
            path = table["postfwd_file"]
            if len(table) != 1 or not isinstance(path, str):
                raise RuleProblem(
                    f'rules[{index}]: postfwd_file = "PATH" stands alone in its table'
                )
            rules.extend(read_postfwd_file(path))
        else:
            rules.append(rule_from_table(table, index))
    named = [
        Rule(rule.id or f"R-{i}", rule.conditions, old_rate_syntax(rule.action), rule.origin)
        for i, rule in enumerate(rules)
    ]
    check_rules(named, (*BUILT_IN_COMMANDS, *installed_rule_actions()))
    return named
