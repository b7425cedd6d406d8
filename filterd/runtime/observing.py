"""What ``filterd run`` sets up so that it can be watched: the metrics directory every process
writes its counts to, this process's recording, the control socket of ``filterd status``, and
the Prometheus endpoint when ``[metrics] address`` is set.

The metrics directory is private (0700, made with ``mkdtemp`` in the system's temporary
directory, ``$TMPDIR`` or ``/tmp``) and removed when filterd stops; each worker is told its path
(``WorkerPool(metrics_dir=...)``) and writes its own files there.

A control socket written in the configuration that cannot be opened stops filterd from starting;
the default one (``./var/run/filterd.sock``, from where filterd starts) only gets a warning, as
the default quarantine does not stop it either: systemd starts services in ``/``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import trio

from filterd.config.schema import Config
from filterd.maillog import MailLog
from filterd.runtime.control import ControlSocket
from filterd.runtime.metrics import (
    MetricsEndpoint,
    ServerFacts,
    install_facts,
    metrics_registry,
    start_endpoint,
)
from filterd.runtime.recording import MetricsFiles, record_into, stop_recording
from filterd.runtime.startup import StartupError
from filterd.runtime.worker_pool import WorkerPool

__all__ = ["Observing"]

log = MailLog("main")


class Observing:
    """The metrics and the control socket of one ``filterd run``."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.facts = ServerFacts(config.source)
        self.directory: Path | None = None
        self._files: MetricsFiles | None = None
        self._control: ControlSocket | None = None
        self._endpoint: MetricsEndpoint | None = None

    async def open(self) -> None:
        """Make the directory, record, open the control socket and the endpoint. A failure is
        a StartupError (``close`` undoes what was set up)."""
        try:
            self.directory = Path(tempfile.mkdtemp(prefix="filterd-metrics-"))
        except OSError as exc:
            raise StartupError(f"cannot create the metrics directory: {exc}") from None
        self._files = record_into(self.directory)
        registry = metrics_registry(self.directory, self.facts)
        control = ControlSocket(self.config.control.socket, registry, self.facts)
        try:
            await control.open()
            self._control = control
        except StartupError as exc:
            if "socket" in self.config.control.model_fields_set:
                raise
            log.warning(
                f"no control socket, filterd status will not answer: {exc} (give a path "
                "filterd can create in [control] socket)"
            )
        address = self.config.metrics.address
        if address is not None:
            self._endpoint = start_endpoint(address, registry)
            self.facts.metrics_address = self._endpoint.address
            log.plain(f"metrics on http://{self._endpoint.address}/metrics")
        install_facts(self.facts)

    def run(self, nursery: trio.Nursery) -> None:
        """Write the counts and answer the control socket, in ``nursery``, until cancelled."""
        assert self._files is not None, "open() first"
        nursery.start_soon(self._files.run)
        if self._control is not None:
            nursery.start_soon(self._control.serve)

    def watch(self, pool: WorkerPool) -> None:
        """Count ``pool``'s workers among the processes."""
        self.facts.pools.append(pool)

    @property
    def metrics_dir(self) -> str | None:
        """For the workers: where they write their files."""
        return None if self.directory is None else str(self.directory)

    def close(self) -> None:
        """Stop the endpoint and the control socket, write the last counts, remove the
        directory (every worker has stopped by now)."""
        install_facts(None)
        if self._endpoint is not None:
            self._endpoint.close()
            self._endpoint = None
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._files is not None:
            stop_recording(self._files)
            self._files = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
