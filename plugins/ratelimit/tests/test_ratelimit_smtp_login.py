"""``key = "sasl_username"`` at the SMTP door: filterd as the relay (``auth_socket``, a real
Dovecot), a client that authenticated is counted under its login, as at the policy door
(the request's ``sasl_username``); mail without a login is not limited; the rules plugin's
``rate($$sasl_username/...)`` sees the same login."""

from __future__ import annotations

import base64
import smtplib
import ssl
from pathlib import Path

import pytest
import trustme

from tests.support.dovecot import dovecot_installed, running_dovecot
from tests.support.filterd_proc import FilterdFactory
from tests.support.postfix import free_port

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not dovecot_installed(), reason="dovecot-core is not installed"),
]

OUTSIDE = "127.0.0.2"  # not in mynetworks: relays only after AUTH
INSIDE = "127.0.0.1"
MESSAGE = b"Subject: login limits\r\n\r\nhello\r\n"


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def test_the_smtp_doors_login_is_counted(tmp_path: Path, filterd_factory: FilterdFactory) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_pem.write_to_path(str(key_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    port = free_port()
    users = {"alice@example.org": "secret", "bob@example.org": "hunter2"}
    with running_dovecot(users) as dovecot:
        filterd_factory(
            f"""
[[listen]]
address = "127.0.0.1:{port}"
hostname = "filterd.test"
mynetworks = ["127.0.0.1/32"]
relay_domains = ["example.org"]
tls_cert = "{cert_file}"
tls_key = "{key_file}"
auth_socket = "unix:{dovecot.socket}"
[limits]
auth_failure_delay = "0s"
[delivery]
method = "maildir"
root = "{tmp_path / "mail"}"
[[chain]]
plugin = "ratelimit"
[chain.config]
state = {{ path = "{tmp_path / "ratelimit.sqlite"}" }}
[[chain.config.limits]]
name = "login-rcpts"
key = "sasl_username"
count = "recipients"
limit = 2
window = "1h"
[[chain]]
plugin = "rules"
[chain.config]
actions = {{ rate = {{ state = {{ path = "{tmp_path / "rules.sqlite"}" }} }} }}
[[chain.config.rules]]
id = "LOGINS"
sasl_username = "== bob@example.org"
action = "rate($$sasl_username/1/3600/450 4.7.1 $$sasl_username: one recipient an hour)"
"""
        )

        def connect(source: str, login: tuple[str, str] | None) -> smtplib.SMTP:
            client = smtplib.SMTP("127.0.0.1", port, local_hostname="client.example",
                                  source_address=(source, 0), timeout=30)  # fmt: skip
            client.ehlo()
            if login is not None:
                client.starttls(context=context)
                client.ehlo()
                code, _ = client.docmd("AUTH", f"PLAIN {plain(*login)}")
                assert code == 235
            return client

        alice = ("alice@example.org", "secret")
        with connect(OUTSIDE, alice) as client:
            assert client.mail("alice@example.org")[0] == 250
            assert client.rcpt("one@example.net")[0] == 250
            assert client.rcpt("two@example.net")[0] == 250
            assert client.rcpt("three@example.net") == (
                450,
                b"4.7.1 <three@example.net>: Recipient address rejected: Rate limit exceeded: "
                b"more than 2 recipients per 1h",
            )
            assert client.data(MESSAGE)[0] == 250
        # the login is counted, not the connection: a new one is over the limit too
        with connect(OUTSIDE, alice) as client:
            assert client.mail("alice@example.org")[0] == 250
            assert client.rcpt("four@example.net")[0] == 450
        # without a login nothing is counted under one
        with connect(INSIDE, None) as client:
            assert client.mail("carol@example.org")[0] == 250
            for n in range(4):
                assert client.rcpt(f"r{n}@example.org")[0] == 250
            assert client.data(MESSAGE)[0] == 250
        # the rules plugin's rate() on the login
        with connect(OUTSIDE, ("bob@example.org", "hunter2")) as client:
            assert client.mail("bob@example.org")[0] == 250
            assert client.rcpt("one@example.net")[0] == 250
            assert client.rcpt("two@example.net") == (
                450,
                b"4.7.1 <two@example.net>: Recipient address rejected: bob@example.org: one "
                b"recipient an hour",
            )
