"""Running a stage whose plugins only compute (``filterd.sdk.inline``) on the caller's thread.

``run_now`` drives the chain's coroutine for such a stage to its end without an event loop:
the runner takes no limiter and sets no timeout for an inline entry, so nothing in it awaits
(``ChainRunner.runs_inline``). A plugin that suspends all the same broke its promise: the
exception ``BrokenInlinePromise`` is thrown in where it waits, so its entry fails as any
failing plugin does (its ``on_error``, a traceback once per incident).
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["BrokenInlinePromise", "run_now"]


class BrokenInlinePromise(RuntimeError):
    """An ``@inline`` stage awaited something that suspends."""


def run_now(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end here. Each time it suspends, ``BrokenInlinePromise`` is thrown
    into it; one that keeps suspending after a few is closed and the error raised."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    for _ in range(8):
        try:
            coro.throw(BrokenInlinePromise("an @inline stage suspended (it awaited I/O?)"))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
    try:
        coro.close()
    except RuntimeError:  # it ignored GeneratorExit too: nothing more to do for it
        pass
    raise BrokenInlinePromise("the chain kept suspending in an @inline stage")
