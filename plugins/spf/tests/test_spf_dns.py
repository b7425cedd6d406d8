"""The plugin's DNS layer: the dnspython resolver (cache, TTLs, TCP fallback, timeouts) and the
pyspf hook that keeps each chain entry on its own resolver."""

from __future__ import annotations

import time

import pytest
import spf
import trio
from filterd_spf import checker
from filterd_spf.checker import SpfRequest, evaluate, using_lookup
from filterd_spf.resolver import DnsTemporaryError, SpfResolver

from tests.support.dns_server import DnsServer, Zone


def resolver_for(
    server: DnsServer | str, cache_size: int = 100, lifetime: float = 1.0
) -> SpfResolver:
    address = server if isinstance(server, str) else server.address
    host, _, port = address.rpartition(":")
    return SpfResolver([(host, int(port))], timeout=0.25, lifetime=lifetime, cache_size=cache_size)


def test_answers_in_pyspfs_shapes() -> None:
    zone: Zone = {
        "example.com": [
            {"TXT": ["v=spf1 ", "-all"]},
            {"TXT": "x" * 300},
            {"MX": (10, "mx.example.com")},
            {"MX": (0, "")},
        ],
        "mx.example.com": [{"A": "192.0.2.1"}, {"AAAA": "2001:db8::1"}],
        "alias.example.com": [{"CNAME": "mx.example.com"}],
        "1.2.0.192.in-addr.arpa": [{"PTR": "mx.example.com."}],
    }
    with DnsServer(zone) as server:
        dns = resolver_for(server)
        txt = dns.lookup("example.com", "TXT")
        assert sorted(txt) == sorted(
            [
                (("example.com", "TXT"), (b"v=spf1 ", b"-all")),
                (("example.com", "TXT"), (b"x" * 255, b"x" * 45)),  # over-long strings are split
            ]
        )
        assert sorted(dns.lookup("example.com", "MX")) == [
            (("example.com", "MX"), (0, "")),  # the root: "no mail"
            (("example.com", "MX"), (10, "mx.example.com")),
        ]
        assert dns.lookup("mx.example.com", "AAAA") == [(("mx.example.com", "AAAA"), "2001:db8::1")]
        assert dns.lookup("alias.example.com", "A") == [(("alias.example.com", "A"), "192.0.2.1")]
        assert dns.lookup("1.2.0.192.in-addr.arpa", "PTR") == [
            (("1.2.0.192.in-addr.arpa", "PTR"), "mx.example.com")
        ]
        assert dns.lookup("mx.example.com", "TXT") == []  # no data
        assert dns.lookup("nowhere.example.com", "A") == []  # NXDOMAIN


def test_names_dns_cannot_carry_are_empty_without_a_query() -> None:
    with DnsServer({}) as server:
        dns = resolver_for(server)
        assert dns.lookup("a" * 64 + ".example.com", "TXT") == []
        assert dns.lookup(".".join(["abcdefghi"] * 30), "TXT") == []  # over 255 octets
        assert dns.lookup("a..example.com", "TXT") == []
        assert server.queries == []


def test_cache_honours_ttls() -> None:
    with DnsServer({"example.com": [{"TXT": "v=spf1 -all"}]}, ttl=1, negative_ttl=1) as server:
        dns = resolver_for(server)
        for _ in range(3):
            dns.lookup("example.com", "TXT")
            dns.lookup("nowhere.example.com", "TXT")  # negative answers are cached too
        assert len(server.queries) == 2
        time.sleep(1.2)
        dns.lookup("example.com", "TXT")
        dns.lookup("nowhere.example.com", "TXT")
        assert len(server.queries) == 4


def test_cache_size_zero_means_no_cache() -> None:
    with DnsServer({"example.com": [{"TXT": "v=spf1 -all"}]}) as server:
        dns = resolver_for(server, cache_size=0)
        dns.lookup("example.com", "TXT")
        dns.lookup("example.com", "TXT")
        assert len(server.queries) == 2


def test_large_answers_fall_back_to_tcp() -> None:
    records: list[object] = [{"TXT": f"record {i} " + "x" * 200} for i in range(12)]
    with DnsServer({"big.example.com": records}) as server:
        answer = resolver_for(server).lookup("big.example.com", "TXT")
        assert len(answer) == 12
        assert server.queries == [
            ("big.example.com", "TXT", "udp"),
            ("big.example.com", "TXT", "tcp"),
        ]


