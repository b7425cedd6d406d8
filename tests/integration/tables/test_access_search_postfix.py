"""The access(5) search order of filterd.sdk.tables.search against Postfix's own smtpd.

A private Postfix checks every RCPT with ``check_client_access``, ``check_sender_access`` and
``check_recipient_access`` over ``hash:`` tables that postmap built from generated source
lines, each entry a ``REJECT`` with a text of its own (or ``DUNNO``); the reply names the entry
smtpd applied. The helpers, run over dict-backed tables filled from the same lines, must find
the same entry for every probe: addresses with extensions (``recipient_delimiter = +-``),
owner-/-request/postmaster local parts, subdomains, the null sender, upper case, and clients
given by XCLIENT (host names, IPv4 and IPv6 addresses); with ``parent_domain_matches_subdomains``
at its default and without ``smtpd_access_maps``.
"""

from __future__ import annotations

import random
import re
import smtplib
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from filterd.sdk.tables import Table, TableSettings
from filterd.sdk.tables.search import AddressRules, Match, access_address, access_client
from tests.support.postfix import PostfixInstance, make_base_dir, postfix_available, running

pytestmark = pytest.mark.e2e

USERS = ["joe", "Ann", "owner-list", "list-request", "postmaster", "mailer-daemon", "a-b"]
EXTENSIONS = ["", "+foo", "-bar", "+foo-bar", "-x+y"]
DOMAINS = ["example.com", "mx.example.com", "a.mx.example.com", "example.org", "sub.test"]
CLIENT_NAMES = ["unknown", "host.example.com", "a.mx.example.com", "mail.sub.test"]
CLIENT_ADDRESSES = [
    "192.0.2.9",
    "192.0.2.10",
    "198.51.100.7",
    "10.1.2.3",
    "2001:db8::1",
    "2001:db8:1::5",
    "2001:db8:1:2:3:4:5:6",
]
PROBE_SENDER = "probe@nowhere.invalid"  # in no table: the sender of recipient probes
PROBE_RECIPIENT = "probe@nowhere.invalid"  # and the recipient of sender probes
_APPLIED = re.compile(r"rejected: (E\d+)$")


class DictTable(Table):
    """A fixed-string table from parsed source lines, folding keys as hash: does."""

    def __init__(self, name: str, entries: dict[str, str]) -> None:
        super().__init__(name, TableSettings())
        self.entries = entries

    async def lookup(self, key: str) -> str | None:
        return self.entries.get(key.lower())


def _address_keys() -> list[str]:
    keys: set[str] = set()
    for user in USERS:
        for ext in EXTENSIONS:
            keys.add(f"{user}{ext}@".lower())
            keys.update(f"{user}{ext}@{domain}".lower() for domain in DOMAINS)
    for domain in DOMAINS:
        labels = domain.split(".")
        for i in range(len(labels)):
            parent = ".".join(labels[i:])
            keys.update((parent, "." + parent))
    keys.add("<>")
    return sorted(keys)


def _client_keys() -> list[str]:
    keys: set[str] = set()
    for name in CLIENT_NAMES[1:]:
        labels = name.split(".")
        for i in range(len(labels)):
            keys.update((".".join(labels[i:]), "." + ".".join(labels[i:])))
    for address in CLIENT_ADDRESSES:
        delimiter = ":" if ":" in address else "."
        key = address
        while key:
            keys.add(key)
            cut = key.rfind(delimiter)
            key = key[:cut] if cut > 0 else ""
    return sorted(keys)


def _entries(keys: list[str], rng: random.Random, prefix: int) -> dict[str, str]:
    """About a third of ``keys``, each a REJECT with its own text, one in eight DUNNO."""
    entries: dict[str, str] = {}
    for index, key in enumerate(keys):
        if rng.random() < 0.35:
            entries[key] = "DUNNO" if rng.random() < 0.125 else f"REJECT E{prefix + index}"
    return entries


