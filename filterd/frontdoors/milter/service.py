"""The milter front door: Postfix's ``smtpd_milters`` talks to libmilter (via pymilter) in this
process; a callback hops into trio only to run a chain stage that some plugin implements
(option C in docs/architecture.md, "The milter front door", with the reasons).

```
trio thread                                  libmilter threads (one per MTA connection here;
                                             a connection's callbacks run one at a time)
serve_milter ── starts ──▶ "libmilter" thread: smfi_main()
MilterBridge._call ◀─ trio.from_thread.run ─ FilterdMilter: connect/hello/envfrom/envrcpt/eom/
   deadline (budget), the chain stage          close, each only if a plugin implements its stage
                                             the model, the spool, the counters: no hop
```
The door's modules: ``bridge`` (what the threads share with trio: the hop, the counters, the
settings), ``connection`` and ``callbacks`` (one MTA connection: how its steps are answered,
what each does), ``message`` (the message in progress and its end), and this one: libmilter's
lifecycle — register the callbacks, listen, run ``smfi_main`` on a thread of its own, stop.

**Shutdown**: trio owns SIGTERM/SIGINT (libmilter blocks them in its threads; the supervisor's
signal watcher gets them) and stops libmilter's listener at once (``_stop_listener``: left to
itself, it would notice the stop only at the end of its current 5 s wait); from then on a new
connection is refused, so Postfix applies its ``milter_default_action`` (``tempfail`` keeps the
mail queued; ``accept`` lets it through unfiltered). Messages in progress get
``shutdown_grace`` to reach end of message (a second signal ends it); a hop that finds trio
gone or going answers TEMPFAIL — never ACCEPT — so nothing is lost.

**Several processes** (``processes = N``): each process runs its own libmilter, and all of them
accept from one listening socket, which the main process binds (non-blocking) and passes to its
workers. libmilter cannot be given a socket: it binds its own (``mi_milteropen``) and keeps it
in a static ``listenfd``, which its listener polls (5 s at a time) and accepts from, taking
EAGAIN as "try again". So ``_listen_on`` lets libmilter open a throwaway socket of the same
address family (TCP port 0 on the same host, or a unix socket in a private temporary
directory), finds its descriptor (the one new listening socket in ``/proc/self/fd``) and puts
the shared socket in its place with ``dup2``. A connection wakes every process's poll; one
accepts it, the others get EAGAIN and wait again; each process answers the connections it
accepted. The quick stop still works in each process: a wake-up connection to the shared socket
wakes every poll, and a process whose stop flag is set leaves its loop (one that is not stopping
and accepts the connection reads end of file before any command: nothing runs).
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import tempfile
import threading

import Milter
import milter
import trio

from filterd.chain.runner import ChainRunner
from filterd.config.types import Endpoint
from filterd.frontdoors.milter.bridge import ConnectionTally, MilterBridge, MilterSettings
from filterd.frontdoors.milter.callbacks import FilterdMilter
from filterd.frontdoors.shutdown import Shutdown
from filterd.maillog import MailLog
from filterd.protocols.milter_map import libmilter_socket

__all__ = ["MilterSettings", "serve_milter"]

log = MailLog("milter")

MILTER_NAME = "filterd"
# Every modification Postfix >= 2.6 implements; negotiation keeps what the MTA offers.
ACTION_FLAGS = (
    milter.ADDHDRS
    | milter.CHGHDRS
    | milter.CHGBODY
    | milter.ADDRCPT
    | milter.ADDRCPT_PAR
    | milter.DELRCPT
    | milter.CHGFROM
    | milter.QUARANTINE
)
LIBMILTER_SIGNALS = {signal.SIGHUP, signal.SIGTERM, signal.SIGINT}  # its signal thread's
LIBMILTER_TOOK_SIGNAL = (
    "libmilter stopped by itself: its signal thread took a stop or reload signal meant for "
    "filterd; exiting with status 1 so that the service manager restarts filterd"
)
STOP_JOIN_TIMEOUT = 15.0  # libmilter's thread, once its listener stopped
WAKE_INTERVAL = 0.02  # before each connection that wakes libmilter's listener
WAKE_TIMEOUT = 1.0  # for one such connection
DRAIN_POLL = 0.05  # while a drain waits for accepted sockets that have no callback yet


def _register(bridge: MilterBridge, listening: socket.socket | None) -> int | None:
    """What ``Milter.runmilter`` does before ``milter.main()``, done on the trio thread so a
    bad address or a port in use fails start-up (and the socket is listening once this
    returns). With ``listening``, libmilter accepts from that socket instead of binding the
    address; the descriptor it polls is returned (a drain parks it: ``_Parking``)."""
    settings = bridge.settings
    Milter.factory = functools.partial(FilterdMilter, bridge)
    milter.set_flags(ACTION_FLAGS)
    milter.set_connect_callback(Milter.connect_callback)
    milter.set_helo_callback(lambda ctx, host: ctx.getpriv().hello(host))
    milter.set_envfrom_callback(lambda ctx, *b: ctx.getpriv().envfrom_bytes(*b))
    milter.set_envrcpt_callback(lambda ctx, *b: ctx.getpriv().envrcpt_bytes(*b))
    # header() takes the raw bytes (@Milter.decode("bytes")): no detour through header_bytes.
    milter.set_header_callback(lambda ctx, f, v: ctx.getpriv().header(f, v))
    milter.set_eoh_callback(lambda ctx: ctx.getpriv().eoh())
    milter.set_body_callback(lambda ctx, chunk: ctx.getpriv().body(chunk))
    milter.set_eom_callback(lambda ctx: ctx.getpriv().eom())
    milter.set_abort_callback(lambda ctx: ctx.getpriv().abort())
    milter.set_close_callback(Milter.close_callback)
    milter.settimeout(settings.mta_timeout)
    if listening is None:
        milter.setconn(settings.socket)
        _register_callbacks()
        milter.opensocket(True)  # True: remove a stale unix socket first
        return None
    return _listen_on(listening, settings.address)


def _register_callbacks() -> None:
    milter.register(
        MILTER_NAME,
        data=lambda ctx: ctx.getpriv().data(),
        unknown=lambda ctx, cmd: ctx.getpriv().unknown(cmd),
        negotiate=Milter.negotiate_callback,
    )


def _listen_on(listening: socket.socket, address: Endpoint) -> int:
    """Make libmilter accept from ``listening`` (bound to ``address`` by the main process):
    let it open a throwaway socket of the same family, then put ``listening`` in its place.
    Returns the descriptor libmilter polls."""
    with tempfile.TemporaryDirectory(prefix="filterd-milter-") as private:
        milter.setconn(libmilter_socket(_throwaway(address, private)))
        _register_callbacks()
        before = _socket_descriptors()
        milter.opensocket(True)
        fd = _new_listening_socket(before, listening.family)
        os.dup2(listening.fileno(), fd, inheritable=False)  # the throwaway closes
    # Its unix path is gone with the directory: libmilter's stop (mi_closener) finds nothing
    # to remove, and never removes the real path.
    return fd


def _throwaway(address: Endpoint, private: str) -> Endpoint:
    """A socket address of ``address``'s family that nobody else uses: TCP port 0 on the same
    host, or a unix socket in the private directory ``private``."""
    if address.kind == "unix":
        return Endpoint("unix", path=os.path.join(private, "throwaway"))
    return Endpoint("tcp", host=address.host, port=0)


class _Parking:
    """A drain takes libmilter's listener off the shared socket without stopping libmilter:
    a listening socket that nobody connects to goes in place of the shared one, under the
    descriptor libmilter polls (``dup2``). Its engine goes on serving every connection it has
    accepted — stopping it instead (``smfi_stop``) would drop one accepted in that instant,
    unanswered — and a poll of the shared socket still in progress ends in an accept that finds
    nothing (non-blocking: EAGAIN, and libmilter polls again). Once drained, libmilter is
    stopped as usual, woken through the parking socket (``address``)."""

    def __init__(self, fd: int, shared: Endpoint) -> None:
        self._private = tempfile.TemporaryDirectory(prefix="filterd-milter-")
        where = _throwaway(shared, self._private.name)
        if where.kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(where.path)
        else:
            family = socket.AF_INET6 if ":" in where.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.bind((where.host, 0))
        with sock:
            sock.listen(socket.SOMAXCONN)
            sock.setblocking(False)
            self.address = where
            if where.kind == "tcp":
                self.address = Endpoint("tcp", host=where.host, port=sock.getsockname()[1])
            os.dup2(sock.fileno(), fd, inheritable=False)

    def close(self) -> None:
        self._private.cleanup()


def _socket_descriptors() -> set[int]:
    found: set[int] = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                found.add(int(name))
        except OSError:  # closed meanwhile (listdir's own descriptor, another thread's)
            continue
    return found


def _new_listening_socket(before: set[int], family: int) -> int:
    """The descriptor of the socket libmilter just opened: the one listening socket of
    ``family`` that was not there ``before``."""
    found: list[int] = []
    for fd in sorted(_socket_descriptors() - before):
        try:
            with socket.socket(fileno=os.dup(fd)) as probe:
                if probe.family == family and probe.getsockopt(
                    socket.SOL_SOCKET, socket.SO_ACCEPTCONN
                ):
                    found.append(fd)
        except OSError:
            continue
    if len(found) != 1:
        raise RuntimeError(f"cannot tell libmilter's listening socket: {len(found)} candidates")
    return found[0]


def _accepted_sockets(address: Endpoint) -> int:
    """MTA connections this process has accepted from the milter socket and not closed: the
    sockets whose own address is the listener's and that do not listen themselves."""
    count = 0
    for fd in _socket_descriptors():
        try:
            with socket.socket(fileno=os.dup(fd)) as probe:
                if probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                    continue
                name = probe.getsockname()
        except OSError:  # closed meanwhile
            continue
        if address.kind == "unix":
            count += name == address.path
        else:
            count += isinstance(name, tuple) and name[1] == address.port
    return count


