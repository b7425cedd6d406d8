"""Relay control: relay_domains matched as Postfix matches them, sender-specified routing, who is
trusted, the settings' rules, and the start-up refusal of a listener nobody said who may use."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest

from filterd.config.load import parse_config
from filterd.config.schema import ListenConfig
from filterd.errors import ConfigError
from filterd.frontdoors.smtp.relay_control import (
    DomainList,
    RelayControl,
    relay_denied,
    startup_problem,
)
from filterd.model.reply import Reply


def listener(**settings: object) -> ListenConfig:
    return ListenConfig.model_validate({"address": "127.0.0.1:10025", **settings})


@pytest.mark.parametrize(
    ("domain", "matches"),
    [
        ("example.org", True),
        ("EXAMPLE.org.", True),
        ("mx.example.org", True),
        ("a.b.example.org", True),
        ("badexample.org", False),
        ("example.org.evil", False),
        ("sub.example.net", True),
        ("deep.sub.example.net", True),
        ("example.net", False),
        ("org", False),
        ("", False),
    ],
)
def test_domain_matching(domain: str, matches: bool) -> None:
    domains = DomainList.of(["example.org", ".example.net"])
    assert domains.matches(domain) is matches


def test_the_reply_is_postfixs() -> None:
    assert relay_denied("x@y.example") == Reply(554, "5.7.1", "<x@y.example>: Relay access denied")
    assert relay_denied("x@y.example").to_bytes() == (
        b"554 5.7.1 <x@y.example>: Relay access denied\r\n"
    )


@pytest.mark.parametrize(
    ("rcpt", "allowed"),
    [
        ("user@example.org", True),
        ("user@mx.example.org", True),
        ("user@elsewhere.example", False),
        ("user%elsewhere.example@example.org", False),
        ("user@elsewhere.example@example.org", False),
        ('"user@elsewhere.example"@example.org', False),
        ("elsewhere.example!user@example.org", False),
        ("user@[192.0.2.1]", False),
    ],
)
def test_recipients_of_a_client_that_may_not_relay(rcpt: str, allowed: bool) -> None:
    control = RelayControl.from_config(listener(relay_domains=["example.org"]))
    assert control.refusal(rcpt) == (None if allowed else relay_denied(rcpt))


def test_no_relay_domains_refuses_everything() -> None:
    control = RelayControl.from_config(listener())
    assert control.refusal("user@example.org") == relay_denied("user@example.org")


@pytest.mark.parametrize(
    ("settings", "address", "trusted"),
    [
        ({}, IPv4Address("127.0.0.1"), True),
        ({}, IPv4Address("127.0.0.2"), True),
        ({}, IPv6Address("::1"), True),
        ({}, IPv4Address("192.0.2.1"), False),
        ({}, None, True),  # a unix socket: this machine
        ({"mynetworks": ["127.0.0.1/32"]}, IPv4Address("127.0.0.2"), False),
        ({"mynetworks": ["192.0.2.0/24"]}, IPv4Address("192.0.2.1"), True),
        ({"mynetworks": ["192.0.2.0/24"]}, IPv4Address("127.0.0.1"), False),
        ({"open_relay": True}, IPv4Address("203.0.113.9"), True),
    ],
)
async def test_who_may_relay(
    settings: dict[str, object], address: IPv4Address | IPv6Address | None, trusted: bool
) -> None:
    assert await RelayControl.from_config(listener(**settings)).trusts(address) is trusted


# --- settings -----------------------------------------------------------------------------------


def config_error(listen: str, tls: bool = False) -> str:
    text = f'[[listen]]\naddress = "127.0.0.1:0"\n{listen}\n[delivery]\nmethod = "maildir"\n'
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    return str(caught.value)


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        (
            'protocol = "policy"\nrelay_domains = ["example.org"]',
            "<string>:4: listen[0].relay_domains: relay_domains applies to smtp and lmtp "
            "listeners (a policy listener relays nothing) (fix: remove relay_domains from this "
            "[[listen]] table)",
        ),
        (
            'open_relay = true\nmynetworks = ["192.0.2.0/24"]',
            "<string>:3: listen[0].open_relay: open_relay = true lets every client relay: "
            "mynetworks would change nothing (fix: remove open_relay to restrict relaying with "
            "mynetworks, or remove mynetworks)",
        ),
        (
            'mynetworks = ["127.0.0.0/8", "::/0"]',
            '<string>:3: listen[0].mynetworks: mynetworks "::/0" lets every client relay (fix: '
            "list the networks of your own mail servers, or write open_relay = true if every "
            "client that reaches this listener may relay)",
        ),
        (
            'auth_socket = "unix:/run/dovecot/auth-filterd"',
            "<string>:3: listen[0].auth_socket: SMTP AUTH is offered only after STARTTLS, and "
            "this listener has no TLS (fix: set tls_cert and tls_key on this [[listen]] table, "
            "or remove auth_socket)",
        ),
        (
            'relay_domains = ["example.org", "not a domain"]',
            '<string>:3: listen[0].relay_domains[1]: expected a domain such as "example.org" or '
            '".example.org", got "not a domain" (fix: write a domain name (letters, digits, '
            "hyphens and dots), with a leading dot to match only its subdomains)",
        ),
    ],
)
def test_settings_that_make_no_sense(listen: str, message: str) -> None:
    assert config_error(listen) == message


def test_relay_domains_are_normalised() -> None:
    assert listener(relay_domains=["Example.ORG.", " .Sub.Example "]).relay_domains == (
        "example.org",
        ".sub.example",
    )


# --- start-up -----------------------------------------------------------------------------------


def resolving(*addresses: str):  # type: ignore[no-untyped-def]
    return lambda host: [ip_address(a) for a in addresses]


@pytest.mark.parametrize(
    ("address", "resolved", "problem"),
    [
        ("0.0.0.0:10025", (), True),
        ("[::]:10025", (), True),
        ("192.0.2.7:10025", (), True),
        ("127.0.0.1:10025", (), False),
        ("127.0.0.2:10025", (), False),
        ("[::1]:10025", (), False),
        ("localhost:10025", ("127.0.0.1", "::1"), False),
        ("mx.example:10025", ("127.0.1.1", "192.0.2.7"), True),
        ("unknown.example:10025", None, False),  # binding will say it does not resolve
        ("unix:/run/filterd.sock", (), False),
    ],
)
def test_startup_refusal(address: str, resolved: tuple[str, ...] | None, problem: bool) -> None:
    def resolve(host: str) -> list[IPv4Address | IPv6Address]:
        if resolved is None:
            return []
        return [ip_address(a) for a in resolved or (host,)]

    listen = ListenConfig.model_validate({"address": address})
    line = startup_problem(listen, 3, resolve)
    if not problem:
        assert line is None
        return
    assert line == (
        f"listen[3] on {listen.address} can be reached from other hosts, but only loopback "
        "clients may relay through it and every other client's mail would be refused: set "
        "mynetworks to the networks of the mail servers that send through it (and/or "
        "relay_domains, auth_socket), or open_relay = true if a firewall already keeps "
        "everyone else out"
    )


@pytest.mark.parametrize(
    "settings",
    [
        {"mynetworks": ["192.0.2.0/24"]},
        {"relay_domains": ["example.org"]},
        {"open_relay": True},
        {"protocol": "policy"},
        {"protocol": "milter"},
    ],
)
def test_a_listener_that_says_who_may_relay_starts(settings: dict[str, object]) -> None:
    listen = ListenConfig.model_validate({"address": "0.0.0.0:10025", **settings})
    assert startup_problem(listen, 0, resolving("0.0.0.0")) is None
