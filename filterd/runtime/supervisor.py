"""The nursery tree: signals, the delivery's background work, listeners and connections.

```
root nursery
├── signal watcher (SIGTERM/SIGINT → graceful stop; a second one → stop now)
├── delivery background (the next-hop pool reaper)
└── connection nursery (deadline set on stop) ◀── accept nursery: one loop per listener
```
Stop: close the listeners, tell idle sessions 421, give sessions mid-message
``shutdown_grace`` to finish, then cancel them (their clients got no 250: nothing is lost).
"""

from __future__ import annotations

import signal
import ssl
import sys
from dataclasses import dataclass

import trio

from filterd.chain.build import build_chain
from filterd.chain.runner import ChainRunner
from filterd.config.schema import Config, ListenConfig, RelayDelivery
from filterd.delivery.interface import Delivery
from filterd.delivery.maildir import Maildir
from filterd.delivery.quarantine import QuarantineStore
from filterd.delivery.relay import Relay
from filterd.frontdoors.policy.service import PolicyHandler
from filterd.frontdoors.shutdown import Shutdown
from filterd.frontdoors.smtp.handler import SmtpHandler
from filterd.frontdoors.smtp.session import SessionSettings
from filterd.maillog import MailLog, setup_logging
from filterd.runtime.listeners import (
    ConnectionHandler,
    accept_loop,
    bound_address,
    remove_socket,
)
from filterd.runtime.startup import (
    EXIT_STARTUP,
    StartupError,
    check_before_serving,
    open_listeners,
)
from filterd.runtime.worker_pool import PolicyWorkers, WorkerStartError, policy_settings

log = MailLog("main")


def main(config: Config) -> int:
    """``filterd run``: serve until SIGTERM/SIGINT. Cannot start: one line, exit status 2."""
    setup_logging(config.log.level)
    _hold_stop_signals()
    try:
        check_before_serving(config)
        trio.run(serve, config)
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


def build_delivery(config: Config) -> Delivery | None:
    """The configured delivery; ``None`` when only milter and policy listeners need none."""
    delivery = config.delivery
    if isinstance(delivery, RelayDelivery):
        context = None
        if delivery.starttls != "never":
            context = ssl.create_default_context(
                cafile=str(delivery.tls_ca_file) if delivery.tls_ca_file else None
            )
            if not delivery.tls_verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        return Relay(delivery, context)
    return None if delivery is None else Maildir(delivery)


def server_ssl_context(listen: ListenConfig) -> ssl.SSLContext | None:
    if listen.tls_cert is None or listen.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(listen.tls_cert), str(listen.tls_key))
    return context


@dataclass
class ListenerInfo:
    config: ListenConfig
    address: str  # as bound (the real port when 0 was asked for)


async def serve(
    config: Config,
    *,
    chain: ChainRunner | None = None,
    shutdown: Shutdown | None = None,
    task_status: trio.TaskStatus[list[ListenerInfo]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve every configured listener until ``shutdown`` begins (or a stop signal)."""
    shutdown = shutdown or Shutdown()
    delivery = build_delivery(config)
    quarantine = QuarantineStore(config.quarantine.root)
    owns_chain = chain is None
    if chain is None:
        chain = build_chain(config)
    sockets = [listen for listen in config.listen if listen.protocol != "milter"]
    milters = [listen for listen in config.listen if listen.protocol == "milter"]
    listeners = await open_listeners(sockets)
    infos = [
        ListenerInfo(listen, bound_address(listener, listen.address))
        for listen, listener in zip(sockets, listeners, strict=True)
    ] + [ListenerInfo(listen, str(listen.address)) for listen in milters]
    for info in infos:
        log.plain(f"listening on {info.address} ({info.config.protocol})")
    try:
        async with trio.open_nursery() as root:
            root.start_soon(_watch_signals, shutdown, root.cancel_scope)
            if owns_chain:
                await chain.start()
            run = getattr(delivery, "run", None)
            if run is not None:
                root.start_soon(run)
            # Helper processes (policy workers) live in a nursery of their own, which ends
            # after the connections' and before ``root`` is cancelled: they are stopped while
            # the signals are still watched (a second one kills them).
            async with trio.open_nursery() as helpers:
                handlers: list[ConnectionHandler] = []
                for listen in sockets:
                    handler = _handler_for(listen, config, chain, delivery, quarantine, shutdown)
                    if listen.processes > 1 and isinstance(handler, PolicyHandler):
                        index = next(i for i, each in enumerate(config.listen) if each is listen)
                        workers = PolicyWorkers(listen, index, config, handler, shutdown)
                        await helpers.start(workers.run)
                        handler = workers
                    handlers.append(handler)
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
        for listen in config.listen:
            if listen.address.kind == "unix":
                remove_socket(listen.address.path)
        log.plain("stopped")


async def _serve_connections(
    config: Config,
    chain: ChainRunner,
    shutdown: Shutdown,
    listeners: list[trio.SocketListener],
    handlers: list[ConnectionHandler],
    milters: list[ListenConfig],
    task_status: trio.TaskStatus[list[ListenerInfo]],
    infos: list[ListenerInfo],
) -> None:
    """Accept until shutdown begins, then give sessions ``shutdown_grace`` to finish."""
    async with trio.open_nursery() as connections:
        for listen in milters:  # libmilter binds its own socket (one per process)
            await connections.start(_serve_milter, listen, config, chain, shutdown)
        async with trio.open_nursery() as accepting:
            for listener, handler in zip(listeners, handlers, strict=True):
                accepting.start_soon(accept_loop, listener, handler, connections)
            task_status.started(infos)
            await shutdown.event.wait()
            log.plain("stopping: no new connections; sessions in progress may finish")
            accepting.cancel_scope.cancel()
        for listener in listeners:
            await listener.aclose()
        connections.cancel_scope.deadline = trio.current_time() + config.limits.shutdown_grace


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


async def _serve_milter(
    listen: ListenConfig,
    config: Config,
    chain: ChainRunner,
    shutdown: Shutdown,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    # Imported here: pymilter is the optional ``milter`` extra.
    from filterd.frontdoors.milter.service import MilterSettings, serve_milter

    settings = MilterSettings.from_config(listen, config.limits)
    await serve_milter(chain, settings, shutdown=shutdown, task_status=task_status)


def _handler_for(
    listen: ListenConfig,
    config: Config,
    chain: ChainRunner,
    delivery: Delivery | None,
    quarantine: QuarantineStore,
    shutdown: Shutdown,
) -> ConnectionHandler:
    if listen.protocol == "policy":
        return PolicyHandler(chain, policy_settings(listen, config), shutdown)
    assert delivery is not None, "the configuration gives smtp and lmtp listeners a delivery"
    session = SessionSettings(listen, config.limits, server_ssl_context(listen))
    return SmtpHandler(session, chain, delivery, quarantine, shutdown)
