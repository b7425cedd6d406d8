"""Everything built from one configuration, from the moment it serves until its last session
has ended: a ``Generation``.

filterd serves generation 1 from start-up; each reload that is accepted starts the next and
retires the one before. A generation has its own chain (its plugins started once and stopped
once), its own delivery and quarantine store behind smtp and lmtp listeners, a connection
handler for each smtp, lmtp and policy listener, and the worker processes of each listener with
``processes`` > 1 (a new pool each time: see ``worker_pool``). The listening sockets are not its
own: they outlive generations (``filterd.runtime.listener_set``), and a connection accepted on one
goes to the generation then current (``dispatch``), in whose nursery it runs to its end.

Retired (``retire``), a generation takes no new connection; its sessions go on with its chain to
their natural end (no 421, no deadline: as Postfix's daemons finish their client after ``postfix
reload``), its worker processes drain, the milter connections that run its chain close in their
own time; then its chain stops. Its delivery keeps no idle next-hop connection from the moment it
is retired (each transaction of its remaining sessions opens and closes its own), so reloads do
not add up idle connections to the next hop (whose ``maxproc`` they would use up). A stop
retires every generation at once, with ``shutdown_grace`` for the sessions in progress, as
before.

```
Generation.run
├── background: the delivery's background work (the next-hop pool reaper); the grace on stop
└── processes: the worker pools of its listeners (retired with it: they drain)
    └── connections: its sessions in this process, and the wait for the milter connections
        that still run its chain
```
"""

from __future__ import annotations

import trio

from filterd.chain.build import build_chain
from filterd.chain.runner import ChainRunner
from filterd.config.schema import Config
from filterd.delivery.quarantine import QuarantineStore
from filterd.errors import FilterdError
from filterd.frontdoors.closing import CLOSE_TIMEOUT
from filterd.frontdoors.milter.bridge import MilterChain
from filterd.frontdoors.shutdown import Shutdown
from filterd.runtime.handlers import build_delivery, handler_for
from filterd.runtime.listener_set import MilterDoor, listener_keys
from filterd.runtime.listeners import ConnectionHandler, start_connection
from filterd.runtime.observing import Observing
from filterd.runtime.worker_pool import SpreadConnections, WorkerPool

__all__ = ["ChainStartError", "Generation"]


class ChainStartError(FilterdError):
    """A plugin's ``start`` failed: the generation cannot serve."""


class Generation:
    """What one configuration serves with. Built (the chain's plugins loaded and configured:
    ``ConfigError`` naming file and line), then ``run`` in a nursery: ready once its plugins have
    started and its worker processes are ready."""

    def __init__(
        self,
        config: Config,
        number: int,
        shutdown: Shutdown,
        *,
        chain: ChainRunner | None = None,
        milter: MilterDoor | None = None,
        observing: Observing | None = None,
    ) -> None:
        self.config = config
        self.number = number  # 1 at start-up, then one more for each reload applied
        self.shutdown = shutdown
        self.owns_chain = chain is None  # a chain given by the caller is started by it
        self.chain = build_chain(config) if chain is None else chain
        self.delivery = build_delivery(config)
        self.quarantine = QuarantineStore(config.quarantine.root)
        self.milter = milter
        self.observing = observing  # metrics: its worker processes record too
        self.milter_chain: MilterChain | None = None  # its milter chain, once a reload swapped it
        self.handlers: dict[str, ConnectionHandler] = {}
        self.pools: list[WorkerPool] = []
        self._connections: trio.Nursery | None = None
        self._retired = trio.Event()

    @property
    def labels(self) -> list[str]:
        """The chain's entries, in order (for the log)."""
        return [entry.label for entry in self.chain.entries]

    def dispatch(self, key: str, stream: trio.SocketStream) -> None:
        """Serve a connection accepted on the listener named ``key`` (``listener_keys``)."""
        assert self._connections is not None, "dispatch only to a running generation"
        start_connection(self.handlers[key], stream, connections=self._connections)

    def retire(self) -> None:
        """No new connection comes (the caller routes them elsewhere first): let the sessions
        finish, the workers drain, then stop the chain and close the delivery."""
        self._retired.set()

    async def wait_taking_nothing(self) -> None:
        """Once retired: until none of its worker processes accepts a new connection (a milter
        worker's libmilter accepts by itself until it has parked its listener)."""
        for pool in self.pools:
            await pool.wait_taking_nothing()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the plugins, the delivery's background work and the worker processes (ready:
        ``task_status.started()``; a failure before is raised to the caller, and what had
        started is stopped); serve until retired and every session has ended."""
        try:
            async with trio.open_nursery() as background:
                if self.owns_chain:
                    await self._start_chain()
                run = getattr(self.delivery, "run", None)
                if run is not None:
                    background.start_soon(run)
                async with trio.open_nursery() as processes:
                    await self._start_handlers(processes)
                    async with trio.open_nursery() as connections:
                        self._connections = connections
                        background.start_soon(self._grace_on_stop, connections.cancel_scope)
                        task_status.started()
                        await self._retired.wait()
                        if not self.shutdown.stopping:  # a stop ends the workers itself
                            for pool in self.pools:
                                pool.retire()
                        if self.delivery is not None:  # no idle next-hop connection left
                            await self.delivery.aclose()
                        if self.milter_chain is not None:
                            connections.start_soon(self.milter_chain.drained.wait)
                background.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
                if self.delivery is not None:
                    await self.delivery.aclose()
                if self.owns_chain:
                    await self.chain.stop()

    async def _start_chain(self) -> None:
        try:
            await self.chain.start()
        except Exception as exc:
            text = str(exc)
            why = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
            raise ChainStartError(f"a plugin did not start: {why}") from exc

    async def _start_handlers(self, processes: trio.Nursery) -> None:
        """A handler for each smtp, lmtp and policy listener, and the worker processes of
        every listener with several (all ready when this returns)."""
        config = self.config
        sockets = [listen for listen in config.listen if listen.protocol != "milter"]
        for index, listen in enumerate(config.listen):
            if listen.protocol == "milter" and listen.process_count > 1:
                assert self.milter is not None, "the milter door of this listener"
                pool = WorkerPool(
                    listen,
                    index,
                    config,
                    self.shutdown,
                    listening=self.milter.copy(),  # the pool's own copy
                    tally=self.milter.tally,
                    slots=self.milter.slots,
                    metrics_dir=self._metrics_dir(),
                )
                self._add_pool(pool)
                await processes.start(pool.run)
        for key, listen in zip(listener_keys(sockets), sockets, strict=True):
            handler = handler_for(
                listen, config, self.chain, self.delivery, self.quarantine, self.shutdown
            )
            if listen.process_count > 1:
                index = next(i for i, each in enumerate(config.listen) if each is listen)
                pool = WorkerPool(
                    listen, index, config, self.shutdown, metrics_dir=self._metrics_dir()
                )
                self._add_pool(pool)
                await processes.start(pool.run)
                self.handlers[key] = SpreadConnections(pool, handler)
            else:
                self.handlers[key] = handler

    def _metrics_dir(self) -> str | None:
        return self.observing.metrics_dir if self.observing is not None else None

    def _add_pool(self, pool: WorkerPool) -> None:
        self.pools.append(pool)
        if self.observing is not None:
            self.observing.watch(pool)

    async def _grace_on_stop(self, connections: trio.CancelScope) -> None:
        """A stop retires this generation too, and gives its sessions ``shutdown_grace``."""
        await self.shutdown.event.wait()
        deadline = trio.current_time() + self.config.limits.shutdown_grace
        connections.deadline = min(connections.deadline, deadline)
        self._retired.set()
