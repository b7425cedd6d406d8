"""An smtp or lmtp listener served by several processes (``[[listen]] processes = N``):
connections are spread over them, ``max_connections`` counts them all, a graceful stop drains
every worker, and a worker that dies mid-message loses nothing and is replaced.

Which process serves a connection is read from /proc (the process holding its server end);
each process also writes its pid into the Maildir names of the messages it delivers."""

from __future__ import annotations

import collections
import os
import re
import signal
import smtplib
import socket
import time
from pathlib import Path

import pytest

from tests.support.filterd_proc import FilterdFactory, FilterdProcess
from tests.support.postfix import free_port
from tests.support.processes import gone, socket_owner, worker_pids

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

WAIT = 20.0
CONNECT = re.compile(r"filterd/smtpd\[(\d+)\]: connect from ")
MESSAGE = b"Subject: spread\r\n\r\nbody\r\n"


def config(port: int, processes: int, protocol: str = "smtp", extra: str = "") -> str:
    return f"""
[[listen]]
address = "127.0.0.1:{port}"
protocol = "{protocol}"
processes = {processes}
{extra}
[delivery]
method = "maildir"
root = "mail"
"""


def wait_for(what: str, check: object, proc: FilterdProcess) -> None:
    deadline = time.monotonic() + WAIT
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {WAIT:g}s; filterd said:\n{proc.output_text()}")
        time.sleep(0.05)


def settled(proc: FilterdProcess, protocol: str, workers: int) -> bool:
    """Every worker is up and every connection so far (the start-up probe) has ended, so none
    of them counts towards a process's load any more."""
    text = proc.output_text()
    connects = len(CONNECT.findall(text))
    return (
        len(worker_pids(text, protocol)) == workers
        and connects >= 1
        and text.count("disconnect from") == connects
    )


def start(
    filterd_factory: FilterdFactory, processes: int, protocol: str = "smtp", extra: str = ""
) -> tuple[FilterdProcess, int, list[int]]:
    """filterd with one listener of ``processes`` processes, settled; (it, port, worker pids)."""
    port = free_port()
    proc = filterd_factory(config(port, processes, protocol, extra))
    wait_for("the workers are up", lambda: settled(proc, protocol, processes - 1), proc)
    return proc, port, worker_pids(proc.output_text(), protocol)


def server_of(client: smtplib.SMTP | socket.socket, port: int, pids: list[int]) -> int | None:
    """The process serving this client's connection to ``port``."""
    sock = client.sock if isinstance(client, smtplib.SMTP) else client
    assert sock is not None
    return socket_owner(port, sock.getsockname()[1], pids)


def answer_to_final_dot(client: smtplib.SMTP) -> tuple[int, bytes] | None:
    """The reply to the final dot, or None when the connection is gone without one."""
    try:
        client.send(b".\r\n")
        return client.getreply()
    except smtplib.SMTPServerDisconnected:
        return None


def delivered(proc: FilterdProcess) -> list[Path]:
    return sorted((proc.workdir / "mail").glob("*/*/new/*"))


def delivering_pid(proc: FilterdProcess, path: Path) -> int:
    """The process that delivered a Maildir file: its ``filterd/maildir[pid]`` log line for
    the mailbox's address with the file's name (virtual(8)'s names carry no pid)."""
    user, domain = path.parent.parent.name, path.parent.parent.parent.name
    found = re.search(
        rf"filterd/maildir\[(\d+)\]: \w+: to=<{re.escape(user)}@{re.escape(domain)}>, "
        rf"relay=maildir, .*status=sent \(250 2\.0\.0 Ok: delivered to maildir as "
        rf"{re.escape(path.name)}\)",
        proc.output_text(),
        re.IGNORECASE,
    )
    assert found is not None, path.name
    return int(found.group(1))


@pytest.mark.parametrize("protocol", ["smtp", "lmtp"])
def test_connections_are_spread_over_the_processes(
    filterd_factory: FilterdFactory, protocol: str
) -> None:
    proc, port, (worker,) = start(filterd_factory, 2, protocol)
    assert proc.pid is not None
    pids = [proc.pid, worker]
    kind = smtplib.SMTP if protocol == "smtp" else smtplib.LMTP
    clients = [kind("127.0.0.1", port, timeout=WAIT) for _ in range(4)]  # each one greeted
    try:
        served = collections.Counter(server_of(client, port, pids) for client in clients)
        # the fewest connections first (ties to the main process): two each
        assert served == {proc.pid: 2, worker: 2}
        for number, client in enumerate(clients):
            assert client.sendmail("a@example.org", [f"r{number}@example.net"], MESSAGE) == {}
    finally:
        for client in clients:
            client.quit()
    # each process delivered its own two, with its own delivery
    assert collections.Counter(delivering_pid(proc, path) for path in delivered(proc)) == served
    assert len(set(CONNECT.findall(proc.output_text()))) == 2  # both logged, with their pids
    assert proc.stop(sweep=False) == 0
    assert gone(worker)
    assert f"{protocol} worker 1 stopped" in proc.output_text()


