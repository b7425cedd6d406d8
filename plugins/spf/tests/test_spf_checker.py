"""filterd_spf.checker against pyspf's own query class, from DNS data in memory: what the
checker remembers between checks (parsed mechanisms, networks) and writes later (the
Received-SPF wording) must never change an answer."""

from __future__ import annotations

import ipaddress

import pytest
import spf  # type: ignore[import-untyped, unused-ignore]
from filterd_spf.checker import SpfRequest, evaluate, using_lookup
from filterd_spf.resolver import DnsRecord, DnsTemporaryError

RECEIVER = "mx.receiver.test"

TXT = {
    "pass.test": "v=spf1 a:mail.pass.test mx ip4:192.0.2.0/24 -all",
    "fail.test": "v=spf1 ip4:203.0.113.0/24 -all",
    "soft.test": "v=spf1 include:inc.test ~all",
    "inc.test": "v=spf1 ip4:203.0.113.0/24 -all",
    "neutral.test": "v=spf1 ?all",
    "macro.test": "v=spf1 exists:%{i}.ok.macro.test -all",
    # pyspf notes "use ip4" in lax mode and carries on, refuses it in strict modes
    "lax.test": "v=spf1 a:192.0.2.1 -all",
    "broken.test": "v=spf1 ip4:192.0.2.0/24 moo -all",
    # the same mechanism means /24 for an IPv4 client and /128 for an IPv6 one
    "dual.test": "v=spf1 a/24//128 -all",
    # the same text, meaning "a:own.test" and "a:other.test"
    "own.test": "v=spf1 a -all",
    "other.test": "v=spf1 a -all",
}
ADDRESSES = {
    ("mail.pass.test", "A"): "198.51.100.1",
    ("pass.test", "A"): "198.51.100.2",
    ("192.0.2.9.ok.macro.test", "A"): "127.0.0.2",
    ("dual.test", "A"): "192.0.2.1",
    ("dual.test", "AAAA"): "2001:db8::1",
    ("own.test", "A"): "192.0.2.1",
    ("other.test", "A"): "198.51.100.5",
}
MX = {"pass.test": [(10, "mail.pass.test")]}

# (client, sender domain, expected result in strict mode, in lax mode)
CASES = [
    ("192.0.2.9", "pass.test", "pass", "pass"),
    ("198.51.100.1", "pass.test", "pass", "pass"),
    ("198.51.100.7", "pass.test", "fail", "fail"),
    ("192.0.2.9", "fail.test", "fail", "fail"),
    ("192.0.2.9", "soft.test", "softfail", "softfail"),
    ("192.0.2.9", "neutral.test", "neutral", "neutral"),
    ("192.0.2.9", "macro.test", "pass", "pass"),
    ("192.0.2.8", "macro.test", "fail", "fail"),
    ("192.0.2.1", "lax.test", "permerror", "permerror"),
    ("192.0.2.9", "broken.test", "permerror", "permerror"),
    ("192.0.2.77", "dual.test", "pass", "pass"),
    ("2001:db8::5", "dual.test", "fail", "fail"),
    ("2001:db8::1", "dual.test", "pass", "pass"),
    ("192.0.2.1", "own.test", "pass", "pass"),
    ("192.0.2.1", "other.test", "fail", "fail"),
    ("192.0.2.9", "nothing.test", "none", "none"),
    ("192.0.2.9", "servfail.test", "temperror", "temperror"),
]


def lookup(name: str, qtype: str, timeout: float | None) -> list[DnsRecord]:
    del timeout
    if name == "servfail.test":
        raise DnsTemporaryError(f"SERVFAIL for {qtype} {name}")
    key = (name, qtype)
    if qtype == "TXT" and name in TXT:
        return [(key, (TXT[name].encode(),))]
    if qtype == "MX" and name in MX:
        return [(key, mx) for mx in MX[name]]
    if key in ADDRESSES:
        return [(key, ADDRESSES[key])]
    return []


def pyspf_answer(request: SpfRequest, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """pyspf's own query class, on the real ``ipaddress`` module (not the checker's memoising
    copy): its result and its Received-SPF text."""
    monkeypatch.setattr(spf, "ipaddress", ipaddress)
    try:
        return _pyspf_answer(request)
    finally:
        monkeypatch.undo()


def _pyspf_answer(request: SpfRequest) -> tuple[str, str]:
    with using_lookup(lookup):
        q = spf.query(
            i=request.client_ip,
            s=request.sender,
            h=request.helo,
            receiver=request.receiver,
            strict=request.strict,
        )
        raw, _code, _explanation = q.check()
        result = {"unknown": "permerror", "error": "temperror"}.get(raw, raw)
        return result, q.get_header(result, receiver=request.receiver)


@pytest.mark.parametrize("strict", [True, False, 2])
def test_answers_match_pyspf_every_time(
    strict: bool | int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Twice over the whole list: the second round runs on what the first one remembered.
    for _round in range(2):
        for client, domain, strict_result, lax_result in CASES:
            request = SpfRequest(
                client_ip=client,
                sender=f"alice@{domain}",
                helo="client.test",
                receiver=RECEIVER,
                strict=strict,
            )
            answer = evaluate(request, lookup)
            expected = strict_result if strict else lax_result
            assert answer.result == expected, (client, domain, strict)
            result, header = pyspf_answer(request, monkeypatch)
            assert (answer.result, answer.received_spf) == (result, header), (client, domain)


def test_received_spf_wording() -> None:
    request = SpfRequest("192.0.2.9", "alice@pass.test", "client.test", RECEIVER)
    answer = evaluate(request, lookup)
    assert answer.received_spf == (
        f"Pass ({RECEIVER}: domain of pass.test designates 192.0.2.9 as permitted sender) "
        'client-ip=192.0.2.9; envelope-from="alice@pass.test"; helo=client.test; '
        f'receiver={RECEIVER}; mechanism="ip4:192.0.2.0/24"; identity=mailfrom'
    )
    assert answer.comment == (
        f"{RECEIVER}: domain of pass.test designates 192.0.2.9 as permitted sender"
    )
    broken = evaluate(SpfRequest("192.0.2.9", "bob@broken.test", "h.test", RECEIVER), lookup)
    assert broken.received_spf.startswith(
        f"PermError ({RECEIVER}: permanent error in processing domain of broken.test: "
        "Unknown mechanism found)"
    )
    assert "problem=moo;" in broken.received_spf


def test_networks_stay_ipaddress_networks() -> None:
    # pyspf's module-global ipaddress is the checker's memoising copy
    network = spf.ipaddress.ip_network("192.0.2.7")
    wider = network.supernet(new_prefix=24)
    assert str(wider) == "192.0.2.0/24"
    assert wider == spf.ipaddress.ip_network("192.0.2.0/24")
    assert str(spf.ipaddress.ip_network("2001:db8::1").supernet(new_prefix=64)) == "2001:db8::/64"
    with pytest.raises(ValueError):
        spf.ipaddress.ip_network("192.0.2.300")
    with pytest.raises(ValueError):
        spf.ipaddress.ip_network("192.0.2.1/24")  # host bits set: strict, like ipaddress
