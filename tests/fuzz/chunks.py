"""Cutting bytes into the chunks a socket might deliver, for the chunking properties."""

from __future__ import annotations

import itertools

from hypothesis import strategies as st

#: Cut points into a piece of input (taken modulo its length plus one).
CUTS = st.lists(st.integers(min_value=0, max_value=10_000), max_size=8)


def cut(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` in pieces at ``cuts`` (no empty piece: ``b""`` means end of input to a codec)."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if a < b]
