"""The rules plugin: a postfwd-style ordered rule list over the request's policy attributes
(filterd.sdk.policy_request: the same names on every door), answering with access(5) actions
as smtpd applies them (filterd.sdk.access_actions).

Where it decides: at the policy door, once per request Postfix sends (at the request's last
stage, with the attributes Postfix sent); at the SMTP, LMTP and milter doors, at the commands
``states`` lists (RCPT by default, like ``check_policy_service`` in
``smtpd_recipient_restrictions``).

Replies: at the SMTP and milter doors worded as Postfix words a policy service's answer
(``554 5.7.1 <rcpt>: Recipient address rejected: TEXT``); at the policy door the bare
``554 5.7.1 TEXT``, since Postfix adds the ``<rcpt>: Recipient address rejected:`` itself, so
that the client sees what it would see with postfwd.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from filterd.sdk import (
    CONTINUE,
    Accept,
    OnConnect,
    OnHelo,
    OnMailFrom,
    OnRcpt,
    Plugin,
    Recipient,
    Session,
    TempFail,
    Transaction,
    Verdict,
)
from filterd.sdk.access_actions import (
    CLIENT,
    HELO,
    RECIPIENT,
    SENDER,
    AccessCodes,
    RestrictionList,
    lookup_failure,
    with_redirect,
    without_postfix_prefix,
)
from filterd.sdk.policy_request import policy_door_stage, policy_request
from filterd.sdk.rule_actions import RuleAction, argument_problem, load_rule_action
from filterd.sdk.tables import Table, TableFailure, open_table

from .config import BUILT_IN_COMMANDS, RulesConfig, build_rules
from .engine import DUNNO, Decision, Engine

__all__ = ["Rules"]


class Rules(Plugin[RulesConfig], OnConnect, OnHelo, OnMailFrom, OnRcpt):
    name = "rules"
    Config = RulesConfig
    decides_each_policy_request = True  # as postfwd / check_*_access: every request

    clock: Callable[[], float] = staticmethod(time.time)
    """The time the windows (date, time, days, months) and rule actions see; tests set it."""

    _engine: Engine
    _tables: dict[str, Table]
    _actions: dict[str, RuleAction]

    async def start(self) -> None:
        from zoneinfo import ZoneInfo

        config = self.config
        rules = build_rules(config)
        self._codes = AccessCodes(
            access_map_reject_code=config.access_map_reject_code,
            access_map_defer_code=config.access_map_defer_code,
        )
        self._tables, self._actions = {}, {}
        try:
            for rule in rules:
                for condition in rule.conditions:
                    for test in condition.tests:
                        if test.table is not None and test.table not in self._tables:
                            self._tables[test.table] = open_table(test.table)
                command = rule.command
                if command is None or command[0] in BUILT_IN_COMMANDS:
                    continue
                name = command[0]
                if name not in self._actions:
                    action = load_rule_action(name, config.actions.get(name, {}), self.env)
                    await action.start()
                    self._actions[name] = action
                problem = argument_problem(self._actions[name], command[1])
                if problem is not None:
                    raise ValueError(f"{rule.origin}: {name}({command[1]}): {problem}")
        except BaseException:
            await self.stop()
            raise
        zone = ZoneInfo(config.time_zone) if config.time_zone else None
        self._engine = Engine(rules, self._tables, self._actions, config.scores, zone)

    async def stop(self) -> None:
        for table in getattr(self, "_tables", {}).values():
            await table.aclose()
        for action in getattr(self, "_actions", {}).values():
            await action.stop()
        self._tables, self._actions = {}, {}

    # ---------------------------------------------------------------- stages
    async def on_connect(self, session: Session) -> Verdict:
        return await self._decide(session, None, None, "connect", "CONNECT")

    async def on_helo(self, session: Session, name: str) -> Verdict:
        return await self._decide(session, None, None, "helo", "EHLO")

    async def on_mail_from(self, t: Transaction) -> Verdict:
        return await self._decide(t.session, t, None, "mail_from", "MAIL")

    async def on_rcpt(self, t: Transaction, rcpt: Recipient) -> Verdict:
        return await self._decide(t.session, t, rcpt, "rcpt", "RCPT")

    # ---------------------------------------------------------------- deciding
    async def _decide(
        self,
        session: Session,
        t: Transaction | None,
        rcpt: Recipient | None,
        stage: str,
        state: str,
    ) -> Verdict:
        door_stage = policy_door_stage(session)
        if door_stage is not None:
            if door_stage != stage:
                return CONTINUE
        elif state not in self.config.states:
            return CONTINUE
        request = policy_request(session, t, rcpt, state=state)
        name, what = _named(request, session, t)
        try:
            decision = await self._engine.decide(request, self.clock())
        except TableFailure as exc:
            self.env.log.warning(f"{what} <{name}>: {exc}")
            return TempFail(lookup_failure(name))
        if decision.looped:
            self.env.log.warning(
                f"jump() loop through rules {', '.join(dict.fromkeys(decision.hits))}: "
                "gave up, answering DUNNO (fix the rules' jumps)"
            )
        if decision.rule is None and decision.action == DUNNO:
            return CONTINUE
        self._log(decision, request)
        answer = RestrictionList(name, what, self._codes)
        answer.apply(decision.action)
        for kind, text in answer.notices:
            if kind == "warning":
                self.env.log.warning(text)
            else:
                self.env.log.info(f"{kind}: {text}")
        verdict = answer.verdict()
        if t is not None:  # a message to redirect (not at CONNECT or HELO)
            verdict = with_redirect(verdict, answer.redirect)
        if door_stage is not None:
            verdict = _at_policy_door(verdict, name, what)
        return verdict

    def _log(self, decision: Decision, request: dict[str, str]) -> None:
        rule = decision.rule
        where = f"rule={rule.origin}, id={rule.id}" if rule else "no rule"
        self.env.log.info(
            f"{where}, client={request.get('client_name', '')}[{request.get('client_address', '')}]"
            f", sender=<{request.get('sender', '')}>, recipient=<{request.get('recipient', '')}>"
            f", state={request.get('protocol_state', '')}, hits={';'.join(decision.hits)}"
            f", action={decision.action}"
        )


def _named(request: dict[str, str], session: Session, t: Transaction | None) -> tuple[str, str]:
    """What a reply names, by the command being answered (as smtpd names it)."""
    state = request.get("protocol_state", "").upper()
    if request.get("recipient") and state in ("RCPT", "DATA", "END-OF-MESSAGE"):
        return request["recipient"], RECIPIENT
    if state in ("MAIL", "DATA", "END-OF-MESSAGE"):
        return request.get("sender") or "<>", SENDER
    if state in ("HELO", "EHLO"):
        return request.get("helo_name", ""), HELO
    client = t.client if t is not None else session.peer
    return client.describe(), CLIENT


def _at_policy_door(verdict: Verdict, name: str, what: str) -> Verdict:
    """The answer as Postfix is to read it: without the ``<rcpt>: Recipient address
    rejected:`` Postfix adds itself, and OK as a final Accept (the policy listener's
    ``accept_as_ok`` then answers OK, which ends Postfix's restriction list as postfwd's OK
    does; the chain's later plugins do not run for this request, as Postfix's later
    restrictions do not)."""
    if isinstance(verdict, Accept) and not verdict.defer_if and not verdict.final:
        return dataclasses.replace(verdict, final=True)
    return without_postfix_prefix(verdict, name, what)
