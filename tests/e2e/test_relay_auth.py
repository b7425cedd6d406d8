"""Nobody relays who should not: a real filterd, hostile clients, a real Dovecot.

The "outside" client connects from 127.0.0.2, which the listener's mynetworks (127.0.0.1/32)
leaves out; Python's smtplib plays the clients. Each test that authenticates has a private
Dovecot of its own (tests/support/dovecot.py), so Dovecot's per-address penalty for failures
starts from nothing.
"""

from __future__ import annotations

import base64
import re
import smtplib
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.support.dovecot import DovecotInstance, dovecot_installed, running_dovecot
from tests.support.filterd_proc import FilterdFactory, FilterdProcess
from tests.support.postfix import free_port

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not dovecot_installed(), reason="dovecot-core is not installed"),
]

OUTSIDE = "127.0.0.2"  # not in mynetworks
INSIDE = "127.0.0.1"
MESSAGE = b"Subject: relay test\r\n\r\nhello\r\n"


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


class Setup:
    def __init__(self, tmp_path: Path, factory: FilterdFactory) -> None:
        self.tmp_path = tmp_path
        self.factory = factory
        self.mail = tmp_path / "mail"
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        self.cert, self.key = tmp_path / "cert.pem", tmp_path / "key.pem"
        cert.private_key_pem.write_to_path(str(self.key))
        cert.cert_chain_pems[0].write_to_path(str(self.cert))
        self.context = ssl.create_default_context()
        ca.configure_trust(self.context)
        self.port = 0
        self.filterd: FilterdProcess | None = None

    def start(self, auth_socket: Path | None = None, max_auth_failures: int = 2) -> None:
        self.port = free_port()
        auth = f'auth_socket = "unix:{auth_socket}"' if auth_socket is not None else ""
        self.filterd = self.factory(
            f"""
[[listen]]
address = "127.0.0.1:{self.port}"
hostname = "filterd.test"
mynetworks = ["127.0.0.1/32"]
relay_domains = ["example.org"]
tls_cert = "{self.cert}"
tls_key = "{self.key}"
{auth}
[limits]
auth_failure_delay = "0s"
max_auth_failures = {max_auth_failures}
[delivery]
method = "maildir"
root = "{self.mail}"
"""
        )

    def connect(self, source: str = OUTSIDE, tls: bool = False) -> smtplib.SMTP:
        client = smtplib.SMTP(
            "127.0.0.1",
            self.port,
            local_hostname="client.example",
            source_address=(source, 0),
            timeout=30,
        )
        client.ehlo()
        if tls:
            client.starttls(context=self.context)
            client.ehlo()
        return client

    def delivered(self) -> list[str]:
        """user@domain of every Maildir that received a message."""
        return sorted(f"{p.parent.parent.name}@{p.parent.parent.parent.name}"
                      for p in self.mail.glob("*/*/new/*"))  # fmt: skip

    def log(self) -> str:
        assert self.filterd is not None
        return self.filterd.output_text()


@pytest.fixture
def setup(tmp_path: Path, filterd_factory: FilterdFactory) -> Setup:
    return Setup(tmp_path, filterd_factory)


@pytest.fixture
def dovecot() -> Iterator[DovecotInstance]:
    with running_dovecot({"alice@example.org": "secret"}) as instance:
        yield instance


def test_outside_mynetworks_only_relay_domains(setup: Setup) -> None:
    setup.start()
    with setup.connect(OUTSIDE) as client:
        assert client.mail("sender@example.com") == (250, b"2.1.0 Ok")
        assert client.rcpt("user@elsewhere.example") == (
            554,
            b"5.7.1 <user@elsewhere.example>: Relay access denied",
        )
        # sender-specified routing through a relay domain is relaying too
        for routed in ("user%elsewhere.example@example.org", "elsewhere.example!user@example.org"):
            assert client.rcpt(routed)[0] == 554
        assert client.rcpt("user@mx.example.org")[0] == 250
        assert client.rcpt("second@elsewhere.example")[0] == 554
        assert client.data(MESSAGE)[0] == 250
    assert setup.delivered() == ["user@mx.example.org"]
    log = setup.log()
    assert re.search(
        r"filterd/smtpd\[\d+\]: NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.2\]: 554 5\.7\.1 "
        r"<user@elsewhere\.example>: Relay access denied; from=<sender@example\.com> "
        r"to=<user@elsewhere\.example> proto=ESMTP helo=<client\.example>",
        log,
    ), log
    # after a recipient was accepted, the transaction has a queue id (as in Postfix's log)
    assert re.search(r": [0-9A-F]{10}: reject: RCPT from unknown\[127\.0\.0\.2\]: 554 5\.7\.1 "
                     r"<second@elsewhere\.example>", log), log  # fmt: skip
    # inside mynetworks everything may be relayed
    with setup.connect(INSIDE) as client:
        client.sendmail("sender@example.com", ["user@elsewhere.example"], MESSAGE)
    assert setup.delivered() == ["user@elsewhere.example", "user@mx.example.org"]


