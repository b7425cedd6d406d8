"""The next stage a message goes to: the seam between a front door and where mail ends up.

A ``Delivery`` opens one ``DeliveryTransaction`` per client transaction. MAIL and each RCPT are
handed on as they arrive, so the next stage's refusals reach the client at the same stage;
``data`` returns only once the next stage has the message (or has refused it).
"""

from __future__ import annotations

from typing import Protocol

from filterd.model import replies
from filterd.model.envelope import Recipient, Transaction
from filterd.model.reply import Reply
from filterd.model.spool import Spool


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


def collapse_replies(per_recipient: list[Reply]) -> Reply:
    """One SMTP reply for a message whose recipients got separate results (LMTP next hop or
    Maildir, SMTP client). The rule: no recipient may be both acknowledged and lost.

    - every recipient succeeded → the first success;
    - every recipient failed → the first transient failure if any (retry is always safe),
      else the first permanent one;
    - mixed success and failure → 451 4.5.0: the client keeps the message and retries all
      recipients, so those already delivered may get a duplicate, but none is lost.
    """
    if not per_recipient:
        return replies.INTERNAL_ERROR
    successes = [r for r in per_recipient if r.is_positive]
    if len(successes) == len(per_recipient):
        return successes[0]
    if successes:
        return replies.PARTIAL_DELIVERY
    transient = [r for r in per_recipient if r.is_transient]
    return transient[0] if transient else per_recipient[0]
