"""The seam where the plugin chain plugs into a front door: one call per SMTP stage.

A check answers ``None`` to let the stage go on (to the next hop), or a ``Reply`` that the
client gets instead. ``NoChecks`` is the empty chain.
"""

from __future__ import annotations

from typing import Protocol

from filterd.model.envelope import Recipient, Session, Transaction
from filterd.model.reply import Reply
from filterd.serve.spool import Spool


class Checks(Protocol):
    async def on_connect(self, session: Session) -> Reply | None: ...

    async def on_helo(self, session: Session, name: str) -> Reply | None: ...

    async def on_mail_from(self, t: Transaction) -> Reply | None: ...

    async def on_rcpt(self, t: Transaction, rcpt: Recipient) -> Reply | None: ...

    async def on_message(self, t: Transaction, spool: Spool) -> Reply | None:
        """The whole message is spooled. May add header lines to ``spool.prefix``."""
        ...

    async def on_close(self, session: Session) -> None: ...


class NoChecks:
    """The empty chain: every stage continues."""

    async def on_connect(self, session: Session) -> Reply | None:
        return None

    async def on_helo(self, session: Session, name: str) -> Reply | None:
        return None

    async def on_mail_from(self, t: Transaction) -> Reply | None:
        return None

    async def on_rcpt(self, t: Transaction, rcpt: Recipient) -> Reply | None:
        return None

    async def on_message(self, t: Transaction, spool: Spool) -> Reply | None:
        return None

    async def on_close(self, session: Session) -> None:
        return None
