"""Sightings: a record of when something was first and last seen, which *matures* once it is
seen again long enough after it was first seen, and an optional tally of the matured records
of its source, which makes the source *trusted*. Greylisting is the use (a triplet, its
client's auto-whitelisting), but nothing here knows of it.

:meth:`StateStore.record_sighting` does one sighting as one atomic step: one transaction on
SQLite, one Lua script (one round trip) on Redis. :func:`next_sighting` is the step itself,
pure: the SQLite store runs it inside its transaction; the Redis store's script
(``filterd.sdk.state.redis``) is the same step in Lua, and the state-store tests hold the two
to the same answers.

Records are text ``A,B`` (two whole numbers): a sighting ``first,last`` (unix seconds), a tally
``count,last counted``. A damaged record reads as missing and is overwritten.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Maturing", "Sighting", "SightingWrites", "Tally", "next_sighting", "parse_pair"]


@dataclass(frozen=True, slots=True)
class Maturing:
    """How a sighting record matures and how long it lives.

    A record is mature once it was seen again ``wait`` seconds or more after it was first seen
    (its ``last - first`` reaches ``wait``). A record not yet mature whose first sighting is
    more than ``restart_after`` seconds ago starts over (first = now). A record lives ``keep``
    seconds from its last sighting once ``now - first`` reaches ``wait``, else
    ``min(restart_after, keep)``."""

    wait: int
    restart_after: float
    keep: float


@dataclass(frozen=True, slots=True)
class Tally:
    """The source's record ``key``: it counts the source's records that mature, at most once
    every ``every`` seconds, and lives ``keep`` seconds from its last count. A source counted
    ``trusted_at`` times or more is trusted: its sightings are not recorded, and its count goes
    on (at most once every ``every`` seconds, or when its last count is in the future)."""

    key: str
    trusted_at: int
    every: int
    keep: float


@dataclass(frozen=True, slots=True)
class Sighting:
    """What one sighting found.

    - ``trusted``: the source was trusted (nothing else was looked at or recorded);
    - ``first``: when the record was first seen, as it now stands (``now`` for a new one or
      one that started over; never later than ``now``);
    - ``matured_before``: the record had matured before this sighting;
    - ``counted``: the source's new count when this sighting matured the record and counted,
      else None.
    """

    first: int
    matured_before: bool = False
    trusted: bool = False
    counted: int | None = None


@dataclass(frozen=True, slots=True)
class SightingWrites:
    """The records a sighting writes: (value, time to live) of the record and of the tally,
    None where it writes nothing."""

    record: tuple[str, float] | None = None
    tally: tuple[str, float] | None = None


# What the Redis store's Lua script reads as a number (``%s*[+-]?%d+%s*``): ASCII only, so
# both backends read a damaged record alike (``int`` would take "1_0" or other scripts' digits).
_WHOLE = re.compile(r"\s*([+-]?[0-9]+)\s*", re.ASCII)


def parse_pair(raw: str | None) -> tuple[int, int] | None:
    """``A,B`` (anything after a second comma ignored) as two whole numbers; None for a missing
    or damaged record."""
    if raw is None:
        return None
    first, _, rest = raw.partition(",")
    second = rest.partition(",")[0]
    # the records this module writes: ASCII digits only (isdigit alone takes other scripts')
    if first.isdigit() and second.isdigit() and first.isascii() and second.isascii():
        return int(first), int(second)
    numbers = [_WHOLE.fullmatch(part) for part in (first, second)]
    if numbers[0] is None or numbers[1] is None:
        return None
    return int(numbers[0][1]), int(numbers[1][1])


def next_sighting(
    record: str | None,
    tally_record: str | None,
    now: int,
    maturing: Maturing,
    tally: Tally | None,
) -> tuple[Sighting, SightingWrites]:
    """One sighting at ``now`` over the record and the tally as they stand (None: missing; the
    tally is not read without ``tally``): what it found and what it writes."""
    counts = parse_pair(tally_record) if tally is not None else None
    if tally is not None and counts is not None and counts[0] >= tally.trusted_at:
        count, last = counts
        bump = None
        if now >= last + tally.every or last > now:
            bump = (f"{count + 1},{now}", tally.keep)
        return Sighting(now, trusted=True), SightingWrites(tally=bump)
    seen = parse_pair(record)
    first, matured = now, False
    if seen is not None:
        first = seen[0]
        if seen[1] - first >= maturing.wait:
            matured = True
        elif now - first > maturing.restart_after:
            first = now  # seen again too late: start over
        first = min(first, now)  # a first sighting in the future
    ttl = (
        maturing.keep
        if now - first >= maturing.wait
        else min(maturing.restart_after, maturing.keep)
    )
    record_write = (f"{first},{now}", ttl)
    if tally is None or matured or now - first < maturing.wait:  # does not count
        return Sighting(first, matured), SightingWrites(record_write)
    if counts is not None and now < counts[1] + tally.every:  # counted within ``every``
        return Sighting(first), SightingWrites(record_write)
    counted = (counts[0] if counts is not None else 0) + 1
    return Sighting(first, counted=counted), SightingWrites(
        record_write, (f"{counted},{now}", tally.keep)
    )
