"""The stages a plugin can take part in. A plugin subclasses the ones it handles; mypy checks
its signatures and the registry learns its stages from them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar, runtime_checkable

from filterd.model.envelope import Recipient, Session, Transaction
from filterd.model.message import MessageView
from filterd.model.verdict import Verdict


@runtime_checkable
class OnConnect(Protocol):
    async def on_connect(self, session: Session) -> Verdict: ...


@runtime_checkable
class OnHelo(Protocol):
    async def on_helo(self, session: Session, name: str) -> Verdict: ...


@runtime_checkable
class OnMailFrom(Protocol):
    async def on_mail_from(self, t: Transaction) -> Verdict: ...


@runtime_checkable
class OnRcpt(Protocol):
    async def on_rcpt(self, t: Transaction, rcpt: Recipient) -> Verdict: ...


@runtime_checkable
class OnMessage(Protocol):
    async def on_message(self, t: Transaction, message: MessageView) -> Verdict: ...


@runtime_checkable
class OnClose(Protocol):
    """Always runs, for every plugin, when the session ends (release per-session state)."""

    async def on_close(self, session: Session) -> None: ...


STAGES: dict[str, type] = {
    "on_connect": OnConnect,
    "on_helo": OnHelo,
    "on_mail_from": OnMailFrom,
    "on_rcpt": OnRcpt,
    "on_message": OnMessage,
    "on_close": OnClose,
}


@runtime_checkable
class Learns(Protocol):
    """Not a stage: ``filterd learn --spam|--ham FILE`` calls it on every plugin of the chain
    that has it (spamd TELL, Pyzor report, ...). Returns a one-line description of what the
    plugin did; failures raise."""

    async def learn(self, message: bytes, spam: bool) -> str: ...


INLINE_MARK = "__filterd_inline__"

M = TypeVar("M", bound=Callable[..., Awaitable[Verdict]])


def inline(method: M) -> M:
    """Mark a stage that only computes: it never awaits (no I/O, no ``trio`` call, no
    ``await`` that can suspend) and returns quickly.

    filterd then runs it without a task switch: the milter door calls it on libmilter's own
    thread instead of handing the message to trio's (the hop costs more than header_checks'
    rules), and no door sets up its limiter and timeout (nothing could interrupt it anyway).
    It may run on several threads at once: state it keeps between calls must stay consistent
    under that (a cache filled with ``dict.get`` and plain assignment is; a check-then-act on
    shared state is not). A marked stage that does suspend breaks this promise: the stage
    fails (its entry's ``on_error`` applies) and the testing harness reports it."""
    setattr(method, INLINE_MARK, True)
    return method


def inline_stages(cls: type) -> frozenset[str]:
    """The stages of ``cls`` marked with ``@inline``."""
    return frozenset(
        stage for stage in STAGES if getattr(getattr(cls, stage, None), INLINE_MARK, False)
    )
