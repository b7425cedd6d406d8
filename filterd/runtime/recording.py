"""The metrics of one process: counted in memory, written to this process's own files.

Every process of ``filterd run`` (the main process and each worker of ``processes = N``)
installs a ``Recording`` as its ``filterd.model.metrics.recorder``. Recording adds to plain
counters under a lock (a few hundred nanoseconds: the libmilter threads record too), and
``MetricsFiles.run`` writes the totals once a second (``FLUSH_INTERVAL``), and once more when
the process stops, into files of its own in the metrics directory the main process made:
``counter_PID.db``, ``histogram_PID.db`` and ``gauge_livesum_PID.db``, the layout of
prometheus-client's multiprocess mode, so the main process sums every process's files with
its ``MultiProcessCollector`` (``filterd.runtime.metrics``).

Totals only ever grow in the files, and a process's files stay when it dies: a worker that is
restarted, or killed with SIGKILL, takes with it at most its last second of counts, and the
sums never go backwards. Its gauges (sessions, spool bytes) are dropped with it
(``metrics.forget_dead``).
"""

from __future__ import annotations

import math
import os
import threading
from bisect import bisect_left
from pathlib import Path

import trio
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.utils import floatToGoString

from filterd.model import metrics
from filterd.model.metrics import Door, Outcome, PluginFailure

__all__ = [
    "BUCKETS",
    "FLUSH_INTERVAL",
    "METRICS",
    "MetricsFiles",
    "Recording",
    "record_into",
    "stop_recording",
]

FLUSH_INTERVAL = 1.0
"""Seconds between two writes of a process's counts (the figures are at most this old)."""

BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    math.inf,
)
"""Upper bounds of the plugin latency histogram, in seconds: a header check takes well under a
millisecond, a spamd check up to seconds, and a plugin's timeout is 30 s by default."""

METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    # name: (type, label names, help)
    "filterd_messages": (
        "counter",
        ("door", "outcome"),
        "Messages by front door and outcome (smtp, lmtp, milter: at the end of data; policy: "
        "each request answered)",
    ),
    "filterd_refusals": (
        "counter",
        ("door", "stage", "outcome"),
        "Refusals before the message content (connect, helo, mail, rcpt), by the chain or the "
        "next hop",
    ),
    "filterd_plugin_duration_seconds": (
        "histogram",
        ("plugin", "stage"),
        "Time one chain entry took to answer one stage",
    ),
    "filterd_plugin_failures": (
        "counter",
        ("plugin", "stage", "failure"),
        "Plugin calls that raised (error) or ran out of time (timeout); on_error decided",
    ),
    "filterd_next_hop_errors": (
        "counter",
        ("stage",),
        "Next-hop connections that failed (connect, mail, rcpt, data)",
    ),
    "filterd_plugin_events": (
        "counter",
        ("plugin", "event"),
        "A plugin's own counts (filterd.sdk.metrics), e.g. a rate limit's counted and exceeded",
    ),
    "filterd_sessions": ("gauge", ("door",), "Connections open now, by front door"),
    "filterd_spool_bytes": ("gauge", (), "Bytes of messages held in spools (memory or file)"),
}


