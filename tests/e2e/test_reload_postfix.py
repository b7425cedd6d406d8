"""Mail flows through filterd across ten reloads (SIGHUP to a real ``filterd run``), some of them
changing the chain, with one process and with two: every message that got a 250 is delivered
exactly once, and no client sees an error.

Two kinds of client send while filterd reloads, each a bounded number of messages released in
batches around each reload: an SMTP client of filterd's own, sessions of several messages each
(so sessions span reloads), and Postfix itself, whose after-queue content filter is filterd (its
smtp client caches connections to filterd across reloads too). Behind filterd, Postfix's
reinjection smtpd delivers into a Maildir, where each message is counted by its Message-ID."""

from __future__ import annotations

import os
import re
import signal
import smtplib
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from tests.support.filterd_proc import FilterdFactory, FilterdProcess
from tests.support.postfix import PostfixFactory, PostfixInstance, free_port, postfix_available
from tests.support.processes import gone, worker_pids

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not postfix_available(), reason="Postfix (master) is not installed"),
    pytest.mark.timeout(300),
]

WAIT = 60.0
RELOADS = 10
BATCH = 6  # messages each client may send around one reload
SESSION = 3  # messages per SMTP session of filterd's own client
SENDER = "alice@example.org"


def filterd_config(port: int, reinject: int, processes: int, generation: int) -> str:
    """Generation n's configuration: the tag changes each time; every third one has a second
    plugin in the chain."""
    text = f"""
[[listen]]
address = "127.0.0.1:{port}"
processes = {processes}
[delivery]
method = "relay"
next_hop = "127.0.0.1:{reinject}"
[[chain]]
plugin = "example_tagger"
config = {{ text = "gen-{generation}" }}
"""
    if generation % 3 == 1:
        text += """
[[chain]]
plugin = "header_checks"
config = { rules = ["/^Subject:/ PREPEND X-Reloaded: yes"] }
"""
    return text


def wait_for(what: str, check: Callable[[], bool], filterd: FilterdProcess) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {WAIT:g}s; filterd said:\n{filterd.output_text()}")
        time.sleep(0.02)


def message(kind: str, number: int) -> bytes:
    return (
        f"Subject: {kind} {number}\r\nMessage-ID: <{kind}-{number}@example.org>\r\n"
        f"From: <{SENDER}>\r\n\r\nmessage {number}\r\n"
    ).encode()


@dataclass
class Client:
    """A thread that sends one message per permit, until told to stop."""

    kind: str
    send: Callable[[int], str | None]  # sends message n: None when accepted, else the error
    permits: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    stop: threading.Event = field(default_factory=threading.Event)
    accepted: list[str] = field(default_factory=list)  # Message-IDs that got a 250
    errors: list[str] = field(default_factory=list)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name=self.kind, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        number = 0
        while not self.stop.is_set():
            if not self.permits.acquire(timeout=0.05):
                continue
            number += 1
            try:
                error = self.send(number)
            except (OSError, smtplib.SMTPException) as exc:
                error = f"{type(exc).__name__}: {exc}"
            if error is None:
                self.accepted.append(f"<{self.kind}-{number}@example.org>")
            else:
                self.errors.append(f"message {number}: {error}")

    def finish(self) -> None:
        self.stop.set()
        assert self.thread is not None
        self.thread.join(WAIT)

    @property
    def sent(self) -> int:
        return len(self.accepted) + len(self.errors)


