"""A filterd worker process killed with SIGKILL while it holds a message, with a real Postfix
sending: nothing is lost and nothing is delivered twice.

The message is held in flight by the spamassassin plugin, pointed at a spamd that never answers
(``SilentServer``): the worker scanning it is the process holding that spamd connection (read
from /proc). After the kill the silent spamd closes, so the next attempt's scan fails at once and
the chain entry's ``on_error = "continue"`` lets the message pass."""

from __future__ import annotations

import os
import re
import signal
import smtplib
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from tests.e2e.test_milter_postfix import milter_main_cf
from tests.support.blackhole import SilentServer
from tests.support.filterd_proc import FilterdFactory, FilterdProcess
from tests.support.postfix import PostfixFactory, PostfixInstance, free_port, postfix_available
from tests.support.processes import gone, socket_owner, worker_pids

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not postfix_available(), reason="Postfix (master) is not installed"),
    pytest.mark.timeout(180),
]

WAIT = 30.0
SENDER = "alice@example.org"


@pytest.fixture
def silent_spamd() -> Iterator[SilentServer]:
    server = SilentServer()
    try:
        yield server
    finally:
        server.close()


def scanning_chain(spamd: SilentServer) -> str:
    return f"""
[[chain]]
plugin = "spamassassin"
timeout = "150s"
on_error = "continue"
config = {{ address = "127.0.0.1:{spamd.port}" }}
"""


def wait_for(what: str, check: Callable[[], bool], proc: FilterdProcess) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {WAIT:g}s; filterd said:\n{proc.output_text()}")
        time.sleep(0.05)


def scanner(spamd: SilentServer, peer_port: int, pids: list[int]) -> int | None:
    """The process whose spamd connection comes from ``peer_port``."""
    return socket_owner(peer_port, spamd.port, pids)


def message(number: int) -> bytes:
    head = f"Subject: in flight {number}\r\nMessage-ID: <{number}@example.org>\r\n"
    return f"{head}\r\nbody\r\n".encode()


def test_content_filter_worker_killed_mid_transaction(
    postfix_factory: PostfixFactory, filterd_factory: FilterdFactory, silent_spamd: SilentServer
) -> None:
    filter_port = free_port()
    postfix = postfix_factory(content_filter="smtp", filter_port=filter_port)
    filterd = filterd_factory(
        f"""
[[listen]]
address = "127.0.0.1:{filter_port}"
processes = 2
[delivery]
method = "relay"
next_hop = "127.0.0.1:{postfix.reinject_port}"
"""
        + scanning_chain(silent_spamd)
    )
    assert filterd.pid is not None
    wait_for(
        "the worker is up", lambda: len(worker_pids(filterd.output_text(), "smtp")) == 1, filterd
    )
    (worker,) = worker_pids(filterd.output_text(), "smtp")
    # One connection kept open on the main process: Postfix's goes to the worker.
    with socket.create_connection(("127.0.0.1", filter_port), timeout=WAIT) as kept:
        assert kept.recv(512).startswith(b"220 ")
        assert postfix.send_smtp(message(1), SENDER, ["once@example.net"]) == {}
        (request,) = silent_spamd.wait_for_requests(1, WAIT)  # the message is being scanned
        assert scanner(silent_spamd, request.peer_port, [filterd.pid, worker]) == worker
        since = postfix.log_offset()
        filterd_log = len(filterd.output_text())
        os.kill(worker, signal.SIGKILL)
        # Postfix got no reply to the final dot: it keeps the message and tries again later.
        deferred = postfix.wait_for_log(
            rf"postfix/smtp\[\d+\]: \w+: to=<once@example\.net>, "
            rf"relay=127\.0\.0\.1\[127\.0\.0\.1\]:{filter_port},.*status=deferred \((?P<why>.*)\)$",
            since=since,
        )
        assert deferred["why"].startswith("lost connection"), deferred.group(0)
        wait_for(
            "a new worker", lambda: len(worker_pids(filterd.output_text(), "smtp")) == 2, filterd
        )
        assert "smtp worker 1 exited (status -9)" in filterd.output_text()[filterd_log:]
        assert postfix.delivered_messages() == []
    silent_spamd.close()  # the scan now fails at once, and on_error lets the message pass
    postfix.flush()
    (delivered,) = postfix.wait_for_delivered(1, "once@example.net", timeout=WAIT)
    assert b"Subject: in flight 1" in delivered
    postfix.wait_for_empty_queue()
    assert len(postfix.delivered_messages("once@example.net")) == 1  # exactly once
    assert "status=bounced" not in postfix.log_text()
    assert filterd.stop(sweep=False) == 0
    assert all(gone(pid) for pid in worker_pids(filterd.output_text(), "smtp"))


def _send(postfix: PostfixInstance, number: int) -> tuple[int, str]:
    """One SMTP session to Postfix's smtpd (whose milter is filterd): the reply to the message."""
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=WAIT * 4) as client:
        try:
            refused = client.sendmail(SENDER, [f"r{number}@example.net"], message(number))
        except smtplib.SMTPDataError as exc:
            error = exc.smtp_error
            return exc.smtp_code, error.decode() if isinstance(error, bytes) else error
    assert refused == {}
    return 250, "ok"


