"""The Maildir stage's recipients looked up in tables, as Postfix resolves them for virtual(8):
``alias_maps`` expanded as cleanup(8) does (``alias_expansion``), then each address it gives
classified by its domain and looked up as virtual(8) does.

For a recipient (checked at RCPT, as smtpd's reject_unlisted_recipient, and again when the
message is delivered):

1. alias_maps expand it (nothing found: the recipient itself). Over a limit: ``451 4.6.0``.
2. Each resulting address, by its domain:
   - in ``alias_domains`` (and not aliased further): ``550 5.1.1 <addr>: Recipient address
     rejected: User unknown in virtual alias table``;
   - in ``mailbox_domains`` (every domain when that is empty): ``mailbox_maps``
     (``user+ext@domain``, ``user@domain``, ``@domain``) gives the path under mailbox_base
     (``virtualdomain.tld/user@virtualdomain.tld/``; the trailing ``/`` says Maildir). Not
     found: ``550 5.1.1 <addr>: Recipient address rejected: User unknown in virtual mailbox
     table``. A result without the ``/`` (an mbox file, which this stage does not write), one
     that climbs out of mailbox_base (``..``), a uid/gid not found, not numeric, a uid below
     minimum_uid or a gid of 0: ``451 4.3.5 mail system configuration error`` (virtual(8)
     defers these), logged with the reason. Without mailbox_maps: mailbox_base/domain/user/,
     as without any table;
   - elsewhere: the recipient itself is refused ``554 5.7.1 Relay access denied``; an address
     an alias gave is a configuration error (451 4.3.5, logged): the Maildir stage delivers,
     it does not forward.
3. Any table that cannot answer: ``TableFailure`` (the caller's ``451 4.3.0 <addr>: Temporary
   lookup failure``).

One refused address refuses the recipient (no recipient is accepted and then bounced in part).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from filterd.config.schema import MaildirDelivery
from filterd.config.types import TableRef
from filterd.delivery.alias_expansion import AliasLimits, ExpansionError, expand_aliases
from filterd.delivery.delivery_tables import DeliveryTables, Opener, TableSets, table_specs
from filterd.delivery.domain_list import DomainList, names_of
from filterd.delivery.mailboxes import (
    BAD_MAILBOX,
    CONFIGURATION_ERROR,
    Mailbox,
    relay_denied,
    unknown_user,
    without_tables,
)
from filterd.maillog import MailLog
from filterd.model.reply import Reply
from filterd.sdk.tables import Table, open_table
from filterd.sdk.tables.search import AddressRules, virtual_mailbox

__all__ = ["MapsResolver", "alias_expansion_error", "unknown_alias"]

log = MailLog("maildir")


def unknown_alias(address: str) -> Reply:
    """smtpd's answer for an address of an alias domain that no alias names."""
    return Reply(
        550,
        "5.1.1",
        f"<{address}>: Recipient address rejected: User unknown in virtual alias table",
    )


def alias_expansion_error(address: str) -> Reply:
    """cleanup(8)'s deferral when an expansion goes over a limit."""
    return Reply(451, "4.6.0", f"<{address}>: Alias expansion error")


class _Misconfigured(Exception):
    """A table result virtual(8) would defer (``mail system configuration error``)."""


class MapsResolver:
    """The ``MailboxResolver`` over the configuration's tables (see the module). The tables
    are opened now (``TableOpenError`` naming the setting) and closed by ``aclose``."""

    def __init__(self, config: MaildirDelivery, opener: Opener = open_table) -> None:
        self.config = config
        self.rules = AddressRules(recipient_delimiter=config.recipient_delimiter)
        self.limits = AliasLimits(
            config.alias_expansion_limit,
            config.alias_recursion_limit,
            config.alias_address_length_limit,
        )
        self.tables = DeliveryTables(table_specs(config), opener)

    async def resolve(self, address: str, *, smtputf8: bool) -> list[Mailbox] | Reply:
        async with self.tables.use() as tables:
            return await _Lookup(self, tables, smtputf8).recipient(address)

    async def aclose(self) -> None:
        await self.tables.aclose()


