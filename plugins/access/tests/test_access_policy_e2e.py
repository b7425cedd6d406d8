"""The access plugin behind Postfix's check_policy_service (deploy/postfix's policy snippet:
``check_policy_service ..., permit_mynetworks, reject_unauth_destination``): refusals reach
the client, and a DEFER_IF_PERMIT goes to Postfix as that action, which defers once Postfix's
own permit_mynetworks permits. Postfix prefixes a policy service's text with
``<recipient>: Recipient address rejected:`` itself, so the plugin leaves that out there: the
client reads the reply Postfix's own access table would give.
"""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest

from tests.support.filterd_proc import FilterdFactory
from tests.support.policy_door import postfix_asking_filterd
from tests.support.postfix import PostfixFactory, postfix_available

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not postfix_available(), reason="Postfix (master) is not installed"),
    pytest.mark.timeout(120),
]


def test_access_through_the_policy_door(
    tmp_path: Path, postfix_factory: PostfixFactory, filterd_factory: FilterdFactory
) -> None:
    senders = tmp_path / "senders"
    senders.write_text("rej@example.com REJECT 5.1.1 no such sender\n")
    recipients = tmp_path / "recipients"
    recipients.write_text(
        "rej@example.org REJECT mailbox closed\n"
        "dip@example.org DEFER_IF_PERMIT try later\n"
        "dir@example.org DEFER_IF_REJECT maybe\n"
        "bye@example.org 421 4.7.0 closing\n"
    )
    postfix = postfix_asking_filterd(
        postfix_factory,
        filterd_factory,
        f"""
[[chain]]
plugin = "access"
[chain.config]
sender = ["texthash:{senders}"]
recipient = ["texthash:{recipients}"]
""",
    )
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=30) as client:
        client.ehlo("client.example")
        assert client.mail("alice@example.com")[0] == 250
        code, text = client.rcpt("rej@example.org")
        assert (code, text) == (
            554,
            b"5.7.1 <rej@example.org>: Recipient address rejected: mailbox closed",
        )
        code, text = client.rcpt("dip@example.org")  # permit_mynetworks permits: deferred
        assert (code, text) == (
            450,
            b"4.7.1 <dip@example.org>: Recipient address rejected: try later",
        )
        assert client.rcpt("dir@example.org")[0] == 250  # nothing rejects after it
        assert client.rcpt("plain@example.org")[0] == 250
        client.rset()
        assert client.mail("rej@example.com")[0] == 250
        code, text = client.rcpt("plain@example.org")
        assert code == 554
        assert text.endswith(b"<rej@example.com>: Sender address rejected: no such sender")
        # filterd's sender form of 5.1.1 (5.1.7), which Postfix, answering for the recipient
        # (the policy service sits in smtpd_recipient_restrictions), maps to 5.1.3
        assert text.startswith(b"5.1.3 ")
        client.rset()
        assert client.mail("alice@example.com")[0] == 250
        code, text = client.rcpt("bye@example.org")
        assert code == 421
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()


def test_redirect_through_the_policy_door(
    tmp_path: Path, postfix_factory: PostfixFactory, filterd_factory: FilterdFactory
) -> None:
    """REDIRECT reaches Postfix as the policy action REDIRECT: Postfix sends the message to
    that address instead of all its recipients."""
    recipients = tmp_path / "recipients"
    recipients.write_text("moved@example.org REDIRECT new@example.net\n")
    postfix = postfix_asking_filterd(
        postfix_factory,
        filterd_factory,
        f"""
[[chain]]
plugin = "access"
[chain.config]
recipient = ["texthash:{recipients}"]
""",
    )
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=30) as client:
        client.ehlo("client.example")
        assert client.mail("alice@example.com")[0] == 250
        assert client.rcpt("other@example.org")[0] == 250
        assert client.rcpt("moved@example.org")[0] == 250
        assert client.data(b"Subject: redirected\r\n\r\nbody\r\n")[0] == 250
    (message,) = postfix.wait_for_delivered(1, "new@example.net")
    assert b"Subject: redirected" in message
    postfix.wait_for_log(
        r"redirect: RCPT from \S+: <moved@example\.org>: Recipient address triggers "
        r"REDIRECT new@example\.net"
    )
    postfix.wait_for_empty_queue()
    assert len(postfix.delivered_messages()) == 1  # not to other@ nor moved@