def test_auth_only_after_starttls(setup: Setup, dovecot: DovecotInstance) -> None:
    setup.start(dovecot.socket)
    with setup.connect(OUTSIDE) as client:
        assert not client.has_extn("auth")
        assert client.docmd("AUTH", f"PLAIN {plain('alice@example.org', 'secret')}") == (
            504,
            b"5.5.4 Encryption required for requested authentication mechanism",
        )
        assert client.docmd("AUTH", "LOGIN") == (
            504,
            b"5.5.4 Encryption required for requested authentication mechanism",
        )
        client.starttls(context=setup.context)
        client.ehlo()
        assert client.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
    assert "SASL" not in dovecot.log_text()  # nothing reached Dovecot


def test_bad_credentials_are_refused_logged_and_limited(
    setup: Setup, dovecot: DovecotInstance
) -> None:
    setup.start(dovecot.socket, max_auth_failures=2)
    client = setup.connect(OUTSIDE, tls=True)
    try:
        assert client.docmd("AUTH", f"PLAIN {plain('alice@example.org', 'guess')}") == (
            535,
            b"5.7.8 Error: authentication failed",
        )
        # still not allowed to relay
        client.mail("sender@example.com")
        assert client.rcpt("user@elsewhere.example")[0] == 554
        client.rset()
        # the second failure is the last one this connection gets (Dovecot is not asked
        # about a mechanism filterd does not offer: its penalty would make this test slow)
        assert client.docmd("AUTH", "CRAM-MD5") == (
            535,
            b"5.7.8 Error: authentication failed: Invalid authentication mechanism",
        )
        assert client.getreply() == (421, b"4.7.0 Error: too many errors")
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.getreply()
    finally:
        client.close()
    log = setup.log()
    assert (
        "warning: unknown[127.0.0.2]: SASL PLAIN authentication failed: (reason unavailable), "
        "sasl_username=alice@example.org"
    ) in log, log
    assert (
        "warning: unknown[127.0.0.2]: SASL CRAM-MD5 authentication failed: Invalid "
        "authentication mechanism, sasl_username=(unavailable)"
    ) in log, log
    assert "too many errors after AUTH from unknown[127.0.0.2]" in log
    assert setup.delivered() == []


def test_good_credentials_may_relay(setup: Setup, dovecot: DovecotInstance) -> None:
    setup.start(dovecot.socket)
    with setup.connect(OUTSIDE, tls=True) as client:
        client.login("alice@example.org", "secret")  # AUTH PLAIN with an initial response
        assert client.docmd("AUTH", "PLAIN") == (503, b"5.5.1 Error: already authenticated")
        assert client.mail("sender@example.com", ["AUTH=<>"]) == (250, b"2.1.0 Ok")
        assert client.rcpt("user@elsewhere.example") == (250, b"2.1.5 Ok")
        assert client.data(MESSAGE)[0] == 250
    with setup.connect(OUTSIDE, tls=True) as client:
        client.user, client.password = "alice@example.org", "secret"
        assert client.auth("LOGIN", client.auth_login, initial_response_ok=False) == (
            235,
            b"2.7.0 Authentication successful",
        )
        client.sendmail("sender@example.com", ["other@elsewhere.example"], MESSAGE)
    assert setup.delivered() == ["other@elsewhere.example", "user@elsewhere.example"]
    log = setup.log()
    assert re.search(
        r": [0-9A-F]{10}: client=unknown\[127\.0\.0\.2\], sasl_method=PLAIN, "
        r"sasl_username=alice@example\.org",
        log,
    ), log
    assert "sasl_method=LOGIN, sasl_username=alice@example.org" in log


def test_dovecot_down_is_a_temporary_failure(setup: Setup, tmp_path: Path) -> None:
    setup.start(tmp_path / "no-such-socket")
    with setup.connect(OUTSIDE, tls=True) as client:
        assert client.docmd("AUTH", f"PLAIN {plain('alice@example.org', 'secret')}") == (
            454,
            b"4.7.0 Temporary authentication failure",
        )
    assert "warning: SASL: cannot connect to Dovecot's auth socket" in setup.log()


def test_an_unguarded_listener_does_not_start(tmp_path: Path) -> None:
    config = tmp_path / "filterd.toml"
    config.write_text(
        '[[listen]]\naddress = "0.0.0.0:10025"\n[delivery]\nmethod = "maildir"\n'
        f'root = "{tmp_path / "mail"}"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "filterd", "run", "-c", str(config)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "filterd: listen[0] on 0.0.0.0:10025 can be reached from other hosts, but only loopback "
        "clients may relay through it and every other client's mail would be refused: set "
        "mynetworks to the networks of the mail servers that send through it (and/or "
        "relay_domains, auth_socket), or open_relay = true if a firewall already keeps "
        "everyone else out"
    ]
