"""bench/soak.py's steady load: smtp-source (``filterd_bench.source``) paced to a rate.

smtp-source has no rate option, so a background thread starts one bounded smtp-source run per
``PERIOD`` (1 s) tick with the messages due in that tick (``rate x PERIOD``, the fractions carried
over), persistent sessions, and waits for it before the next tick: a run that overruns its tick
by more than a tick shifts the schedule (``late`` counts those) instead of sending a burst to
catch up. Every run is bounded
by ``run_source``'s timeout; a run that fails (a reply other than 250, a time-out) counts as an
error with smtp-source's own words.

``between_runs(read)`` has the thread call ``read`` in the gap after its current run (once
filterd has had ``SETTLE`` seconds to close that run's sessions): readings of descriptors and
memory taken there do not depend on how many sessions happen to be open at that moment.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from filterd_bench.source import run_source

PERIOD = 1.0  # seconds per smtp-source run
RUN_TIMEOUT = 60.0  # seconds: one run that takes longer is killed and counted as an error
MAX_ERRORS_KEPT = 10
SETTLE = 0.1  # seconds after a run before a reading between runs

T = TypeVar("T")


@dataclass
class LoadCounts:
    sent: int = 0
    accepted: int = 0
    errors: int = 0
    late: int = 0  # ticks that started after their due time
    error_texts: list[str] = field(default_factory=list)


class PacedSource:
    """``start()``, then ``counts()`` at any time, then ``stop()`` (bounded by RUN_TIMEOUT)."""

    def __init__(self, port: int, *, rate: float, size: int, sessions: int) -> None:
        self.port, self.rate, self.size, self.sessions = port, rate, size, sessions
        self._counts = LoadCounts()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-load", daemon=True)
        self._requests: queue.Queue[Callable[[], None]] = queue.Queue()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(RUN_TIMEOUT + 15)

    def counts(self) -> LoadCounts:
        with self._lock:
            return LoadCounts(
                **vars(self._counts) | {"error_texts": list(self._counts.error_texts)}
            )

    def between_runs(self, read: Callable[[], T]) -> T:
        """``read()`` called by the load thread between two runs (directly once it has
        stopped); bounded by RUN_TIMEOUT."""
        if not self._thread.is_alive():
            return read()
        answer: queue.Queue[T] = queue.Queue()
        self._requests.put(lambda: answer.put(read()))
        deadline = time.monotonic() + RUN_TIMEOUT + PERIOD + 15
        while time.monotonic() < deadline:
            try:
                return answer.get(timeout=1.0)
            except queue.Empty:
                if not self._thread.is_alive():
                    self._serve_requests()  # it ended without serving: serve it here
        raise TimeoutError("the load thread did not take the reading")

    def _serve_requests(self) -> None:
        if self._requests.empty():
            return
        time.sleep(SETTLE)
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            request()

    def _run(self) -> None:
        try:
            self._pace()
        finally:
            self._serve_requests()  # a reading asked for while it stopped

    def _pace(self) -> None:
        start = time.monotonic()
        due_messages = 0.0
        tick = 0
        while not self._stop.is_set():
            due = start + tick * PERIOD
            delay = due - time.monotonic()
            if delay > 0:
                if self._stop.wait(delay):
                    break
            elif delay < -PERIOD:  # the last run overran: start afresh, no backlog burst
                start -= delay
                with self._lock:
                    self._counts.late += 1
            tick += 1
            due_messages += self.rate * PERIOD
            count = int(due_messages)
            if count < 1:
                self._serve_requests()
                continue
            due_messages -= count
            run = run_source(
                self.port,
                size=self.size,
                sessions=min(self.sessions, count),
                count=count,
                timeout=RUN_TIMEOUT,
            )
            with self._lock:
                self._counts.sent += count
                self._counts.accepted += run.completed
                if run.problem:
                    self._counts.errors += 1
                    if len(self._counts.error_texts) < MAX_ERRORS_KEPT:
                        self._counts.error_texts.append(f"smtp-source: {run.problem}")
            self._serve_requests()
