"""More than one process behind a policy listener (``[[listen]] processes = N``).

pyspf and the chain are CPU work in Python, so one process answers on one core. With
``processes = N`` the main process still owns the listening socket and accepts every
connection, and it starts N - 1 worker processes (``filterd.serve.policy_worker``), each with its
own chain, plugins and caches. Each accepted connection goes to the process with the fewest
open connections, the main process included: a worker gets it as a file descriptor over a
private socket pair (``SCM_RIGHTS``) and serves it to its end; the main process only closes
its copy. Policy connections are long-lived (one per smtpd process), so counting them is a fair
measure of load, and a burst of connections is spread evenly, which hashing them to several
listening sockets (``SO_REUSEPORT``) would not do.

The control socket (``SOCK_SEQPACKET``: one message per send) carries one byte per message:

- worker → main: ``R`` ready (its plugins have started), ``C`` one connection has ended;
- main → worker: ``F`` with one descriptor attached: a connection to serve;
- end of file either way: the other side has gone. A worker that sees it stops gracefully
  (as on SIGTERM: idle connections close at once, requests in progress are answered within
  ``shutdown_grace``), so it never outlives the main process for long.

A worker that dies is started again after a pause (its connections are gone; Postfix retries
them); one that fails to start stops filterd from starting.
"""

from __future__ import annotations

import array
import socket
import subprocess
import sys
from dataclasses import dataclass

import trio

from filterd.config.schema import Config, ListenConfig
from filterd.maillog import MailLog
from filterd.serve.policy_service import PolicyHandler, PolicySettings
from filterd.serve.shutdown import Shutdown

log = MailLog("main")

READY = b"R"
CLOSED = b"C"
CONNECTION = b"F"
START_TIMEOUT = 120.0  # a worker imports filterd and starts its plugins in this time
RESTART_PAUSE = 1.0  # before a worker that died is started again
STOP_MARGIN = 5.0  # beyond shutdown_grace, before a worker that does not stop is killed


def policy_settings(listen: ListenConfig, config: Config) -> PolicySettings:
    """The settings of a policy listener: the same in the main process and in every worker."""
    return PolicySettings(
        name=str(listen.address),
        accept_as_ok=listen.accept_as_ok,
        max_connections=listen.max_connections,
        request_timeout=config.limits.policy_request_timeout,
        idle_timeout=config.limits.policy_idle_timeout,
    )


class WorkerStartError(RuntimeError):
    """A policy worker did not become ready: filterd does not start."""


@dataclass(eq=False)
class _Worker:
    number: int  # 1 .. N-1 (the main process is 0)
    control: trio.socket.SocketType | None = None  # None while (re)starting
    process: trio.Process | None = None
    open: int = 0  # connections handed over (or being handed) and not reported closed

    @property
    def available(self) -> bool:
        return self.control is not None


