"""The counting core: a sliding window over a state store, approximated by two fixed buckets.

A window of ``W`` seconds is cut into fixed buckets (``floor(now / W)``). The count of a key is
its current bucket plus the previous bucket weighted by the part of it still inside the window:

    estimate = previous * (1 - (now - bucket_start) / W) + current

(the usual "sliding window counter": exact when arrivals are spread evenly, never off by more
than the previous bucket's share). Each bucket is one integer record, updated with the store's
atomic ``increment`` (a SQLite transaction, a Lua script on Redis), living ``2 W``: every filterd
process and host sharing one store counts into the same records.

:func:`take` counts first and then compares (so two hosts at once can never both slip under
the limit); a caller that refuses the mail gives the amount back with :func:`give_back`, so
refused attempts do not hold a sender over its limit. Pure of plugin concerns: the ``rules``
plugin's rate actions call it with their own keys.

A caller that knows an upper bound of any bucket's count (``bucket_most``: ``rate()`` counts
one per request, and what would take a bucket past the limit is given back, so no bucket keeps
more than the limit) saves the read of the previous bucket whenever the bound already keeps the
count within the limit: the answer is the same, with one store call instead of two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from filterd.sdk.state import StateStore


@dataclass(frozen=True, slots=True)
class Usage:
    """One key's count in its window, after this call's amount was added."""

    key: str  # the store key without its bucket
    bucket: int
    amount: int  # what this call counted
    estimate: float  # the sliding-window count, this call included (or, when the previous
    # bucket was not read, an upper bound of it that is within the limit)
    limit: int
    window: float

    @property
    def exceeded(self) -> bool:
        return self.estimate > self.limit


def bucket_key(key: str, bucket: int) -> str:
    return f"{key}@{bucket}"


async def take(
    store: StateStore,
    key: str,
    amount: int,
    *,
    limit: int,
    window: float,
    now: float,
    bucket_most: int | None = None,
) -> Usage:
    """Count ``amount`` for ``key`` now and return the window's count with it. Raises the
    store's ``StoreFailure``. ``bucket_most``: no bucket of ``key`` ever keeps more (module
    text); None: unknown."""
    if not window > 0:
        raise ValueError(f"a window must be more than zero seconds, got {window!r}")
    bucket = math.floor(now / window)
    current = await store.increment(bucket_key(key, bucket), amount, 2 * window)
    inside = min(max(1.0 - (now - bucket * window) / window, 0.0), 1.0)
    if bucket_most is not None:
        bound = max(bucket_most, 0) * inside + current  # >= the estimate, whatever previous is
        if bound <= limit:
            return Usage(key, bucket, amount, bound, limit, window)
    previous = 0
    raw = await store.get(bucket_key(key, bucket - 1))
    if raw is not None:
        try:
            previous = int(raw)
        except ValueError:  # damaged record: as if missing
            previous = 0
    estimate = max(previous, 0) * inside + current
    return Usage(key, bucket, amount, estimate, limit, window)


async def give_back(store: StateStore, usage: Usage) -> None:
    """Take back what :func:`take` counted (the mail was refused)."""
    if usage.amount:
        await store.increment(bucket_key(usage.key, usage.bucket), -usage.amount, 2 * usage.window)
