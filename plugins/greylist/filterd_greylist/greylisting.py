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
``greylist:client:<address>`` = ``count,last``, living ``max_age``. A decision is one
``StateStore.record_sighting`` (the triplet a sighting that matures after ``delay``, the client
its tally): one atomic step, one transaction on SQLite and one round trip on Redis, so several
filterd processes or hosts sharing a Redis store answer as one.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Literal

from filterd.sdk import PluginEnv
from filterd.sdk.state import Maturing, StateStore, StoreFailure, Tally, open_store

from .config import GreylistConfig
from .keys import client_key, client_network, parse_client, recipient_domain, triplet_key
from .whitelists import ClientWhitelist, RecipientWhitelist, load_whitelists

__all__ = ["Decision", "Greylisting", "StoreFailure"]

COUNT_EVERY = 3600  # postgrey counts a client's passes at most once an hour
CLIENTS_KEPT = 16_384  # clients whose whitelisting and keys are kept (about 500 bytes each)

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
class _Client:
    """What greylisting needs of a client (its address and name), worked out once: whether a
    client whitelist lists it, its auto-whitelist record and its part of the triplet."""

    whitelisted: bool
    awl_key: str
    network: str
    tally: Tally | None  # its auto-whitelisting (None: auto_whitelist_clients = 0)


# The decisions that carry nothing of the request: made once
NO_CLIENT_ADDRESS = Decision("go-on", "no-client-address")
CLIENT_WHITELIST = Decision("go-on", "client-whitelist")
RECIPIENT_WHITELIST = Decision("go-on", "recipient-whitelist")
CLIENT_AWL = Decision("go-on", "client-awl")
PASSED = Decision("go-on", "pass")


class Greylisting:
    """The decision over a state store and the whitelist files: ``start`` opens them,
    ``decide`` answers (raising :class:`StoreFailure` when the store fails), ``stop`` closes."""

    def __init__(self, config: GreylistConfig, env: PluginEnv) -> None:
        self.config = config
        self.env = env
        self._store: StateStore | None = None
        self._whitelists: tuple[ClientWhitelist, RecipientWhitelist] | None = None
        # the same for every decision: built once
        self._maturing = Maturing(int(config.delay), config.retry_window, config.max_age)
        # the whitelist files are read once (start), so a client's answer never changes
        self._client = functools.lru_cache(maxsize=CLIENTS_KEPT)(self._client_of)
        text = config.greylist_text
        self._text = text if text[:1].isdigit() else "4.2.0 " + text
        self._date = (-1, "")  # header(): the last second and its date

    async def start(self) -> None:
        config = self.config
        self._whitelists = load_whitelists(
            config.whitelist_clients, config.whitelist_recipients, self.env.log.warning
        )
        self._client.cache_clear()
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
        client = self._client(client_address, client_name)
        if client is None:
            return NO_CLIENT_ADDRESS
        if client.whitelisted:
            return CLIENT_WHITELIST
        if self._recipients_listed(recipient):
            return RECIPIENT_WHITELIST
        return await self._check(client, sender, recipient, now)

    def _client_of(self, client_address: str, client_name: str) -> _Client | None:
        """``_client`` before its cache: None for a client without a usable address."""
        address = parse_client(client_address)
        if address is None:
            return None
        if self._whitelists is None:
            raise RuntimeError("greylisting was not started")
        config = self.config
        network = client_network(
            address,
            ipv4cidr=config.ipv4cidr,
            ipv6cidr=config.ipv6cidr,
            by_host=config.lookup_by_host,
        )
        awl_key = "greylist:client:" + client_key(address, privacy=config.privacy)
        tally = None
        if config.auto_whitelist_clients:
            tally = Tally(awl_key, config.auto_whitelist_clients, COUNT_EVERY, config.max_age)
        return _Client(self._whitelists[0].listed(client_name, address), awl_key, network, tally)

    def _recipients_listed(self, recipient: str) -> bool:
        if self._whitelists is None:
            raise RuntimeError("greylisting was not started")
        return self._whitelists[1].listed(recipient)

    async def _check(self, client: _Client, sender: str, rcpt: str, now: int) -> Decision:
        config = self.config
        store = self.store
        key = "greylist:triplet:" + triplet_key(
            client.network, sender, rcpt, privacy=config.privacy
        )
        seen = await store.record_sighting(key, now, self._maturing, client.tally)
        if seen.trusted:
            return CLIENT_AWL
        if seen.counted is not None and seen.counted == config.auto_whitelist_clients:
            self.env.log.info(f"whitelisted: {client.awl_key.removeprefix('greylist:client:')}")
        waited = now - seen.first
        left = int(config.delay) - waited
        if left > 0:
            return Decision("greylisted", "new" if waited == 0 else "early-retry", left=left)
        if not seen.matured_before:
            return Decision("first-pass", f"pass delay={waited}", waited=waited)
        return PASSED

    def greylist_text(self, rcpt: str, left: int) -> str:
        """postgrey's text after its action: ``4.2.0 Greylisted, see ...`` (``4.2.0`` prepended
        to a text not starting with a digit, as postgrey does when the request has
        ``etrn_domain``, which Postfix >= 2.3 always sends), ``%s`` and ``%r`` filled in."""
        return self._text.replace("%s", str(left), 1).replace("%r", recipient_domain(rcpt), 1)

    def header(self, waited: int, now: int) -> str:
        """The ``X-Greylist: ...`` line of a first pass (``x_greylist_header`` filled in)."""
        when, date = self._date
        if when != now:  # the date of a second, made once
            date = time.strftime("%a, %d %b %Y %T %Z", time.localtime(now))
            self._date = (now, date)
        text = self.config.x_greylist_header
        for mark, value in (("%t", str(waited)), ("%v", VERSION), ("%d", date)):
            text = text.replace(mark, value, 1)
        return text.replace("%h", self.config.hostname, 1)
