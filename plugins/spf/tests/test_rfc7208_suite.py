"""The openspf RFC 7208 test suite (tests/data/spf/rfc7208-tests.yml, 203 cases) against
the spf plugin's own check path: the scenario's zone is served by a real DNS server on loopback
(tests/support/dns_server.py), the plugin's resolver is pointed at it, and ``Spf.check`` runs
pyspf in a worker thread exactly as at MAIL time.

Every case is also run through pyspf alone, with the in-memory DNS of pyspf's own runner
(pyspf's test/testspf.py). A case pyspf itself gets wrong is marked
``xfail(strict=True, reason="pyspf disagrees: ...")``; a case that fails only over real DNS is
marked with the reason in ``OVER_THE_WIRE``. Nothing is skipped.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import spf
import yaml  # type: ignore[import-untyped, unused-ignore]
from filterd_spf import Spf, SpfRequest
from filterd_spf.checker import DnsLookup, using_lookup
from filterd_spf.resolver import DnsRecord, DnsTemporaryError

from filterd.testing import make_plugin
from tests.support.data import SPF_SUITE
from tests.support.dns_server import DnsServer

SUITE = SPF_SUITE
# Suite lookups that hit a TIMEOUT entry wait this long (the suite's runtime is mostly these).
DNS_TIMEOUT = "150ms"
DNS_LIFETIME = "400ms"

# Cases that pass with pyspf's in-memory DNS but cannot pass over a real DNS server.
OVER_THE_WIRE = {
    "null-text": (
        "not pyspf: the zone has a TXT RR with zero character-strings (RFC 1035 §3.3.14 "
        "requires one or more); dnspython drops the malformed response, the lookup times out "
        "and the result is temperror"
    ),
}

MemoryZone = dict[str, list[Any]]  # name → [(type, value, owner) | "TIMEOUT"]


@dataclass(frozen=True)
class Case:
    scenario: str
    id: str
    spec: str
    helo: str
    host: str
    mailfrom: str
    results: tuple[str, ...]  # acceptable results, preferred first
    explanation: str | None
    strict: bool | int
    zone: dict[str, list[object]]  # for DnsServer
    memory_zone: MemoryZone  # pyspf's runner's format


def server_zone(zonedata: dict[str, list[object]]) -> dict[str, list[object]]:
    """The scenario's zone for DnsServer, with pyspf's runner conventions: SPF records are
    also served as TXT unless the name has a TXT entry; ``NONE`` = the entry exists, no data;
    a bare ``TIMEOUT`` / ``{TYPE: TIMEOUT}`` = never answered."""
    zone: dict[str, list[object]] = {}
    for name, entries in zonedata.items():
        served: list[object] = []
        generated: list[object] = []
        has_txt = any(isinstance(e, dict) and "TXT" in e for e in entries)
        for entry in entries:
            if entry == "TIMEOUT":
                served.append("TIMEOUT")
                continue
            assert isinstance(entry, dict)
            ((rtype, value),) = entry.items()
            if value == "TIMEOUT":
                served.append({"TIMEOUT": rtype})
                continue
            if value == "NONE":
                continue
            served.append({rtype: value})
            if rtype == "SPF" and not has_txt:
                generated.append({"TXT": value})
        zone[name] = served + generated
    return zone


def memory_zone(zonedata: dict[str, list[object]]) -> MemoryZone:
    """pyspf's runner's ``loadZone``: name → [(type, value, owner) | "TIMEOUT"]."""
    zone: MemoryZone = {}
    for name, entries in zonedata.items():
        out: list[Any] = []
        generated: list[Any] = []
        gen = True
        for entry in entries:
            if not isinstance(entry, dict):
                out.append(entry)
                continue
            for rtype, raw in entry.items():
                value = (raw,) if rtype in ("TXT", "SPF") and isinstance(raw, str) else raw
                if rtype == "TXT":
                    gen = False
                elif rtype == "SPF" and gen:
                    generated.append(("TXT", value, name))
                if value != ("NONE",):
                    out.append((rtype, value, name))
        zone[name.lower()] = out + (generated if gen else [])
    return zone


def memory_lookup(zone: MemoryZone) -> DnsLookup:
    """pyspf's runner's DNSLookup (test/testspf.py), for pyspf alone."""

    def lookup(name: str, qtype: str, timeout: float | None, level: int = 0) -> list[DnsRecord]:
        labels = [label for label in name.split(".") if label]
        if any(len(label) > 63 for label in labels):
            raise DnsTemporaryError("DNS label too long")
        name = ".".join(labels)
        records: list[DnsRecord] = []
        if name.lower() not in zone:
            if name.startswith("error."):
                raise DnsTemporaryError("DNS timeout")
            return records
        timed_out = True
        for entry in zone[name.lower()]:
            if entry == "TIMEOUT":
                if timed_out:
                    raise DnsTemporaryError("DNS timeout")
                return records
            rtype, value, owner = entry
            if rtype == qtype:
                timed_out = False
            if value == "TIMEOUT":
                if rtype == qtype:
                    raise DnsTemporaryError("DNS timeout")
                continue
            data: Any = value
            if rtype == "AAAA":
                data = socket.inet_pton(socket.AF_INET6, value)
            elif rtype in ("TXT", "SPF"):
                data = tuple(s.encode("utf-8") for s in value)
            elif rtype == "MX":
                data = tuple(value)
            records.append(((owner, rtype), data))
            if not level and rtype == "CNAME":  # one level of "additional" data
                records.extend(lookup(value, qtype, timeout, 1))
        return records

    return lookup


def load_cases() -> list[Case]:
    cases: list[Case] = []
    with SUITE.open("rb") as stream:
        for scenario in yaml.safe_load_all(stream):
            zonedata = scenario["zonedata"]
            for case_id, data in scenario["tests"].items():
                result = data["result"]
                cases.append(
                    Case(
                        scenario=scenario["description"],
                        id=case_id,
                        spec=str(data.get("spec", "")),
                        helo=data["helo"],
                        host=data["host"],
                        mailfrom=data["mailfrom"],
                        results=tuple(result) if isinstance(result, list) else (result,),
                        explanation=data.get("explanation"),
                        strict=data.get("strict", True),
                        zone=server_zone(zonedata),
                        memory_zone=memory_zone(zonedata),
                    )
                )
    return cases


def pyspf_alone(case: Case) -> tuple[str, str]:
    """(result, explanation) from plain pyspf with the in-memory DNS of its own runner."""
    with using_lookup(memory_lookup(case.memory_zone)):
        q = spf.query(i=case.host, s=case.mailfrom, h=case.helo, strict=case.strict)
        q.set_default_explanation("DEFAULT")
        result, _code, explanation = q.check()
    return {"unknown": "permerror", "error": "temperror"}.get(result, result), explanation


def disagreement(case: Case, result: str, explanation: str) -> str | None:
    if result not in case.results:
        return f"expected {' or '.join(case.results)}, got {result} ({explanation})"
    if case.explanation is not None and explanation != case.explanation:
        return f"expected explanation {case.explanation!r}, got {explanation!r}"
    return None


CASES = load_cases()
PYSPF_DISAGREES = {
    case.id: why for case in CASES if (why := disagreement(case, *pyspf_alone(case))) is not None
}


def _params() -> Iterator[object]:
    for case in CASES:
        marks = []
        if case.id in PYSPF_DISAGREES:
            reason = f"pyspf disagrees: {PYSPF_DISAGREES[case.id]}"
            marks.append(pytest.mark.xfail(strict=True, reason=reason))
        elif case.id in OVER_THE_WIRE:
            marks.append(pytest.mark.xfail(strict=True, reason=OVER_THE_WIRE[case.id]))
        yield pytest.param(case, id=case.id, marks=marks)


@pytest.fixture(scope="module")
def dns_server() -> Iterator[DnsServer]:
    with DnsServer({}) as server:
        yield server


def test_suite_is_complete() -> None:
    assert len(CASES) == 203
    assert len({case.id for case in CASES}) == len(CASES)
    assert set(OVER_THE_WIRE) <= {case.id for case in CASES}


@pytest.mark.parametrize("case", list(_params()))
async def test_rfc7208(case: Case, dns_server: DnsServer) -> None:
    dns_server.set_zone(case.zone)
    plugin = make_plugin(
        Spf,
        {
            "authserv_id": "mx.example.org",
            "resolver": {
                "nameservers": [dns_server.address],
                "timeout": DNS_TIMEOUT,
                "lifetime": DNS_LIFETIME,
            },
        },
    )
    config = plugin.config
    await plugin.start()
    request = SpfRequest(
        client_ip=case.host,
        sender=case.mailfrom,
        helo=case.helo,
        receiver=config.receiver_name,
        query_time=config.lookup_time,
        strict=case.strict,
        default_explanation="DEFAULT",
    )
    answer = await plugin.check(request)
    why = disagreement(case, answer.result, answer.explanation)
    assert why is None, f"{case.scenario} / {case.id} (RFC 7208 {case.spec}): {why}"
