"""The main process's view of the metrics: every process's counts summed, and the server's own
facts (processes, uptime, configuration loaded at, reloads), for the Prometheus endpoint
(``[metrics] address``) and ``filterd status`` (``filterd.runtime.control``).

Where the counts come from: each process writes its own files (``filterd.runtime.recording``);
``MultiProcessCollector`` (prometheus-client) sums them at each scrape. Files of a process that
is gone still count (their totals never shrink); its gauges are dropped (``forget_dead``).

The reload code tells of a reload with ``reloaded(ok)`` (and its time, by default now): it
counts ``filterd_reloads_total{result="ok"|"refused"}`` and, when ok, moves
``filterd_config_loaded_timestamp_seconds``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from filterd import __version__
from filterd.config.types import Endpoint
from filterd.runtime.startup import StartupError
from filterd.runtime.worker_pool import WorkerPool

__all__ = [
    "MetricsEndpoint",
    "ServerFacts",
    "config_loaded",
    "forget_dead",
    "install_facts",
    "metrics_registry",
    "reloaded",
    "snapshot",
    "start_endpoint",
]


@dataclass
class ServerFacts:
    """What the main process knows of itself (one per ``filterd run``)."""

    config_file: str
    started: float = field(default_factory=time.time)
    config_loaded_at: float = 0.0
    reloads_ok: int = 0
    reloads_refused: int = 0
    metrics_address: str | None = None
    pools: list[WorkerPool] = field(default_factory=list)
    pid: int = field(default_factory=os.getpid)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.config_loaded_at = self.config_loaded_at or self.started

    def processes(self) -> list[tuple[int, str]]:
        """(pid, role) of every process running now: this one first, then the workers."""
        found = [(self.pid, "main")]
        for pool in list(self.pools):
            for worker in list(pool.workers):
                process = worker.process
                if process is not None and process.returncode is None:
                    found.append((process.pid, f"{pool.name} {worker.number}"))
        return found

    def reloaded(self, ok: bool, at: float | None = None) -> None:
        with self._lock:
            if ok:
                self.reloads_ok += 1
                self.config_loaded_at = time.time() if at is None else at
            else:
                self.reloads_refused += 1


_current: ServerFacts | None = None


def install_facts(facts: ServerFacts | None) -> None:
    """The facts ``reloaded`` and ``config_loaded`` update (``None``: none)."""
    global _current
    _current = facts


def reloaded(ok: bool, at: float | None = None) -> None:
    """A reload was done (``ok``: the new configuration is in force) or refused; for the
    reload code. Nothing happens when no server records (a server embedded in tests)."""
    if _current is not None:
        _current.reloaded(ok, at)


def config_loaded(at: float | None = None) -> None:
    """The configuration in force was loaded at ``at`` (now by default), without a reload."""
    if _current is not None:
        with _current._lock:
            _current.config_loaded_at = time.time() if at is None else at


class _FactsCollector:
    def __init__(self, facts: ServerFacts) -> None:
        self.facts = facts

    def collect(self) -> Iterator[Metric]:
        facts = self.facts
        now = time.time()
        yield GaugeMetricFamily(
            "filterd_processes", "Processes serving (the main one and its workers)",
            value=len(facts.processes()),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "filterd_start_time_seconds", "When filterd started (Unix time)", value=facts.started
        )
        yield GaugeMetricFamily(
            "filterd_uptime_seconds", "Seconds since filterd started", value=now - facts.started
        )
        yield GaugeMetricFamily(
            "filterd_config_loaded_timestamp_seconds",
            "When the configuration in force was loaded (Unix time)",
            value=facts.config_loaded_at,
        )
        reloads = CounterMetricFamily(
            "filterd_reloads", "Reloads, done (ok) or refused", labels=["result"]
        )
        reloads.add_metric(["ok"], facts.reloads_ok)
        reloads.add_metric(["refused"], facts.reloads_refused)
        yield reloads


class _FilesCollector:
    """Every process's files, summed; the gauges of processes that are gone dropped first."""

    def __init__(self, directory: Path, facts: ServerFacts) -> None:
        self.directory = directory
        self.facts = facts
        self.files = MultiProcessCollector(None, path=str(directory))  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Metric]:
        forget_dead(self.directory, {pid for pid, _ in self.facts.processes()})
        files = [path for path in glob.glob(os.path.join(self.directory, "*.db")) if _begun(path)]
        return self.files.merge(files, accumulate=True)  # type: ignore[no-untyped-call, no-any-return]


