"""The nursery tree: signals, the delivery's background work, worker processes, listeners and
connections.

```
root nursery
├── signal watcher (SIGTERM/SIGINT → graceful stop; a second one → stop now)
├── systemd's watchdog pings (``sd_notify``; only with WatchdogSec=)
├── delivery background (the next-hop pool reaper), the quarantine's expiry
└── workers nursery: the worker processes of each listener with processes > 1 (worker_pool)
    └── connection nursery (deadline set on stop) ◀── accept nursery: one loop per listener
        └── the milter service (libmilter on a thread of its own)
```
Before the tree: every socket is bound, then filterd becomes ``[run] user`` (``privileges``).
Serving: systemd is told READY=1 (``sd_notify``). Stop: STOPPING=1, close the listeners, tell
idle sessions 421, give sessions mid-message ``shutdown_grace`` to finish, then cancel them
(their clients got no 250: nothing is lost). Workers stop the same way, told by end of file on
their control sockets."""

from __future__ import annotations

import signal
import socket
import sys
from dataclasses import dataclass
from functools import partial

import trio

from filterd.chain.build import build_chain
from filterd.chain.runner import ChainRunner
from filterd.config.schema import MAX_PROCESSES, Config, ListenConfig
from filterd.delivery.quarantine import QuarantineStore, expire_periodically
from filterd.frontdoors.shutdown import Shutdown
from filterd.maillog import MailLog, setup_logging
from filterd.runtime.handlers import build_delivery, handler_for, serve_milter_listener
from filterd.runtime.listeners import (
    ConnectionHandler,
    accept_loop,
    bound_address,
    remove_socket,
)
from filterd.runtime.observing import Observing
from filterd.runtime.privileges import Privileges, plan_privileges
from filterd.runtime.sd_notify import (
    feed_watchdog,
    install_from_environment,
    notify_ready,
    notify_stopping,
)
from filterd.runtime.startup import (
    EXIT_STARTUP,
    StartupError,
    check_before_serving,
    open_listeners,
    open_milter_socket,
)
from filterd.runtime.tally import SharedTally
from filterd.runtime.worker_pool import SpreadConnections, WorkerPool, WorkerStartError

log = MailLog("main")


