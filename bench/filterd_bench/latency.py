"""The latency pass's arithmetic (pure: no I/O, unit-tested in tests/unit/test_bench_latency.py).

The client (``latency_client``) and the sink (``latency_sink``) stamp every message with
``time.monotonic()`` (CLOCK_MONOTONIC: one clock for every process of the machine), keyed by the
message's envelope sender, which filterd relays unchanged:

- client: ``dot`` when it sends the end of data, ``reply`` when filterd's final reply arrives;
- sink: ``dot`` when the end of data has arrived, ``reply`` just before it sends its 250.

**Added latency** = client ``reply`` - sink ``reply``: what filterd adds after the next hop has
the message (reading the next hop's 250, answering its own); the specification's target is on
its 99th percentile. **Turnaround** = client ``reply`` - client ``dot``: the whole end of data
as the client sees it (filterd's chain, the relay, the next hop and the added latency).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

Stamps = tuple[float, float]  # (dot, reply), monotonic seconds


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100): the smallest value with at least
    ``q`` % of the values at or below it."""
    if not values:
        raise ValueError("no values")
    if not 0 < q <= 100:
        raise ValueError(f"percentile {q} is not in (0, 100]")
    ordered = sorted(values)
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


@dataclass(frozen=True)
class Distribution:
    """Milliseconds."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Distribution:
        ms = [value * 1000 for value in seconds]
        return cls(
            len(ms),
            percentile(ms, 50),
            percentile(ms, 90),
            percentile(ms, 99),
            max(ms),
        )

    def describe(self) -> str:
        return (
            f"p50 {self.p50:.2f} ms, p90 {self.p90:.2f} ms, p99 {self.p99:.2f} ms, "
            f"max {self.max:.2f} ms ({self.count} messages)"
        )


@dataclass(frozen=True)
class LatencyFigures:
    added: Distribution | None  # client reply - sink reply
    turnaround: Distribution | None  # client reply - client dot
    unmatched: int  # client messages the sink has no stamps for
    negative: int  # added latencies below zero: the clocks or the matching are wrong


def latency_figures(client: Mapping[str, Stamps], sink: Mapping[str, Stamps]) -> LatencyFigures:
    """The distributions over the messages both sides stamped (keyed by envelope sender)."""
    added: list[float] = []
    turnaround: list[float] = []
    unmatched = 0
    for key, (client_dot, client_reply) in client.items():
        turnaround.append(client_reply - client_dot)
        stamps = sink.get(key)
        if stamps is None:
            unmatched += 1
            continue
        added.append(client_reply - stamps[1])
    negative = sum(1 for value in added if value < 0)
    return LatencyFigures(
        Distribution.of(added) if added else None,
        Distribution.of(turnaround) if turnaround else None,
        unmatched,
        negative,
    )
