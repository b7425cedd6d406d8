"""The nursery tree: signals, generations (what one configuration serves with), listeners,
the milter service, reloads.

```
root nursery
├── signal watcher (SIGTERM/SIGINT → graceful stop, a second one → stop now; SIGHUP → reload)
├── systemd's watchdog pings (``sd_notify``; only with WatchdogSec=)
├── observing (metrics files, the control socket, the metrics endpoint), the quarantine's expiry
└── generations nursery: one Generation per configuration still serving (generation.py):
    │   its delivery's background work, its worker processes, its sessions (deadline on stop)
    └── doors nursery
        ├── accept loops, one per smtp/lmtp/policy socket (listener_set.py), each connection
        │   handed to the current generation
        ├── the milter service (libmilter on a thread of its own), across generations
        └── the reloader (reload.py): SIGHUP → a new generation, the old one retired
```
Before the tree: every socket is bound, then filterd becomes ``[run] user`` (``privileges``).
Serving: systemd is told READY=1 (``sd_notify``), RELOADING=1 and READY=1 around a reload.
Stop: STOPPING=1, close the listeners, tell idle sessions 421, give sessions mid-message
``shutdown_grace`` to finish, then cancel them (their clients got no 250: nothing is lost).
Workers stop the same way, told by end of file on their control sockets. The generations end
after the doors and before ``root`` is cancelled: the workers are stopped while the signals are
still watched (a second one kills them)."""

from __future__ import annotations

import signal
import sys
from functools import partial

import trio

from filterd.chain.runner import ChainRunner
from filterd.config.schema import Config
from filterd.delivery.quarantine import QuarantineStore, expire_periodically
from filterd.frontdoors.shutdown import Shutdown
from filterd.maillog import MailLog, setup_logging
from filterd.runtime.generation import Generation
from filterd.runtime.handlers import serve_milter_listener
from filterd.runtime.listener_set import ListenerInfo, ListenerSet, MilterDoor
from filterd.runtime.observing import Observing
from filterd.runtime.privileges import Privileges, plan_privileges
from filterd.runtime.reload import ConfigReader, Reloader, ReloadHooks
from filterd.runtime.sd_notify import (
    feed_watchdog,
    install_from_environment,
    notify_ready,
    notify_reloading,
    notify_stopping,
)
from filterd.runtime.startup import EXIT_STARTUP, StartupError, check_before_serving
from filterd.runtime.worker_pool import WorkerStartError

__all__ = ["ListenerInfo", "main", "serve"]

log = MailLog("main")


def main(
    config: Config, *, reread: ConfigReader | None = None, hooks: ReloadHooks | None = None
) -> int:
    """``filterd run``: serve until SIGTERM/SIGINT; SIGHUP reloads (``reread`` reads the file
    again, ``hooks`` are told where each reload starts and ends). Cannot start: one line, exit
    status 2."""
    setup_logging(config.log)
    _hold_stop_signals()
    install_from_environment()  # systemd's $NOTIFY_SOCKET: for this process only
    try:
        privileges = plan_privileges(config.run)
        check_before_serving(config, acting_as=privileges.acting_as)
        reloader = Reloader(reread, hooks or _SystemdReloadHooks())
        trio.run(partial(serve, config, reloader=reloader, observe=True, privileges=privileges))
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
_WATCHED = (*_STOP_SIGNALS, signal.SIGHUP)  # SIGHUP: reload
_early_signals: list[int] = []
"""Signals received before the signal watcher runs (during start-up)."""
_held: dict[int, signal._HANDLER] = {}
"""The watched signals' handlers from before ``_hold_stop_signals``."""


def _hold_stop_signals() -> None:
    """Until trio's watcher takes over, a stop signal (or SIGHUP) is remembered rather than
    fatal, so a SIGTERM during start-up is a graceful stop once serving begins, and a SIGHUP
    a reload."""
    _early_signals.clear()
    try:
        for signum in _WATCHED:
            _held[signum] = signal.signal(signum, lambda got, _: _early_signals.append(got))
    except ValueError:  # not the main thread
        pass


def _release_stop_signals() -> None:
    """Give the watched signals their handlers back (after the watcher, a third stop signal
    kills)."""
    while _held:
        signum, handler = _held.popitem()
        signal.signal(signum, handler)


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    leaves: list[BaseException] = []
    for exc in group.exceptions:
        leaves.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return leaves