async def _stop_listener(address: Endpoint) -> None:
    """Stop libmilter's listener now, not at the end of its current wait.

    The listener's loop (sendmail's libmilter/listener.c, ``mi_listener``) reads the stop flag
    only between two waits for a connection of up to MI_CHK_TIME (5 s), and it holds its lock
    while it waits. ``milter.stop()`` (``smfi_stop`` → ``mi_stop_milters``) sets the flag, then
    takes that lock to close the socket: it blocks until the wait ends. So it runs on a worker
    thread, and a connection to the listener ends the wait: the listener accepts it (a session
    thread reads EOF before any command; pymilter's close callback finds no ``FilterdMilter``:
    nothing runs), reads the flag, stops and closes its socket. A connection that comes before
    the flag is set only starts another wait, so one is made every ``WAKE_INTERVAL`` until
    ``milter.stop()`` returns or the listener refuses (gone)."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_wake_listener, address)
        await trio.to_thread.run_sync(milter.stop)
        nursery.cancel_scope.cancel()


async def _wake_listener(address: Endpoint) -> None:
    while True:
        await trio.sleep(WAKE_INTERVAL)  # first: the worker thread sets the stop flag
        with trio.move_on_after(WAKE_TIMEOUT):
            try:
                if address.kind == "unix":
                    stream = await trio.open_unix_socket(address.path)
                else:
                    stream = await trio.open_tcp_stream(address.host, address.port)
            except OSError:
                return  # the listener is gone: nothing left to wake
            await stream.aclose()


async def serve_milter(
    chain: ChainRunner,
    settings: MilterSettings,
    *,
    shutdown: Shutdown | None = None,
    listening: socket.socket | None = None,
    tally: ConnectionTally | None = None,
    drain: trio.Event | None = None,
    parked: trio.Event | None = None,
    task_status: trio.TaskStatus[MilterBridge] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve Postfix's milter client on ``settings.socket`` until ``shutdown`` begins (forever
    without one). Only one per process: libmilter cannot run twice. The caller owns the
    chain's start/stop; it gets the bridge (``task_status``), where a reload swaps the chain.
    With several processes, ``listening`` is the socket they all accept from (this takes it
    over: closed once libmilter has its own copy) and ``tally`` their shared connection count.

    ``drain`` (a worker process replaced by a reload, with ``listening``): once set, libmilter
    takes no new connection (``_Parking``; then ``parked`` is set), and the service ends when its
    last connection has closed, however long that takes; a stop meanwhile ends it as usual."""
    shutdown = shutdown or Shutdown()
    token = trio.lowlevel.current_trio_token()
    bridge = MilterBridge(chain, settings, shutdown, token, tally)
    try:
        polled = _register(bridge, listening)
    finally:
        if listening is not None:
            listening.close()
    ended = trio.Event()
    failure: list[BaseException] = []

    def run_libmilter() -> None:
        # Before smfi_main blocks them itself: a stop signal or SIGHUP aimed at this thread in
        # that instant could be handed on to libmilter's own signal thread, which would stop
        # libmilter; blocked here, they go to trio's thread.
        signal.pthread_sigmask(signal.SIG_BLOCK, LIBMILTER_SIGNALS)
        try:
            milter.main()
        except BaseException as exc:
            failure.append(exc)
        try:
            trio.from_thread.run_sync(ended.set, trio_token=bridge.token)
        except trio.RunFinishedError:
            pass

    thread = threading.Thread(target=run_libmilter, name="libmilter", daemon=True)
    thread.start()
    log.plain(f"milter listening on {settings.socket}")
    task_status.started(bridge)
    parking: _Parking | None = None
    drained = False
    try:
        async with trio.open_nursery() as waiting:

            async def until_stop() -> None:
                await shutdown.event.wait()
                waiting.cancel_scope.cancel()

            async def until_ended() -> None:
                await ended.wait()
                waiting.cancel_scope.cancel()

            async def until_drained() -> None:
                nonlocal parking, drained
                assert drain is not None
                assert polled is not None, "only a process of several drains"
                await drain.wait()
                parking = _Parking(polled, settings.address)
                if parked is not None:
                    parked.set()
                log.plain("milter: no new connections; those open go on to their end")
                # A connection libmilter accepted has no callback yet until the MTA's first
                # command: count the accepted sockets too, not only the connections attached.
                while True:
                    await bridge.wait_for_connections()
                    if _accepted_sockets(settings.address) == 0 and bridge.attached == 0:
                        break
                    await trio.sleep(DRAIN_POLL)
                drained = True
                waiting.cancel_scope.cancel()

            waiting.start_soon(until_stop)
            waiting.start_soon(until_ended)
            if drain is not None:
                waiting.start_soon(until_drained)
        if not (shutdown.stopping or drained):
            if failure:
                raise RuntimeError(f"libmilter stopped unexpectedly: {failure}")
            # libmilter stops by itself only when its own signal thread took a SIGTERM, SIGINT
            # or SIGHUP meant for filterd (sigwait there can win the signal from trio's thread
            # when that thread has another signal pending): exit non-zero, so that the service
            # manager restarts filterd (a reload) or records the stop.
            raise RuntimeError(LIBMILTER_TOOK_SIGNAL)
    finally:
        with trio.CancelScope(shield=True):
            await _stop_listener(settings.address if parking is None else parking.address)
            if parking is not None:
                parking.close()
            with trio.move_on_after(settings.shutdown_grace) as grace:
                async with trio.open_nursery() as draining:  # a second signal cuts the grace

                    async def until_now() -> None:
                        await shutdown.now.wait()
                        grace.cancel()

                    draining.start_soon(until_now)
                    await bridge.wait_for_messages()
                    draining.cancel_scope.cancel()
            if grace.cancelled_caught or shutdown.now.is_set():
                log.warning(f"{bridge.in_progress()} milter message(s) still open after the grace")
            await trio.to_thread.run_sync(thread.join, STOP_JOIN_TIMEOUT)
        log.plain("milter stopped")
