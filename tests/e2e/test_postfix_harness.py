"""The private-Postfix harness works on its own, without filterd.

- mail injected by sendmail(1) and over SMTP is delivered unchanged apart from the
  changes Postfix is known to make (tests/support/mailcompare.py);
- the instance stops cleanly and leaves no process behind;
- the deploy snippets (deploy/postfix/) wire up the after-queue filter loop: a stand-in
  content filter written here (a threaded SMTP/LMTP server that relays with smtplib to
  the reinjection smtpd) sees every message, XFORWARD included, and the reinjected
  copies are delivered;
- with the filter down, Postfix defers and keeps the mail; `flush()` delivers it later.
"""

from __future__ import annotations

import re
import smtplib
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mailcompare import Injection, corpus, delivery_differences, format_problems
from tests.support.postfix import (
    FilterProtocol,
    PostfixFactory,
    PostfixInstance,
    free_port,
    postfix_available,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not postfix_available(), reason="Postfix (master) is not installed"),
    pytest.mark.timeout(120),
]

SENDER = "sender@example.org"
REFUSE_BAD = "check_recipient_access inline:{ bad@example.org=REJECT }, permit_mynetworks, reject"

# A message with the usual traps: lines that are a lone dot or start with one (dot
# stuffing), a folded header, trailing white space, 8-bit text, no final newline.
TRICKY = (
    b"From: Alice <alice@example.net>\n"
    b"To: bob@example.org\n"
    b"Subject: dots and folds\n"
    b"X-Folded: first part\n"
    b"\tsecond part  \n"
    b"Message-ID: <tricky@example.net>\n"
    b"Date: Mon, 1 Jan 2024 00:00:00 +0000\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: text/plain; charset=utf-8\n"
    b"Content-Transfer-Encoding: 8bit\n"
    b"\n"
    b".\n"
    b"..two dots\n"
    b".leading dot\n"
    b"trailing spaces   \n"
    b"\n"
    b"caf\xc3\xa9 \xe2\x82\xac\n"
    b"no final newline"
)


def _rcpt(prefix: str, index: int) -> str:
    return f"{prefix}{index:02d}@example.org"


def _assert_all_unchanged(
    postfix: PostfixInstance,
    messages: dict[str, bytes],
    *,
    injection: Injection,
    received_added: int,
) -> None:
    problems: dict[str, list[str]] = {}
    for rcpt, original in messages.items():
        delivered = postfix.delivered_messages(rcpt)
        if len(delivered) != 1:
            problems[rcpt] = [f"{len(delivered)} copies delivered"]
            continue
        diffs = delivery_differences(
            original,
            delivered[0],
            injection=injection,
            received_added=received_added,
        )
        if diffs:
            problems[rcpt] = diffs
    assert not problems, format_problems(problems, len(messages))


# -- the instance on its own -------------------------------------------------------------


def test_sendmail_and_smtp_deliver_messages_unchanged(postfix_factory: PostfixFactory) -> None:
    """Corpus + a tricky message, by sendmail and by SMTP: only known Postfix changes."""
    postfix = postfix_factory()
    by_sendmail = {_rcpt("s", i): path.read_bytes() for i, path in enumerate(corpus())}
    by_smtp = {_rcpt("t", i): path.read_bytes() for i, path in enumerate(corpus())}
    by_sendmail["s-tricky@example.org"] = TRICKY
    by_smtp["t-tricky@example.org"] = TRICKY
    for rcpt, message in by_sendmail.items():
        postfix.sendmail(message, SENDER, [rcpt])
    for rcpt, message in by_smtp.items():
        assert postfix.send_smtp(message, SENDER, [rcpt]) == {}

    postfix.wait_for_delivered(len(by_sendmail) + len(by_smtp))
    _assert_all_unchanged(postfix, by_sendmail, injection="sendmail", received_added=1)
    _assert_all_unchanged(postfix, by_smtp, injection="smtp", received_added=1)
    postfix.wait_for_empty_queue()
    assert postfix.delivered_messages(SENDER) == [], "unexpected bounce"
    assert "warning" not in postfix.log_text()


def test_stop_leaves_no_process(postfix_factory: PostfixFactory) -> None:
    """stop() ends master and every child of this instance (found by MAIL_CONFIG)."""
    postfix = postfix_factory()
    postfix.send_smtp(TRICKY, SENDER, ["bob@example.org"])
    postfix.wait_for_delivered(1)
    master_pid = postfix.master_pid
    running = postfix.processes()
    assert master_pid in running
    assert len(running) > 3, "master plus at least pickup, qmgr and smtpd"

    postfix.stop()

    assert postfix.processes() == []
    assert not Path(f"/proc/{master_pid}").exists()
    pgrep = subprocess.run(["pgrep", "-f", str(postfix.config_dir)], capture_output=True)
    assert pgrep.returncode == 1, pgrep.stdout
    assert postfix.master_pid is None


