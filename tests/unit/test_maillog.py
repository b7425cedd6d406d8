"""The Postfix-style lines every front door writes (``filterd.maillog``): admins' log parsers
read them, so their text is fixed here."""

from __future__ import annotations

import logging

import pytest

from filterd.maillog import MailLog, smtpd_line
from filterd.model.envelope import Client
from filterd.model.reply import Reply

PEER = Client("192.0.2.1", 40123, "client.example.net", "helo.example.net", "ESMTP")
REFUSED = Reply(550, "5.7.1", "<bad@example.org>: Recipient address rejected")


def test_a_refused_recipient_reads_as_postfix_smtpd_writes_it() -> None:
    line = smtpd_line(
        "reject", "RCPT", PEER, REFUSED, sender="a@example.net", rcpt="bad@example.org"
    )
    assert line == (
        "reject: RCPT from client.example.net[192.0.2.1]: 550 5.7.1 <bad@example.org>: "
        "Recipient address rejected; from=<a@example.net> to=<bad@example.org> proto=ESMTP "
        "helo=<helo.example.net>"
    )


def test_before_mail_there_is_no_sender_and_the_null_sender_is_empty() -> None:
    no_helo = Client("192.0.2.1", None, "unknown", None, "SMTP")
    assert smtpd_line("reject", "CONNECT", no_helo, "554 5.7.1 go away", sender=None) == (
        "reject: CONNECT from unknown[192.0.2.1]: 554 5.7.1 go away; proto=SMTP helo=<>"
    )
    assert smtpd_line("action", "DATA", PEER, "DUNNO", sender="") == (
        "action: DATA from client.example.net[192.0.2.1]: DUNNO; from=<> proto=ESMTP "
        "helo=<helo.example.net>"
    )


def test_peer_supplied_text_cannot_break_the_line() -> None:
    sly = Client("192.0.2.1", None, "unknown", "x\r\nreject: forged", "ESMTP")
    line = smtpd_line("reject", "RCPT", sly, REFUSED, sender="a\nb@example.net", rcpt="c@d")
    assert "\n" not in line
    assert "\r" not in line
    assert "helo=<x\\x0d\\x0areject: forged>" in line


def test_connect_and_disconnect_lines(caplog: pytest.LogCaptureFixture) -> None:
    log = MailLog("smtpd")
    with caplog.at_level(logging.INFO, logger="filterd"):
        log.connect("client.example.net[192.0.2.1]")
        log.disconnect("client.example.net[192.0.2.1]", requests=3)
    assert caplog.messages == [
        "connect from client.example.net[192.0.2.1]",
        "disconnect from client.example.net[192.0.2.1], requests=3",
    ]
