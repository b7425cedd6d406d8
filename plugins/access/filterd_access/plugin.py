"""The access plugin: Postfix access(5) maps applied as smtpd's check_client_access,
check_helo_access, check_sender_access and check_recipient_access apply them.

Each setting (``client``, ``helo``, ``sender``, ``recipient``) is one restriction list of
``check_*_access`` entries, one per table, in the order given; the search orders are
``filterd.sdk.tables.search``'s, the actions ``filterd.sdk.access_actions``'. With
``smtpd_delay_reject`` (Postfix's default) the four lists run at RCPT TO, one after the other,
as smtpd runs them; without it each at its own stage (connect, HELO, MAIL FROM, RCPT TO).
The chain carries DEFER_IF_PERMIT from stage to stage and DEFER_IF_REJECT to the plugins after
this one (filterd.chain.runner).

REDIRECT is a ``Redirect`` edit: every door sends the message to its address instead of all its
recipients (the policy door answers Postfix ``REDIRECT address``); FILTER is logged and ignored
(filterd routes no content filters).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from filterd.sdk import (
    CONTINUE,
    OnConnect,
    OnHelo,
    OnMailFrom,
    OnRcpt,
    Plugin,
    Recipient,
    Session,
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
from filterd.sdk.policy_request import policy_door_stage
from filterd.sdk.tables import Table, TableFailure, open_table
from filterd.sdk.tables.search import (
    AddressRules,
    Match,
    access_address,
    access_client,
    access_host,
)

from .config import AccessConfig

Find = Callable[[Table], Awaitable[Match | None]]


@dataclass(frozen=True, slots=True)
class Check:
    """One restriction list: the reply class, the name in replies, the tables, the search."""

    what: str
    name: str
    tables: Sequence[Table]
    find: Find


class Access(Plugin[AccessConfig], OnConnect, OnHelo, OnMailFrom, OnRcpt):
    name = "access"
    Config = AccessConfig
    decides_each_policy_request = True  # as check_*_access: every request Postfix sends

    _tables: dict[str, list[Table]]

    async def start(self) -> None:
        config = self.config
        self._rules = AddressRules(
            recipient_delimiter=config.recipient_delimiter,
            parent_domain_matches_subdomains=config.parent_domain_matches_subdomains,
            null_access_key=config.smtpd_null_access_lookup_key,
        )
        self._codes = AccessCodes(
            access_map_reject_code=config.access_map_reject_code,
            access_map_defer_code=config.access_map_defer_code,
            reject_code=config.reject_code,
            defer_code=config.defer_code,
        )
        self._tables = {}
        try:
            for what, specs in (
                (CLIENT, config.client),
                (HELO, config.helo),
                (SENDER, config.sender),
                (RECIPIENT, config.recipient),
            ):
                self._tables[what] = []  # filled one by one: stop() closes what opened
                self._tables[what].extend(open_table(spec) for spec in specs)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for tables in getattr(self, "_tables", {}).values():
            for table in tables:
                await table.aclose()
        self._tables = {}

    # ---------------------------------------------------------------- the lists
    def _client(self, session: Session, t: Transaction | None) -> Check:
        client = t.client if t is not None else session.peer
        rules = self._rules

        async def find(table: Table) -> Match | None:
            return await access_client(table, client.name, client.address, rules)

        return Check(CLIENT, client.describe(), self._tables[CLIENT], find)

    def _helo(self, helo: str) -> Check:
        rules = self._rules

        async def find(table: Table) -> Match | None:
            return await access_host(table, helo, rules)

        return Check(HELO, helo, self._tables[HELO], find)

    def _address(self, what: str, address: str) -> Check:
        rules = self._rules

        async def find(table: Table) -> Match | None:
            return await access_address(table, address, rules)

        return Check(what, address, self._tables[what], find)

    async def _run(self, checks: Sequence[Check], t: Transaction | None) -> Verdict:
        """Run the lists in turn, as smtpd does: a refusal or DISCARD ends the check."""
        state: RestrictionList | None = None
        for check in checks:
            if state is None:
                state = RestrictionList(check.name, check.what, self._codes)
            else:
                state.next(check.name, check.what)
            for table in check.tables:
                try:
                    found = await check.find(table)
                except TableFailure as exc:
                    self.env.log.warning(f"{check.what} <{check.name}>: {exc}")
                    state.refuse(lookup_failure(check.name))
                    break
                if found is not None:
                    state.apply(found.value)
                if state.decided:
                    break
            if state.refusal is not None or state.discard is not None:
                break
        if state is None:
            return CONTINUE
        self._log(state)
        if t is None:  # connect or HELO: no message to redirect yet
            return state.verdict()
        return with_redirect(state.verdict(), state.redirect)

    def _log(self, state: RestrictionList) -> None:
        for kind, text in state.notices:
            if kind == "warning":
                self.env.log.warning(text)
            else:
                self.env.log.info(f"{kind}: {text}")

    # ---------------------------------------------------------------- stages
    async def on_connect(self, session: Session) -> Verdict:
        if self.config.smtpd_delay_reject or not self._tables[CLIENT]:
            return CONTINUE
        return await self._run([self._client(session, None)], None)

    async def on_helo(self, session: Session, name: str) -> Verdict:
        if self.config.smtpd_delay_reject or not self._tables[HELO]:
            return CONTINUE
        return await self._run([self._helo(name)], None)

    async def on_mail_from(self, t: Transaction) -> Verdict:
        if self.config.smtpd_delay_reject or not self._tables[SENDER]:
            return CONTINUE
        verdict = await self._run([self._address(SENDER, t.sender)], t)
        return _at_policy_door(t, verdict, t.sender or "<>", SENDER)

    async def on_rcpt(self, t: Transaction, rcpt: Recipient) -> Verdict:
        if rcpt.address.lower() == "postmaster":
            return CONTINUE  # smtpd checks no restriction for a bare postmaster (RFC 5321)
        checks: list[Check] = []
        if self.config.smtpd_delay_reject:
            tables = self._tables
            if tables[CLIENT]:
                checks.append(self._client(t.session, t))
            helo = t.client.helo  # XFORWARD's HELO behind a Postfix
            if tables[HELO] and helo:
                checks.append(self._helo(helo))
            if tables[SENDER]:
                checks.append(self._address(SENDER, t.sender))
        checks.append(self._address(RECIPIENT, rcpt.address))
        return _at_policy_door(t, await self._run(checks, t), rcpt.address, RECIPIENT)


def _at_policy_door(t: Transaction, verdict: Verdict, name: str, what: str) -> Verdict:
    """At the policy door, the reply without the ``<name>: <Class> rejected:`` that Postfix
    puts before a policy service's text itself (it would show twice)."""
    if policy_door_stage(t.session) is None:
        return verdict
    return without_postfix_prefix(verdict, name, what)
