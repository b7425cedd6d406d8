"""Where Postfix's settings say to connect (endpoints.py), and which chain settings refuse mail
with a 5xx (chain_facts.py)."""

from __future__ import annotations

import pytest

from filterd.cli.doctor.chain_facts import table_line_rejects
from filterd.cli.doctor.endpoints import (
    Target,
    lmtp_destination,
    master_inet_address,
    matches_listener,
    milter_endpoint,
    policy_endpoint,
    proxy_destination,
    smtp_destination,
)
from filterd.config.types import parse_endpoint

TCP = Target("tcp", host="127.0.0.1", port=10025)


@pytest.mark.parametrize(
    ("nexthop", "target"),
    [
        ("[127.0.0.1]:10025", TCP),
        ("127.0.0.1:10025", TCP),
        ("[127.0.0.1]", Target("tcp", host="127.0.0.1", port=25)),
        ("localhost:10025", Target("tcp", host="localhost", port=10025)),
        ("[::1]:10025", Target("tcp", host="::1", port=10025)),
        ("[ipv6:::1]:10025", Target("tcp", host="::1", port=10025)),
        ("[127.0.0.1]:smtp", Target("tcp", host="127.0.0.1", port=25)),
        ("", None),
        ("[127.0.0.1]:nosuchservice", None),
    ],
)
def test_smtp_next_hops(nexthop: str, target: Target | None) -> None:
    assert smtp_destination(nexthop) == target


@pytest.mark.parametrize(
    ("nexthop", "target"),
    [
        ("inet:[127.0.0.1]:10025", TCP),
        ("inet:127.0.0.1:10025", TCP),
        ("inet:127.0.0.1", Target("tcp", host="127.0.0.1", port=24)),
        ("unix:/run/filterd.sock", Target("unix", path="/run/filterd.sock")),
        ("unix:private/filterd", Target("unix", path="private/filterd")),
    ],
)
def test_lmtp_next_hops(nexthop: str, target: Target) -> None:
    assert lmtp_destination(nexthop) == target


def test_proxy_milter_policy_and_service_addresses() -> None:
    assert proxy_destination("127.0.0.1:10025") == TCP
    assert proxy_destination("inet:127.0.0.1:10025") == TCP
    assert proxy_destination(":10025") == Target("tcp", host="localhost", port=10025)
    assert proxy_destination("10025") == Target("tcp", host="localhost", port=10025)
    assert proxy_destination("unix:private/f") == Target("unix", path="private/f")
    assert milter_endpoint("inet:127.0.0.1:10025") == TCP
    assert milter_endpoint("local:/run/m.sock") == Target("unix", path="/run/m.sock")
    assert milter_endpoint("127.0.0.1:10025") is None
    assert policy_endpoint("inet:127.0.0.1:10025") == TCP
    assert policy_endpoint("unix:private/policy") == Target("unix", path="private/policy")
    assert master_inet_address("127.0.0.1:10025") == TCP
    assert master_inet_address("smtp") == Target("tcp", host="", port=25)
    assert master_inet_address("10026") == Target("tcp", host="", port=10026)
    assert master_inet_address("[::1]:10026") == Target("tcp", host="::1", port=10026)


def test_matching_a_listener() -> None:
    def match(target: Target, address: str, chrooted: bool = False) -> bool:
        return matches_listener(
            target,
            parse_endpoint(address),
            queue_directory="/var/spool/postfix",
            chrooted=chrooted,
        )

    assert match(TCP, "127.0.0.1:10025")
    assert match(Target("tcp", host="localhost", port=10025), "127.0.0.1:10025")
    assert match(TCP, "0.0.0.0:10025")
    assert not match(TCP, "127.0.0.1:10026")
    assert not match(TCP, "127.0.0.2:10025")
    assert match(Target("unix", path="private/f"), "unix:/var/spool/postfix/private/f")
    assert match(Target("unix", path="/run/f.sock"), "unix:/run/f.sock")
    chrooted = Target("unix", path="/run/f.sock")
    assert match(chrooted, "unix:/var/spool/postfix/run/f.sock", chrooted=True)
    assert not match(chrooted, "unix:/run/f.sock", chrooted=True)


@pytest.mark.parametrize(
    ("line", "rejects"),
    [
        ("/^Subject: .*viagra/ REJECT", True),
        ("/^Subject: .*viagra/i REJECT go away", True),
        ("/^Subject: .*viagra/ reject", True),
        ("/^Subject: .*viagra/ REJECT 5.7.1 no", True),
        ("/^Subject: .*viagra/ REJECT 4.7.1 try later", False),  # a tempfail
        ("/^Subject: a\\/b REJECT/ HOLD", False),  # REJECT inside the pattern
        ("!/^From: .*@example\\.org/ REJECT", True),
        ("#/^Subject: x/ REJECT", False),
        ("/^Received: .*/ IGNORE", False),
        ("if /^Subject:/", False),
        ("endif", False),
        ("", False),
        ("REJECT", False),
        ("/unclosed REJECT", False),
    ],
)
def test_table_rules_that_reject(line: str, rejects: bool) -> None:
    assert table_line_rejects(line) is rejects