def _begun(path: str) -> bool:
    """False for a process's file that prometheus-client has created but not yet sized (it
    opens, then truncates to its initial size: a scrape in between read an empty file and
    failed with struct.error); such a file holds no value yet."""
    try:
        return os.path.getsize(path) > 0
    except FileNotFoundError:  # a live gauge of a dead process, removed meanwhile
        return False


_LIVE_GAUGE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")


def forget_dead(directory: Path, alive: set[int]) -> None:
    """Remove the live gauges of every process not in ``alive`` (their counters stay)."""
    for path in glob.glob(os.path.join(directory, "gauge_live*_*.db")):
        match = _LIVE_GAUGE.fullmatch(os.path.basename(path))
        if match is not None and int(match.group(1)) not in alive:
            with contextlib.suppress(FileNotFoundError):  # another scrape removed it
                os.remove(path)


def metrics_registry(directory: Path, facts: ServerFacts) -> CollectorRegistry:
    """The registry the endpoint and ``filterd status`` read: the files and the facts."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_FilesCollector(directory, facts))
    registry.register(_FactsCollector(facts))
    return registry


def snapshot(registry: CollectorRegistry, facts: ServerFacts) -> dict[str, object]:
    """What ``filterd status`` shows (its ``--json``): the server, then every metric."""
    families = []
    for family in registry.collect():
        ordered = sorted(family.samples, key=lambda s: (s.name, sorted(s.labels.items())))
        samples = [{"name": s.name, "labels": dict(s.labels), "value": s.value} for s in ordered]
        families.append(
            {"name": family.name, "type": family.type, "help": family.documentation,
             "samples": samples}
        )  # fmt: skip
    families.sort(key=lambda f: str(f["name"]))
    now = time.time()
    return {
        "server": {
            "pid": facts.pid,
            "version": __version__,
            "config_file": facts.config_file,
            "started_at": facts.started,
            "uptime_seconds": now - facts.started,
            "config_loaded_at": facts.config_loaded_at,
            "reloads": {"ok": facts.reloads_ok, "refused": facts.reloads_refused},
            "processes": [{"pid": pid, "role": role} for pid, role in facts.processes()],
            "metrics_address": facts.metrics_address,
        },
        "metrics": families,
    }


@dataclass
class MetricsEndpoint:
    """The running HTTP endpoint (prometheus-client's server, on a thread of its own)."""

    server: object
    thread: threading.Thread
    address: str

    def close(self) -> None:
        shutdown = getattr(self.server, "shutdown", None)
        if shutdown is not None:
            shutdown()
        close = getattr(self.server, "server_close", None)
        if close is not None:
            close()
        self.thread.join(5)


def start_endpoint(address: Endpoint, registry: CollectorRegistry) -> MetricsEndpoint:
    """Serve ``registry`` over HTTP at ``address`` (prometheus-client's WSGI server, on a
    thread); a bind failure is a ``StartupError``."""
    try:
        server, thread = start_http_server(address.port, address.host, registry)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise StartupError(
            f"cannot serve metrics on {address} (metrics.address): {reason} (give a free "
            "port and an address of this machine, or remove [metrics] address)"
        ) from None
    host, port = server.server_address[:2]
    host = host.decode() if isinstance(host, bytes) else str(host)
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return MetricsEndpoint(server, thread, shown)
