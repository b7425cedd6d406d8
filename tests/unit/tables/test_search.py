"""The search orders of filterd.sdk.tables.search over dict-backed tables: which keys are
asked, in which order, which one matched, DUNNO, pattern tables, address extensions, result
rewriting of virtual(5)/canonical(5), and failures that propagate."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from filterd.sdk.tables import Table, TableFailure, TableSettings, open_table
from filterd.sdk.tables.search import (
    AddressRules,
    Match,
    access_address,
    access_client,
    access_client_address,
    access_host,
    canonical,
    split_extension,
    virtual_alias,
    virtual_mailbox,
)


class DictTable(Table):
    """A table from a dict; records every key it is asked."""

    def __init__(
        self, entries: dict[str, str], *, fixed: bool = True, name: str = "dict:test"
    ) -> None:
        super().__init__(name, TableSettings())
        self.fixed_string = fixed
        self.entries = {k.lower() if fixed else k: v for k, v in entries.items()}
        self.asked: list[str] = []

    async def lookup(self, key: str) -> str | None:
        self.asked.append(key)
        if self.fixed_string and self.settings.fold_case:
            key = key.lower()
        return self.entries.get(key)


class BrokenTable(Table):
    async def lookup(self, key: str) -> str | None:
        raise TableFailure(self.name, "server down")


PLUS = AddressRules(recipient_delimiter="+")
PLUS_MINUS = AddressRules(recipient_delimiter="+-")


# --- recipient_delimiter ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("localpart", "rules", "expected"),
    [
        ("user+foo", PLUS, ("user", "+foo")),
        ("user+foo+bar", PLUS, ("user", "+foo+bar")),
        ("user-foo+bar", PLUS_MINUS, ("user", "-foo+bar")),
        ("user+foo-bar", PLUS_MINUS, ("user", "+foo-bar")),
        ("user+", PLUS, ("user", "+")),
        ("+foo", PLUS, ("+foo", None)),
        ("user", PLUS, ("user", None)),
        ("user+foo", AddressRules(), ("user+foo", None)),
        ("mailer-daemon", PLUS_MINUS, ("mailer-daemon", None)),
        ("MAILER-DAEMON", PLUS_MINUS, ("MAILER-DAEMON", None)),
        ("double-bounce", PLUS_MINUS, ("double-bounce", None)),
        ("postmaster", AddressRules(recipient_delimiter="s"), ("postmaster", None)),
        ("postmaster+x", PLUS, ("postmaster", "+x")),
        ("owner-list", PLUS_MINUS, ("owner-list", None)),
        ("owner-list+x", PLUS_MINUS, ("owner-list+x", None)),
        ("owner-list+x", PLUS, ("owner-list", "+x")),
        ("list-request", PLUS_MINUS, ("list-request", None)),
        ("-request", PLUS_MINUS, ("-request", None)),
        ("x-request", AddressRules("+-", owner_request_special=False), ("x", "-request")),
        ("owner+x", PLUS_MINUS, ("owner", "+x")),
    ],
)
def test_split_extension(
    localpart: str, rules: AddressRules, expected: tuple[str, str | None]
) -> None:
    assert split_extension(localpart, rules) == expected


@given(st.text(alphabet="ab+-.", max_size=12), st.sampled_from(["+", "-", "+-", "-+"]))
def test_split_extension_keeps_every_character(localpart: str, delimiters: str) -> None:
    bare, extension = split_extension(localpart, AddressRules(recipient_delimiter=delimiters))
    if extension is None:
        assert bare == localpart
    else:
        assert bare + extension == localpart
        assert bare
        assert not any(c in delimiters for c in bare)
        assert extension[0] in delimiters


# --- access(5) addresses ----------------------------------------------------------------------


async def test_access_address_order_with_parent_domains() -> None:
    table = DictTable({})
    assert await access_address(table, "user+foo@a.b.example.com", PLUS) is None
    assert table.asked == [
        "user+foo@a.b.example.com",
        "user@a.b.example.com",
        "a.b.example.com",
        "b.example.com",
        "example.com",
        "com",
        "user+foo@",
        "user@",
    ]


async def test_access_address_order_with_dot_subdomains() -> None:
    table = DictTable({})
    rules = AddressRules(recipient_delimiter="+", parent_domain_matches_subdomains=False)
    assert await access_address(table, "user+foo@a.b.example.com", rules) is None
    assert table.asked == [
        "user+foo@a.b.example.com",
        "user@a.b.example.com",
        "a.b.example.com",
        ".b.example.com",
        ".example.com",
        ".com",
        "user+foo@",
        "user@",
    ]


async def test_access_address_without_delimiter_keeps_the_extension() -> None:
    table = DictTable({})
    assert await access_address(table, "user+foo@example.com") is None
    assert table.asked == ["user+foo@example.com", "example.com", "com", "user+foo@"]


@pytest.mark.parametrize(
    ("entries", "key", "value"),
    [
        ({"user+foo@example.com": "A", "user@example.com": "B"}, "user+foo@example.com", "A"),
        ({"user@example.com": "B", "example.com": "C"}, "user@example.com", "B"),
        ({"example.com": "C", "user@": "D"}, "example.com", "C"),
        ({"com": "E", "user@": "D"}, "com", "E"),
        ({"user+foo@": "F", "user@": "D"}, "user+foo@", "F"),
        ({"user@": "D"}, "user@", "D"),
    ],
)
async def test_access_address_first_key_found_wins(
    entries: dict[str, str], key: str, value: str
) -> None:
    found = await access_address(DictTable(entries), "User+Foo@Example.COM", PLUS)
    assert found is not None
    assert (found.key.lower(), found.value) == (key, value)


async def test_access_address_extension_reported() -> None:
    found = await access_address(DictTable({"user@example.com": "OK"}), "user+x@example.com", PLUS)
    assert found is not None
    assert found.extension == "+x"


async def test_dot_domain_key_needs_dot_subdomain_style() -> None:
    table = DictTable({".example.com": "REJECT dot"})
    assert await access_address(table, "u@mx.example.com", PLUS) is None
    rules = AddressRules(parent_domain_matches_subdomains=False)
    found = await access_address(table, "u@mx.example.com", rules)
    assert found is not None
    assert found.key == ".example.com"
    assert await access_address(table, "u@example.com", rules) is None


async def test_dunno_stops_the_walk() -> None:
    table = DictTable({"user@example.com": "DUNNO", "example.com": "REJECT"})
    assert await access_address(table, "user+x@example.com", PLUS) is None
    assert table.asked == ["user+x@example.com", "user@example.com"]
    lower = DictTable({"example.com": "dunno text", "com": "REJECT"})
    assert await access_address(lower, "user@example.com") is None


async def test_null_sender_is_one_key() -> None:
    table = DictTable({"<>": "REJECT null", "": "never"})
    found = await access_address(table, "")
    assert found is not None
    assert (found.key, found.value) == ("<>", "REJECT null")
    assert table.asked == ["<>"]
    other = DictTable({"mailer-daemon": "OK"})
    assert await access_address(other, "", AddressRules(null_access_key="mailer-daemon"))


async def test_pattern_table_gets_the_whole_address_once() -> None:
    pattern = DictTable({"user@example.com": "REJECT p"}, fixed=False, name="regexp:p")
    fixed = DictTable({}, name="hash:f")
    assert await access_address([pattern, fixed], "user+x@example.com", PLUS) is None
    assert pattern.asked == ["user+x@example.com"]
    assert fixed.asked[0:3] == ["user+x@example.com", "user@example.com", "example.com"]


async def test_each_key_tried_in_every_table_before_the_next() -> None:
    first = DictTable({"example.com": "first"}, name="hash:1")
    second = DictTable({"user@example.com": "second"}, name="hash:2")
    found = await access_address([first, second], "user@example.com")
    assert found is not None
    assert (found.value, found.table) == ("second", second)


async def test_failure_propagates_and_is_never_not_found() -> None:
    with pytest.raises(TableFailure):
        await access_address([DictTable({}), BrokenTable("mysql:x", TableSettings())], "u@e.org")
    with pytest.raises(TableFailure, match="empty string result"):
        await access_address(DictTable({"e.org": ""}), "u@e.org")


# --- access(5) hosts and client addresses -------------------------------------------------------


async def test_host_walk() -> None:
    table = DictTable({})
    assert await access_host(table, "mx.mail.example.com") is None
    assert table.asked == ["mx.mail.example.com", "mail.example.com", "example.com", "com"]
    dotted = DictTable({})
    dots = AddressRules(parent_domain_matches_subdomains=False)
    await access_host(dotted, "mx.example.com", dots)
    assert dotted.asked == ["mx.example.com", ".example.com", ".com"]


async def test_numerical_host_name_is_looked_up_whole() -> None:
    table = DictTable({})
    assert await access_host(table, "192.0.2.1") is None
    assert table.asked == ["192.0.2.1"]


@pytest.mark.parametrize(
    ("address", "keys"),
    [
        ("192.0.2.17", ["192.0.2.17", "192.0.2", "192.0", "192"]),
        ("2001:db8::1", ["2001:db8::1", "2001:db8:", "2001:db8", "2001"]),
        (
            "2001:db8:1:2:3:4:5:6",
            [
                "2001:db8:1:2:3:4:5:6",
                "2001:db8:1:2:3:4:5",
                "2001:db8:1:2:3:4",
                "2001:db8:1:2:3",
                "2001:db8:1:2",
                "2001:db8:1",
                "2001:db8",
                "2001",
            ],
        ),
        ("::1", ["::1", ":"]),
    ],
)
async def test_client_address_walk(address: str, keys: list[str]) -> None:
    table = DictTable({})
    assert await access_client_address(table, address) is None
    assert table.asked == keys


async def test_client_name_then_address() -> None:
    table = DictTable({"192.0.2": "REJECT net"})
    found = await access_client(table, "host.example.com", "192.0.2.9")
    assert found is not None
    assert found.key == "192.0.2"
    assert table.asked == ["host.example.com", "example.com", "com", "192.0.2.9", "192.0.2"]
    named = DictTable({"example.com": "REJECT name", "192.0.2.9": "REJECT addr"})
    found = await access_client(named, "host.example.com", "192.0.2.9")
    assert found is not None
    assert found.value == "REJECT name"


async def test_client_dunno_on_the_name_skips_the_address() -> None:
    table = DictTable({"example.com": "DUNNO", "192.0.2.9": "REJECT"})
    assert await access_client(table, "host.example.com", "192.0.2.9") is None
    assert "192.0.2.9" not in table.asked


async def test_client_pattern_table_gets_name_and_address_once() -> None:
    pattern = DictTable({}, fixed=False, name="cidr:x")
    await access_client(pattern, "host.example.com", "192.0.2.9")
    assert pattern.asked == ["host.example.com", "192.0.2.9"]


# --- virtual(5), canonical(5), virtual(8) -------------------------------------------------------


def local(domain: str) -> bool:
    return domain.lower() == "local.test"


async def test_virtual_order_for_a_local_domain() -> None:
    table = DictTable({})
    assert await virtual_alias(table, "user+foo@local.test", PLUS, local) is None
    assert table.asked == [
        "user+foo@local.test",
        "user@local.test",
        "user+foo",
        "user",
        "@local.test",
    ]


async def test_virtual_order_for_another_domain() -> None:
    table = DictTable({})
    assert await virtual_alias(table, "user+foo@example.com", PLUS, local) is None
    assert table.asked == ["user+foo@example.com", "user@example.com", "@example.com"]


async def test_virtual_each_key_in_every_table_first() -> None:
    first = DictTable({"@example.com": "catchall@x.test"}, name="hash:1")
    second = DictTable({"user@example.com": "user@y.test"}, name="hash:2")
    found = await virtual_alias([first, second], "user@example.com", PLUS)
    assert found is not None
    assert found.value == "user@y.test"
    assert found.table is second


async def test_virtual_propagates_an_unmatched_extension() -> None:
    table = DictTable({"joe@example.com": "joe.user@example.net, other@example.org"})
    found = await virtual_alias(table, "joe+foo@example.com", PLUS)
    assert found is not None
    assert found.addresses == ["joe.user+foo@example.net", "other+foo@example.org"]
    assert found.key == "joe@example.com"
    assert found.extension == "+foo"
    assert found.raw == "joe.user@example.net, other@example.org"
    off = AddressRules(recipient_delimiter="+", propagate_unmatched_extensions=frozenset())
    found = await virtual_alias(table, "joe+foo@example.com", off)
    assert found is not None
    assert found.addresses == ["joe.user@example.net", "other@example.org"]


async def test_canonical_follows_its_own_propagation_setting() -> None:
    table = DictTable({"joe@example.com": "joe.user@example.net"})
    only_virtual = AddressRules(
        recipient_delimiter="+", propagate_unmatched_extensions=frozenset({"virtual"})
    )
    found = await canonical(table, "joe+foo@example.com", only_virtual)
    assert found is not None
    assert found.value == "joe.user@example.net"
    found = await canonical(table, "joe+foo@example.com", PLUS)
    assert found is not None
    assert found.value == "joe.user+foo@example.net"


async def test_at_domain_result_keeps_the_user() -> None:
    table = DictTable({"@example.com": "@example.net"})
    found = await virtual_alias(table, "joe+foo@example.com", PLUS)
    assert found is not None
    assert found.value == "joe+foo@example.net"
    assert found.key == "@example.com"
    assert found.extension is None
    stripped = DictTable({"joe@example.com": "@example.net"})
    found = await virtual_alias(stripped, "joe+foo@example.com", PLUS)
    assert found is not None
    assert found.value == "joe+foo@example.net"


async def test_localpart_match_propagates_too() -> None:
    table = DictTable({"user": "someone@example.net"})
    found = await virtual_alias(table, "user+x@local.test", PLUS, local)
    assert found is not None
    assert (found.key, found.value, found.extension) == ("user", "someone+x@example.net", "+x")


async def test_virtual_mailbox_order() -> None:
    table = DictTable({})
    assert await virtual_mailbox(table, "user+foo@example.com", PLUS) is None
    assert table.asked == ["user+foo@example.com", "user@example.com", "@example.com"]
    boxes = DictTable({"user@example.com": "example.com/user/"})
    found = await virtual_mailbox(boxes, "user+foo@example.com", PLUS)
    assert found is not None
    assert found.value == "example.com/user/"


# --- the search stops at the first key found, whatever the table holds -------------------------

_LOCAL = st.sampled_from(["user", "user+foo", "user-bar", "owner-x", "x-request", "a+b-c"])
_DOMAIN = st.sampled_from(["example.com", "a.b.example.com", "local.test", "x"])


@settings(max_examples=200, deadline=None)
@given(
    local_part=_LOCAL,
    domain=_DOMAIN,
    present=st.sets(st.integers(min_value=0, max_value=9)),
    delimiters=st.sampled_from(["", "+", "-", "+-"]),
    parents=st.booleans(),
)
def test_search_stops_at_the_first_key_present(
    local_part: str, domain: str, present: set[int], delimiters: str, parents: bool
) -> None:
    import trio

    rules = AddressRules(recipient_delimiter=delimiters, parent_domain_matches_subdomains=parents)
    address = f"{local_part}@{domain}"
    probe = DictTable({})
    trio.run(access_address, probe, address, rules)
    keys = probe.asked
    assert len(keys) == len(set(keys))  # no key asked twice
    table = DictTable({keys[i]: f"value {i}" for i in present if i < len(keys)})
    found = trio.run(access_address, table, address, rules)
    hits = [i for i in sorted(present) if i < len(keys)]
    if not hits:
        assert found is None
    else:
        assert found is not None
        assert found.key == keys[hits[0]]
        assert table.asked == keys[: hits[0] + 1]


# --- a real pattern table ---------------------------------------------------------------------


async def test_a_regexp_table_sees_only_the_whole_address() -> None:
    table = open_table(
        r"regexp:{ {/^user@example\.com$/ REJECT bare}, {/^user\+x@/ REJECT extended}, "
        r"{/^example\.com$/ REJECT domain} }"
    )
    assert await access_address(table, "user@example.com", PLUS) == Match(
        "REJECT bare", "user@example.com", table, raw="REJECT bare"
    )
    found = await access_address(table, "user+x@example.com", PLUS)
    assert found is not None
    assert found.value == "REJECT extended"
    # the domain and the address without extension are never asked of a pattern table
    assert await access_address(table, "other@example.com", PLUS) is None
    assert await access_address(table, "user+y@example.com", PLUS) is None
    await table.aclose()