class _Lookup:
    """One recipient's resolution over one set of open tables."""

    def __init__(self, resolver: MapsResolver, tables: TableSets, smtputf8: bool) -> None:
        self.config = resolver.config
        self.rules = resolver.rules
        self.limits = resolver.limits
        self.tables = tables
        self.smtputf8 = smtputf8
        self.mailbox_domains = self._domains("mailbox_domains", self.config.mailbox_domains)
        self.alias_domains = self._domains("alias_domains", self.config.alias_domains)

    def _domains(self, key: str, entries: Sequence[str | TableRef]) -> DomainList:
        return DomainList(names_of(entries), self._of(key))

    def _of(self, key: str) -> tuple[Table, ...]:
        return tuple(self.tables.get(key, ()))

    async def recipient(self, address: str) -> list[Mailbox] | Reply:
        aliases = self._of("alias_maps")
        try:
            expansion = (
                await expand_aliases(aliases, address, self.rules, self.limits)
                if aliases
                else [address]
            )
        except ExpansionError as exc:
            log.warning(f"to=<{address}>: {exc} -- message not accepted, try again later")
            return alias_expansion_error(address)
        boxes: list[Mailbox] = []
        for target in expansion:
            found = await self._address(target, given=target.lower() == address.lower())
            if isinstance(found, Reply):
                return found
            boxes.append(found)
        return boxes

    async def _address(self, address: str, *, given: bool) -> Mailbox | Reply:
        """One final address; ``given``: the recipient itself (no alias, or one naming it)."""
        local, at, domain = address.rpartition("@")
        if not at or not local:
            if given:
                return BAD_MAILBOX
            log.warning(f"alias_maps result {address!r} has no domain (fix: give user@domain)")
            return CONFIGURATION_ERROR
        domain = domain.lower()
        if await self.alias_domains.contains(domain):
            return unknown_alias(address)
        if self.mailbox_domains and not await self.mailbox_domains.contains(domain):
            if given:
                return relay_denied(address)
            log.warning(
                f"to=<{address}>: an alias gave an address in no mailbox domain: the Maildir "
                "delivery does not forward mail (fix: list its domain in mailbox_domains, or "
                "relay such mail through Postfix)"
            )
            return CONFIGURATION_ERROR
        mailboxes = self._of("mailbox_maps")
        if not mailboxes:
            return without_tables(self.config, address, smtputf8=self.smtputf8)
        match = await virtual_mailbox(mailboxes, address, self.rules)
        if match is None:
            return unknown_user(address)
        try:
            maildir = self._maildir(match.value, match.table.name)
            uid = await self._number("uid_maps", address)
            gid = await self._number("gid_maps", address)
        except _Misconfigured as exc:
            log.warning(f"recipient {address}: {exc}")
            return CONFIGURATION_ERROR
        extension = match.extension[1:] if match.extension else None
        return Mailbox(address, maildir, extension, uid, gid)

    def _maildir(self, result: str, table: str) -> Path:
        if not result.endswith("/"):
            raise _Misconfigured(
                f'mailbox_maps {table} gives "{result}", an mbox file: this stage writes only '
                'Maildirs (fix: end the result with "/")'
            )
        parts = PurePosixPath(result).parts
        if ".." in parts:
            raise _Misconfigured(f'mailbox_maps {table} gives "{result}", outside mailbox_base')
        relative = [part for part in parts if part != "/"]
        return self.config.base.joinpath(*relative)

    async def _number(self, key: str, address: str) -> int | None:
        tables = self._of(key)
        if not tables:
            return None
        match = await virtual_mailbox(tables, address, self.rules)
        if match is None:
            raise _Misconfigured(f"{key[:3]} not found in {key}")
        text = match.value.strip()
        if not (text.isascii() and text.isdigit()):
            raise _Misconfigured(f"bad {key[:3]} {text} in {match.table.name}")
        number = int(text)
        if key == "uid_maps" and number < self.config.minimum_uid:
            raise _Misconfigured(f"bad uid {number} in {match.table.name}")
        if key == "gid_maps" and number <= 0:
            raise _Misconfigured(f"bad gid {number} in {match.table.name}")
        return number