async def serve(
    config: Config,
    *,
    chain: ChainRunner | None = None,
    shutdown: Shutdown | None = None,
    reloader: Reloader | None = None,
    task_status: trio.TaskStatus[list[ListenerInfo]] = trio.TASK_STATUS_IGNORED,
    observe: bool = False,
    privileges: Privileges | None = None,
) -> None:
    """Serve every configured listener until ``shutdown`` begins (or a stop signal); SIGHUP (or
    ``reloader.reload()``) reloads the configuration. ``chain``: the first configuration's
    chain, started and stopped by the caller. ``observe`` (``filterd run``): record metrics,
    answer the control socket, serve the metrics endpoint if configured
    (``filterd.runtime.observing``). ``privileges`` (``filterd run``): once every socket is
    bound (the milter one too), they get their owner and mode, and filterd becomes ``[run]
    user`` (``filterd.runtime.privileges``); sockets a reload binds later are bound as that
    user."""
    shutdown = shutdown or Shutdown()
    reloader = reloader or Reloader()
    observing = Observing(config) if observe else None
    listeners = await ListenerSet.bind(config)
    milter: MilterDoor | None = None
    try:
        milter = MilterDoor.of(config, bind=privileges is not None)
        if privileges is not None:
            for listen in config.listen:
                privileges.secure_socket(listen.address)
            privileges.drop()
        infos = listeners.infos + ([milter.info] if milter is not None else [])
        for info in infos:
            log.plain(f"listening on {info.address} ({info.config.protocol})")
        if privileges is not None:
            privileges.announce()
        if observing is not None:
            await observing.open()
        async with trio.open_nursery() as root:
            root.start_soon(_watch_signals, shutdown, root.cancel_scope, reloader)
            root.start_soon(feed_watchdog)  # systemd's WatchdogSec=, if set
            if observing is not None:
                observing.run(root)
            if config.quarantine.max_age is not None:
                quarantine = QuarantineStore(config.quarantine.root)
                root.start_soon(expire_periodically, quarantine, config.quarantine.max_age)
            async with trio.open_nursery() as generations:
                first = Generation(
                    config, 1, shutdown, chain=chain, milter=milter, observing=observing
                )
                await generations.start(first.run)
                listeners.generation = first
                reloader.attach(first, listeners, milter, generations, shutdown, observing)
                await _serve_doors(first, shutdown, listeners, milter, reloader, task_status)
            root.cancel_scope.cancel()
    finally:
        reloader.stop()
        listeners.close()  # (closed already, unless serving never began)
        if milter is not None:
            milter.close()
        if observing is not None:
            observing.close()
        log.plain("stopped")


async def _serve_doors(
    first: Generation,
    shutdown: Shutdown,
    listeners: ListenerSet,
    milter: MilterDoor | None,
    reloader: Reloader,
    task_status: trio.TaskStatus[list[ListenerInfo]],
) -> None:
    """Accept, and reload on request, until shutdown begins; then stop accepting (the
    generations give their sessions ``shutdown_grace``)."""
    async with trio.open_nursery() as doors:
        if milter is not None:  # libmilter accepts by itself (one per process)
            milter.bridge = await doors.start(
                partial(
                    serve_milter_listener,
                    milter.config,
                    first.config,
                    first.chain,
                    shutdown,
                    listening=milter.copy(),  # libmilter's own copy
                    tally=milter.tally,
                )
            )
        await doors.start(listeners.accept)
        doors.start_soon(reloader.run)
        infos = listeners.infos + ([milter.info] if milter is not None else [])
        task_status.started(infos)
        notify_ready(_serving(infos))
        await shutdown.event.wait()
        notify_stopping()
        log.plain("stopping: no new connections; sessions in progress may finish")
        reloader.stop()
        await listeners.stop()
        if milter is not None:
            milter.stop_accepting()


def _serving(infos: list[ListenerInfo]) -> str:
    """systemd's STATUS= line once serving."""
    listeners = ", ".join(f"{info.address} ({info.config.protocol})" for info in infos)
    return f"serving {listeners}"


class _SystemdReloadHooks:
    """systemd is told where a reload starts and ends (RELOADING=1, then READY=1)."""

    def reload_begins(self) -> None:
        notify_reloading()

    def reload_ends(self, applied: bool) -> None:
        notify_ready("serving (configuration reloaded)" if applied else "serving (reload refused)")


async def _watch_signals(shutdown: Shutdown, root: trio.CancelScope, reloader: Reloader) -> None:
    try:
        receiver = trio.open_signal_receiver(*_WATCHED)
    except ValueError:  # not the main thread (embedded in tests): no signal handling
        return
    try:
        with receiver as signals:
            early, _early_signals[:] = list(_early_signals), []
            for signum in early:
                if _on_signal(signum, shutdown, root, reloader):
                    return
            async for signum in signals:
                if _on_signal(signum, shutdown, root, reloader):
                    return
    finally:
        _release_stop_signals()  # the receiver put back the start-up handler: undo that too


def _on_signal(signum: int, shutdown: Shutdown, root: trio.CancelScope, reloader: Reloader) -> bool:
    """SIGHUP asks for a reload; a stop signal stops (True: done watching)."""
    if signum != signal.SIGHUP:
        return _on_stop_signal(signum, shutdown, root)
    if shutdown.stopping:
        log.plain("signal SIGHUP: stopping, no reload")
    else:
        log.plain("signal SIGHUP: reload")
        reloader.request()
    return False


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
