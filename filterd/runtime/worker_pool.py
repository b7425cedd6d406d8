"""More than one process behind a listener (``[[listen]] processes = N``), for every door.

The chain and the doors are Python, so one process works on one core. With ``processes = N``
the main process starts N - 1 worker processes (``filterd.runtime.worker_process``), each with
its own chain, plugins and caches and, behind smtp and lmtp listeners, its own delivery (relay
pool or Maildir) and quarantine store: the same handler the main process builds
(``filterd.runtime.handlers``), from the same TOML text.

**smtp, lmtp and policy** (``SpreadConnections``): the main process owns the listening socket and
accepts every connection; each goes to the process with the fewest open connections, the main
process included. A worker gets it as a file descriptor over a private socket pair
(``SCM_RIGHTS``) and serves it to its end; the main process only closes its copy. Counting
connections spreads a burst evenly, and Postfix's connections (one per smtp client or smtpd
process, often long-lived) are few enough that hashing them to several listening sockets
(``SO_REUSEPORT``) would spread them unevenly. ``max_connections`` counts the connections of
every process; beyond it the main process refuses, as one process would (smtp and lmtp:
``421 4.7.0``; policy: closed at once).

**milter**: libmilter accepts connections itself, so the listening socket is passed once, when
a worker starts (``pass_fds``), and every process's libmilter accepts from it (see
``filterd.frontdoors.milter.service``); ``max_connections`` is counted in shared memory
(``filterd.runtime.tally``).

The control socket (``SOCK_SEQPACKET``: one message per send) carries short messages:

- worker → main: ``R`` ready (its plugins have started); ``C<n>`` it has ended n connections
  in all (a running total, so a report lost to a full socket is made good by the next one);
  ``P`` (a milter worker told to drain) its libmilter accepts nothing more;
  end of file (it shuts the socket down as soon as it starts stopping): hand it nothing more
  (a hand-over in that instant fails, and the main process serves the connection itself);
- main → worker: ``F`` with one descriptor attached, a connection to serve (sent without
  waiting: a worker whose queue is full is skipped and the main process serves it); ``D``
  (drain: a reload replaced this worker): take no new connection, serve those it has to their
  end, however long, then exit (the control socket stays open meanwhile); end of file: stop
  gracefully (as on SIGTERM: idle connections close at once, sessions in the middle of a
  message get ``shutdown_grace``), so a worker never outlives the main process.

A worker that dies is started again, after 1 s and then up to 60 s between attempts while it
keeps failing (its connections are gone, unanswered: Postfix retries them). One that does not
start at all stops filterd from starting (or, started by a reload, refuses the reload). A second
stop signal kills the workers at once.

A reload starts a new pool for the new configuration and retires the old one (``retire``):
it hands nothing more to its workers and tells each to drain; none is started again. The
reload is done once every retired milter worker has said ``P`` (``wait_taking_nothing``): from
then on each new milter connection meets the new configuration.
"""

from __future__ import annotations

import array
import json
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from filterd.config.schema import Config, ListenConfig
from filterd.frontdoors.shutdown import Shutdown
from filterd.maillog import MailLog
from filterd.runtime.handlers import DoorHandler
from filterd.runtime.tally import SharedTally, TallySlots

__all__ = [
    "CLOSED",
    "CONNECTION",
    "DRAIN",
    "PARKED",
    "READY",
    "SpreadConnections",
    "WorkerPool",
    "WorkerStartError",
    "config_message",
]

log = MailLog("main")

READY = b"R"
CLOSED = b"C"
CONNECTION = b"F"
DRAIN = b"D"
PARKED = b"P"
DRAIN_CONFIRM_TIMEOUT = 10.0  # a retired milter worker says it accepts nothing more in this time
START_TIMEOUT = 120.0  # a worker imports filterd and starts its plugins in this time
RESTART_PAUSE = 1.0  # before a worker that died is started again; doubled while it fails
RESTART_PAUSE_MAX = 60.0
STABLE = 30.0  # a worker that ran this long before dying is restarted after RESTART_PAUSE
STOP_MARGIN = 10.0  # beyond shutdown_grace (more than a worker's 5 s for its plugins' stop)
WORKER_MODULE = "filterd.runtime.worker_process"


def config_message(config: Config) -> bytes:
    """What a worker reads on its standard input: the TOML text the main process parsed (so it
    validates the same way and its errors name the same file), or, for a configuration built
    in code, its JSON form."""
    if config.text:
        return json.dumps({"source": config.source, "toml": config.text}).encode()
    return json.dumps({"source": config.source, "json": config.model_dump_json()}).encode()