def start_milter(
    filterd_factory: FilterdFactory, silent_spamd: SilentServer, processes: int
) -> tuple[FilterdProcess, int, list[int]]:
    """filterd with a milter listener of ``processes`` processes: (it, its port, worker pids)."""
    port = free_port()
    filterd = filterd_factory(
        f"""
[[listen]]
address = "127.0.0.1:{port}"
protocol = "milter"
processes = {processes}
"""
        + scanning_chain(silent_spamd)
    )
    wait_for(
        "the workers are up",
        lambda: len(worker_pids(filterd.output_text(), "milter")) == processes - 1,
        filterd,
    )
    return filterd, port, worker_pids(filterd.output_text(), "milter")


def until_a_worker_holds_one(
    pool: ThreadPoolExecutor,
    postfix: PostfixInstance,
    silent_spamd: SilentServer,
    pids: list[int],
    workers: list[int],
) -> tuple[dict[int, Future[tuple[int, str]]], list[int | None]]:
    """Send messages, each in an SMTP session of its own, until a worker holds one (each waits
    at end of message for the silent spamd): the sessions, and the process holding each
    message. Each process answers the connections it accepts, whichever that is."""
    sessions: dict[int, Future[tuple[int, str]]] = {}
    held_by: dict[int, int | None] = {}  # by the port of the spamd connection
    while not any(pid in workers for pid in held_by.values()):
        assert len(sessions) < 12, f"no worker took any of {len(sessions)} messages"
        number = len(sessions)
        sessions[number] = pool.submit(_send, postfix, number)
        for request in silent_spamd.wait_for_requests(number + 1, WAIT):
            held_by.setdefault(request.peer_port, scanner(silent_spamd, request.peer_port, pids))
    return sessions, list(held_by.values())


def test_milter_worker_killed_mid_message(
    postfix_factory: PostfixFactory, filterd_factory: FilterdFactory, silent_spamd: SilentServer
) -> None:
    filterd, port, workers = start_milter(filterd_factory, silent_spamd, processes=3)
    assert filterd.pid is not None
    postfix = postfix_factory(main_cf_extra=milter_main_cf(port))
    with ThreadPoolExecutor(max_workers=12) as pool:
        sessions, holders = until_a_worker_holds_one(
            pool, postfix, silent_spamd, [filterd.pid, *workers], workers
        )
        victim = next(pid for pid in holders if pid in workers)
        lost = holders.count(victim)
        os.kill(victim, signal.SIGKILL)
        # The messages it held: Postfix tells its client to try again (milter_default_action).
        deadline = time.monotonic() + WAIT
        while sum(1 for f in sessions.values() if f.done()) < lost:
            assert time.monotonic() < deadline, "no client was told to try again"
            time.sleep(0.05)
        silent_spamd.close()  # the others now pass (the scan fails, on_error = "continue")
        replies = {number: future.result() for number, future in sessions.items()}
    retried = [number for number, (code, _) in replies.items() if code != 250]
    assert len(retried) == lost, replies
    for number in retried:
        code, text = replies[number]
        assert code == 451, replies
        assert text.startswith("4.7.1"), replies
        assert _send(postfix, number) == (250, "ok")  # the client tries again
    postfix.wait_for_delivered(len(sessions), timeout=WAIT)
    for number in sessions:
        assert len(postfix.delivered_messages(f"r{number}@example.net")) == 1, number
    assert re.search(r"milter worker \d exited \(status -9\)", filterd.output_text())
    assert filterd.stop(sweep=False) == 0


def test_sigterm_lets_a_milter_worker_finish_its_messages(
    postfix_factory: PostfixFactory, filterd_factory: FilterdFactory, silent_spamd: SilentServer
) -> None:
    filterd, port, workers = start_milter(filterd_factory, silent_spamd, processes=2)
    assert filterd.pid is not None
    postfix = postfix_factory(main_cf_extra=milter_main_cf(port))
    with ThreadPoolExecutor(max_workers=12) as pool:
        sessions, _ = until_a_worker_holds_one(
            pool, postfix, silent_spamd, [filterd.pid, *workers], workers
        )
        os.kill(filterd.pid, signal.SIGTERM)
        wait_for("the graceful stop", lambda: "graceful stop" in filterd.output_text(), filterd)
        assert not any(future.done() for future in sessions.values())  # still in progress
        silent_spamd.close()  # now every scan ends (fails: on_error = "continue")
        replies = {number: future.result() for number, future in sessions.items()}
    assert all(reply == (250, "ok") for reply in replies.values()), replies
    postfix.wait_for_delivered(len(sessions), timeout=WAIT)
    wait_for("filterd has stopped", lambda: not filterd.running(), filterd)
    assert filterd.stop(sweep=False) == 0
    assert filterd.output_text().count("milter stopped") == 2
    assert all(gone(pid) for pid in workers)
