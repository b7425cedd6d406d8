"""The greylist plugin: postgrey 1.37's greylisting at RCPT, on every front door.

For each recipient (``smtpd_access_policy`` in /usr/sbin/postgrey, in its order): a client on
the client whitelist (name or address), a recipient on the recipient whitelist, or a client
auto-whitelisted (``auto_whitelist_clients`` triplets passed) goes on. Otherwise the triplet
(client network, normalised sender, recipient) is looked up: first seen less than ``delay``
ago → greylisted; a first retry later than ``retry_window`` after the first attempt starts
over. The first pass of a triplet counts towards the client's auto-whitelisting (at most once
an hour) and adds the ``X-Greylist`` header (once per message).

Greylisted: the policy door answers postgrey's action as postgrey sends it
(``DEFER_IF_PERMIT 4.2.0 Greylisted, see ...``: postgrey prepends ``4.2.0`` when the request
has ``etrn_domain``, which Postfix 2.3 and later always sends); the SMTP, LMTP and milter doors
answer ``450 4.2.0 Greylisted, see ...`` at RCPT when the chain permits the recipient (the
chain holds DEFER_IF_PERMIT as Postfix does: a later plugin's refusal wins). Another
``greylist_action`` (DEFER, 451, ...) refuses at once, with its code (450 for DEFER).

Records (in the state store, ``StateSettings``): ``greylist:triplet:<key>`` = ``first,last``
(unix seconds), living ``max_age`` once passed and ``retry_window`` before;
``greylist:client:<address>`` = ``count,last``, living ``max_age``. Updates are
compare-and-set, so several filterd processes or hosts sharing a Redis store answer as one.
"""

from __future__ import annotations

import ipaddress
import re
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from filterd.sdk import (
    AddHeader,
    Continue,
    DeferIf,
    Finding,
    NoteKey,
    OnRcpt,
    Plugin,
    Recipient,
    Reply,
    TempFail,
    Transaction,
    Verdict,
)
from filterd.sdk.state import StateStore, StoreFailure, open_store

from .config import GreylistConfig
from .keys import client_key, client_network, recipient_domain, triplet_key
from .whitelists import ClientWhitelist, RecipientWhitelist, load_whitelists

HEADER_ADDED = NoteKey[bool]("greylist.header_added")  # transaction: X-Greylist is on it
COUNT_EVERY = 3600  # postgrey counts a client's passes at most once an hour
DEFER_CODE = 450  # Postfix's access_map_defer_code, what DEFER_IF_PERMIT becomes
ATTEMPTS = 8  # compare-and-set rounds before the store counts as failing
_STATUS = re.compile(r"([245]\.\d{1,3}\.\d{1,3})\s+(.*)", re.DOTALL)

try:
    VERSION = version("filterd-greylist")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    VERSION = "0.1.0"


@dataclass(frozen=True, slots=True)
class _Record:
    """A ``first,last`` triplet or ``count,last`` client record as stored."""

    raw: str | None
    a: int | None = None
    b: int | None = None

    @classmethod
    def parse(cls, raw: str | None) -> _Record:
        if raw is None:
            return cls(None)
        first, _, rest = raw.partition(",")
        second = rest.partition(",")[0]
        try:
            return cls(raw, int(first), int(second))
        except ValueError:  # damaged: as if missing (it is overwritten)
            return cls(raw)


