"""filterd as Postfix's before-queue proxy (smtpd_proxy_filter), end to end.

The inbound smtpd gets its -o options from deploy/postfix/master.cf.proxy.snippet.
"""

from __future__ import annotations

import re
import smtplib

import pytest

from tests.support.filterd_proc import FilterdFactory, filterd_config
from tests.support.postfix import DEPLOY_DIR, PostfixFactory, free_port, postfix_available

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not postfix_available(), reason="Postfix (master) is not installed"),
    pytest.mark.timeout(120),
]

REFUSE_BAD = "check_recipient_access inline:{ bad@example.org=REJECT }, permit_mynetworks, reject"


def inbound_options(filter_port: int) -> dict[str, str]:
    """The -o lines of the snippet's `smtp inet` entry, with 10025 replaced."""
    text = (DEPLOY_DIR / "master.cf.proxy.snippet").read_text()
    entry = text.split("\nsmtp ", 1)[1].split("\n#", 1)[0]
    options = dict(re.findall(r"^\s+-o ([a-z_]+)=(.*)$", entry, re.MULTILINE))
    assert "smtpd_proxy_filter" in options
    return {k: v.replace("10025", str(filter_port)) for k, v in options.items()}


def test_before_queue_proxy_refuses_at_rcpt_and_delivers_the_rest(
    postfix_factory: PostfixFactory, filterd_factory: FilterdFactory
) -> None:
    port = free_port()
    postfix = postfix_factory(
        smtpd_options=inbound_options(port),
        main_cf_extra={"reinject_rcpt_checks": REFUSE_BAD},
        reinject_options={"smtpd_recipient_restrictions": "$reinject_rcpt_checks"},
    )
    filterd_factory(
        filterd_config(listen=f"127.0.0.1:{port}", next_hop=f"127.0.0.1:{postfix.reinject_port}")
    )
    message = b"Subject: proxied\r\nFrom: a@example.net\r\n\r\nbody\r\n"
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=30) as client:
        client.ehlo("client.example.net")
        assert client.mail("alice@example.net")[0] == 250
        code, text = client.rcpt("bad@example.org")
        # The refusal of the queueing smtpd reaches the remote client at RCPT time.
        assert code == 554, text
        assert client.rcpt("good@example.org")[0] == 250
        code, text = client.data(message)
        assert code == 250, text
    (delivered,) = postfix.wait_for_delivered(1, "good@example.org")
    assert b"Subject: proxied" in delivered
    assert b"by filterd.test (filterd)" in delivered
    assert postfix.delivered_messages("bad@example.org") == []
