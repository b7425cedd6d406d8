"""A policy listener served by several processes (``[[listen]] processes = N``): connections
are spread over them, a worker that dies is replaced, and no worker outlives filterd."""

from __future__ import annotations

import collections
import os
import re
import signal
import socket
import time

import pytest

from tests.support.filterd_proc import FilterdFactory, FilterdProcess
from tests.support.postfix import free_port
from tests.support.processes import gone

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

WAIT = 20.0
REQUEST = (
    b"request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
    b"client_address=192.0.2.1\nclient_name=client.example\nhelo_name=client.example\n"
    b"sender=alice@example.org\nrecipient=bob@example.net\ninstance=1.2\n\n"
)
CONNECT = re.compile(r"filterd/policy\[(\d+)\]: connect from ")
WORKER_UP = re.compile(r"filterd/main\[\d+\]: policy worker 1 of \S+ \(pid (\d+)\) ready")


def config(port: int, processes: int) -> str:
    return f"""
[[listen]]
address = "127.0.0.1:{port}"
protocol = "policy"
processes = {processes}
[delivery]
method = "maildir"
"""


def ask(sock: socket.socket) -> bytes:
    sock.sendall(REQUEST)
    answer = b""
    while not answer.endswith(b"\n\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        answer += chunk
    return answer


def wait_for(what: str, check: object, proc: FilterdProcess) -> None:
    deadline = time.monotonic() + WAIT
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {WAIT:g}s; filterd said:\n{proc.output_text()}")
        time.sleep(0.05)


def connections_by_pid(proc: FilterdProcess) -> collections.Counter[int]:
    return collections.Counter(int(pid) for pid in CONNECT.findall(proc.output_text()))


def settled(proc: FilterdProcess) -> bool:
    """The worker is up and every connection so far (start-up probes) has ended, so none of
    them counts towards a process's load any more."""
    text = proc.output_text()
    connects = len(CONNECT.findall(text))
    return (
        bool(WORKER_UP.search(text)) and connects >= 1 and text.count("disconnect from") == connects
    )


def served_by(proc: FilterdProcess, sock: socket.socket) -> int:
    """The pid of the process serving this connection (its "connect from" line)."""
    port = sock.getsockname()[1]
    found = re.search(
        rf"filterd/policy\[(\d+)\]: connect from \[127\.0\.0\.1\]:{port}\n", proc.output_text()
    )
    assert found is not None, proc.output_text()
    return int(found.group(1))


def worker_pids(proc: FilterdProcess) -> list[int]:
    return [int(pid) for pid in WORKER_UP.findall(proc.output_text())]


def test_connections_are_spread_over_the_processes(filterd_factory: FilterdFactory) -> None:
    port = free_port()
    proc = filterd_factory(config(port, processes=2))
    wait_for("the worker is up, the start-up probe gone", lambda: settled(proc), proc)
    (worker,) = worker_pids(proc)
    before = connections_by_pid(proc)  # the start-up probe's
    socks = [socket.create_connection(("127.0.0.1", port), timeout=WAIT) for _ in range(4)]
    try:
        for sock in socks:
            assert ask(sock) == b"action=DUNNO\n\n"
        ours = lambda: connections_by_pid(proc) - before  # noqa: E731
        wait_for("4 connections logged", lambda: sum(ours().values()) == 4, proc)
        # the fewest connections first: two each, the main process and its worker
        assert ours() == {proc.pid: 2, worker: 2}
        for sock in socks:  # connections stay usable, wherever they are served
            assert ask(sock) == b"action=DUNNO\n\n"
    finally:
        for sock in socks:
            sock.close()
    assert proc.stop(sweep=False) == 0
    assert gone(worker)  # the main process waited for it
    assert "policy worker 1 stopped" in proc.output_text()


def test_a_worker_that_dies_is_replaced(filterd_factory: FilterdFactory) -> None:
    port = free_port()
    proc = filterd_factory(config(port, processes=2))
    wait_for("the worker is up, the start-up probe gone", lambda: settled(proc), proc)
    (worker,) = worker_pids(proc)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=WAIT) as first,
        socket.create_connection(("127.0.0.1", port), timeout=WAIT) as second,
    ):
        assert ask(first) == b"action=DUNNO\n\n"
        assert ask(second) == b"action=DUNNO\n\n"
        # one each: whichever had fewer connections when it arrived
        on_worker, on_main = (
            (first, second) if served_by(proc, first) == worker else (second, first)
        )
        assert (served_by(proc, on_worker), served_by(proc, on_main)) == (worker, proc.pid)
        os.kill(worker, signal.SIGKILL)
        wait_for("a new worker", lambda: len(worker_pids(proc)) == 2, proc)
        assert "policy worker 1 exited (status -9)" in proc.output_text()
        assert on_worker.recv(4096) == b""  # its connection went with it
        assert ask(on_main) == b"action=DUNNO\n\n"  # the main process's is untouched
    replacement = worker_pids(proc)[1]
    # two at once: at most one of them can go to the main process (ties go to it)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=WAIT) as one,
        socket.create_connection(("127.0.0.1", port), timeout=WAIT) as two,
    ):
        assert ask(one) == ask(two) == b"action=DUNNO\n\n"
        assert replacement in (served_by(proc, one), served_by(proc, two))
    assert proc.stop(sweep=False) == 0
    assert gone(replacement)


