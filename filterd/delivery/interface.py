"""The next stage a message goes to: the seam between a front door and where mail ends up.

A ``Delivery`` opens one ``DeliveryTransaction`` per client transaction. MAIL and each RCPT are
handed on as they arrive, so the next stage's refusals reach the client at the same stage;
``data`` returns only once the next stage has the message (or has refused it).
"""

from __future__ import annotations

from typing import Protocol

from filterd.model.envelope import Recipient, Transaction
from filterd.model.replies import collapse_replies
from filterd.model.reply import Reply
from filterd.model.spool import Spool

__all__ = ["Delivery", "DeliveryTransaction", "collapse_replies"]  # collapse_replies: model.replies


class DeliveryTransaction(Protocol):
    async def mail(self, t: Transaction) -> Reply:
        """Hand on the sender (and XFORWARD). A non-2xx reply ends this delivery transaction."""
        ...

    async def rcpt(self, t: Transaction, rcpt: Recipient) -> Reply:
        """Hand on one recipient; the reply is what the client gets for its RCPT."""
        ...

    async def data(self, t: Transaction, spool: Spool) -> list[Reply]:
        """Deliver the message: one reply per recipient in ``t.accepted``, in order.

        Must not raise for delivery failures: they are 4xx/5xx replies.
        """
        ...

    async def abort(self) -> None:
        """The client gave up (RSET, QUIT, error): drop the next stage's transaction."""
        ...


class Delivery(Protocol):
    def open(self) -> DeliveryTransaction: ...

    async def aclose(self) -> None:
        """Close what is kept idle (the relay's pooled connections) and keep nothing idle from
        then on; a transaction opened afterwards still works (it opens what it needs)."""
        ...
