"""cidr_table(5) parsing and matching, checked against Python's ipaddress on generated
networks and addresses (hypothesis), and the rules' error messages."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from filterd.sdk.tables import TableError, TableSettings
from filterd.sdk.tables.cidr import CidrTable, parse_address, parse_rules

IPV4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
IPV6 = st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)


def table(text: str) -> CidrTable:
    return CidrTable("cidr:t", TableSettings(), parse_rules("cidr:t", "t", text))


def spellings(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[str]:
    if address.version == 4:
        return [str(address)]
    groups = address.exploded.split(":")
    return [
        str(address),
        address.exploded,
        address.exploded.upper(),
        ":".join(g.lstrip("0") or "0" for g in groups),
    ]


@st.composite
def network_and_address(
    draw: st.DrawFn,
) -> tuple[
    ipaddress.IPv4Network | ipaddress.IPv6Network, ipaddress.IPv4Address | ipaddress.IPv6Address
]:
    v6 = draw(st.booleans())
    bits = 128 if v6 else 32
    base = draw(IPV6 if v6 else IPV4)
    prefix = draw(st.integers(0, bits))
    network = ipaddress.ip_network(f"{base}/{prefix}", strict=False)
    near = draw(st.integers(-2, 2))
    edge = draw(st.sampled_from([network.network_address, network.broadcast_address, base]))
    number = min(max(int(edge) + near, 0), 2**bits - 1)
    return network, (ipaddress.IPv6Address(number) if v6 else ipaddress.IPv4Address(number))


@given(network_and_address(), st.booleans(), st.booleans())
def test_a_rule_matches_its_network(
    case: tuple[
        ipaddress.IPv4Network | ipaddress.IPv6Network, ipaddress.IPv4Address | ipaddress.IPv6Address
    ],
    negate: bool,
    brackets: bool,
) -> None:
    network, address = case
    pattern = f"[{network.network_address}]/{network.prefixlen}" if brackets else str(network)
    rules = table(f"{'!' if negate else ''}{pattern} hit\n")
    inside = address in network
    for key in spellings(address):
        assert rules.find(key) == ("hit" if inside != negate else None), key
    # never across families
    other = "::1" if network.version == 4 else "127.0.0.1"
    assert rules.find(other) is None


@given(network_and_address())
def test_if_blocks_guard_their_rules(
    case: tuple[
        ipaddress.IPv4Network | ipaddress.IPv6Network, ipaddress.IPv4Address | ipaddress.IPv6Address
    ],
) -> None:
    network, address = case
    everything = "0.0.0.0/0" if network.version == 4 else "::/0"
    rules = table(
        f"if {network}\nif !{network}\n{everything} never\nendif\n"
        f"{everything} in\nendif\n{everything} out\n"
    )
    assert rules.find(str(address)) == ("in" if address in network else "out")


@given(st.text(max_size=45))
def test_parse_address_agrees_with_inet_pton_forms(text: str) -> None:
    parsed = parse_address(text)
    if parsed is None:
        return
    bits, value = parsed
    if bits == 32:
        assert str(ipaddress.IPv4Address(value)) == text  # no other IPv4 spelling is accepted
    else:
        assert int(ipaddress.IPv6Address(text)) == value


@given(IPV4)
def test_ipv4_with_leading_zeros_is_no_address(address: ipaddress.IPv4Address) -> None:
    padded = ".".join(octet.zfill(3) for octet in str(address).split("."))
    assert (parse_address(padded) is None) == (padded != str(address))


@given(st.text(max_size=60))
def test_any_rule_text_is_a_table_or_a_table_error(text: str) -> None:
    error: TableError | None = None
    try:
        parse_rules("cidr:t", "t", text)
    except TableError as exc:
        error = exc
    if error is not None:
        assert error.file == "t"
        assert error.line is not None
        assert error.hint


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            "1.2.3.0/23 x",
            'non-null host address bits in "1.2.3.0/23", '
            'perhaps you should use "1.2.2.0/23" instead',
        ),
        ("2001:db8::1/32 x", 'perhaps you should use "2001:db8::/32" instead'),
        ("01.2.3.4 x", 'bad address pattern: "01.2.3.4"'),
        ("1.2.3.4/-1 x", "bad mask value"),
        ("::/129 x", "bad mask length"),
        ("!", "no address pattern"),
        ("ifx 1.2.3.4", 'bad address pattern: "ifx"'),
    ],
)
def test_rule_errors(rule: str, message: str) -> None:
    with pytest.raises(TableError) as raised:
        parse_rules("cidr:t", "/etc/postfix/t.cidr", f"192.0.2.0/24 ok\n{rule}\n")
    assert message in str(raised.value)
    assert str(raised.value).startswith("table cidr:t: /etc/postfix/t.cidr:2: ")
