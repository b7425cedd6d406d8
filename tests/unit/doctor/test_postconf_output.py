"""The parsers of postconf's output (filterd/cli/doctor/postconf.py) and of Postfix's value
syntax (syntax.py): property tests that write what postconf would print and read it back,
and postconf's own output for the forms it has."""

from __future__ import annotations

import ipaddress
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from filterd.cli.doctor.postconf import (
    parse_master_entries,
    parse_parameters,
    parse_service_parameters,
    read_postfix,
)
from filterd.cli.doctor.syntax import (
    group_items,
    group_settings,
    match_address_list,
    parse_process_limit,
    parse_time,
    split_list,
)

NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,30}", fullmatch=True)
# postconf prints a value on one line, without leading or trailing white space
VALUES = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=60).map(
    str.strip
)
SERVICE_NAMES = st.one_of(
    NAMES,
    st.builds(lambda a, p: f"{a}:{p}", st.ip_addresses(v=4).map(str), st.integers(1, 65535)),
    st.builds(lambda a, p: f"[{a}]:{p}", st.ip_addresses(v=6).map(str), st.integers(1, 65535)),
    st.builds(lambda a, b: f"{a}/{b}", NAMES, NAMES),  # a unix service below a directory
)
TYPES = st.sampled_from(["inet", "unix", "unix-dgram", "fifo", "pass"])


@given(st.dictionaries(NAMES, VALUES, max_size=20))
def test_parameters_read_back_what_postconf_prints(parameters: dict[str, str]) -> None:
    # postconf prints "name =" for an empty value, "name = value" otherwise
    text = "".join(f"{n} = {v}\n" if v else f"{n} =\n" for n, v in parameters.items())
    assert parse_parameters(text) == parameters


def test_lines_that_are_no_setting_are_skipped() -> None:
    text = "postconf: warning: something\nmynetworks = 127.0.0.0/8\n\n"
    assert parse_parameters(text) == {"mynetworks": "127.0.0.0/8"}


@given(st.lists(st.tuples(SERVICE_NAMES, TYPES, NAMES, VALUES), max_size=20))
def test_service_parameters_read_back_what_postconf_P_prints(
    lines: list[tuple[str, str, str, str]],
) -> None:
    text = "".join(f"{s}/{t}/{n} = {v}\n" if v else f"{s}/{t}/{n} =\n" for s, t, n, v in lines)
    expected: dict[tuple[str, str], dict[str, str]] = {}
    for service, type_, name, value in lines:
        expected.setdefault((service, type_), {})[name] = value
    assert parse_service_parameters(text) == expected


FLAGS = st.sampled_from(["-", "n", "y"])
LIMITS = st.one_of(st.just("-"), st.integers(0, 1000).map(str))
WAKEUPS = st.sampled_from(["-", "60", "300", "1000?"])
ARGS = st.lists(
    st.from_regex(r"-o [a-z_]{1,20}=[a-z0-9_,./]{0,20}|-v|\{-o [a-z_]+=[a-z ]+\}", fullmatch=True),
    max_size=4,
)


@given(
    st.lists(
        st.tuples(SERVICE_NAMES, TYPES, FLAGS, FLAGS, FLAGS, WAKEUPS, LIMITS, NAMES, ARGS),
        max_size=10,
    ),
    st.integers(1, 4),
)
def test_master_entries_read_back_what_postconf_M_prints(
    entries: list[tuple[str, str, str, str, str, str, str, str, list[str]]], gap: int
) -> None:
    text = "".join(
        (" " * gap).join([*fields, " ".join([command, *args])]) + "\n"
        for *fields, command, args in entries
    )
    services = parse_master_entries(text)
    assert [
        (s.name, s.type, s.private, s.unprivileged, s.chroot, s.wakeup, s.process_limit, s.command)
        for s in services
    ] == [tuple(entry[:8]) for entry in entries]


# --- lists and groups -------------------------------------------------------------------------

ATOMS = st.from_regex(r"[a-zA-Z0-9_:./\[\]=!-]{1,12}", fullmatch=True)
SEPARATORS = st.from_regex(r"[ ,\t\n]{1,3}", fullmatch=True)


@st.composite
def postfix_lists(draw: st.DrawFn, depth: int = 2) -> tuple[str, list[str]]:
    """(text, its items): atoms and { } groups (nested), joined by separators."""
    items: list[str] = []
    for _ in range(draw(st.integers(0, 5))):
        if depth and draw(st.booleans()):
            inner, _ = draw(postfix_lists(depth - 1))
            items.append("{" + draw(SEPARATORS) + inner + draw(SEPARATORS) + "}")
        else:
            items.append(draw(ATOMS))
    text = draw(SEPARATORS).join(items)
    return draw(st.one_of(st.just(""), SEPARATORS)) + text + draw(
        st.one_of(st.just(""), SEPARATORS)
    ), items


