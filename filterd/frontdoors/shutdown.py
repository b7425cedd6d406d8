"""Graceful stop: idle sessions are told 421 at once; sessions mid-message may finish."""

from __future__ import annotations

import trio


class Shutdown:
    def __init__(self) -> None:
        self.stopping = False
        self._idle: set[trio.CancelScope] = set()
        self.event = trio.Event()
        self.now = trio.Event()  # a second stop signal: stop at once (helper processes too)

    def register_idle(self, scope: trio.CancelScope) -> None:
        """A session waiting for a command outside any transaction: cancel it on stop."""
        if self.stopping:
            scope.cancel()
        self._idle.add(scope)

    def unregister_idle(self, scope: trio.CancelScope) -> None:
        self._idle.discard(scope)

    def begin(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.event.set()
        for scope in self._idle:
            scope.cancel()