def test_workers_stop_when_the_main_process_is_killed(filterd_factory: FilterdFactory) -> None:
    port = free_port()
    proc = filterd_factory(config(port, processes=3))
    wait_for("both workers are up", lambda: "policy worker 2 serving" in proc.output_text(), proc)
    workers = [
        int(pid)
        for pid in re.findall(r"main\[(\d+)\]: policy worker \d serving", proc.output_text())
    ]
    assert len(workers) == 2
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    wait_for("the workers have stopped", lambda: all(gone(pid) for pid in workers), proc)
    assert proc.output_text().count("stopped") >= 2


def test_max_connections_counts_every_process(filterd_factory: FilterdFactory) -> None:
    port = free_port()
    proc = filterd_factory(
        config(port, processes=2).replace(
            'protocol = "policy"', 'protocol = "policy"\nmax_connections = 2'
        )
    )
    wait_for("the worker is up, the start-up probe gone", lambda: settled(proc), proc)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=WAIT) as one,
        socket.create_connection(("127.0.0.1", port), timeout=WAIT) as two,
    ):
        assert ask(one) == ask(two) == b"action=DUNNO\n\n"
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as three:
            assert three.recv(4096) == b""  # closed at once: Postfix retries, then default_action
        assert "too many policy connections (2)" in proc.output_text()
    assert proc.stop() == 0


def test_a_worker_dying_with_connections_queued_leaves_filterd_serving(
    filterd_factory: FilterdFactory,
) -> None:
    port = free_port()
    proc = filterd_factory(config(port, processes=2))
    wait_for("the worker is up, the start-up probe gone", lambda: settled(proc), proc)
    (worker,) = worker_pids(proc)
    os.kill(worker, signal.SIGSTOP)  # it takes nothing off its queue now
    socks = [socket.create_connection(("127.0.0.1", port), timeout=WAIT) for _ in range(4)]
    try:
        # the main process has served its own two; two wait in the stopped worker's queue
        wait_for(
            "2 connections served by the main process",
            lambda: connections_by_pid(proc)[proc.pid] >= 3,
            proc,
        )
        os.kill(worker, signal.SIGKILL)
        wait_for("a new worker", lambda: len(worker_pids(proc)) == 2, proc)
        assert proc.running()
        for sock in socks:  # the queued ones went with the worker, the others still work
            sock.sendall(REQUEST)
        answers = []
        for sock in socks:
            try:
                answers.append(sock.recv(4096))
            except ConnectionResetError:
                answers.append(b"")
        assert sorted(answers) == [b"", b"", b"action=DUNNO\n\n", b"action=DUNNO\n\n"]
    finally:
        for sock in socks:
            sock.close()
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        assert ask(sock) == b"action=DUNNO\n\n"
    assert proc.stop() == 0


def test_a_second_stop_signal_kills_a_worker_that_does_not_stop(
    filterd_factory: FilterdFactory,
) -> None:
    port = free_port()
    proc = filterd_factory(config(port, processes=2) + '[limits]\nshutdown_grace = "60s"\n')
    wait_for("the worker is up, the start-up probe gone", lambda: settled(proc), proc)
    (worker,) = worker_pids(proc)
    assert proc.pid is not None
    os.kill(worker, signal.SIGSTOP)  # it will not see the end of its control socket
    os.kill(proc.pid, signal.SIGTERM)
    wait_for("the graceful stop", lambda: "graceful stop" in proc.output_text(), proc)
    time.sleep(0.5)
    assert proc.running()  # waiting for the worker, up to shutdown_grace + 5 s
    os.kill(proc.pid, signal.SIGTERM)
    wait_for("filterd has stopped", lambda: not proc.running(), proc)
    assert gone(worker)
    assert re.search(rf"policy worker 1 of \S+ \(pid {worker}\) killed", proc.output_text())


def test_a_worker_stopping_on_its_own_loses_no_new_connection(
    filterd_factory: FilterdFactory,
) -> None:
    port = free_port()
    proc = filterd_factory(config(port, processes=2))
    wait_for("the worker is up, the start-up probe gone", lambda: settled(proc), proc)
    (worker,) = worker_pids(proc)
    served = collections.Counter[int]()
    # one connection kept open on the main process, so that each new one goes to the worker
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as kept:
        assert ask(kept) == b"action=DUNNO\n\n"
        os.kill(worker, signal.SIGTERM)  # an admin's kill, or systemd signalling every process
        deadline = time.monotonic() + 2.0  # through its stop and its replacement's start
        while time.monotonic() < deadline:
            # A connection handed over in the instant the worker stops may be closed unanswered;
            # Postfix then tries again (smtpd_policy_service_try_limit = 2), and so do we. None
            # may hang: the worker's stop takes shutdown_grace (30 s), the socket waits 2 s.
            for _attempt in range(2):
                with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
                    try:
                        answer = ask(sock)
                    except ConnectionResetError:
                        answer = b""
                    if answer:
                        assert answer == b"action=DUNNO\n\n"
                        served[served_by(proc, sock)] += 1
                        break
            else:
                raise AssertionError("a request was refused twice in a row")
    wait_for("a new worker", lambda: len(worker_pids(proc)) == 2, proc)
    assert served[proc.pid] >= 1  # while the worker was away, the main process served them
    assert proc.stop() == 0