def test_bulk_injection_with_smtp_source(postfix_factory: PostfixFactory) -> None:
    """smtp-source(1) drives the inbound smtpd with parallel sessions."""
    postfix = postfix_factory()
    postfix.smtp_source(20, SENDER, "bulk@example.org", sessions=4)
    assert len(postfix.wait_for_delivered(20, "bulk@example.org")) == 20
    postfix.wait_for_empty_queue()


# -- a stand-in content filter -----------------------------------------------------------


class _StandInFilter(socketserver.ThreadingTCPServer):
    """A minimal after-queue filter: SMTP or LMTP in, smtplib out to the reinjection port.

    It announces XFORWARD, stores what Postfix sends, and forwards it downstream. It
    answers the final "." only after the downstream "." succeeded (FILTER_README's contract).
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, protocol: FilterProtocol, reinject_port: int, port: int) -> None:
        super().__init__(("127.0.0.1", port), _StandInHandler)
        self.protocol = protocol
        self.reinject_port = reinject_port
        self.xforward_seen: list[str] = []
        self.transactions = 0
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _StandInHandler(socketserver.StreamRequestHandler):
    server: _StandInFilter
    timeout = 30

    def _reply(self, text: str) -> None:
        self.wfile.write(text.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self) -> None:
        self._reply("220 standin.test ESMTP stand-in filter")
        sender: str | None = None
        recipients: list[str] = []
        xforward: list[str] = []
        while line := self.rfile.readline(2048):
            command = line.decode("utf-8", "replace").rstrip("\r\n")
            verb = command.split(" ", 1)[0].upper()
            if verb in ("EHLO", "LHLO"):
                self._reply("250-standin.test")
                self._reply("250-8BITMIME")
                self._reply("250 XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT")
            elif verb == "XFORWARD":
                xforward.append(command.split(" ", 1)[1])
                with self.server.lock:
                    self.server.xforward_seen.append(command)
                self._reply("250 2.0.0 Ok")
            elif verb == "MAIL":
                sender, recipients = _address(command), []
                self._reply("250 2.1.0 Ok")
            elif verb == "RCPT":
                recipients.append(_address(command))
                self._reply("250 2.1.5 Ok")
            elif verb == "DATA":
                self._reply("354 End data with <CR><LF>.<CR><LF>")
                self._relay(sender or "", recipients, self._read_data(), xforward)
                sender, recipients, xforward = None, [], []
            elif verb == "RSET":
                sender, recipients, xforward = None, [], []
                self._reply("250 2.0.0 Ok")
            elif verb == "NOOP":
                self._reply("250 2.0.0 Ok")
            elif verb == "QUIT":
                self._reply("221 2.0.0 Bye")
                return
            else:
                self._reply("502 5.5.2 Error: command not recognized")

    def _read_data(self) -> bytes:
        lines: list[bytes] = []
        while (line := self.rfile.readline()) != b".\r\n":
            if not line:
                raise ConnectionError("EOF in DATA")
            lines.append(line[1:] if line.startswith(b".") else line)
        return b"".join(lines)

    def _relay(self, sender: str, recipients: list[str], data: bytes, xforward: list[str]) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", self.server.reinject_port, timeout=30) as client:
                client.ehlo("standin.test")
                if client.has_extn("xforward"):
                    for attributes in xforward:
                        code, _ = client.docmd("XFORWARD", attributes)
                        if code != 250:
                            raise smtplib.SMTPException(f"XFORWARD refused: {code}")
                refused = client.sendmail(sender, recipients, data)
        except smtplib.SMTPRecipientsRefused as exc:
            refused = {rcpt: (code, text) for rcpt, (code, text) in exc.recipients.items()}
        except (smtplib.SMTPException, OSError) as exc:
            self._replies(recipients, f"451 4.4.0 relay failed: {type(exc).__name__}")
            return
        with self.server.lock:
            self.server.transactions += 1
        if self.server.protocol == "smtp":
            ok = len(refused) < len(recipients)
            self._reply("250 2.0.0 Ok: relayed" if ok else "554 5.0.0 all recipients refused")
            return
        for rcpt in recipients:  # LMTP: one reply per accepted recipient
            if rcpt in refused:
                code, text = refused[rcpt]
                self._reply(f"{code} {text.decode(errors='replace')}")
            else:
                self._reply(f"250 2.0.0 <{rcpt}> Ok: relayed")

    def _replies(self, recipients: list[str], text: str) -> None:
        count = len(recipients) if self.server.protocol == "lmtp" else 1
        for _ in range(count):
            self._reply(text)


def _address(command: str) -> str:
    match = re.search(r"<([^>]*)>", command)
    return match.group(1) if match else ""


class _StandIns:
    """Starts stand-in filters on free ports and shuts them down after the test."""

    def __init__(self) -> None:
        self.servers: list[_StandInFilter] = []

    def start(
        self, protocol: FilterProtocol, reinject_port: int = 0, port: int = 0
    ) -> _StandInFilter:
        """Serve on `port` (0: any free one); set `reinject_port` later if not known yet."""
        server = _StandInFilter(protocol, reinject_port, port)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        self.servers.append(server)
        return server

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


@pytest.fixture
def standins() -> Iterator[_StandIns]:
    """Stand-in content filters for one test."""
    factory = _StandIns()
    try:
        yield factory
    finally:
        factory.close()


@pytest.mark.parametrize("protocol", ["smtp", "lmtp"])
def test_deploy_snippets_wire_up_the_filter_loop(
    postfix_factory: PostfixFactory, standins: _StandIns, protocol: FilterProtocol
) -> None:
    """content_filter -> stand-in -> reinjection smtpd: corpus delivered, XFORWARD honoured."""
    standin = standins.start(protocol)
    postfix = postfix_factory(content_filter=protocol, filter_port=standin.port)
    standin.reinject_port = postfix.reinject_port
    messages = {_rcpt("f", i): path.read_bytes() for i, path in enumerate(corpus())}
    messages["f-tricky@example.org"] = TRICKY
    for rcpt, message in messages.items():
        assert postfix.send_smtp(message, SENDER, [rcpt]) == {}

    postfix.wait_for_delivered(len(messages))
    # One Received: from the inbound smtpd, one from the reinjection smtpd.
    _assert_all_unchanged(postfix, messages, injection="smtp", received_added=2)
    postfix.wait_for_empty_queue()
    assert standin.transactions == len(messages)
    log = postfix.log_text()
    relay = rf"relay=127\.0\.0\.1\[127\.0\.0\.1\]:{standin.port}\b.*status=sent"
    assert len(re.findall(relay, log)) == len(messages)
    # smtp(8)/lmtp(8) sent XFORWARD (smtp_send_xforward_command=yes), and the reinjection
    # smtpd accepted it (smtpd_authorized_xforward_hosts): it logs the original queue id.
    assert any("IDENT=" in line for line in standin.xforward_seen)
    assert len(re.findall(r"smtpd\[\d+\]: \w+: client=.*, orig_queue_id=\w+", log)) == len(messages)
    assert postfix.delivered_messages(SENDER) == [], "unexpected bounce"


def test_filter_down_defers_and_flush_delivers_later(
    postfix_factory: PostfixFactory, standins: _StandIns
) -> None:
    """Filter down: 4.4.1 deferral, mail stays queued; filter up + flush(): delivered."""
    filter_port = free_port()
    postfix = postfix_factory(content_filter="smtp", filter_port=filter_port)
    postfix.send_smtp(TRICKY, SENDER, ["late@example.org"])

    match = postfix.wait_for_log(
        rf"to=<late@example\.org>, relay=none, .*dsn=(4\.\d+\.\d+), status=deferred"
        rf" \(connect to 127\.0\.0\.1\[127\.0\.0\.1\]:{filter_port}: Connection refused\)"
    )
    assert match.group(1) == "4.4.1"
    (entry,) = postfix.queue_json()
    assert entry["queue_name"] in ("deferred", "active")
    (recipient,) = entry["recipients"]
    assert recipient["address"] == "late@example.org"
    assert "Connection refused" in recipient["delay_reason"]
    assert postfix.delivered_messages() == []

    standins.start("smtp", reinject_port=postfix.reinject_port, port=filter_port)
    since = postfix.log_offset()
    postfix.flush()
    postfix.wait_for_log(r"to=<late@example\.org>, relay=127.*status=sent", since=since)
    (delivered,) = postfix.wait_for_delivered(1, "late@example.org")
    assert delivery_differences(TRICKY, delivered, injection="smtp", received_added=2) == []
    postfix.wait_for_empty_queue()


def test_reinjection_smtpd_options_can_be_overridden(
    postfix_factory: PostfixFactory, standins: _StandIns
) -> None:
    """reinject_options changes the snippet's 10026 smtpd: here it refuses bad@."""
    # LMTP lets the stand-in pass the per-recipient refusal back after DATA.
    standin = standins.start("lmtp")
    postfix = postfix_factory(
        content_filter="lmtp",
        filter_port=standin.port,
        main_cf_extra={"reinject_rcpt_checks": REFUSE_BAD},
        reinject_options={"smtpd_recipient_restrictions": "$reinject_rcpt_checks"},
    )
    standin.reinject_port = postfix.reinject_port
    postfix.send_smtp(TRICKY, SENDER, ["good@example.org", "bad@example.org"])

    postfix.wait_for_delivered(1, "good@example.org")
    postfix.wait_for_log(
        r"NOQUEUE: reject: RCPT from \S+: 554 5\.7\.1 <bad@example\.org>: "
        r"Recipient address rejected: Access denied"
    )
    postfix.wait_for_log(r"to=<bad@example\.org>, relay=127.*dsn=5\.7\.1, status=bounced")
    (bounce,) = postfix.wait_for_delivered(1, SENDER)
    assert b"bad@example.org" in bounce
    assert postfix.delivered_messages("bad@example.org") == []
