"""Ending a session, the same in every front door: the chain's ``on_close`` runs whatever
ended the session — shielded from the cancellation that may have ended it (a timeout, a
stop) — and under ``CLOSE_TIMEOUT``, so that a slow plugin cannot hold the session's task."""

from __future__ import annotations

import trio

from filterd.chain.runner import ChainRunner
from filterd.model.envelope import Session

__all__ = ["CLOSE_TIMEOUT", "close_chain"]

CLOSE_TIMEOUT = 5.0
"""Seconds for each step of ending a session: the chain's ``on_close``, a last reply, the
connection's close."""


async def close_chain(chain: ChainRunner, session: Session) -> None:
    """Run the chain's ``on_close`` for ``session``, shielded, for at most ``CLOSE_TIMEOUT``."""
    with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
        await chain.close(session)
