"""``[delivery] recipient_maps`` of the relay: Postfix's relay_recipient_maps. A recipient is
known when a table finds it (``user+ext@domain``, ``user@domain``, ``@domain``: the search
smtpd uses, through ``filterd.sdk.tables.search``), whatever the value; an unknown one is
refused at RCPT before it reaches the next hop, as smtpd refuses it::

    550 5.1.1 <user@example.org>: Recipient address rejected: User unknown in relay recipient table

A table that cannot answer: ``451 4.3.0 <addr>: Temporary lookup failure`` (never accepted,
never refused for good).
"""

from __future__ import annotations

from filterd.config.schema import RelayDelivery
from filterd.delivery.delivery_tables import DeliveryTables, Opener, TableOpenError, table_specs
from filterd.delivery.mailboxes import lookup_failure
from filterd.maillog import MailLog
from filterd.model.reply import Reply
from filterd.sdk.tables import TableFailure, open_table
from filterd.sdk.tables.search import virtual_mailbox

__all__ = ["RecipientMaps", "unknown_relay_recipient"]

log = MailLog("smtpd")


def unknown_relay_recipient(address: str) -> Reply:
    return Reply(
        550,
        "5.1.1",
        f"<{address}>: Recipient address rejected: User unknown in relay recipient table",
    )


class RecipientMaps:
    """The relay's recipient tables, opened now (``TableOpenError``), closed by ``aclose``."""

    def __init__(self, config: RelayDelivery, opener: Opener = open_table) -> None:
        self.tables = DeliveryTables(table_specs(config), opener)

    async def check(self, address: str) -> Reply | None:
        """None for a known recipient, else the reply that refuses it."""
        try:
            async with self.tables.use() as tables:
                found = await virtual_mailbox(tables["recipient_maps"], address)
        except TableFailure as exc:
            log.warning(f"to=<{address}>: {exc}")
            return lookup_failure(address)
        except TableOpenError as exc:
            log.error(f"to=<{address}>: {exc}")
            return Reply(451, "4.3.5", "Server configuration error")
        return None if found is not None else unknown_relay_recipient(address)

    async def aclose(self) -> None:
        await self.tables.aclose()
