"""The whitelists' indexes (host names by suffix, networks by mask, regexes as one alternation)
answer as searching every entry's pattern one by one, as postgrey does: the same answer for any
client name, address and recipient."""

from __future__ import annotations

import ipaddress
import re

import pytest
from filterd_greylist.whitelists import AnyOf, ClientWhitelist, RecipientWhitelist
from hypothesis import example, given
from hypothesis import strategies as st

CLIENT_ENTRIES = """\
mail.example.net
Upper.Example.ORG
.dotted.example
bücher.example
a
/^mx\\d+\\.regex\\.example$/
/^(mail|smtp)\\d+\\.grouped\\.example$/
/(?x)^verbose\\.example$/
/^(a)\\1\\.backref\\.example$/
/kelvin\\.example$/
/^ß\\.example$/
198.51.100.7
203.0.113.0/28
10.20.30
172.16
2001:db8:aa::/48
2001:db8:bb::1
"""
RECIPIENT_ENTRIES = """\
postmaster@
abuse@example.org
whitelisted.example
/^spam-?lover@/
/^(x)\\1@grouped\\.example$/
"""

LABELS = ["mail", "example", "net", "upper", "org", "dotted", "regex", "mx12", "grouped",
          "smtp7", "verbose", "aa", "backref", "kelvin", "bücher", "a", "", "MAIL", "Example",
          "NET", "\u212aelvin", "ss", "ß", "x"]  # fmt: skip
LISTED_ADDRESSES = ["198.51.100.7", "203.0.113.15", "203.0.113.16", "10.20.30.200",
                    "172.16.0.9", "172.16.1.9", "2001:db8:aa:1::1", "2001:db8:bb::1",
                    "2001:db8:bb::2"]  # fmt: skip
USERS = ["postmaster", "Postmaster+x", "abuse", "ABUSE+tag", "spamlover", "xx", "bob",
         "spam-lover", "\u212a"]  # fmt: skip
DOMAINS = ["example.org", "Example.ORG", "example.org.evil", "whitelisted.example",
           "sub.whitelisted.example", "notwhitelisted.example", "grouped.example",
           "x.example\n"]  # fmt: skip

names = st.lists(st.sampled_from(LABELS), min_size=1, max_size=5).map(".".join) | st.text(
    alphabet="abcdeklmnx.\n\u212a\u017fßK-0123456789", max_size=30
)
addresses = st.one_of(
    st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address),
    st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address),
    st.sampled_from(LISTED_ADDRESSES).map(ipaddress.ip_address),
)
recipients = st.builds("{}@{}".format, st.sampled_from(USERS), st.sampled_from(DOMAINS)) | st.text(
    alphabet="abpostmaser@.+x\n", max_size=30
)


def _loaded(tmp_path_factory: pytest.TempPathFactory) -> tuple[ClientWhitelist, RecipientWhitelist]:
    folder = tmp_path_factory.mktemp("whitelists")
    (folder / "clients").write_text(CLIENT_ENTRIES, encoding="utf-8")
    (folder / "recipients").write_text(RECIPIENT_ENTRIES, encoding="utf-8")
    clients, rcpts = ClientWhitelist(), RecipientWhitelist()
    warnings: list[str] = []
    clients.add_file(folder / "clients", warnings.append)
    rcpts.add_file(folder / "recipients", warnings.append)
    assert warnings == []
    return clients, rcpts


@pytest.fixture(scope="module")
def whitelists(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[ClientWhitelist, RecipientWhitelist]:
    return _loaded(tmp_path_factory)


def test_every_kind_of_entry_is_indexed(
    whitelists: tuple[ClientWhitelist, RecipientWhitelist],
) -> None:
    clients, rcpts = whitelists
    assert len(clients.names) == 11
    assert len(clients.networks) == 6
    assert len(rcpts.patterns.patterns) == 5
    for name, address, listed in [
        ("out.upper.example.org", "192.0.2.1", True),  # an ASCII host name, any case
        ("x..dotted.example", "192.0.2.1", True),
        ("x.dotted.example", "192.0.2.1", False),
        ("shop.BÜCHER.example", "192.0.2.1", True),  # not ASCII: the patterns
        ("mail.example.net\n", "192.0.2.1", True),  # "$" before a final newline
        ("mail.example.net\n\n", "192.0.2.1", False),
        ("mail7.grouped.example", "192.0.2.1", True),  # a group: searched alone
        ("verbose.example", "192.0.2.1", True),  # (?x): searched alone
        ("aa.backref.example", "192.0.2.1", True),
        ("ab.backref.example", "192.0.2.1", False),
        ("\u212aELVIN.example", "192.0.2.1", True),  # the Kelvin sign matches k caselessly
        ("unknown", "2001:db8:bb::1", True),
        ("unknown", "2001:db8:bb::2", False),
        ("unknown", "203.0.113.15", True),
        ("unknown", "203.0.113.16", False),
    ]:
        assert clients.listed(name, ipaddress.ip_address(address)) is listed, name


@given(name=names, address=addresses)
@example(name="a", address=ipaddress.ip_address("192.0.2.1"))
@example(name="x.a\n", address=ipaddress.ip_address("192.0.2.1"))
def test_clients_answer_as_every_pattern_searched_alone(
    whitelists: tuple[ClientWhitelist, RecipientWhitelist],
    name: str,
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    clients, _ = whitelists
    reference = any(p.search(name) for p in clients.names) or any(
        address.version == n.version and address in n for n in clients.networks
    )
    assert clients.listed(name, address) is reference


@given(recipient=recipients)
def test_recipients_answer_as_every_pattern_searched_alone(
    whitelists: tuple[ClientWhitelist, RecipientWhitelist], recipient: str
) -> None:
    _, rcpts = whitelists
    reference = any(p.search(recipient) for p in rcpts.patterns.patterns)
    assert rcpts.listed(recipient) is reference


def test_patterns_that_cannot_be_joined_are_searched_alone() -> None:
    inline = re.compile("(?i)^b$", re.IGNORECASE)  # (?i) not at the start of an alternation
    any_of = AnyOf([re.compile("^a$", re.IGNORECASE), inline])
    assert any_of.search("B")
    assert any_of.search("A")
    assert not any_of.search("c")
    any_of.add(re.compile("^c$", re.IGNORECASE))  # added later: joined again
    assert any_of.search("c")
    # a group's number would change in an alternation (\1 would name another group)
    grouped = AnyOf([re.compile(r"^(a)\1$", re.IGNORECASE), re.compile(r"^(b)\1$", re.I)])
    assert grouped.search("bb")
    assert grouped.search("aa")
    assert not grouped.search("ab")
    assert not AnyOf().search("anything")