class Greylist(Plugin[GreylistConfig], OnRcpt):
    name = "greylist"
    Config = GreylistConfig

    _store: StateStore | None = None  # set by start()
    _whitelists: tuple[ClientWhitelist, RecipientWhitelist] | None = None

    async def start(self) -> None:
        config = self.config
        self._whitelists = load_whitelists(
            config.whitelist_clients, config.whitelist_recipients, self.env.log.warning
        )
        self._store = await open_store(config.state, clock=self.env.clock)

    async def stop(self) -> None:
        if self._store is not None:
            await self._store.aclose()
            self._store = None

    @property
    def store(self) -> StateStore:
        if self._store is None:
            raise RuntimeError("the greylist plugin was not started")
        return self._store

    async def on_rcpt(self, t: Transaction, rcpt: Recipient) -> Verdict:
        client = t.client
        try:
            address = ipaddress.ip_address(client.address)
        except ValueError:
            return _go_on("no-client-address")
        if self._whitelists is None:
            raise RuntimeError("the greylist plugin was not started")
        clients, recipients = self._whitelists
        if clients.listed(client.name, address):
            return _go_on("client-whitelist")
        if recipients.listed(rcpt.address):
            return _go_on("recipient-whitelist")
        try:
            return await self._check(t, address, rcpt.address)
        except StoreFailure as failure:
            return self.config.state.failure_verdict(failure, self.env.log, "greylist")

    async def _check(
        self, t: Transaction, address: ipaddress.IPv4Address | ipaddress.IPv6Address, rcpt: str
    ) -> Verdict:
        config = self.config
        store = self.store
        now = int(self.env.clock())
        awl_key = "greylist:client:" + client_key(address, privacy=config.privacy)
        network = client_network(
            address,
            ipv4cidr=config.ipv4cidr,
            ipv6cidr=config.ipv6cidr,
            by_host=config.lookup_by_host,
        )
        key = "greylist:triplet:" + triplet_key(network, t.sender, rcpt, privacy=config.privacy)
        awl = _Record(None)
        if config.auto_whitelist_clients:  # both records in one store call
            awl_raw, triplet_raw = await store.get_many([awl_key, key])
            awl = _Record.parse(awl_raw)
            if awl.a is not None and awl.b is not None and awl.a >= config.auto_whitelist_clients:
                if now >= awl.b + COUNT_EVERY or awl.b > now:  # for statistics, as postgrey
                    await store.compare_and_set(
                        awl_key, awl.raw, f"{awl.a + 1},{now}", config.max_age
                    )
                return _go_on("client-awl")
        else:
            triplet_raw = await store.get(key)
        first, passed_before = await self._update_triplet(key, now, triplet_raw)
        waited = now - first
        left = int(config.delay) - waited
        if left <= 0 and not passed_before and config.auto_whitelist_clients:
            await self._count_pass(awl_key, awl, now)
        if left > 0:
            return self._greylisted(rcpt, left, "new" if waited == 0 else "early-retry")
        if not passed_before and not t.notes.get(HEADER_ADDED):
            t.notes.set(HEADER_ADDED, True)
            name, _, value = self._header(waited, now).partition(":")
            return Continue(
                edits=(AddHeader(name, value.strip()),),
                findings=(Finding("greylist", f"pass delay={waited}"),),
            )
        return _go_on("pass")

    async def _update_triplet(self, key: str, now: int, raw: str | None) -> tuple[int, bool]:
        """Record this attempt: the triplet's first-seen time as it now stands, and whether it
        had passed before. ``raw``: the record as just read (read again after a lost race)."""
        config = self.config
        delay, retry_window = int(config.delay), int(config.retry_window)
        for attempt in range(ATTEMPTS):
            record = _Record.parse(raw if attempt == 0 else await self.store.get(key))
            first, passed = now, False
            if record.a is not None and record.b is not None:
                first = record.a
                if record.b - first >= delay:
                    passed = True
                elif now - first > retry_window:
                    first = now  # the first retry came too late: start over
                first = min(first, now)  # a first-seen time in the future
            ttl = (
                config.max_age if now - first >= delay else min(config.retry_window, config.max_age)
            )
            if await self.store.compare_and_set(key, record.raw, f"{first},{now}", ttl):
                return first, passed
        raise StoreFailure(self.store.description, f"{key}: too many concurrent updates")

    async def _count_pass(self, key: str, record: _Record, now: int) -> None:
        """A triplet passed: one more for its client, at most once an hour."""
        for _ in range(ATTEMPTS):
            if record.b is not None and now < record.b + COUNT_EVERY:
                return
            count = (record.a or 0) + 1
            if await self.store.compare_and_set(
                key, record.raw, f"{count},{now}", self.config.max_age
            ):
                if count == self.config.auto_whitelist_clients:
                    self.env.log.info(f"whitelisted: {key.removeprefix('greylist:client:')}")
                return
            record = _Record.parse(await self.store.get(key))
        raise StoreFailure(self.store.description, f"{key}: too many concurrent updates")

    def _greylisted(self, rcpt: str, left: int, why: str) -> Continue | TempFail:
        """postgrey's answer: ``<greylist_action> 4.2.0 <text>``. DEFER_IF_PERMIT (the default)
        and DEFER_IF_REJECT are held by the chain as Postfix holds them (450 at the end of the
        stage if it permits / if a later plugin rejects); the policy door sends them to Postfix
        as postgrey does. Any other action (DEFER, 451, ...) refuses at once."""
        config = self.config
        text = config.greylist_text
        if not text[:1].isdigit():  # postgrey, when the request has etrn_domain (Postfix >= 2.3)
            text = "4.2.0 " + text
        text = text.replace("%s", str(left), 1).replace("%r", recipient_domain(rcpt), 1)
        status, rest = "", text
        match = _STATUS.fullmatch(text)
        if match is not None and match.group(1).startswith("4"):
            status, rest = match.group(1), match.group(2)
        action = config.greylist_action
        findings = (Finding("greylist", f"{why} ({left}s missing)"),)
        code = int(action) if re.fullmatch(r"4\d\d", action) else DEFER_CODE
        reply = Reply(code, status, rest)
        match action.upper():
            case "DEFER_IF_PERMIT":
                return Continue(findings=findings, defer_if=(DeferIf("permit", reply),))
            case "DEFER_IF_REJECT":
                return Continue(findings=findings, defer_if=(DeferIf("reject", reply),))
            case _:
                return TempFail(reply, findings)

    def _header(self, waited: int, now: int) -> str:
        date = time.strftime("%a, %d %b %Y %T %Z", time.localtime(now))
        text = self.config.x_greylist_header
        for mark, value in (("%t", str(waited)), ("%v", VERSION), ("%d", date)):
            text = text.replace(mark, value, 1)
        return text.replace("%h", self.config.hostname, 1)


def _go_on(why: str) -> Continue:
    return Continue(findings=(Finding("greylist", why),))
