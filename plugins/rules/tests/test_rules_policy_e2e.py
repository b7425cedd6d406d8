"""The rules plugin behind Postfix's check_policy_service (deploy/postfix's policy snippet:
``check_policy_service ..., permit_mynetworks, reject_unauth_destination``): the client gets
the reply it would get with postfwd answering the same action, since Postfix adds the
``<rcpt>: Recipient address rejected:`` prefix itself; a DEFER_IF_PERMIT defers once Postfix's
own permit_mynetworks permits."""

from __future__ import annotations

import smtplib

import pytest

from tests.support.filterd_proc import FilterdFactory
from tests.support.policy_door import postfix_asking_filterd
from tests.support.postfix import PostfixFactory, postfix_available

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not postfix_available(), reason="Postfix (master) is not installed"),
    pytest.mark.timeout(120),
]


def test_rules_through_the_policy_door(
    postfix_factory: PostfixFactory, filterd_factory: FilterdFactory
) -> None:
    postfix = postfix_asking_filterd(
        postfix_factory,
        filterd_factory,
        """
[[chain]]
plugin = "rules"
[[chain.config.rules]]
recipient = "== rej@example.org"
action = "REJECT mailbox closed"
[[chain.config.rules]]
recipient = "== dip@example.org"
action = "DEFER_IF_PERMIT try later"
[[chain.config.rules]]
sender = "=~ ^bad@"
action = "550 5.7.1 no mail from $$sender"
""",
    )
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=30) as client:
        client.ehlo("client.example")
        assert client.mail("alice@example.com")[0] == 250
        assert client.rcpt("rej@example.org") == (
            554,
            b"5.7.1 <rej@example.org>: Recipient address rejected: mailbox closed",
        )
        assert client.rcpt("dip@example.org") == (
            450,
            b"4.7.1 <dip@example.org>: Recipient address rejected: try later",
        )
        assert client.rcpt("plain@example.org")[0] == 250
        client.rset()
        assert client.mail("bad@example.com")[0] == 250
        assert client.rcpt("plain@example.org") == (
            550,
            b"5.7.1 <plain@example.org>: Recipient address rejected: no mail from bad@example.com",
        )


def test_a_redirect_rule_through_the_policy_door(
    postfix_factory: PostfixFactory, filterd_factory: FilterdFactory
) -> None:
    """A rule's REDIRECT reaches Postfix as the policy action REDIRECT: the message goes to
    that address instead of all its recipients."""
    postfix = postfix_asking_filterd(
        postfix_factory,
        filterd_factory,
        """
[[chain]]
plugin = "rules"
[[chain.config.rules]]
sender = "== lawyer@example.com"
action = "REDIRECT legal@example.net"
""",
    )
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=30) as client:
        client.ehlo("client.example")
        assert client.mail("lawyer@example.com")[0] == 250
        assert client.rcpt("bob@example.org")[0] == 250
        assert client.rcpt("carol@example.org")[0] == 250
        assert client.data(b"Subject: for legal\r\n\r\nbody\r\n")[0] == 250
        assert client.mail("alice@example.com")[0] == 250
        assert client.rcpt("bob@example.org")[0] == 250
        assert client.data(b"Subject: for bob\r\n\r\nbody\r\n")[0] == 250
    (message,) = postfix.wait_for_delivered(1, "legal@example.net")
    assert b"Subject: for legal" in message
    (message,) = postfix.wait_for_delivered(1, "bob@example.org")
    assert b"Subject: for bob" in message
    postfix.wait_for_empty_queue()
    assert len(postfix.delivered_messages()) == 2  # not to carol@ nor bob@ the first time
