"""postgrey 1.37's keys and whitelist files, case by case (read from /usr/sbin/postgrey)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from filterd_greylist.keys import client_network, normalise_sender, parse_client, triplet_key
from filterd_greylist.whitelists import load_whitelists
from hypothesis import example, given
from hypothesis import strategies as st


@pytest.mark.parametrize(
    ("sender", "normalised"),
    [
        ("alice@example.com", "alice@example.com"),
        ("alice+list-123@example.com", "alice@example.com"),
        ("bounce-123-456@lists.example", "bounce-#-#@lists.example"),
        ("user42@example.com", "user42@example.com"),  # not a whole word
        ("prvs=0123456789=alice@example.com", "alice@example.com"),  # prvs=tag=local
        ("prvs=alice=0123456789@example.com", "alice@example.com"),  # prvs=local=tag
        ("prvs=abc=def@example.com", "def@example.com"),  # neither a tag: the standard
        ("prvs=abc=@example.com", "prvs=abc=@example.com"),  # Perl's split: 2 fields
        ("", ""),
        ("no-at-sign", "no-at-sign"),
        ("1.2@example.com", "#.#@example.com"),
    ],
)
def test_sender_normalisation(sender: str, normalised: str) -> None:
    assert normalise_sender(sender) == normalised


def test_client_network_and_key() -> None:
    v4 = ipaddress.ip_address("192.0.2.77")
    v6 = ipaddress.ip_address("2001:db8:1:2:3::9")
    assert client_network(v4, ipv4cidr=24, ipv6cidr=64, by_host=False) == "192.0.2.0"
    assert client_network(v6, ipv4cidr=24, ipv6cidr=64, by_host=False) == "2001:db8:1:2::"
    assert client_network(v4, ipv4cidr=24, ipv6cidr=64, by_host=True) == "192.0.2.77"
    key = triplet_key("192.0.2.0", "Bob+X@Example.COM", "Rcpt@Example.ORG", privacy=False)
    assert key == "192.0.2.0/bob@example.com/rcpt@example.org"
    hashed = triplet_key("192.0.2.0", "bob@example.com", "rcpt@example.org", privacy=True)
    assert len(hashed) == 40
    assert hashed != key


@given(
    st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)),
    st.integers(min_value=1, max_value=32),
    st.integers(min_value=1, max_value=128),
)
def test_client_network_is_ipaddress_network(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, v4: int, v6: int
) -> None:
    """The network is computed on the address's integer: the same as ``ipaddress`` parses."""
    prefix = v4 if address.version == 4 else v6
    network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    got = client_network(address, ipv4cidr=v4, ipv6cidr=v6, by_host=False)
    assert got == str(network.network_address)


_ODD_OCTETS = ["", "0", "00", "01", "007", "255", "256", "1000", "+1", "-1", " 1", "1 ",
               "\u0661", "\u00b2", "0x1", "1_0"]  # fmt: skip
_octets = st.one_of(st.integers(0, 300).map(str), st.sampled_from(_ODD_OCTETS))
_client_texts = st.one_of(
    st.lists(_octets, min_size=3, max_size=5).map(".".join),
    st.ip_addresses().map(str),
    st.text(alphabet="0123456789.:abcdef/%", max_size=20),
)


@given(_client_texts)
@example("192.0.2.1")
@example("192.0.2.01")
@example("192.0.2.1/32")
@example("::ffff:192.0.2.1")
def test_parse_client_reads_as_ipaddress(text: str) -> None:
    """The dotted quad read without ipaddress's parser: the same address, or None exactly
    where ``ipaddress.ip_address`` raises."""
    try:
        expected: ipaddress.IPv4Address | ipaddress.IPv6Address | None
        expected = ipaddress.ip_address(text)
    except ValueError:
        expected = None
    got = parse_client(text)
    assert got == expected
    assert type(got) is type(expected)


def test_whitelist_files_read_as_postgrey_reads_them(tmp_path: Path) -> None:
    clients = tmp_path / "whitelist_clients"
    clients.write_text(
        "# comment\n"
        "  mail.example.net   # trailing comment\n"
        "/^mx\\d+\\.regex\\.example$/\n"
        "198.51.100.7\n"
        "203.0.113.0/28\n"
        "10.20.30\n"
        "172.16\n"
        "2001:db8:aa::/48\n"
        "not a hostname\n"
    )
    recipients = tmp_path / "whitelist_recipients"
    recipients.write_text("postmaster@\nabuse@example.org\nwhitelisted.example\n/^spam-?lover@/\n")
    warnings: list[str] = []
    client_list, rcpt_list = load_whitelists(
        [clients, tmp_path / "whitelist_clients.local", tmp_path / "missing"],
        [recipients],
        warnings.append,
    )
    assert any("missing" in w for w in warnings)
    assert not any(".local" in w for w in warnings)
    assert any("line 9: doesn't look like a hostname" in w for w in warnings)

    def listed(name: str, address: str) -> bool:
        return client_list.listed(name, ipaddress.ip_address(address))

    assert listed("mail.example.net", "192.0.2.1")
    assert listed("out.MAIL.example.net", "192.0.2.1")
    assert not listed("xmail.example.net", "192.0.2.1")
    assert listed("mx12.regex.example", "192.0.2.1")
    assert listed("unknown", "198.51.100.7")
    assert not listed("unknown", "198.51.100.8")
    assert listed("unknown", "203.0.113.15")
    assert not listed("unknown", "203.0.113.16")
    assert listed("unknown", "10.20.30.200")
    assert listed("unknown", "172.16.0.9")
    assert not listed("unknown", "172.16.1.9")
    assert listed("unknown", "2001:db8:aa:1::1")
    assert rcpt_list.listed("postmaster@anything.example")
    assert rcpt_list.listed("postmaster+x@anything.example")
    assert rcpt_list.listed("Abuse+tag@Example.org")
    assert not rcpt_list.listed("abuse@example.org.evil")
    assert rcpt_list.listed("bob@whitelisted.example")
    assert rcpt_list.listed("bob@sub.whitelisted.example")
    assert not rcpt_list.listed("bob@notwhitelisted.example")
    assert rcpt_list.listed("spamlover@x.example")
    assert not rcpt_list.listed("bob@example.org")
