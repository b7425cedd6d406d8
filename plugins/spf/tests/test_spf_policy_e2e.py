"""SPF through Postfix's check_policy_service → filterd's policy listener, with a real DNS
server on loopback: a forged sender is refused at RCPT, a pass gets Received-SPF."""

from __future__ import annotations

import re
import smtplib

import pytest

from tests.support.dns_server import DnsServer
from tests.support.filterd_proc import FilterdFactory
from tests.support.policy_door import postfix_asking_filterd
from tests.support.postfix import PostfixFactory, PostfixInstance, postfix_available

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not postfix_available(), reason="Postfix (master) is not installed"),
    pytest.mark.timeout(120),
]

ZONE = {
    # Postfix's client here is 127.0.0.1: only "pass.example" authorises it.
    "pass.example": [{"TXT": "v=spf1 ip4:127.0.0.1 -all"}],
    "forged.example": [{"TXT": "v=spf1 ip4:192.0.2.0/24 -all"}],
}


def start(
    postfix_factory: PostfixFactory, filterd_factory: FilterdFactory, dns_address: str
) -> PostfixInstance:
    return postfix_asking_filterd(
        postfix_factory,
        filterd_factory,
        f"""
[[chain]]
plugin = "spf"
timeout = "10s"
[chain.config]
skip_networks = []
authserv_id = "mx.postfix.test"
headers = ["received-spf"]
resolver = {{ nameservers = ["{dns_address}"], timeout = "500ms", lifetime = "1s" }}
""",
    )


def test_forged_sender_refused_pass_tagged_dns_down_deferred(
    postfix_factory: PostfixFactory, filterd_factory: FilterdFactory
) -> None:
    with DnsServer(ZONE) as dns:
        postfix = start(postfix_factory, filterd_factory, dns.address)
        smtp_port = postfix.smtp_port
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as client:
            client.ehlo("client.example")
            assert client.mail("alice@forged.example")[0] == 250
            code, text = client.rcpt("bob@example.org")
            assert code == 550, text
            assert b"5.7.23" in text
            assert b"SPF fail" in text
            client.rset()
            assert client.mail("alice@pass.example")[0] == 250
            assert client.rcpt("bob@example.org")[0] == 250
            assert client.data(b"Subject: spf pass\r\n\r\nbody\r\n")[0] == 250
        postfix.wait_for_log(
            r"NOQUEUE: reject: RCPT from \S+: 550 5\.7\.23 <bob@example\.org>: "
            r"Recipient address rejected: SPF fail"
        )
        (delivered,) = postfix.wait_for_delivered(1, "bob@example.org")
        assert re.search(rb"^Received-SPF: Pass ", delivered, re.MULTILINE | re.IGNORECASE)
    # The DNS server is gone: SPF is a temporary error, the client is told to retry.
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as client:
        client.ehlo("client.example")
        # (a domain not in the resolver cache)
        assert client.mail("carol@unseen.example")[0] == 250
        code, text = client.rcpt("bob@example.org")
    assert code == 451, text
    assert b"4.7.24" in text