class Recording:
    """A ``filterd.model.metrics.Recorder`` that counts in memory (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.messages: dict[tuple[str, ...], int] = {}
        self.refusals: dict[tuple[str, ...], int] = {}
        self.failures: dict[tuple[str, ...], int] = {}
        self.next_hop: dict[tuple[str, ...], int] = {}
        self.sessions: dict[tuple[str, ...], int] = {}
        self.plugin_events: dict[tuple[str, ...], int] = {}
        self.spooled = 0
        # per (plugin, stage): a count per bucket of BUCKETS, then the sum of the seconds
        self.latency: dict[tuple[str, ...], list[float]] = {}

    def message(self, door: Door, outcome: Outcome) -> None:
        key = (door, outcome)
        with self._lock:
            self.messages[key] = self.messages.get(key, 0) + 1

    def refusal(self, door: Door, stage: str, outcome: Outcome) -> None:
        key = (door, stage, outcome)
        with self._lock:
            self.refusals[key] = self.refusals.get(key, 0) + 1

    def plugin_call(
        self, plugin: str, stage: str, seconds: float, failure: PluginFailure | None
    ) -> None:
        bucket = bisect_left(BUCKETS, seconds)  # the first bound >= seconds
        key = (plugin, stage)
        with self._lock:
            row = self.latency.get(key)
            if row is None:
                row = self.latency[key] = [0.0] * (len(BUCKETS) + 1)
            row[bucket] += 1
            row[-1] += seconds
            if failure is not None:
                failed = (plugin, stage, failure)
                self.failures[failed] = self.failures.get(failed, 0) + 1

    def session(self, door: Door, change: int) -> None:
        key = (door,)
        with self._lock:
            self.sessions[key] = self.sessions.get(key, 0) + change

    def next_hop_error(self, stage: str) -> None:
        key = (stage,)
        with self._lock:
            self.next_hop[key] = self.next_hop.get(key, 0) + 1

    def spool(self, change: int) -> None:
        with self._lock:
            self.spooled += change

    def plugin_event(self, plugin: str, event: str, amount: int) -> None:
        key = (plugin, event)
        with self._lock:
            self.plugin_events[key] = self.plugin_events.get(key, 0) + amount

    def samples(self) -> list[tuple[str, str, tuple[str, ...], float]]:
        """Every value now: (metric, sample name, label values, value)."""
        with self._lock:
            counters: list[tuple[str, dict[tuple[str, ...], int]]] = [
                ("filterd_messages", dict(self.messages)),
                ("filterd_refusals", dict(self.refusals)),
                ("filterd_plugin_failures", dict(self.failures)),
                ("filterd_next_hop_errors", dict(self.next_hop)),
                ("filterd_plugin_events", dict(self.plugin_events)),
            ]
            sessions = dict(self.sessions)
            spooled = self.spooled
            latency = {key: list(row) for key, row in self.latency.items()}
        out: list[tuple[str, str, tuple[str, ...], float]] = []
        for metric, values in counters:
            name = metric + "_total"
            out.extend((metric, name, labels, float(n)) for labels, n in values.items())
        out.extend(
            ("filterd_sessions", "filterd_sessions", k, float(n)) for k, n in sessions.items()
        )
        out.append(("filterd_spool_bytes", "filterd_spool_bytes", (), float(spooled)))
        histogram = "filterd_plugin_duration_seconds"
        for labels, row in latency.items():
            for bound, count in zip(BUCKETS, row, strict=False):
                le = (*labels, floatToGoString(bound))  # type: ignore[no-untyped-call]
                out.append((histogram, histogram + "_bucket", le, count))
            out.append((histogram, histogram + "_sum", labels, row[-1]))
        return out


class MetricsFiles:
    """This process's files in the metrics directory, and the writes of its ``Recording``."""

    def __init__(self, directory: Path, recording: Recording, pid: int | None = None) -> None:
        self.directory = directory
        self.recording = recording
        self.pid = os.getpid() if pid is None else pid
        self._files: dict[str, MmapedDict] = {}
        self._keys: dict[tuple[str, str, tuple[str, ...]], tuple[MmapedDict, str]] = {}
        self._written: dict[str, float] = {}

    async def run(self) -> None:
        """Write every ``FLUSH_INTERVAL`` until cancelled."""
        while True:
            await trio.sleep(FLUSH_INTERVAL)
            self.flush()

    def flush(self) -> None:
        """Write what changed since the last write."""
        written = self._written
        for metric, name, labels, value in self.recording.samples():
            target, key = self._key(metric, name, labels)
            if written.get(key) != value:
                target.write_value(key, value, 0.0)  # type: ignore[no-untyped-call]
                written[key] = value

    def close(self) -> None:
        """The last write; the files stay (the main process keeps summing them)."""
        try:
            self.flush()
        finally:
            for file in self._files.values():
                file.close()  # type: ignore[no-untyped-call]
            self._files.clear()
            self._keys.clear()

    def _key(self, metric: str, name: str, labels: tuple[str, ...]) -> tuple[MmapedDict, str]:
        found = self._keys.get((metric, name, labels))
        if found is None:
            kind, label_names, help_text = METRICS[metric]
            if name.endswith("_bucket"):
                label_names = (*label_names, "le")
            prefix = "gauge_livesum" if kind == "gauge" else kind
            file = self._files.get(prefix)
            if file is None:
                path = self.directory / f"{prefix}_{self.pid}.db"
                file = self._files[prefix] = MmapedDict(str(path))  # type: ignore[no-untyped-call]
            key = mmap_key(metric, name, list(label_names), list(labels), help_text)
            found = self._keys[(metric, name, labels)] = (file, key)
        return found


def record_into(directory: Path) -> MetricsFiles:
    """Install a ``Recording`` as this process's recorder, written into ``directory``; the
    caller runs the returned files' ``run`` and, at the end, ``stop_recording``."""
    recording = Recording()
    metrics.install(recording)
    return MetricsFiles(directory, recording)


def stop_recording(files: MetricsFiles) -> None:
    """The last write; this process records nothing from now on."""
    metrics.install(metrics.NOT_RECORDING)
    files.close()
