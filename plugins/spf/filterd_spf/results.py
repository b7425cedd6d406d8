"""A cache of whole SPF answers, so a warm check runs neither pyspf nor a worker thread.

An SPF result is a function of the check's inputs (``SpfRequest``: client address, sender,
HELO name, receiver, settings) and of the DNS answers it consulted. Keeping the answer until the
first of those DNS answers expires gives exactly what re-running the check against the
TTL-honouring DNS cache would give, only cheaper. So:

- every lookup of a check reports until when its answer holds (``SpfResolver.lookup_until``),
  and ``Expiry`` keeps the earliest;
- a temperror is never kept (the next message must ask DNS again), nor an answer reached
  although a lookup failed (pyspf absorbs DNS errors of PTR lookups and of ``exp=``, so such a
  ``fail`` is firm for this message only), and no answer is kept longer than ``MAX_KEEP``
  seconds, whatever the TTLs say;
- the cache holds at most ``size`` answers; the least recently used goes first.

The one input that is not DNS is the time: a domain's explanation may quote ``%{t}`` (the
check's timestamp); a kept answer repeats the timestamp of the check that computed it.

The cache belongs to one chain entry and is used from the trio thread only (no lock).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from .checker import SpfAnswer, SpfRequest

MAX_KEEP = 3600.0  # seconds an answer is kept at most, whatever the TTLs


class Expiry:
    """The earliest expiry of the DNS answers one check consulted (``time.time()`` scale)."""

    def __init__(self, limit: float) -> None:
        self.earliest = limit

    def note(self, until: float | None) -> None:
        """One lookup's answer holds until ``until`` (None: forever, e.g. an impossible name)."""
        if until is not None and until < self.earliest:
            self.earliest = until


class ResultCache:
    """SPF answers by request, each until the earliest expiry of the DNS answers behind it."""

    def __init__(self, size: int, *, clock: Callable[[], float] = time.time) -> None:
        self.size = size
        self._clock = clock
        self._answers: OrderedDict[SpfRequest, tuple[SpfAnswer, float]] = OrderedDict()
        self.hits = 0  # answers given from the cache

    def __len__(self) -> int:
        return len(self._answers)

    def expiry(self) -> Expiry:
        """A fresh expiry for one check, capped at ``MAX_KEEP`` from now."""
        return Expiry(self._clock() + MAX_KEEP)

    def get(self, request: SpfRequest) -> SpfAnswer | None:
        kept = self._answers.get(request)
        if kept is None:
            return None
        answer, until = kept
        if until <= self._clock():
            del self._answers[request]
            return None
        self._answers.move_to_end(request)
        self.hits += 1
        return answer

    def put(self, request: SpfRequest, answer: SpfAnswer, until: float) -> None:
        """Keep ``answer`` until ``until``; temperrors, answers reached despite a failed lookup
        and answers already stale are not kept."""
        if answer.result == "temperror" or answer.dns_trouble:
            return
        if self.size <= 0 or not math.isfinite(until):
            return
        if until <= self._clock():
            return
        self._answers[request] = (answer, until)
        self._answers.move_to_end(request)
        while len(self._answers) > self.size:
            self._answers.popitem(last=False)