def _write_table(path: Path, entries: dict[str, str], config_dir: Path) -> str:
    path.write_text("".join(f"{key} {value}\n" for key, value in entries.items()))
    subprocess.run(
        ["postmap", "-c", str(config_dir), f"hash:{path}"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return f"hash:{path}"


@dataclass
class AccessPostfix:
    postfix: PostfixInstance
    rules: AddressRules
    addresses: DictTable
    clients: DictTable


def _probe_addresses() -> list[str]:
    probes = [f"{u}{e}@{d}" for u in USERS for e in EXTENSIONS for d in DOMAINS]
    return probes + [p.upper() for p in probes[::7]]


@pytest.fixture(scope="module", params=[True, False], ids=["parents", "dot-subdomains"])
def access_postfix(request: pytest.FixtureRequest) -> Iterator[AccessPostfix]:
    if not postfix_available():
        pytest.fail("Postfix is required (deploy/install-system-packages.sh installs it)")
    parents: bool = request.param
    rng = random.Random(15 + parents)
    addresses = _entries(_address_keys(), rng, 0)
    clients = _entries(_client_keys(), rng, 5000)
    base = make_base_dir()
    tables = base / "tables"
    tables.mkdir(mode=0o755)
    (tables / "main.cf").write_text("compatibility_level = 3.6\n")
    access = _write_table(tables / "access", addresses, tables)
    client_access = _write_table(tables / "client_access", clients, tables)
    pdms = "debug_peer_list, mynetworks" + (", smtpd_access_maps" if parents else "")
    instance = PostfixInstance(
        base,
        filter_wiring=False,
        main_cf_extra={
            "recipient_delimiter": "+-",
            "inet_protocols": "all",  # XCLIENT takes IPv6 addresses only then
            "parent_domain_matches_subdomains": pdms,
            "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
            "smtpd_relay_restrictions": "",
            "smtpd_recipient_restrictions": f"check_client_access {client_access}, "
            f"check_sender_access {access}, check_recipient_access {access}, reject",
            "smtpd_hard_error_limit": "100000",
            "smtpd_soft_error_limit": "100000",
            "smtpd_junk_command_limit": "100000",
            "smtpd_recipient_limit": "100000",
        },
    )
    rules = AddressRules(recipient_delimiter="+-", parent_domain_matches_subdomains=parents)
    with running(instance):
        yield AccessPostfix(
            instance,
            rules,
            DictTable(access, addresses),
            DictTable(client_access, clients),
        )


def _applied(code: int, text: bytes) -> str:
    """The entry smtpd applied: ``E<n>``, or "-" for none (the final ``reject``)."""
    reply = text.decode()
    match = _APPLIED.search(reply)
    if match:
        return match.group(1)
    assert code == 554, (code, reply)
    assert reply.endswith("rejected: Access denied"), reply
    return "-"


def _found(match: Match | None) -> str:
    return "-" if match is None else match.value.split()[1]


def _disagreements(
    probes: Sequence[object], answers: list[str], expected: list[str]
) -> list[tuple[object, str, str]]:
    """(probe, what smtpd applied, what the helper found) wherever the two differ."""
    return [(p, a, e) for p, a, e in zip(probes, answers, expected, strict=True) if a != e]


def _smtpd_answers(port: int, pairs: list[tuple[str, str]]) -> list[str]:
    answers: list[str] = []
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("probe.example")
        for sender, recipient in pairs:
            assert client.docmd("RSET")[0] == 250
            assert client.docmd(f"MAIL FROM:<{sender}>")[0] == 250
            answers.append(_applied(*client.docmd(f"RCPT TO:<{recipient}>")))
    return answers


def test_sender_access_order_as_smtpd(access_postfix: AccessPostfix) -> None:
    senders = ["", *_probe_addresses()]
    answers = _smtpd_answers(
        access_postfix.postfix.smtp_port, [(s, PROBE_RECIPIENT) for s in senders]
    )

    async def ours() -> list[str]:
        table, rules = access_postfix.addresses, access_postfix.rules
        return [_found(await access_address(table, sender, rules)) for sender in senders]

    expected = trio.run(ours)
    assert _disagreements(senders, answers, expected) == []
    assert len(set(answers)) > 20  # many different entries applied, and misses
    assert "-" in answers


def test_recipient_access_order_as_smtpd(access_postfix: AccessPostfix) -> None:
    recipients = _probe_addresses()
    answers = _smtpd_answers(
        access_postfix.postfix.smtp_port, [(PROBE_SENDER, r) for r in recipients]
    )

    async def ours() -> list[str]:
        table, rules = access_postfix.addresses, access_postfix.rules
        return [_found(await access_address(table, rcpt, rules)) for rcpt in recipients]

    expected = trio.run(ours)
    assert _disagreements(recipients, answers, expected) == []
    assert len(set(answers)) > 20
    assert "-" in answers


def test_client_access_order_as_smtpd(access_postfix: AccessPostfix) -> None:
    clients = [(name, address) for name in CLIENT_NAMES for address in CLIENT_ADDRESSES]
    answers: list[str] = []
    for name, address in clients:
        with smtplib.SMTP("127.0.0.1", access_postfix.postfix.smtp_port, timeout=30) as client:
            client.ehlo("probe.example")
            xname = "[UNAVAILABLE]" if name == "unknown" else name
            xaddr = f"IPV6:{address}" if ":" in address else address
            code, text = client.docmd("XCLIENT", f"NAME={xname} ADDR={xaddr}")
            assert code == 220, text
            client.ehlo("probe.example")
            assert client.docmd(f"MAIL FROM:<{PROBE_SENDER}>")[0] == 250
            answers.append(_applied(*client.docmd(f"RCPT TO:<{PROBE_RECIPIENT}>")))

    async def ours() -> list[str]:
        table, rules = access_postfix.clients, access_postfix.rules
        return [_found(await access_client(table, n, a, rules)) for n, a in clients]

    expected = trio.run(ours)
    assert _disagreements(clients, answers, expected) == []
    assert len(set(answers)) > 5