class FilterdClient:
    """filterd's own SMTP client: sessions of ``SESSION`` messages, the final reply of each."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.smtp: smtplib.SMTP | None = None

    def __call__(self, number: int) -> str | None:
        if self.smtp is None:
            self.smtp = smtplib.SMTP("127.0.0.1", self.port, timeout=WAIT)
            self.smtp.ehlo("client.example")
        smtp = self.smtp
        try:
            for step, (code, reply) in (
                ("MAIL", smtp.mail(SENDER)),
                ("RCPT", smtp.rcpt(f"direct{number}@example.net")),
                ("DATA", smtp.data(message("direct", number))),
            ):
                if code != 250:
                    return f"{step}: {code} {reply.decode(errors='replace')}"
        finally:
            if number % SESSION == 0:
                self.close()
        return None

    def close(self) -> None:
        if self.smtp is not None:
            try:
                self.smtp.quit()
            except (OSError, smtplib.SMTPException):
                pass
            self.smtp = None


def through_postfix(postfix: PostfixInstance) -> Callable[[int], str | None]:
    def send(number: int) -> str | None:
        refused = postfix.send_smtp(message("queued", number), SENDER, [f"q{number}@example.net"])
        return None if not refused else str(refused)

    return send


@pytest.mark.parametrize("processes", [1, 2])
def test_mail_flows_across_ten_reloads(
    postfix_factory: PostfixFactory, filterd_factory: FilterdFactory, processes: int
) -> None:
    port = free_port()
    postfix = postfix_factory(content_filter="smtp", filter_port=port)
    filterd = filterd_factory(filterd_config(port, postfix.reinject_port, processes, 0))
    assert filterd.pid is not None
    if processes > 1:
        wait_for(
            "the worker", lambda: len(worker_pids(filterd.output_text(), "smtp")) == 1, filterd
        )
    direct = FilterdClient(port)
    clients = [Client("direct", direct), Client("queued", through_postfix(postfix))]
    for client in clients:
        client.start()
    try:
        for generation in range(1, RELOADS + 1):
            before = [client.sent for client in clients]
            for client in clients:
                client.permits.release(BATCH)
            # Half of the batch is through; the rest goes on while filterd reloads.
            wait_for(
                "mail before the reload",
                lambda before=before: all(
                    c.sent >= b + BATCH // 2 for c, b in zip(clients, before, strict=True)
                ),
                filterd,
            )
            filterd.config_path.write_text(
                filterd_config(port, postfix.reinject_port, processes, generation)
            )
            os.kill(filterd.pid, signal.SIGHUP)
            wait_for(
                f"reload {generation}",
                lambda generation=generation: (
                    filterd.output_text().count("configuration reloaded (") == generation
                ),
                filterd,
            )
        wait_for(
            "the last batch",
            lambda: all(client.sent == RELOADS * BATCH for client in clients),
            filterd,
        )
    finally:
        for client in clients:
            client.finish()
        direct.close()
    # A new session after the last reload: the last chain.
    last = FilterdClient(port)
    assert last(SESSION * 1000) is None
    last.close()
    for client in clients:
        assert client.errors == [], f"{client.kind}: {client.errors}\n{filterd.output_text()}"
    wanted = Counter(id for client in clients for id in client.accepted)
    wanted[f"<direct-{SESSION * 1000}@example.org>"] += 1
    assert sum(wanted.values()) == 2 * RELOADS * BATCH + 1
    postfix.wait_for_delivered(len(wanted), timeout=WAIT)
    postfix.wait_for_empty_queue(timeout=WAIT)
    delivered = postfix.delivered_messages()
    ids = Counter(
        m.group(1).decode()
        for m in (re.search(rb"^Message-ID: (<[^>]+>)$", d, re.MULTILINE | re.I) for d in delivered)
        if m is not None
    )
    assert ids == wanted  # each one exactly once
    maillog = postfix.log_text()
    assert "status=deferred" not in maillog  # Postfix, filterd's other client, saw no error
    assert "status=bounced" not in maillog
    tags = {m.group(1) for d in delivered for m in re.finditer(rb"X-Example-Tag: (\S+)", d)}
    assert len(tags) > 2  # mail went through several generations' chains
    (final,) = [d for d in delivered if f"direct-{SESSION * 1000}@".encode() in d]
    assert f"X-Example-Tag: gen-{RELOADS}".encode() in final
    assert any(b"X-Reloaded: yes" in d for d in delivered)
    log = filterd.output_text()
    assert "reload refused" not in log
    assert "configuration reloaded (1 listeners, chain: example_tagger, header_checks)" in log
    if processes > 1:
        *replaced, current = worker_pids(log, "smtp")
        assert len(replaced) == RELOADS
        wait_for("the replaced workers to exit", lambda: all(map(gone, replaced)), filterd)
        assert not gone(current)
    assert filterd.stop(sweep=False) == 0