class PolicyWorkers:
    """The worker processes of one policy listener, and the handler that spreads connections
    over them and the main process (``ConnectionHandler`` shape, for ``accept_loop``)."""

    def __init__(
        self,
        listen: ListenConfig,
        index: int,
        config: Config,
        local: PolicyHandler,
        shutdown: Shutdown,
    ) -> None:
        self.listen = listen
        self.index = index  # the listener's position in config.listen
        self.config = config
        self.local = local
        self.shutdown = shutdown
        self.workers = [_Worker(number) for number in range(1, listen.processes)]

    # ------------------------------------------------------------- handler
    def over_limit(self) -> bool:
        return False  # the limit is checked in __call__, as PolicyHandler does

    async def refuse(self, stream: trio.abc.Stream) -> None:
        await stream.aclose()

    async def __call__(self, stream: trio.abc.Stream) -> None:
        total = self.local.active + sum(w.open for w in self.workers)
        if total >= self.listen.max_connections:
            await self.local(stream)  # refused there, with its log line
            return
        worker = self._least_loaded()
        if worker is None:
            await self.local(stream)
            return
        sock = getattr(stream, "socket", None)
        assert sock is not None, "policy listeners accept sockets"
        try:
            await self._hand_over(worker, sock.fileno())
        except OSError as exc:  # the worker has just gone: serve it here instead
            log.warning(f"policy worker {worker.number}: cannot hand a connection over: {exc}")
            await self.local(stream)
            return
        with trio.CancelScope(shield=True):
            await stream.aclose()  # our copy only: the worker's descriptor keeps it open

    def _least_loaded(self) -> _Worker | None:
        """The worker with the fewest connections, or None when the main process has fewer."""
        best: _Worker | None = None
        fewest = self.local.active
        for worker in self.workers:
            if worker.available and worker.open < fewest:
                best, fewest = worker, worker.open
        return best

    async def _hand_over(self, worker: _Worker, fd: int) -> None:
        control = worker.control
        if control is None:
            raise OSError("the worker is restarting")
        fds = array.array("i", [fd])
        worker.open += 1  # before the send: connections accepted meanwhile must see it
        try:
            await control.sendmsg([CONNECTION], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        except BaseException:
            worker.open -= 1
            raise

    # ------------------------------------------------------------- processes
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start every worker (ready: ``task_status.started()``), keep them running until
        shutdown, then stop them: end of file on their control sockets, then a kill for any
        still there after ``shutdown_grace`` + 5 s."""
        async with trio.open_nursery() as nursery:
            for worker in self.workers:
                await nursery.start(self._keep_running, worker)
            task_status.started()
            await self.shutdown.event.wait()
            nursery.cancel_scope.cancel()

    async def _keep_running(
        self, worker: _Worker, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        first = True
        while True:
            try:
                await self._run_once(worker, task_status if first else None)
            except WorkerStartError as exc:
                if first:
                    raise
                log.error(str(exc))
            first = False
            if self.shutdown.stopping:
                return
            status = worker.process.returncode if worker.process is not None else None
            log.error(
                f"policy worker {worker.number} exited (status {status}); its connections are "
                f"lost (Postfix retries them); starting a new one in {RESTART_PAUSE:g}s"
            )
            await trio.sleep(RESTART_PAUSE)

    async def _run_once(self, worker: _Worker, task_status: trio.TaskStatus[None] | None) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        control = trio.socket.from_stdlib_socket(ours)
        argv = [
            sys.executable,
            "-m",
            "filterd.serve.policy_worker",
            "--listener",
            str(self.index),
            "--number",
            str(worker.number),
            "--control-fd",
            str(theirs.fileno()),
        ]
        try:
            process = await trio.lowlevel.open_process(
                argv, stdin=subprocess.PIPE, pass_fds=(theirs.fileno(),)
            )
        finally:
            theirs.close()
        worker.process = process
        try:
            await self._send_config(process)
            with trio.move_on_after(START_TIMEOUT):
                ready = await control.recv(1)
            if ready != READY:
                raise WorkerStartError(
                    f"policy worker {worker.number} (pid {process.pid}) did not start "
                    f"within {START_TIMEOUT:g}s; its errors are above"
                )
            worker.control = control
            worker.open = 0
            if task_status is not None:
                task_status.started()
            await self._follow(worker, control)
        finally:
            worker.control = None
            worker.open = 0
            with trio.CancelScope(shield=True):
                control.close()  # end of file for the worker: it stops gracefully
                await self._reap(worker, process)

    async def _send_config(self, process: trio.Process) -> None:
        stdin = process.stdin
        assert stdin is not None
        try:
            await stdin.send_all(self.config.model_dump_json().encode())
        except trio.BrokenResourceError:
            pass  # it died at once: _run_once reports it, the ready byte never comes
        finally:
            await stdin.aclose()

    async def _follow(self, worker: _Worker, control: trio.socket.SocketType) -> None:
        """Count the connections the worker reports closed, until it goes away."""
        while True:
            data = await control.recv(16)
            if not data:
                return
            if data == CLOSED:
                worker.open = max(0, worker.open - 1)

    async def _reap(self, worker: _Worker, process: trio.Process) -> None:
        with trio.move_on_after(self.config.limits.shutdown_grace + STOP_MARGIN):
            await process.wait()
            return
        log.warning(f"policy worker {worker.number} (pid {process.pid}) did not stop: killed")
        process.kill()
        await process.wait()
