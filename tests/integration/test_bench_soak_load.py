"""bench/soak.py's paced load (bench/filterd_bench/soak_load.py) and the latency sink's status
(bench/filterd_bench/latency_sink.py) against each other, without filterd: Postfix's smtp-source
paced into the sink on a free loopback port. Counts only, never a rate or a time."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.append(str(BENCH))

from filterd_bench.procs import Processes, free_port, wait_for_smtp  # noqa: E402
from filterd_bench.soak_load import PacedSource  # noqa: E402
from filterd_bench.source import SMTP_SOURCE  # noqa: E402
from soak import LATENCY_SINK, SinkStatus  # noqa: E402

HANG = 120.0  # seconds: only bounds a hang

pytestmark = pytest.mark.skipif(
    not os.access(SMTP_SOURCE, os.X_OK), reason="smtp-source (Postfix) is not installed"
)


@pytest.fixture
def sink() -> Iterator[tuple[int, SinkStatus]]:
    procs = Processes()
    with tempfile.TemporaryDirectory(prefix="soak-load-") as name:
        workdir = Path(name)
        port = free_port()
        status = workdir / "status.json"
        argv = [sys.executable, str(LATENCY_SINK), str(port), str(workdir / "stamps.json")]
        try:
            child = procs.start(
                "latency-sink", [*argv, str(HANG), str(status)], log=workdir / "sink.log"
            )
            wait_for_smtp(child, port, 30.0)
            yield port, SinkStatus(child, status)
        finally:
            procs.stop_all()  # by its process group's id, also when the test fails


def test_a_reading_between_runs_sees_every_accepted_message_at_the_sink(
    sink: tuple[int, SinkStatus],
) -> None:
    port, status = sink
    load = PacedSource(port, rate=40.0, size=1024, sessions=4)
    load.start()
    try:
        deadline = time.monotonic() + HANG
        while load.counts().accepted < 120:
            assert time.monotonic() < deadline, "the paced load did not get 120 messages through"
            time.sleep(0.2)
        # between two runs no message is in flight: the sink has exactly the accepted ones
        readings = [load.between_runs(lambda: (load.counts(), status.read()[0])) for _ in range(3)]
    finally:
        load.stop()
    for counts, received in readings:
        assert counts.errors == 0, counts.error_texts
        assert counts.sent == counts.accepted == received
    assert readings[-1][0].accepted > readings[0][0].accepted  # the load went on between them
    final = load.counts()
    assert final.errors == 0, final.error_texts
    assert final.sent == final.accepted == status.read()[0]
    assert load.between_runs(lambda: "read directly once stopped") == "read directly once stopped"
