"""The spf plugin through filterd.testing (the real runner and config validation), resolving
against a DNS server on loopback."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from filterd_spf import SPF_HELO_RESULT, SPF_OUTCOME, SPF_RESULT, SPF_SKIPPED, Spf

from filterd.sdk import (
    Client,
    ConfigError,
    Continue,
    Finding,
    Reject,
    Reply,
    Session,
    TempFail,
    Transaction,
)
from filterd.testing import ScanResult, Xforwarded, make_plugin, run_plugin, validate_config
from tests.support.dns_server import DnsServer, Zone

MESSAGE = b"From: alice@example.com\r\nSubject: hi\r\n\r\nbody\r\n"
LIFETIME = 1.0

ZONE: Zone = {
    "example.com": [{"TXT": "v=spf1 ip4:192.0.2.0/24 -all"}],
    "soft.example.com": [{"TXT": "v=spf1 ip4:192.0.2.0/24 ~all"}],
    "neutral.example.com": [{"TXT": "v=spf1 ?all"}],
    "broken.example.com": [{"TXT": "v=spf1 ip4:192.0.2.0/24 moo -all"}],
    "exp.example.com": [{"TXT": "v=spf1 -all exp=why.exp.example.com"}],
    "why.exp.example.com": [{"TXT": "%{i} is not one of %{d}'s mail servers."}],
    "servfail.example.com": [{"RCODE": "SERVFAIL"}],
    "slow.example.com": ["TIMEOUT"],
    "mx.example.com": [{"TXT": "v=spf1 a -all"}, {"A": "192.0.2.1"}],
    "liar.example.net": [{"TXT": "v=spf1 -all"}],
}


def settings(server: DnsServer | str, **extra: object) -> dict[str, object]:
    address = server if isinstance(server, str) else server.address
    return {
        "authserv_id": "mx.example.org",
        "resolver": {"nameservers": [address], "timeout": "250ms", "lifetime": LIFETIME},
        **extra,
    }


async def scan(server: DnsServer | str, **options: Any) -> ScanResult:
    """run_plugin with ``mail_from``, ``client_ip``, ``helo`` and plugin settings."""
    mail_from = options.pop("mail_from", "alice@example.com")
    client_ip = options.pop("client_ip", "192.0.2.1")
    helo = options.pop("helo", "mx.example.com")
    extra = options
    return await run_plugin(
        Spf,
        settings(server, **extra),
        message=MESSAGE,
        mail_from=mail_from,
        client_ip=client_ip,
        helo=helo,
        rcpts=["bob@example.org"],
    )


def headers(result: ScanResult) -> list[str]:
    """The header fields of the relayed message, unfolded."""
    head = result.message.split(b"\r\n\r\n", 1)[0].decode()
    return re.sub(r"\r\n(?=[ \t])", "", head).split("\r\n")  # RFC 5322 §2.2.3 unfolding


def continued(result: ScanResult, *findings: Finding) -> bool:
    """MAIL went on, with these findings."""
    return isinstance(result.decision("on_mail_from"), Continue) and result.findings == [*findings]


def named(result: ScanResult, name: str) -> list[str]:
    prefix = f"{name}: "
    return [h[len(prefix) :] for h in headers(result) if h.startswith(prefix)]


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer(ZONE) as server:
        yield server


async def test_fail_is_rejected_at_mail(dns: DnsServer) -> None:
    result = await scan(dns, client_ip="198.51.100.7")
    assert result.decided_at == "on_mail_from"
    assert result.final == Reject(
        Reply(550, "5.7.23", "SPF fail for example.com: SPF fail - not authorized"),
        (Finding("spf.mailfrom", "fail"),),
    )


async def test_fail_reply_quotes_the_domains_explanation(dns: DnsServer) -> None:
    result = await scan(dns, mail_from="bob@exp.example.com")
    assert result.reply == Reply(
        550,
        "5.7.23",
        "SPF fail for exp.example.com: 192.0.2.1 is not one of exp.example.com's mail servers.",
    )


async def test_fail_can_be_tagged(dns: DnsServer) -> None:
    result = await scan(dns, client_ip="198.51.100.7", on_fail="tag")
    assert result.reply is None
    assert named(result, "Received-SPF")[0].startswith(
        "Fail (mx.example.org: domain of example.com does not designate 198.51.100.7 as "
        "permitted sender)"
    )


async def test_softfail_is_tagged(dns: DnsServer) -> None:
    result = await scan(dns, mail_from="alice@soft.example.com", client_ip="198.51.100.7")
    assert result.reply is None
    assert continued(result, Finding("spf.mailfrom", "softfail"))
    (received,) = named(result, "Received-SPF")
    assert received.startswith("SoftFail (mx.example.org: transitioning domain of ")
    assert "; mechanism=~all; identity=mailfrom" in received
    (authres,) = named(result, "Authentication-Results")
    assert authres.startswith("mx.example.org; spf=softfail (")


async def test_softfail_can_be_rejected(dns: DnsServer) -> None:
    result = await scan(
        dns, mail_from="alice@soft.example.com", client_ip="198.51.100.7", on_softfail="reject"
    )
    assert result.reply == Reply(
        550,
        "5.7.23",
        "SPF softfail for soft.example.com: domain owner discourages use of this host",
    )


async def test_pass_adds_received_spf_and_authentication_results(dns: DnsServer) -> None:
    result = await scan(dns)
    assert result.reply is None
    assert headers(result)[:2] == [
        "Authentication-Results: mx.example.org; spf=pass (mx.example.org: domain of "
        "example.com designates 192.0.2.1 as permitted sender) smtp.mailfrom=example.com "
        "(sender=alice@example.com; helo=mx.example.com; client-ip=192.0.2.1; "
        "receiver=mx.example.org; mechanism=ip4:192.0.2.0/24)",
        "Received-SPF: Pass (mx.example.org: domain of example.com designates 192.0.2.1 as "
        'permitted sender) client-ip=192.0.2.1; envelope-from="alice@example.com"; '
        'helo=mx.example.com; receiver=mx.example.org; mechanism="ip4:192.0.2.0/24"; '
        "identity=mailfrom",
    ]
    # Folded to 78 columns, and the body is untouched.
    head, body = result.message.split(b"\r\n\r\n", 1)
    assert all(len(line) <= 78 for line in head.split(b"\r\n"))
    assert body == b"body\r\n"


@pytest.mark.parametrize(
    ("kinds", "expected"),
    [
        (["received-spf"], ["Received-SPF"]),
        (["authentication-results"], ["Authentication-Results"]),
        ([], []),
    ],
)
async def test_headers_setting(dns: DnsServer, kinds: list[str], expected: list[str]) -> None:
    result = await scan(dns, headers=kinds)
    names = [h.split(":")[0] for h in headers(result)]
    assert names == [*expected, "Received", "From", "Subject"]


async def test_neutral_and_none_pass_through(dns: DnsServer) -> None:
    neutral = await scan(dns, mail_from="a@neutral.example.com")
    assert named(neutral, "Received-SPF")[0].startswith("Neutral (")
    none = await scan(dns, mail_from="a@nowhere.example.com")
    assert none.reply is None
    assert named(none, "Received-SPF")[0].startswith("None (")


async def test_permerror_is_tagged_or_rejected(dns: DnsServer) -> None:
    tagged = await scan(dns, mail_from="a@broken.example.com")
    assert tagged.reply is None
    assert "PermError (" in named(tagged, "Received-SPF")[0]
    assert "problem=moo;" in named(tagged, "Received-SPF")[0]
    rejected = await scan(dns, mail_from="a@broken.example.com", on_permerror="reject")
    assert rejected.reply == Reply(
        550,
        "5.7.24",
        "SPF permerror for broken.example.com: SPF Permanent Error: Unknown mechanism found: moo",
    )


async def test_servfail_defers_with_4_7_24(dns: DnsServer) -> None:
    result = await scan(dns, mail_from="a@servfail.example.com")
    assert isinstance(result.final, TempFail)
    assert result.final.reply.code == 451
    assert result.final.reply.status == "4.7.24"
    assert result.final.reply.text.startswith("SPF temperror for servfail.example.com: ")


async def test_temperror_can_be_tagged(dns: DnsServer) -> None:
    result = await scan(dns, mail_from="a@servfail.example.com", on_temperror="tag")
    assert result.reply is None
    assert named(result, "Received-SPF")[0].startswith("TempError (")


async def test_unanswered_dns_defers_within_the_lifetime(dns: DnsServer) -> None:
    started = time.monotonic()
    result = await scan(dns, mail_from="a@slow.example.com")
    elapsed = time.monotonic() - started
    assert isinstance(result.final, TempFail)
    assert result.final.reply.status == "4.7.24"
    assert "DNS timeout" in result.final.reply.text
    assert elapsed < LIFETIME + 1.0


async def test_dns_server_down_defers_within_the_lifetime() -> None:
    with DnsServer({}) as server:
        address = server.address
    started = time.monotonic()
    result = await scan(address)  # nothing listens there any more
    elapsed = time.monotonic() - started
    assert isinstance(result.final, TempFail)
    assert (result.final.reply.code, result.final.reply.status) == (451, "4.7.24")
    assert elapsed < LIFETIME + 1.0


async def test_lookup_time_bounds_the_whole_check(dns: DnsServer) -> None:
    # Each lookup could take LIFETIME; the check as a whole stops at lookup_time.
    slow: Zone = {
        "chain.example.com": [{"TXT": "v=spf1 a:s1.example.com a:s2.example.com a:s3.example.com"}],
        "s1.example.com": ["TIMEOUT"],
        "s2.example.com": ["TIMEOUT"],
        "s3.example.com": ["TIMEOUT"],
    }
    dns.set_zone(slow)
    started = time.monotonic()
    result = await scan(dns, mail_from="a@chain.example.com", lookup_time="600ms")
    assert isinstance(result.final, TempFail)
    assert time.monotonic() - started < 0.6 + LIFETIME  # not 3 x LIFETIME


async def test_whitelisted_senders_and_domains_are_not_checked(dns: DnsServer) -> None:
    extras: list[dict[str, object]] = [
        {"whitelist_senders": ["Alice@Example.com"]},
        {"whitelist_domains": ["example.com"]},
        {"whitelist_domains": [".com"]},
    ]
    for extra in extras:
        result = await scan(dns, client_ip="198.51.100.7", **extra)
        assert result.reply is None, extra
        assert continued(result, Finding("spf.skipped", next(iter(extra))))
        assert named(result, "Received-SPF") == []
    assert dns.queries == []
    # ".example.com" covers subdomains, "example.com" only itself.
    sub = await scan(dns, mail_from="a@soft.example.com", whitelist_domains=["example.com"])
    assert named(sub, "Received-SPF") != []


async def test_skip_networks_are_not_checked(dns: DnsServer) -> None:
    local = await scan(dns, client_ip="127.0.0.1")  # the default: loopback
    relay = await scan(dns, client_ip="198.51.100.7", skip_networks=["198.51.100.0/24"])
    mapped = await scan(dns, client_ip="::ffff:198.51.100.7", skip_networks=["198.51.100.0/24"])
    for result in (local, relay, mapped):
        assert result.reply is None
        assert continued(result, Finding("spf.skipped", "skip_networks"))
        assert named(result, "Received-SPF") == []
    assert dns.queries == []


async def test_null_sender_checks_postmaster_at_helo(dns: DnsServer) -> None:
    result = await scan(dns, mail_from="", helo="mx.example.com")
    (received,) = named(result, "Received-SPF")
    assert received.startswith("Pass (mx.example.org: domain of mx.example.com designates ")
    assert received.endswith("mechanism=a; identity=helo")
    (authres,) = named(result, "Authentication-Results")
    assert " smtp.helo=mx.example.com " in authres
    rejected = await scan(dns, mail_from="", helo="liar.example.net")
    assert rejected.reply == Reply(
        550, "5.7.23", "SPF fail for HELO liar.example.net: SPF fail - not authorized"
    )


async def test_helo_check_off_asks_nothing_about_the_helo(dns: DnsServer) -> None:
    await scan(dns, helo="liar.example.net")
    assert {name for name, _, _ in dns.queries} == {"example.com"}


async def test_helo_check_tag_adds_both_identities(dns: DnsServer) -> None:
    result = await scan(dns, helo="liar.example.net", helo_check="tag")
    assert result.reply is None
    assert continued(result, Finding("spf.helo", "fail"), Finding("spf.mailfrom", "pass"))
    received = named(result, "Received-SPF")
    assert [r.rsplit("identity=", 1)[1] for r in received] == ["mailfrom", "helo"]
    assert received[1].startswith("Fail (mx.example.org: domain of liar.example.net ")
    (authres,) = named(result, "Authentication-Results")
    assert authres.startswith("mx.example.org; spf=pass (")
    assert "; spf=fail (" in authres
    assert " smtp.helo=liar.example.net " in authres


async def test_helo_check_reject_fail(dns: DnsServer) -> None:
    result = await scan(dns, helo="liar.example.net", helo_check="reject-fail")
    assert result.final == Reject(
        Reply(550, "5.7.23", "SPF fail for HELO liar.example.net: SPF fail - not authorized"),
        (Finding("spf.helo", "fail"),),
    )
    passing = await scan(dns, helo="mx.example.com", helo_check="reject-fail")
    assert passing.reply is None


async def test_notes_and_the_xforwarded_client(dns: DnsServer) -> None:
    """Other plugins read the notes; the client checked is the one XFORWARD names."""
    plugin = make_plugin(Spf, settings(dns, helo_check="tag"))
    await plugin.start()
    postfix = Client(address="127.0.0.1", helo="localhost")
    t = Transaction("Q1", Session("s1", "smtp", postfix), sender="alice@example.com")
    t.xforward = Xforwarded({"ADDR": "198.51.100.7", "HELO": "mx.example.com"})
    verdict = await plugin.on_mail_from(t)
    assert isinstance(verdict, Reject)
    assert t.notes.get(SPF_RESULT) == "fail"
    assert t.notes.get(SPF_HELO_RESULT) == "fail"
    outcome = t.notes.get(SPF_OUTCOME)
    assert outcome is not None
    assert outcome.mailfrom is not None
    assert outcome.mailfrom.client_ip == "198.51.100.7"
    assert outcome.mailfrom.mechanism == "-all"
    # Without XFORWARD the client is Postfix itself: loopback, skipped.
    t2 = Transaction("Q2", Session("s2", "smtp", postfix), sender="alice@example.com")
    assert await plugin.on_mail_from(t2) == Continue(
        findings=(Finding("spf.skipped", "skip_networks"),)
    )
    assert t2.notes.get(SPF_SKIPPED) == "skip_networks"
    assert t2.notes.get(SPF_RESULT) is None


def test_config_is_validated() -> None:
    good = Spf.Config.model_validate(
        {"resolver": {"nameservers": ["192.0.2.53", "[::1]:5353"], "timeout": "500ms"}}
    )
    assert good.resolver.endpoints() == [("192.0.2.53", 53), ("::1", 5353)]
    assert good.resolver.timeout == 0.5
    for bad in (
        {"on_fail": "bounce"},
        {"resolver": {"nameservers": ["dns.example.com:53"]}},
        {"resolver": {"lifetime": "forever"}},
        {"headers": ["x-spf"]},
        {"skip_networks": ["10.0.0.1/8"]},
        {"authserv_id": "mx example"},
        {"helo_checks": "off"},
    ):
        with pytest.raises(ConfigError):
            validate_config(Spf, bad)


async def started(server: DnsServer, **extra: object) -> Spf:
    plugin = make_plugin(Spf, settings(server, **extra))
    await plugin.start()
    return plugin


def transaction(sender: str, client_ip: str = "192.0.2.1") -> Transaction:
    client = Client(address=client_ip, helo="mx.example.com")
    return Transaction("Q1", Session("s1", "smtp", client), sender=sender)


async def test_a_repeated_check_is_answered_without_dns_or_pyspf() -> None:
    with DnsServer(ZONE, ttl=60, negative_ttl=60) as server:
        plugin = await started(server, cache_size=0)  # no DNS cache: only results are kept
        first = await plugin.on_mail_from(transaction("alice@example.com"))
        asked = len(server.queries)
        assert asked > 0
        again = await plugin.on_mail_from(transaction("alice@example.com"))
        assert again == first
        assert len(server.queries) == asked
        assert plugin.results.hits == 1
        # Another client, sender or HELO is another check.
        await plugin.on_mail_from(transaction("alice@example.com", client_ip="198.51.100.7"))
        await plugin.on_mail_from(transaction("bob@example.com"))
        assert plugin.results.hits == 1
        assert len(server.queries) == 3 * asked


async def test_kept_results_expire_with_the_shortest_ttl_they_used() -> None:
    zone: Zone = {
        "example.com": [{"TXT": "v=spf1 include:other.example.com -all"}],
        "other.example.com": [{"TXT": "v=spf1 ip4:192.0.2.0/24 -all"}],
    }
    with DnsServer(zone, ttl=1, negative_ttl=60) as server:
        plugin = await started(server, cache_size=0)
        first = await plugin.on_mail_from(transaction("alice@example.com"))
        assert isinstance(first, Continue)
        # The domain moves its mail elsewhere; until the TTL (1 s) runs out the old answer holds.
        server.set_zone({**zone, "other.example.com": [{"TXT": "v=spf1 -all"}]})
        assert await plugin.on_mail_from(transaction("alice@example.com")) == first
        await trio.sleep(1.2)
        assert isinstance(await plugin.on_mail_from(transaction("alice@example.com")), Reject)


async def test_nxdomain_results_are_kept_for_the_negative_ttl() -> None:
    with DnsServer(ZONE, ttl=60, negative_ttl=1) as server:
        plugin = await started(server, cache_size=0)
        t = transaction("alice@nowhere.example.com")
        await plugin.on_mail_from(t)
        assert t.notes.get(SPF_RESULT) == "none"
        asked = len(server.queries)
        await plugin.on_mail_from(transaction("alice@nowhere.example.com"))
        assert len(server.queries) == asked
        await trio.sleep(1.2)
        await plugin.on_mail_from(transaction("alice@nowhere.example.com"))
        assert len(server.queries) == 2 * asked


async def test_temperrors_are_never_kept() -> None:
    with DnsServer(ZONE) as server:
        plugin = await started(server)
        for _ in range(2):
            verdict = await plugin.on_mail_from(transaction("a@servfail.example.com"))
            assert isinstance(verdict, TempFail)
        assert plugin.results.hits == 0
        assert len(plugin.results) == 0


async def test_result_cache_size_zero_keeps_nothing() -> None:
    with DnsServer(ZONE) as server:
        plugin = await started(server, result_cache_size=0)
        await plugin.on_mail_from(transaction("alice@example.com"))
        await plugin.on_mail_from(transaction("alice@example.com"))
        assert plugin.results.hits == 0
        assert len(plugin.results) == 0


async def test_a_check_with_every_answer_cached_needs_no_worker_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with DnsServer(ZONE) as server:
        plugin = await started(server, result_cache_size=0)
        first = await plugin.on_mail_from(transaction("alice@example.com"))
        threads: list[object] = []
        real = trio.to_thread.run_sync

        async def counting(*args: Any, **kwargs: Any) -> Any:
            threads.append(args[0])
            return await real(*args, **kwargs)

        monkeypatch.setattr(trio.to_thread, "run_sync", counting)
        asked = len(server.queries)
        assert isinstance(first, Continue)
        second = await plugin.on_mail_from(transaction("bob@example.com"))
        assert isinstance(second, Continue)
        assert second.findings == (Finding("spf.mailfrom", "pass"),)
        assert threads == []
        assert len(server.queries) == asked
        # An answer not cached yet: the check goes to a worker thread and asks DNS.
        await plugin.on_mail_from(transaction("carol@soft.example.com"))
        assert len(threads) == 1
        assert len(server.queries) > asked


async def test_an_explanation_not_cached_yet_is_fetched(dns: DnsServer) -> None:
    """pyspf swallows any exception while fetching exp=: a cache-only attempt that misses the
    explanation must not answer with the default text."""
    plugin = await started(dns, result_cache_size=0)
    plugin.resolver.lookup("exp.example.com", "TXT")  # the record is cached, its exp= is not
    verdict = await plugin.on_mail_from(transaction("a@exp.example.com"))
    assert isinstance(verdict, Reject)
    assert verdict.reply.text == (
        "SPF fail for exp.example.com: 192.0.2.1 is not one of exp.example.com's mail servers."
    )


async def test_a_result_reached_despite_a_failed_lookup_is_not_kept() -> None:
    """RFC 7208 §5.5: a DNS error on the PTR lookup makes "ptr" not match, so the check fails
    without being a temperror. That fail is right for this message only: once DNS answers
    again, the next message is checked afresh."""
    zone: Zone = {
        "ptr.example.com": [{"TXT": "v=spf1 ptr -all"}],
        "1.2.0.192.in-addr.arpa": [{"RCODE": "SERVFAIL"}],
        "mx.ptr.example.com": [{"A": "192.0.2.1"}],
    }
    with DnsServer(zone) as server:
        plugin = await started(server)
        assert isinstance(await plugin.on_mail_from(transaction("a@ptr.example.com")), Reject)
        server.set_zone({**zone, "1.2.0.192.in-addr.arpa": [{"PTR": "mx.ptr.example.com."}]})
        assert isinstance(await plugin.on_mail_from(transaction("a@ptr.example.com")), Continue)
        assert plugin.results.hits == 0
