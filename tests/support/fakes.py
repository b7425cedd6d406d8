"""A scripted delivery for session tests: decisions follow the recipient's local part.

``reject*`` → 550 at RCPT, ``defer*`` → 450 at RCPT, ``late-defer*`` → 451 after DATA,
``late-reject*`` → 554 after DATA; everything else is accepted and recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from filterd.model.envelope import Recipient, Transaction
from filterd.model.reply import Reply
from filterd.model.spool import Spool

DELIVERED = Reply(250, "2.0.0", "Ok: queued as TEST")


@dataclass
class Recorded:
    sender: str
    recipients: list[str]
    content: bytes


@dataclass
class ScriptedDelivery:
    messages: list[Recorded] = field(default_factory=list)
    aborted: int = 0

    def open(self) -> ScriptedTransaction:
        return ScriptedTransaction(self)

    async def aclose(self) -> None:
        return None


class ScriptedTransaction:
    def __init__(self, owner: ScriptedDelivery) -> None:
        self.owner = owner

    async def mail(self, t: Transaction) -> Reply:
        if t.sender.startswith("refused@"):
            return Reply(553, "5.7.1", "Sender refused by next hop")
        return Reply(250, "2.1.0", "Ok")

    async def rcpt(self, t: Transaction, rcpt: Recipient) -> Reply:
        if rcpt.address.startswith("reject"):
            return Reply(550, "5.1.1", f"<{rcpt.address}>: Recipient address rejected")
        if rcpt.address.startswith("defer"):
            return Reply(450, "4.2.0", f"<{rcpt.address}>: Recipient address deferred")
        return Reply(250, "2.1.5", "Ok")

    async def data(self, t: Transaction, spool: Spool) -> list[Reply]:
        result = []
        for rcpt in t.accepted:
            if rcpt.address.startswith("late-defer"):
                result.append(Reply(451, "4.3.0", "Temporary failure"))
            elif rcpt.address.startswith("late-reject"):
                result.append(Reply(554, "5.7.1", "Rejected"))
            else:
                result.append(DELIVERED)
        if any(r.is_positive for r in result):
            self.owner.messages.append(
                Recorded(t.sender, [r.address for r in t.accepted], b"".join(spool.chunks()))
            )
        return result

    async def abort(self) -> None:
        self.owner.aborted += 1
