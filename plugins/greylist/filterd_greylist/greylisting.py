"""postgrey 1.37's greylisting decision (``smtpd_access_policy`` in /usr/sbin/postgrey, in its
order), shared by the greylist plugin (plugin.py) and the ``greylist()`` rule action
(rule_action.py): each turns a :class:`Decision` into its own kind of answer.

A client on the client whitelist (name or address), a recipient on the recipient whitelist, or
a client auto-whitelisted (``auto_whitelist_clients`` triplets passed) goes on. Otherwise the
triplet (client network, normalised sender, recipient) is looked up: first seen less than
``delay`` ago → greylisted; a first retry later than ``retry_window`` after the first attempt
starts over. The first pass of a triplet counts towards the client's auto-whitelisting (at most
once an hour).

Records (in the state store, ``StateSettings``): ``greylist:triplet:<key>`` = ``first,last``
(unix seconds), living ``max_age`` once passed and ``retry_window`` before;
``greylist:client:<address>`` = ``count,last``, living ``max_age``. Updates are
compare-and-set, so several filterd processes or hosts sharing a Redis store answer as one.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Literal

from filterd.sdk import PluginEnv
from filterd.sdk.state import StateStore, StoreFailure, open_store

from .config import GreylistConfig
from .keys import client_key, client_network, recipient_domain, triplet_key
from .whitelists import ClientWhitelist, RecipientWhitelist, load_whitelists

__all__ = ["Decision", "Greylisting", "StoreFailure"]

COUNT_EVERY = 3600  # postgrey counts a client's passes at most once an hour
ATTEMPTS = 8  # compare-and-set rounds before the store counts as failing

try:
    VERSION = version("filterd-greylist")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    VERSION = "0.1.0"


@dataclass(frozen=True, slots=True)
class Decision:
    """What greylisting says about one recipient.

    - ``go-on``: not greylisted, nothing to add (``why``: which whitelist, or ``pass``);
    - ``greylisted``: ``left`` seconds of the delay missing (``why``: ``new`` or
      ``early-retry``);
    - ``first-pass``: the triplet passes for the first time, ``waited`` seconds after it was
      first seen (postgrey adds its ``X-Greylist`` header then).
    """

    outcome: Literal["go-on", "greylisted", "first-pass"]
    why: str
    left: int = 0
    waited: int = 0


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


class Greylisting:
    """The decision over a state store and the whitelist files: ``start`` opens them,
    ``decide`` answers (raising :class:`StoreFailure` when the store fails), ``stop`` closes."""

    def __init__(self, config: GreylistConfig, env: PluginEnv) -> None:
        self.config = config
        self.env = env
        self._store: StateStore | None = None
        self._whitelists: tuple[ClientWhitelist, RecipientWhitelist] | None = None

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
            raise RuntimeError("greylisting was not started")
        return self._store

    async def decide(
        self, client_address: str, client_name: str, sender: str, recipient: str, now: int
    ) -> Decision:
        """The decision for one recipient of ``sender`` from the client, recording the attempt
        (a client without a usable address goes on: ``no-client-address``)."""
        try:
            address = ipaddress.ip_address(client_address)
        except ValueError:
            return Decision("go-on", "no-client-address")
        if self._whitelists is None:
            raise RuntimeError("greylisting was not started")
        clients, recipients = self._whitelists
        if clients.listed(client_name, address):
            return Decision("go-on", "client-whitelist")
        if recipients.listed(recipient):
            return Decision("go-on", "recipient-whitelist")
        return await self._check(address, sender, recipient, now)

    async def _check(
        self,
        address: ipaddress.IPv4Address | ipaddress.IPv6Address,
        sender: str,
        rcpt: str,
        now: int,
    ) -> Decision:
        config = self.config
        store = self.store
        awl_key = "greylist:client:" + client_key(address, privacy=config.privacy)
        network = client_network(
            address,
            ipv4cidr=config.ipv4cidr,
            ipv6cidr=config.ipv6cidr,
            by_host=config.lookup_by_host,
        )
        key = "greylist:triplet:" + triplet_key(network, sender, rcpt, privacy=config.privacy)
        awl = _Record(None)
        if config.auto_whitelist_clients:  # both records in one store call
            awl_raw, triplet_raw = await store.get_many([awl_key, key])
            awl = _Record.parse(awl_raw)
            if awl.a is not None and awl.b is not None and awl.a >= config.auto_whitelist_clients:
                if now >= awl.b + COUNT_EVERY or awl.b > now:  # for statistics, as postgrey
                    await store.compare_and_set(
                        awl_key, awl.raw, f"{awl.a + 1},{now}", config.max_age
                    )
                return Decision("go-on", "client-awl")
        else:
            triplet_raw = await store.get(key)
        first, passed_before = await self._update_triplet(key, now, triplet_raw)
        waited = now - first
        left = int(config.delay) - waited
        if left <= 0 and not passed_before and config.auto_whitelist_clients:
            await self._count_pass(awl_key, awl, now)
        if left > 0:
            return Decision("greylisted", "new" if waited == 0 else "early-retry", left=left)
        if not passed_before:
            return Decision("first-pass", f"pass delay={waited}", waited=waited)
        return Decision("go-on", "pass")

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

    def greylist_text(self, rcpt: str, left: int) -> str:
        """postgrey's text after its action: ``4.2.0 Greylisted, see ...`` (``4.2.0`` prepended
        to a text not starting with a digit, as postgrey does when the request has
        ``etrn_domain``, which Postfix >= 2.3 always sends), ``%s`` and ``%r`` filled in."""
        text = self.config.greylist_text
        if not text[:1].isdigit():
            text = "4.2.0 " + text
        return text.replace("%s", str(left), 1).replace("%r", recipient_domain(rcpt), 1)

    def header(self, waited: int, now: int) -> str:
        """The ``X-Greylist: ...`` line of a first pass (``x_greylist_header`` filled in)."""
        date = time.strftime("%a, %d %b %Y %T %Z", time.localtime(now))
        text = self.config.x_greylist_header
        for mark, value in (("%t", str(waited)), ("%v", VERSION), ("%d", date)):
            text = text.replace(mark, value, 1)
        return text.replace("%h", self.config.hostname, 1)