def main(config: Config) -> int:
    """``filterd run``: serve until SIGTERM/SIGINT. Cannot start: one line, exit status 2."""
    setup_logging(config.log)
    _hold_stop_signals()
    install_from_environment()  # systemd's $NOTIFY_SOCKET: for this process only
    try:
        privileges = plan_privileges(config.run)
        check_before_serving(config, acting_as=privileges.acting_as)
        trio.run(partial(serve, config, observe=True, privileges=privileges))
    except StartupError as exc:
        print(f"filterd: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    except KeyboardInterrupt:
        return 130
    except WorkerStartError as exc:
        print(f"filterd: cannot start: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    except BaseExceptionGroup as group:
        matched, rest = group.split(WorkerStartError)
        if matched is None:
            raise
        for error in _leaves(matched):
            print(f"filterd: cannot start: {error}", file=sys.stderr)
        if rest is not None:
            raise rest from None
        return EXIT_STARTUP
    finally:
        _release_stop_signals()
    return 0


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_early_signals: list[int] = []
"""Stop signals received before the signal watcher runs (during start-up)."""
_held: dict[int, signal._HANDLER] = {}
"""The stop signals' handlers from before ``_hold_stop_signals``."""


def _hold_stop_signals() -> None:
    """Until trio's watcher takes over, a stop signal is remembered rather than fatal, so a
    SIGTERM during start-up is a graceful stop once serving begins."""
    _early_signals.clear()
    try:
        for signum in _STOP_SIGNALS:
            _held[signum] = signal.signal(signum, lambda got, _: _early_signals.append(got))
    except ValueError:  # not the main thread
        pass


def _release_stop_signals() -> None:
    """Give the stop signals their handlers back (after the watcher, a third signal kills)."""
    while _held:
        signum, handler = _held.popitem()
        signal.signal(signum, handler)


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    leaves: list[BaseException] = []
    for exc in group.exceptions:
        leaves.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return leaves


@dataclass
class ListenerInfo:
    config: ListenConfig
    address: str  # as bound (the real port when 0 was asked for)


@dataclass
class MilterDoor:
    """A milter listener: with several processes, the socket they all accept from (bound here)
    and their shared connection count; with one, libmilter binds the address itself."""

    config: ListenConfig
    listening: socket.socket | None = None
    tally: SharedTally | None = None

    def close(self) -> None:
        if self.listening is not None:
            self.listening.close()
        if self.tally is not None:
            self.tally.close()


async def serve(
    config: Config,
    *,
    chain: ChainRunner | None = None,
    shutdown: Shutdown | None = None,
    task_status: trio.TaskStatus[list[ListenerInfo]] = trio.TASK_STATUS_IGNORED,
    observe: bool = False,
    privileges: Privileges | None = None,
) -> None:
    """Serve every configured listener until ``shutdown`` begins (or a stop signal).
    ``observe`` (``filterd run``): record metrics, answer the control socket, serve the
    metrics endpoint if configured (``filterd.runtime.observing``). ``privileges``
    (``filterd run``): once every socket is bound (milter ones too), they get their owner and
    mode, and filterd becomes ``[run] user`` (``filterd.runtime.privileges``)."""
    shutdown = shutdown or Shutdown()
    delivery = build_delivery(config)
    quarantine = QuarantineStore(config.quarantine.root)
    owns_chain = chain is None
    if chain is None:
        chain = build_chain(config)
    sockets = [listen for listen in config.listen if listen.protocol != "milter"]
    milters = [MilterDoor(listen) for listen in config.listen if listen.protocol == "milter"]
    observing = Observing(config) if observe else None
    listeners = await open_listeners(sockets)
    try:
        for door in milters:
            if door.config.process_count > 1 or privileges is not None:
                door.listening = open_milter_socket(door.config.address)
            if door.config.process_count > 1:
                door.tally = SharedTally.create(MAX_PROCESSES)  # a slot for any worker
        if privileges is not None:
            for listen in config.listen:
                privileges.secure_socket(listen.address)
            privileges.drop()
        infos = [
            ListenerInfo(listen, bound_address(listener, listen.address))
            for listen, listener in zip(sockets, listeners, strict=True)
        ] + [ListenerInfo(door.config, str(door.config.address)) for door in milters]
        for info in infos:
            log.plain(f"listening on {info.address} ({info.config.protocol})")
        if privileges is not None:
            privileges.announce()
        if observing is not None:
            await observing.open()
        async with trio.open_nursery() as root:
            root.start_soon(_watch_signals, shutdown, root.cancel_scope)
            root.start_soon(feed_watchdog)  # systemd's WatchdogSec=, if set
            if observing is not None:
                observing.run(root)
            if owns_chain:
                await chain.start()
            run = getattr(delivery, "run", None)
            if run is not None:
                root.start_soon(run)
            if config.quarantine.max_age is not None:
                root.start_soon(expire_periodically, quarantine, config.quarantine.max_age)
            # Worker processes live in a nursery of their own, which ends after the
            # connections' and before ``root`` is cancelled: they are stopped while the
            # signals are still watched (a second one kills them).
            async with trio.open_nursery() as helpers:
                handlers: list[ConnectionHandler] = []
                for listen in sockets:
                    handler = handler_for(listen, config, chain, delivery, quarantine, shutdown)
                    if listen.process_count > 1:
                        pool = WorkerPool(
                            listen,
                            _index(config, listen),
                            config,
                            shutdown,
                            metrics_dir=observing.metrics_dir if observing else None,
                        )
                        if observing is not None:
                            observing.watch(pool)
                        await helpers.start(pool.run)
                        handlers.append(SpreadConnections(pool, handler))
                    else:
                        handlers.append(handler)
                for door in milters:
                    if door.listening is not None and door.config.process_count > 1:
                        pool = WorkerPool(
                            door.config,
                            _index(config, door.config),
                            config,
                            shutdown,
                            listening=door.listening.dup(),  # the pool's own copy
                            tally=door.tally,
                            metrics_dir=observing.metrics_dir if observing else None,
                        )
                        if observing is not None:
                            observing.watch(pool)
                        await helpers.start(pool.run)
                await _serve_connections(
                    config, chain, shutdown, listeners, handlers, milters, task_status, infos
                )
            root.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            if delivery is not None:
                await delivery.aclose()
            if owns_chain:
                await chain.stop()
        for listener in listeners:
            listener.socket.close()  # (closed already, unless serving never began)
        for door in milters:
            door.close()
        for listen in config.listen:
            if listen.address.kind == "unix":
                remove_socket(listen.address.path)
        if observing is not None:
            observing.close()
        log.plain("stopped")


def _index(config: Config, listen: ListenConfig) -> int:
    """The listener's position in ``config.listen`` (how a worker finds it)."""
    return next(i for i, each in enumerate(config.listen) if each is listen)


async def _serve_connections(
    config: Config,
    chain: ChainRunner,
    shutdown: Shutdown,
    listeners: list[trio.SocketListener],
    handlers: list[ConnectionHandler],
    milters: list[MilterDoor],
    task_status: trio.TaskStatus[list[ListenerInfo]],
    infos: list[ListenerInfo],
) -> None:
    """Accept until shutdown begins, then give sessions ``shutdown_grace`` to finish."""
    async with trio.open_nursery() as connections:
        for door in milters:  # libmilter accepts by itself (one per process)
            # It takes ``listening`` over: the main process holds no other copy from then on.
            listening, door.listening = door.listening, None
            await connections.start(
                partial(
                    serve_milter_listener,
                    door.config,
                    config,
                    chain,
                    shutdown,
                    listening=listening,
                    tally=door.tally,
                )
            )
        async with trio.open_nursery() as accepting:
            for listener, handler in zip(listeners, handlers, strict=True):
                accepting.start_soon(accept_loop, listener, handler, connections)
            task_status.started(infos)
            notify_ready(_serving(infos))
            await shutdown.event.wait()
            notify_stopping()
            log.plain("stopping: no new connections; sessions in progress may finish")
            accepting.cancel_scope.cancel()
        for listener in listeners:
            await listener.aclose()
        connections.cancel_scope.deadline = trio.current_time() + config.limits.shutdown_grace


def _serving(infos: list[ListenerInfo]) -> str:
    """systemd's STATUS= line once serving."""
    listeners = ", ".join(f"{info.address} ({info.config.protocol})" for info in infos)
    return f"serving {listeners}"


async def _watch_signals(shutdown: Shutdown, root: trio.CancelScope) -> None:
    try:
        receiver = trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT)
    except ValueError:  # not the main thread (embedded in tests): no signal handling
        return
    try:
        with receiver as signals:
            early, _early_signals[:] = list(_early_signals), []
            for signum in early:
                if _on_stop_signal(signum, shutdown, root):
                    return
            async for signum in signals:
                if _on_stop_signal(signum, shutdown, root):
                    return
    finally:
        _release_stop_signals()  # the receiver put back the start-up handler: undo that too


def _on_stop_signal(signum: int, shutdown: Shutdown, root: trio.CancelScope) -> bool:
    """The first stop signal begins a graceful stop; a second stops now (True: done)."""
    name = signal.Signals(signum).name
    if shutdown.stopping:
        log.plain(f"signal {name} again: stopping now")
        shutdown.now.set()
        root.cancel()
        return True
    log.plain(f"signal {name}: graceful stop")
    shutdown.begin()
    return False