def test_errors_are_temporary_and_bounded() -> None:
    zone: Zone = {"slow.example.com": ["TIMEOUT"], "broken.example.com": [{"RCODE": "SERVFAIL"}]}
    with DnsServer(zone) as server:
        dns = resolver_for(server, lifetime=0.5)
        started = time.monotonic()
        with pytest.raises(DnsTemporaryError, match="DNS timeout"):
            dns.lookup("slow.example.com", "TXT")
        assert time.monotonic() - started < 0.5 + 0.5
        started = time.monotonic()
        with pytest.raises(DnsTemporaryError, match="no DNS server answered"):
            dns.lookup("broken.example.com", "TXT")
        assert time.monotonic() - started < 0.5  # no waiting: SERVFAIL is an answer
        # pyspf's per-lookup budget (what is left of the check's time) shortens the wait.
        started = time.monotonic()
        with pytest.raises(DnsTemporaryError):
            dns.lookup("slow.example.com", "TXT", 0.1)
        assert time.monotonic() - started < 0.1 + 0.5


async def test_each_chain_entry_keeps_its_own_resolver() -> None:
    """Two resolvers (two [[chain]] entries) checking at the same time in worker threads: each
    check sees only its own DNS, although pyspf's hook is one module global."""
    with (
        DnsServer({"example.com": [{"TXT": "v=spf1 ip4:192.0.2.1 -all"}]}) as first,
        DnsServer({"example.com": [{"TXT": "v=spf1 -ip4:192.0.2.1 +all"}]}) as second,
    ):
        resolvers = [
            (resolver_for(first, cache_size=0), "pass"),
            (resolver_for(second, cache_size=0), "fail"),
        ]
        expected = {id(r): result for r, result in resolvers}
        request = SpfRequest("192.0.2.1", "alice@example.com", "mx.example.com", "mx.example.org")
        seen: list[tuple[int, str]] = []

        async def check(resolver: SpfResolver) -> None:
            answer = await trio.to_thread.run_sync(evaluate, request, resolver.lookup)
            seen.append((id(resolver), answer.result))

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                for resolver, _result in resolvers:
                    nursery.start_soon(check, resolver)
        assert len(seen) == 40
        assert all(result == expected[key] for key, result in seen)


def test_pyspf_without_a_bound_lookup_uses_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, str]] = []

    def pyspf_own(
        name: str, qtype: str, strict: object = True, timeout: object = None
    ) -> list[object]:
        asked.append((name, qtype))
        return [((name, qtype), (b"v=spf1 -all",))] if qtype == "TXT" else []

    monkeypatch.setattr(checker, "_pyspf_lookup", pyspf_own)
    result, _code, _explanation = spf.query(i="192.0.2.1", s="a@example.com", h="mx").check()
    assert result == "fail"
    assert asked == [("example.com", "TXT")]
    with using_lookup(lambda name, qtype, timeout: []):
        assert spf.query(i="192.0.2.1", s="a@example.com", h="mx").check()[0] == "none"
    assert asked == [("example.com", "TXT")]


def test_a_replaced_hook_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spf, "DNSLookup", lambda *args: [])
    request = SpfRequest("192.0.2.1", "alice@example.com", "mx.example.com", "mx.example.org")
    with pytest.raises(RuntimeError, match="replaced"):
        evaluate(request, lambda name, qtype, timeout: [])


def test_ptr_dns_errors_skip_the_name_rfc7208_5_5() -> None:
    """pyspf 2.0.14 turns these into temperror; RFC 7208 §5.5 says skip / no match."""
    zone: Zone = {
        "example.com": [{"TXT": "v=spf1 ptr -all"}],
        "5.2.0.192.in-addr.arpa": [{"PTR": "slow.example.com"}, {"PTR": "mail.example.com"}],
        "slow.example.com": ["TIMEOUT"],
        "mail.example.com": [{"A": "192.0.2.5"}],
        "6.2.0.192.in-addr.arpa": [{"RCODE": "SERVFAIL"}],
    }
    with DnsServer(zone) as server:
        dns = resolver_for(server, lifetime=0.3)
        matched = evaluate(SpfRequest("192.0.2.5", "a@example.com", "h", "r"), dns.lookup)
        assert (matched.result, matched.mechanism) == ("pass", "ptr")
        no_ptr = evaluate(SpfRequest("192.0.2.6", "a@example.com", "h", "r"), dns.lookup)
        assert (no_ptr.result, no_ptr.mechanism) == ("fail", "-all")


def test_lookup_until_reports_the_ttl_of_answers_and_negative_answers() -> None:
    zone: Zone = {"example.com": [{"TXT": "v=spf1 -all"}]}
    with DnsServer(zone, ttl=300, negative_ttl=30) as server:
        dns = resolver_for(server)
        now = time.time()
        _, until = dns.lookup_until("example.com", "TXT")
        assert until is not None
        assert now + 290 < until <= now + 301
        _, until = dns.lookup_until("example.com", "A")  # no data: the SOA's negative TTL
        assert until is not None
        assert now + 25 < until <= now + 31
        _, until = dns.lookup_until("nowhere.example.com", "TXT")  # NXDOMAIN, fresh
        assert until is not None
        assert now + 25 < until <= now + 31
        _, cached = dns.lookup_until("nowhere.example.com", "TXT")  # from the cache
        assert cached == until
        assert dns.lookup_until("a..example.com", "TXT") == ([], None)
