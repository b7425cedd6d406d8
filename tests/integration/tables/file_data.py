"""Generated data sets for the differential tests of the file and in-memory tables: a
postmap(1) source file and a few thousand query keys (hits, misses, case variants, address
extensions, subdomains), and a cidr_table(5) file with keys around its prefixes' edges.
Seeded: the same data on every run."""

from __future__ import annotations

import ipaddress
import os
import random
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import trio

from filterd.sdk.tables import Table
from tests.support.postmap import Postmap

SEED = 15


def source_entries(count: int = 1200, seed: int = SEED) -> list[tuple[str, str]]:
    """``(key, value)`` pairs as an administrator writes them: addresses, address with
    extensions, user@, domains and subdomains, .domain keys, IP addresses, mixed case."""
    rng = random.Random(seed)
    entries: list[tuple[str, str]] = []
    for i in range(count):
        user, domain = f"user{i}", f"dom{i % 97}.example"
        kind = i % 8
        key = {
            0: f"{user}@{domain}",
            1: f"{user}+ext@{domain}",
            2: f"{user}@",
            3: domain,
            4: f"sub{i}.{domain}",
            5: f".{domain}",
            6: f"192.0.{i % 256}.{i % 199}",
            7: f"{user.upper()}@Mixed{i}.Example",
        }[kind]
        value = rng.choice(["OK", "REJECT", f"550 5.7.1 no {i}", f"relay:[{i}.example]"])
        entries.append((key, value))
    return entries


def write_cold(path: Path, data: str | bytes) -> Path:
    """Write a table file dated an hour back: postmap re-reads a file changed in the last
    second until it is older ("pausing to let file cool down"), which only slows the tests."""
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    past = time.time() - 3600
    os.utime(path, (past, past))
    return path


def source_text(entries: Iterable[tuple[str, str]]) -> str:
    return "".join(f"{key}\t{value}\n" for key, value in entries)


def query_keys(entries: Sequence[tuple[str, str]], seed: int = SEED) -> list[str]:
    """Keys for the entries: each key, an upper-case and a title-case variant, a miss next
    to it, its address extension added or removed, a subdomain and a parent domain."""
    rng = random.Random(seed + 1)
    keys: list[str] = []
    for key, _ in entries:
        keys += [key, key.upper(), key.title(), key + "x", "x" + key]
        if "@" in key and not key.endswith("@"):
            user, _, domain = key.partition("@")
            keys += [f"{user}+foo@{domain}", f"{user.split('+')[0]}@{domain}", f"@{domain}"]
        elif "." in key:
            keys += [f"a.{key}", key.split(".", 1)[1], f"A.{key.upper()}"]
    keys += [f"miss{rng.randrange(10**6)}@nowhere.example" for _ in range(200)]
    return [k for k in keys if k]


def cidr_rules(seed: int = SEED) -> tuple[str, list[str]]:
    """A cidr_table(5) text (prefixes of every length, exact addresses, ``[]``, ``!``,
    nested ``if``/``endif``, IPv4 and IPv6) and keys around each rule's edges, in several
    spellings (IPv6 compressed, expanded, with leading zeros; IPv4 with leading zeros, which
    Postfix rejects; bracketed keys)."""
    rng = random.Random(seed + 2)
    lines: list[str] = []
    keys: list[str] = []
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    negated: list[str] = []
    for i in range(160):
        broad = i % 40 == 39  # a few short prefixes late in the file: most keys match first
        if i % 2:
            prefix = rng.randrange(0, 16) if broad else rng.randrange(16, 129)
            base = ipaddress.IPv6Address(rng.getrandbits(128))
            net: ipaddress.IPv4Network | ipaddress.IPv6Network = ipaddress.IPv6Network(
                f"{base}/{prefix}", strict=False
            )
        else:
            prefix = rng.randrange(0, 8) if broad else rng.randrange(8, 33) if i % 10 else 32
            base4 = ipaddress.IPv4Address(rng.getrandbits(32))
            net = ipaddress.IPv4Network(f"{base4}/{prefix}", strict=False)
        networks.append(net)
    for i, net in enumerate(networks):
        pattern = str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
        if i % 7 == 3:
            pattern = f"[{net.network_address}]/{net.prefixlen}"
        elif i % 7 == 5:
            pattern = f"[{net.network_address}/{net.prefixlen}]"
        negate = "!" if i % 11 == 4 else ""
        if i % 13 == 6 and net.prefixlen < net.max_prefixlen:
            # a block for the network: its lower half answers in the block, and (nested,
            # guarded by a network it is not in) the rest answers too
            lower = next(net.subnets())
            elsewhere = networks[(i + 2) % len(networks)]
            lines += [f"if {pattern}", f"{lower} in-block-{i}"]
            lines += [f"IF !{elsewhere}", f"{pattern} nested-{i}", "endif", "ENDIF"]
        else:
            # a negated rule matches nearly every address of its family: last in the file
            (negated if negate else lines).append(f"{negate}{pattern}\tresult-{i} {net.prefixlen}")
        keys += _edge_keys(net)
    lines += negated
    keys += ["1.2.3", "1.2.3.4.5", "256.1.1.1", "::g", "", "0.0.0.0", "::", "1:2:3:4:5:6:7:8:9"]
    return "\n".join(lines) + "\n", [k for k in keys if k]


def _edge_keys(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> list[str]:
    first = int(net.network_address)
    last = int(net.broadcast_address)
    top = (1 << net.max_prefixlen) - 1
    numbers = {first, last, max(first - 1, 0), min(last + 1, top), (first + last) // 2}
    keys: list[str] = []
    for number in sorted(numbers):
        if net.version == 4:
            address = ipaddress.IPv4Address(number)
            octets = str(address).split(".")
            keys += [str(address), f"[{address}]", ".".join(o.zfill(3) for o in octets)]
        else:
            address6 = ipaddress.IPv6Address(number)
            keys += [str(address6), address6.exploded, address6.exploded.upper(), f"[{address6}]"]
            groups = address6.exploded.split(":")
            keys.append(":".join(g.lstrip("0") or "0" for g in groups))
            if number >> 32 == 0xFFFF:  # IPv4-mapped: the dotted tail form
                keys.append(f"::ffff:{ipaddress.IPv4Address(number & 0xFFFFFFFF)}")
    return keys


def postmap_answers(
    postmap: Postmap, keys: Sequence[str], table: str, *, fold: bool
) -> dict[str, str]:
    """``postmap -q - table`` (``-f -q -`` when not folding): {key: value} of the keys found."""
    if fold:
        return postmap.query_many(keys, table)
    proc = postmap.run("-f", "-q", "-", table, stdin="".join(k + "\n" for k in keys).encode())
    assert proc.returncode in (0, 1), proc.stderr
    lines = proc.stdout.decode(errors="surrogateescape").splitlines()
    return dict(line.split("\t", 1) for line in lines)


def lookup_all(table: Table, keys: Iterable[str]) -> dict[str, str]:
    """``{key: value}`` of the keys ``table`` finds (what ``postmap -q -`` prints)."""

    async def run() -> dict[str, str]:
        found: dict[str, str] = {}
        for key in keys:
            value = await table.lookup(key)
            if value is not None:
                found[key] = value
        return found

    return trio.run(run)
