"""The access and greylist plugins (and access(5) REDIRECT) with a real Postfix through the
milter door (smtpd_milters, deploy/postfix/main.cf.milter.snippet) and the LMTP door (the
after-queue content filter, deploy/postfix/main.cf.lmtp.snippet).

- Milter: Postfix's smtpd asks filterd at RCPT, so the client itself gets the access REJECT
  (5xx) and the greylisting (450 4.2.0); the retry after the delay is accepted and delivered
  with the X-Greylist header; a REDIRECT becomes delrcpt/addrcpt.
- LMTP: Postfix's smtpd has queued the message before filterd sees it, so the refusals reach
  Postfix's lmtp(8) client: the access REJECT bounces the message, the greylisting defers it
  and Postfix's own retry, after the delay, delivers it with the header.

The greylist delay is 1 s on the filterd process's real clock: the tests wait for it (the
milter) or let Postfix's queue retry (the LMTP door); nothing asserts how long anything took.
"""

from __future__ import annotations

import smtplib
import time
from pathlib import Path

import pytest

from tests.e2e.test_milter_postfix import milter_main_cf
from tests.support.filterd_proc import FilterdFactory
from tests.support.postfix import PostfixFactory, free_port, postfix_available

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not postfix_available(), reason="Postfix (master) is not installed"),
    pytest.mark.timeout(180),
]

GREYLISTED = b"4.2.0 Greylisted, see http://postgrey.schweikert.ch/help/example.org.html"
SENDER_REFUSED = b"5.7.1 <rej@example.com>: Sender address rejected: no such sender"
MESSAGE = b"From: alice@example.com\r\nSubject: %s\r\n\r\nHi.\r\n"


def chain(tmp_path: Path) -> str:
    """access (a sender REJECT, a recipient REDIRECT), then greylist with a 1 s delay."""
    senders = tmp_path / "senders"
    senders.write_text("rej@example.com REJECT no such sender\n")
    recipients = tmp_path / "recipients"
    recipients.write_text("moved@example.org REDIRECT new@example.net\n")
    return f"""
[[chain]]
plugin = "access"
[chain.config]
sender = ["texthash:{senders}"]
recipient = ["texthash:{recipients}"]

[[chain]]
plugin = "greylist"
[chain.config]
delay = "1s"
hostname = "mx.test"
whitelist_clients = []
whitelist_recipients = []
state = {{ path = "{tmp_path / "greylist.sqlite"}" }}
"""


def greylist_header(message: bytes) -> list[bytes]:
    head = message.split(b"\n\n", 1)[0]
    return [line for line in head.split(b"\n") if line.startswith(b"X-Greylist: delayed ")]


def test_access_and_greylist_through_the_milter_door(
    tmp_path: Path, postfix_factory: PostfixFactory, filterd_factory: FilterdFactory
) -> None:
    port = free_port()
    filterd_factory(
        f"""
[[listen]]
address = "127.0.0.1:{port}"
protocol = "milter"
[delivery]
method = "maildir"
"""
        + chain(tmp_path)
    )
    postfix = postfix_factory(main_cf_extra=milter_main_cf(port))

    def attempt(sender: str, *recipients: str) -> list[tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=30) as client:
            client.ehlo("client.example")
            assert client.mail(sender)[0] == 250
            replies = [client.rcpt(r) for r in recipients]
            if any(code == 250 for code, _ in replies):
                assert client.data(MESSAGE % sender.encode())[0] == 250
            return replies

    assert attempt("rej@example.com", "bob@example.org") == [(554, SENDER_REFUSED)]
    assert attempt("alice@example.com", "bob@example.org") == [(450, GREYLISTED)]
    assert attempt("carol@example.com", "moved@example.org", "dave@example.org") == [
        (450, GREYLISTED),
        (450, GREYLISTED),
    ]
    time.sleep(2.2)  # the delay runs on the real clock of the filterd process
    assert attempt("alice@example.com", "bob@example.org") == [(250, b"2.1.5 Ok")]
    replies = attempt("carol@example.com", "moved@example.org", "dave@example.org")
    assert [code for code, _ in replies] == [250, 250]
    (passed,) = postfix.wait_for_delivered(1, "bob@example.org")
    assert len(greylist_header(passed)) == 1, passed
    (redirected,) = postfix.wait_for_delivered(1, "new@example.net")
    assert b"Subject: carol@example.com" in redirected
    postfix.wait_for_log(
        r"NOQUEUE: milter-reject: RCPT from \S+: 554 5\.7\.1 <rej@example\.com>: "
        r"Sender address rejected: no such sender"
    )
    postfix.wait_for_empty_queue()
    assert len(postfix.delivered_messages()) == 2  # not to moved@ nor dave@


def test_access_and_greylist_through_the_lmtp_door(
    tmp_path: Path, postfix_factory: PostfixFactory, filterd_factory: FilterdFactory
) -> None:
    filter_port = free_port()
    postfix = postfix_factory(content_filter="lmtp", filter_port=filter_port)
    filterd_factory(
        f"""
[[listen]]
address = "127.0.0.1:{filter_port}"
protocol = "lmtp"
hostname = "filterd.test"
xforward_hosts = ["127.0.0.0/8"]
[delivery]
method = "relay"
next_hop = "127.0.0.1:{postfix.reinject_port}"
"""
        + chain(tmp_path)
    )
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=30) as client:
        client.ehlo("client.example")
        for sender, recipients in (
            ("rej@example.com", ["bob@example.org"]),
            ("alice@example.com", ["bob@example.org"]),
            ("carol@example.com", ["moved@example.org", "dave@example.org"]),
        ):
            refused = client.sendmail(sender, recipients, MESSAGE % sender.encode())
            assert refused == {}  # queued: filterd sees the message after Postfix's smtpd
    postfix.wait_for_log(
        r"to=<bob@example\.org>.*status=bounced \(host \S+ said: 554 5\.7\.1 "
        r"<rej@example\.com>: Sender address rejected: no such sender"
    )
    postfix.wait_for_log(r"to=<bob@example\.org>.*status=deferred .*4\.2\.0 Greylisted")
    # Postfix retries the deferred messages on its own; once the delay has passed they pass
    (passed,) = postfix.wait_for_delivered(1, "bob@example.org", timeout=90)
    assert b"Subject: alice@example.com" in passed
    assert len(greylist_header(passed)) == 1, passed
    (redirected,) = postfix.wait_for_delivered(1, "new@example.net", timeout=90)
    assert b"Subject: carol@example.com" in redirected
    assert len(greylist_header(redirected)) == 1, redirected
    assert postfix.delivered_messages("moved@example.org") == []
    assert postfix.delivered_messages("dave@example.org") == []
    assert [m for m in postfix.delivered_messages() if b"Subject: rej@" in m] == []