class WorkerStartError(RuntimeError):
    """A worker did not become ready: filterd does not start."""


@dataclass(eq=False)
class _Worker:
    number: int  # 1 .. N-1 (the main process is 0)
    slot: int = 0  # its counter in a milter listener's shared count (while it runs)
    control: socket.socket | None = None  # set while it takes connections
    process: trio.Process | None = None
    handed: int = 0  # connections handed over to the current process
    closed: int = 0  # of those, reported ended (counted until the process is reaped)
    refusals: int = 0  # hand-overs it could not take (logged sparingly)
    # Retired: this process accepts no new connection of its own (milter: it said ``P``;
    # others are handed connections, and a retired pool hands none). Set when it is gone too.
    taking_nothing: trio.Event = field(default_factory=trio.Event)

    @property
    def open(self) -> int:
        return self.handed - self.closed


class WorkerPool:
    """The worker processes of one listener: started, kept running, stopped.

    ``listening`` (milter listeners) is the listening socket every process accepts from; the
    pool passes it to each worker it starts and closes its own copy once filterd stops, when
    no worker is being started (the processes' libmilters hold copies of their own). ``tally``
    (milter listeners) is the shared connection count, ``slots`` its free counters (each
    worker holds one while it runs); a dead worker's part is cleared."""

    def __init__(
        self,
        listen: ListenConfig,
        index: int,
        config: Config,
        shutdown: Shutdown,
        *,
        listening: socket.socket | None = None,
        tally: SharedTally | None = None,
        slots: TallySlots | None = None,
        command: list[str] | None = None,
        metrics_dir: str | None = None,
    ) -> None:
        self.listen = listen
        self.index = index  # the listener's position in config.listen
        self.config = config
        self.shutdown = shutdown
        self.listening = listening
        self.tally = tally
        self.slots = slots or TallySlots(tally.slots if tally is not None else 1)
        self.retiring = False  # a reload replaced it: hand nothing more, start nothing more
        self._retired = trio.Event()
        self.command = command or [sys.executable, "-m", WORKER_MODULE]  # tests replace it
        self.metrics_dir = metrics_dir  # where workers write their metrics (None: they do not)
        self.name = f"{listen.protocol} worker"
        self.workers = [_Worker(number) for number in range(1, listen.process_count)]
        self._starting = 0  # processes being spawned (they inherit ``listening``)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start every worker (ready: ``task_status.started()``; a stop signal meanwhile ends
        the wait), keep them running until shutdown, then stop them: end of file on their
        control sockets, then a kill for any still there after ``shutdown_grace`` + 10 s, or at
        once on a second stop signal."""
        started = False
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._cancel_on_shutdown, nursery.cancel_scope)
                for worker in self.workers:
                    await nursery.start(self._keep_running, worker)
                task_status.started()
                started = True
        finally:
            self._release_listening()
        if not started:  # stopped while starting: nothing left to wait for
            task_status.started()

    async def _cancel_on_shutdown(self, scope: trio.CancelScope) -> None:
        await self.shutdown.event.wait()
        scope.cancel()
        self._release_listening()

    def retire(self) -> None:
        """A reload replaced this pool: hand its workers nothing more, tell each to drain
        (``DRAIN``: finish its connections, then exit), start none again. ``run`` returns
        once they have all exited."""
        if not self.retiring:
            self.retiring = True
            self._retired.set()
            self._release_listening()

    async def wait_taking_nothing(self) -> None:
        """Once retired: until no worker process of this pool accepts a new connection (each
        has confirmed its drain, or is not running)."""
        await self._retired.wait()
        for worker in self.workers:
            process = worker.process
            if process is not None and process.returncode is None:
                await worker.taking_nothing.wait()

    def _release_listening(self) -> None:
        """Close the pool's copy of the listening socket (stopping or retired: no worker will
        start), as soon as no process being spawned may still inherit it."""
        if (
            self.listening is not None
            and self._starting == 0
            and (self.shutdown.stopping or self.retiring)
        ):
            self.listening.close()

    async def _keep_running(
        self, worker: _Worker, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        first = True  # until the first process is ready: a failure then stops filterd
        pause = RESTART_PAUSE

        def ready() -> None:
            nonlocal first
            if first:
                first = False
                task_status.started()

        while True:
            if self.retiring and not first:
                return
            began = trio.current_time()
            try:
                await self._run_once(worker, ready)
            except WorkerStartError as exc:
                if first:
                    raise
                log.error(str(exc))
            except Exception as exc:  # out of descriptors, processes, memory...
                if first:
                    raise WorkerStartError(f"{self.name} {worker.number}: {exc}") from exc
                log.error(f"{self.name} {worker.number} could not be started: {exc}")
            else:
                if self.shutdown.stopping or self.retiring:
                    return
                status = worker.process.returncode if worker.process is not None else None
                log.error(
                    f"{self.name} {worker.number} exited (status {status}); its connections "
                    f"are lost (Postfix retries them)"
                )
            if trio.current_time() - began >= STABLE:
                pause = RESTART_PAUSE
            if self.retiring:
                return
            log.plain(f"{self.name} {worker.number}: starting a new one in {pause:g}s")
            with trio.move_on_after(pause):
                await self._retired.wait()
            pause = min(pause * 2, RESTART_PAUSE_MAX)

    async def _run_once(self, worker: _Worker, ready: Callable[[], None]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        channel = trio.socket.from_stdlib_socket(ours)  # shares ``ours`` (non-blocking now)
        worker.taking_nothing = trio.Event()  # of this process
        try:
            process = await self._spawn(worker, theirs)
        except BaseException:
            channel.close()
            raise
        worker.process = process
        name = f"{self.name} {worker.number} of {self.listen.address} (pid {process.pid})"
        started = False
        try:
            message = b""
            with trio.move_on_after(START_TIMEOUT) as waiting:
                await self._send_config(process)
                message = await _receive(channel)
            if message != READY:
                if waiting.cancelled_caught:
                    why = f"did not start within {START_TIMEOUT:g}s"
                else:
                    with trio.move_on_after(5):
                        await process.wait()
                    why = f"exited while starting (status {process.returncode})"
                raise WorkerStartError(f"{name} {why}; its own messages are above")
            started = True
            worker.handed = worker.closed = worker.refusals = 0
            worker.control = ours
            log.plain(f"{name} ready")
            ready()
            async with trio.open_nursery() as following:
                following.start_soon(self._drain_when_retired, worker, channel, name)
                await self._follow(worker, channel)
                following.cancel_scope.cancel()
        finally:
            worker.control = None
            worker.taking_nothing.set()  # gone (or going): it accepts nothing
            with trio.CancelScope(shield=True):
                channel.close()  # end of file for the worker: it stops gracefully
                if not started and process.returncode is None:
                    process.kill()  # it serves nothing yet: no graceful stop to wait for
                await self._reap(worker, process)
            worker.handed = worker.closed = 0
            if self.tally is not None:
                self.tally.clear(worker.slot)  # its connections are gone
                self.slots.give_back(worker.slot)

    async def _drain_when_retired(
        self, worker: _Worker, channel: trio.socket.SocketType, name: str
    ) -> None:
        """Once the pool is retired, tell the worker to drain (waiting for room in its
        queue: the message must arrive), and take it off the hand-over list at once."""
        await self._retired.wait()
        worker.control = None
        try:
            await channel.send(DRAIN)
        except OSError:
            return  # gone already
        if self.listening is None:  # not a milter worker: it accepts nothing by itself
            worker.taking_nothing.set()
        log.plain(f"{name} replaced: it finishes its connections, then exits")

    async def _spawn(self, worker: _Worker, control: socket.socket) -> trio.Process:
        """Start the worker's process; it inherits ``control`` (closed here either way), and the
        listening socket and the shared count of a milter listener."""
        argv = [*self.command, "--listener", str(self.index), "--number", str(worker.number)]
        argv += ["--control-fd", str(control.fileno())]
        if self.metrics_dir is not None:
            argv += ["--metrics-dir", self.metrics_dir]
        passed = [control.fileno()]
        if self.listening is not None:
            if self.listening.fileno() < 0:
                control.close()
                raise WorkerStartError(f"{self.name} {worker.number}: filterd is stopping")
            argv += ["--listening-fd", str(self.listening.fileno())]
            passed.append(self.listening.fileno())
        if self.tally is not None:
            slot = self.slots.take()
            if slot is None:
                control.close()
                raise WorkerStartError(
                    f"{self.name} {worker.number}: every slot of the shared connection count "
                    "is held (too many workers still finish their connections after reloads)"
                )
            worker.slot = slot
            argv += ["--tally-fd", str(self.tally.fd), "--tally-slot", str(slot)]
            passed.append(self.tally.fd)
        self._starting += 1
        try:
            return await trio.lowlevel.open_process(
                argv, stdin=subprocess.PIPE, pass_fds=tuple(passed)
            )
        except BaseException:
            if self.tally is not None:
                self.slots.give_back(worker.slot)
            raise
        finally:
            control.close()
            self._starting -= 1
            self._release_listening()

    async def _send_config(self, process: trio.Process) -> None:
        stdin = process.stdin
        assert stdin is not None
        try:
            await stdin.send_all(config_message(self.config))
        except trio.BrokenResourceError:
            pass  # it died at once: _run_once reports it, the ready message never comes
        finally:
            await stdin.aclose()

    async def _follow(self, worker: _Worker, channel: trio.socket.SocketType) -> None:
        """Count the connections the worker reports ended, until it goes away or stops."""
        while True:
            message = await _receive(channel)
            if not message:
                return
            if message.startswith(CLOSED) and message[1:].isdigit():
                worker.closed = min(worker.handed, int(message[1:]))
            elif message == PARKED:
                worker.taking_nothing.set()

    async def _reap(self, worker: _Worker, process: trio.Process) -> None:
        """Wait for the worker to exit; kill it after ``shutdown_grace`` + 10 s, or at once on
        a second stop signal."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._kill_in_time, worker, process)
            await process.wait()
            nursery.cancel_scope.cancel()

    async def _kill_in_time(self, worker: _Worker, process: trio.Process) -> None:
        with trio.move_on_after(self.config.limits.shutdown_grace + STOP_MARGIN):
            await self.shutdown.now.wait()
        if process.returncode is None:
            log.warning(
                f"{self.name} {worker.number} of {self.listen.address} (pid {process.pid}) killed"
            )
            process.kill()


