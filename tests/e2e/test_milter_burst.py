"""SIGTERM to filterd (Postfix's milter) in the middle of a burst of 100 messages.

Invariant: every message is either delivered exactly once with the chain's edits, or still
queued by Postfix (retried later) — none accepted unfiltered, none lost.

Postfix runs filterd as `smtpd_milters` and `non_smtpd_milters` with `milter_default_action =
tempfail` (deploy/postfix/main.cf.milter.snippet). The messages go in through the instance's
sendmail(1): postdrop always accepts them into the maildrop queue, and pickup/cleanup hand each
one to the milter. While filterd stops (TEMPFAIL for new messages) and while it is down
(connection refused → default action tempfail), cleanup refuses the message temporarily and
pickup leaves it in the maildrop queue; `postqueue -f` makes pickup try again after the restart.
The chain (header_checks removing User-Agent:, example_tagger adding X-Example-Tag:) shows on
each delivered copy whether it went through filterd.

Determinism: the first half of the burst is injected, filterd gets SIGTERM once some of it has
been delivered, and the second half is injected only after the signal was sent, so it meets a
stopping or stopped filterd every time; every wait is on an observable condition with a bound.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from email.parser import BytesHeaderParser

import pytest

from tests.support.filterd_proc import FilterdFactory, FilterdProcess
from tests.support.postfix import (
    PostfixFactory,
    PostfixInstance,
    free_port,
    milter_main_cf,
    postfix_available,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not postfix_available(), reason="Postfix (master) is not installed"),
    pytest.mark.timeout(180),
]

pytest.importorskip("Milter", reason="pymilter (the milter extra) is not installed")

TOTAL = 100
FIRST_WAVE = 50  # injected before the SIGTERM; the rest after it was sent
STOP_AFTER = 20  # SIGTERM once at least this many were delivered
SENDER = "alice@example.net"
RECIPIENT = "burst@example.org"
TAG = "X-Example-Tag"
STOP_TIMEOUT = 30.0  # shutdown_grace (10 s) + slack
DELIVERY_TIMEOUT = 90.0


def milter_and_sendmail_main_cf(port: int) -> dict[str, str]:
    """The snippet's settings with 10029 replaced, plus filterd for sendmail(1) mail too."""
    settings = milter_main_cf(port)
    assert settings["milter_default_action"] == "tempfail"
    # This chain refuses no recipient, so filterd may also serve non-SMTP mail (§3.1).
    settings["non_smtpd_milters"] = settings["smtpd_milters"]
    return settings


def filterd_config(port: int) -> str:
    return f"""
[[listen]]
address = "127.0.0.1:{port}"
protocol = "milter"
[delivery]
method = "maildir"
[limits]
shutdown_grace = "10s"
[[chain]]
plugin = "header_checks"
config = {{ rules = ['/^User-Agent: .*/ IGNORE'] }}
[[chain]]
plugin = "example_tagger"
"""


def message(number: int) -> bytes:
    return (
        f"From: {SENDER}\n"
        f"To: {RECIPIENT}\n"
        f"Subject: burst {number}\n"
        f"Message-ID: <burst-{number}@example.net>\n"
        f"User-Agent: Leaky/1.0 (message {number})\n"
        f"\n"
        f"body of message {number}\n"
    ).encode()


def message_ids(delivered: list[bytes]) -> Counter[str]:
    parser = BytesHeaderParser()
    return Counter(str(parser.parsebytes(raw)["Message-ID"]) for raw in delivered)


def assert_filtered(delivered: list[bytes]) -> None:
    """Every delivered copy went through the chain: no User-Agent:, one X-Example-Tag:."""
    parser = BytesHeaderParser()
    for raw in delivered:
        headers = parser.parsebytes(raw)
        ident = headers["Message-ID"]
        assert headers.get_all("User-Agent") is None, f"{ident} delivered unfiltered"
        assert headers.get_all(TAG) == ["tagged"], f"{ident} lacks the chain's tag"