@given(postfix_lists())
def test_a_list_splits_into_its_items_with_groups_whole(case: tuple[str, list[str]]) -> None:
    text, items = case
    assert split_list(text) == items


@given(postfix_lists(depth=0))
def test_a_group_gives_back_its_items(case: tuple[str, list[str]]) -> None:
    text, items = case
    assert group_items("{" + text + "}") == items
    assert group_items(text if not text.startswith("{") else "x" + text) is None


def test_groups_as_postfix_writes_them() -> None:
    value = "{ inet:127.0.0.1:10029, command_timeout=10s }, inet:host:8892"
    items = split_list(value)
    assert items == ["{ inet:127.0.0.1:10029, command_timeout=10s }", "inet:host:8892"]
    inner = group_items(items[0])
    assert inner == ["inet:127.0.0.1:10029", "command_timeout=10s"]
    assert group_settings(["timeout=10s", "{ default_action = 451 4.3.5 try later }"]) == {
        "timeout": "10s",
        "default_action": "451 4.3.5 try later",
    }
    assert split_list("check_recipient_access inline:{ a=REJECT, b=OK }, permit") == [
        "check_recipient_access",
        "inline:{ a=REJECT, b=OK }",
        "permit",
    ]


@given(st.integers(0, 10**6), st.sampled_from(["", "s", "m", "h", "d", "w"]))
def test_times_in_every_unit(number: int, unit: str) -> None:
    factor = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
    assert parse_time(f"{number}{unit}") == number * factor


@pytest.mark.parametrize("text", ["", "s", "10 s", "ten", "10x", "-5s"])
def test_what_is_no_time(text: str) -> None:
    assert parse_time(text) is None


def test_process_limits() -> None:
    assert parse_process_limit("-", "100") == 100
    assert parse_process_limit("10", "100") == 10
    assert parse_process_limit("0", "100") is None  # no limit


@given(st.ip_addresses(), st.integers(0, 128), st.booleans())
def test_an_address_list_matches_as_postfix_reads_it(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, prefix: int, negated: bool
) -> None:
    prefix = min(prefix, address.max_prefixlen)
    network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    written = f"[{network.network_address}]/{prefix}" if address.version == 6 else str(network)
    item = ("!" if negated else "") + written
    assert match_address_list(f"192.0.2.7, {item}", address) is (
        address == ipaddress.ip_address("192.0.2.7") or not negated
    )


def test_address_lists_with_what_cannot_be_evaluated() -> None:
    loopback = ipaddress.ip_address("127.0.0.1")
    assert match_address_list("127.0.0.0/8", loopback) is True
    assert match_address_list("[::1]/128 10.0.0.0/8", loopback) is False
    assert match_address_list("hash:/etc/postfix/xforward 127.0.0.0/8", loopback) is None
    assert match_address_list("127.0.0.0/8 hash:/etc/postfix/xforward", loopback) is True
    assert match_address_list("", loopback) is False


# --- against postconf itself ------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("postconf") is None, reason="postconf is not installed")
def test_what_postconf_prints_for_a_configuration(tmp_path: Path) -> None:
    (tmp_path / "main.cf").write_text(
        "compatibility_level = 3.6\nmynetworks = 127.0.0.0/8\n"
        "smtpd_milters = { inet:127.0.0.1:8891, command_timeout=10s }\n"
    )
    (tmp_path / "master.cf").write_text(
        "smtp inet n - n - - smtpd\n"
        "  -o { smtpd_recipient_restrictions = check_policy_service inet:127.0.0.1:10040, "
        "permit }\n"
        "127.0.0.1:10026 inet n - n - 10 smtpd\n"
        "  -o content_filter=\n  -o smtpd_authorized_xforward_hosts=$mynetworks\n"
    )
    postfix = read_postfix(tmp_path)
    smtp = postfix.service("smtp", "inet")
    reinject = postfix.service("127.0.0.1:10026", "inet")
    assert smtp is not None
    assert reinject is not None
    assert (reinject.process_limit, reinject.command) == ("10", "smtpd")
    assert reinject.overrides == {
        "content_filter": "",
        "smtpd_authorized_xforward_hosts": "127.0.0.0/8",  # postconf -x expanded $mynetworks
    }
    assert postfix.value("content_filter", reinject) == ""
    assert postfix.value("smtpd_recipient_restrictions", smtp).startswith("check_policy_service")
    assert postfix.explicit["smtpd_milters"] == "{ inet:127.0.0.1:8891, command_timeout=10s }"
    assert postfix.value("smtp_data_done_timeout") == "600s"  # a default, from postconf -x
    assert (
        postfix.source("content_filter", reinject)
        == 'master.cf "127.0.0.1:10026/inet" -o content_filter'
    )
    assert postfix.source("mynetworks") == "main.cf mynetworks"
    assert postfix.source("smtpd_proxy_timeout") == "smtpd_proxy_timeout (Postfix's default)"