def test_max_connections_counts_every_process(filterd_factory: FilterdFactory) -> None:
    proc, port, (worker,) = start(filterd_factory, 2, extra="max_connections = 2")
    assert proc.pid is not None
    with (
        smtplib.SMTP("127.0.0.1", port, timeout=WAIT) as one,
        smtplib.SMTP("127.0.0.1", port, timeout=WAIT) as two,
    ):
        assert {
            server_of(one, port, [proc.pid, worker]),
            server_of(two, port, [proc.pid, worker]),
        } == {
            proc.pid,
            worker,
        }
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as three:
            assert three.makefile("rb").readline().startswith(b"421 4.7.0 ")
        assert "too many connections (2): refused with 421" in proc.output_text()
        one.noop()  # the others go on
        two.noop()
    assert proc.stop() == 0


def test_sigterm_drains_every_worker(filterd_factory: FilterdFactory) -> None:
    proc, port, workers = start(filterd_factory, 3, extra="")
    assert proc.pid is not None
    pids = [proc.pid, *workers]
    idle_main = smtplib.SMTP("127.0.0.1", port, timeout=WAIT)
    busy = smtplib.SMTP("127.0.0.1", port, timeout=WAIT)
    idle_worker = smtplib.SMTP("127.0.0.1", port, timeout=WAIT)
    try:
        assert server_of(idle_main, port, pids) == proc.pid
        busy_pid, idle_pid = server_of(busy, port, pids), server_of(idle_worker, port, pids)
        assert {busy_pid, idle_pid} == set(workers)
        busy.ehlo()
        assert busy.mail("a@example.org")[0] == 250
        assert busy.rcpt("drained@example.net")[0] == 250
        assert busy.docmd("DATA")[0] == 354
        busy.send(b"Subject: drained\r\n\r\nthe first half\r\n")  # mid-message
        os.kill(proc.pid, signal.SIGTERM)
        # idle sessions, in the main process and in a worker, are closed at once...
        for idle in (idle_main, idle_worker):
            assert idle.getreply() == (421, b"4.3.2 Service shutting down, try again later")
        # ...the one in the middle of a message may finish it within shutdown_grace
        busy.send(b"the second half\r\n.\r\n")
        code, text = busy.getreply()
        assert code == 250, text
    finally:
        for client in (idle_main, busy, idle_worker):
            client.close()
    wait_for("filterd has stopped", lambda: not proc.running(), proc)
    assert proc.stop(sweep=False) == 0
    assert all(gone(pid) for pid in workers)
    (message,) = delivered(proc)
    assert delivering_pid(proc, message) == busy_pid
    assert b"the first half\nthe second half\n" in message.read_bytes().replace(b"\r\n", b"\n")


def test_a_worker_killed_mid_message_loses_nothing(filterd_factory: FilterdFactory) -> None:
    proc, port, (worker,) = start(filterd_factory, 2)
    assert proc.pid is not None
    with smtplib.SMTP("127.0.0.1", port, timeout=WAIT) as kept:  # on the main process
        kept.ehlo()
        busy = smtplib.SMTP("127.0.0.1", port, timeout=WAIT)
        try:
            assert server_of(busy, port, [proc.pid, worker]) == worker
            busy.ehlo()
            assert busy.mail("a@example.org")[0] == 250
            assert busy.rcpt("once@example.net")[0] == 250
            assert busy.docmd("DATA")[0] == 354
            busy.send(b"Subject: once\r\n\r\nbody\r\n")  # all but the final dot
            os.kill(worker, signal.SIGKILL)
            wait_for(
                "a new worker", lambda: len(worker_pids(proc.output_text(), "smtp")) == 2, proc
            )
            # no 250: the client keeps the message and tries again
            assert answer_to_final_dot(busy) is None
        finally:
            busy.close()
        assert "smtp worker 1 exited (status -9)" in proc.output_text()
        assert delivered(proc) == []
        kept.noop()  # the main process's session is untouched
    replacement = worker_pids(proc.output_text(), "smtp")[1]
    with smtplib.SMTP("127.0.0.1", port, timeout=WAIT) as again:
        assert (
            again.sendmail("a@example.org", ["once@example.net"], b"Subject: once\r\n\r\nbody\r\n")
            == {}
        )
    assert len(delivered(proc)) == 1
    assert proc.stop(sweep=False) == 0
    assert gone(replacement)