class Injector(threading.Thread):
    """Submits the burst through sendmail(1): the first wave at once, the rest after `go`."""

    def __init__(self, postfix: PostfixInstance) -> None:
        super().__init__(name="burst-injector", daemon=True)
        self.postfix = postfix
        self.go = threading.Event()
        self.injected = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for number in range(TOTAL):
                if number == FIRST_WAVE and not self.go.wait(timeout=DELIVERY_TIMEOUT):
                    raise TimeoutError("the second wave was never released")
                self.postfix.sendmail(message(number), SENDER, [RECIPIENT])
                self.injected += 1
        except BaseException as exc:  # reported by the test thread
            self.error = exc


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} within {timeout}s")
        time.sleep(0.02)


def wait_all_delivered(postfix: PostfixInstance, timeout: float) -> list[bytes]:
    """Flush (pickup + deferred) until all TOTAL messages are delivered; bounded."""
    deadline = time.monotonic() + timeout
    next_flush = 0.0
    while True:
        delivered = postfix.delivered_messages(RECIPIENT)
        if len(delivered) >= TOTAL and not postfix.queue_json():
            return delivered
        now = time.monotonic()
        if now >= deadline:
            raise TimeoutError(
                f"{len(delivered)} of {TOTAL} delivered, queue {postfix.queue_json()}"
                f" after {timeout}s\n{postfix.diagnostics()}"
            )
        if now >= next_flush:
            postfix.flush()
            next_flush = now + 1.0
        time.sleep(0.1)


def test_sigterm_during_burst_loses_nothing_and_passes_nothing_unfiltered(
    postfix_factory: PostfixFactory, filterd_factory: FilterdFactory
) -> None:
    port = free_port()
    first: FilterdProcess = filterd_factory(filterd_config(port))
    postfix = postfix_factory(main_cf_extra=milter_and_sendmail_main_cf(port))
    injector = Injector(postfix)
    injector.start()
    try:
        postfix.wait_for_delivered(STOP_AFTER, RECIPIENT, timeout=DELIVERY_TIMEOUT)
        pid = first.pid
        assert pid is not None
        os.kill(pid, signal.SIGTERM)  # exactly one: a second SIGTERM means "stop now"
        wait_until(lambda: "graceful stop" in first.output_text(), 10.0, "no graceful stop")
        injector.go.set()  # the second wave meets a stopping or stopped filterd
        wait_until(lambda: not first.running(), STOP_TIMEOUT, "filterd did not exit")
        status = first.stop()  # already exited: only collects the status
        assert status == 0, f"filterd exit status {status}:\n{first.output_text()}"
        injector.join(timeout=DELIVERY_TIMEOUT)
        assert not injector.is_alive(), "sendmail injection did not finish"
        assert injector.error is None, repr(injector.error)
        assert injector.injected == TOTAL

        # filterd is down: what was accepted before the stop finishes delivery; the rest
        # waits in the maildrop queue (cleanup cannot accept a message without the milter).
        wait_until(
            lambda: all(e["queue_name"] == "maildrop" for e in postfix.queue_json()),
            DELIVERY_TIMEOUT,
            "accepted messages not delivered",
        )
        before = postfix.delivered_messages(RECIPIENT)
        assert_filtered(before)
        assert len(before) < TOTAL, "the stop did not catch any message"
        assert len(before) + len(postfix.queue_json()) == TOTAL
        assert max(message_ids(before).values()) == 1

        filterd_factory(filterd_config(port))  # the same port again
        delivered = wait_all_delivered(postfix, DELIVERY_TIMEOUT)
    finally:
        injector.go.set()
        injector.join(timeout=30)

    assert len(delivered) == TOTAL
    ids = message_ids(delivered)
    assert ids == Counter({f"<burst-{n}@example.net>": 1 for n in range(TOTAL)})
    assert_filtered(delivered)
    assert postfix.queue_json() == []
    log = postfix.log_text()
    assert "status=bounced" not in log
    # Messages really met the stopped filter and were kept for a retry (tempfail).
    assert "milter-reject: CONNECT from localhost[127.0.0.1]: 4.7.1" in log