class SpreadConnections:
    """The connection handler of an smtp, lmtp or policy listener with workers
    (``ConnectionHandler`` shape, for ``accept_loop``): each connection goes to the process
    with the fewest open ones, ``local`` (the main process's own handler) included."""

    def __init__(self, pool: WorkerPool, local: DoorHandler) -> None:
        self.pool = pool
        self.local = local
        self.max_connections = pool.listen.max_connections

    @property
    def active(self) -> int:
        """Open connections of this listener, in every process."""
        return self.local.active + sum(w.open for w in self.pool.workers)

    def over_limit(self) -> bool:
        return self.active >= self.max_connections

    async def refuse(self, stream: trio.abc.Stream) -> None:
        await self.local.refuse_over_limit(stream, self.active)

    async def __call__(self, stream: trio.abc.Stream) -> None:
        if self.over_limit():  # again, as in SmtpHandler: a burst gets past the accept loop's
            await self.refuse(stream)
            return
        sock = getattr(stream, "socket", None)
        worker = self._least_loaded()
        if worker is None or sock is None or not self._hand_over(worker, sock.fileno()):
            await self.local(stream)
            return
        with trio.CancelScope(shield=True):
            await stream.aclose()  # our copy only: the worker's descriptor keeps it open

    def _least_loaded(self) -> _Worker | None:
        """The worker with the fewest connections, or None when the main process has fewer
        (or the pool is retired: its workers take nothing more)."""
        if self.pool.retiring:
            return None
        best: _Worker | None = None
        fewest = self.local.active
        for worker in self.pool.workers:
            if worker.control is not None and worker.open < fewest:
                best, fewest = worker, worker.open
        return best

    def _hand_over(self, worker: _Worker, fd: int) -> bool:
        """Send the descriptor without waiting; False if the worker cannot take it now."""
        control = worker.control
        if control is None:
            return False
        fds = array.array("i", [fd])
        try:
            control.sendmsg(
                [CONNECTION], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)], socket.MSG_DONTWAIT
            )
        except OSError as exc:  # full (it is not reading), or gone: serve it here instead
            worker.refusals += 1
            if worker.refusals in (1, 10) or worker.refusals % 100 == 0:
                log.warning(
                    f"{self.pool.name} {worker.number} takes no connection now ({exc}); "
                    f"served here instead ({worker.refusals} so far)"
                )
            return False
        worker.handed += 1
        return True


async def _receive(channel: trio.socket.SocketType) -> bytes:
    """One control message; ``b""`` for end of file, and for a reset (a worker that died with
    connections still queued for it)."""
    try:
        return await channel.recv(64)
    except OSError:
        return b""
