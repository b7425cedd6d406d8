"""A virtual mail system's tables (domains, mailboxes, aliases) generated for the sqlite:,
mysql: and pgsql: differential tests and the benchmark, the keys to look up in them (hits,
misses, case variants, extensions, keys without @, @domain keys, subdomains, many labels,
quotes and backslashes), and the .cf files' queries, each exercising one part of Postfix's
table files."""

from __future__ import annotations

import random
from dataclasses import dataclass

SCHEMA = (
    "CREATE TABLE domains (domain VARCHAR(255), transport VARCHAR(255))",
    "CREATE TABLE mailbox (username VARCHAR(255), maildir VARCHAR(255), active INTEGER, "
    "quota VARCHAR(32))",
    "CREATE TABLE alias (address VARCHAR(255), goto VARCHAR(255))",
)


@dataclass(frozen=True)
class MailData:
    domains: list[tuple[str, str | None]]
    mailboxes: list[tuple[str, str | None, int, str]]
    aliases: list[tuple[str, str | None]]
    keys: list[str]


def generate(seed: int = 15, mailboxes: int = 600) -> MailData:
    rng = random.Random(seed)
    domains = [f"d{i}.example.com" for i in range(20)] + ["example.org", "a.b.c.d.example.net"]
    domain_rows: list[tuple[str, str | None]] = [
        (d, f"smtp:[mx.{d}]" if i % 3 else "virtual:") for i, d in enumerate(domains)
    ]
    domain_rows.append(("nulltransport.example", None))
    domain_rows.append(("empty.example", ""))
    users = [f"user{i}" for i in range(mailboxes)]
    users += ["o'brien", "back\\slash", "pct%s", "müller", "straße"]
    box_rows: list[tuple[str, str | None, int, str]] = []
    addresses: list[str] = []
    for i, user in enumerate(users):
        domain = domains[i % len(domains)]
        address = f"{user}@{domain}"
        addresses.append(address)
        box_rows.append((address, f"{domain}/{user}/", 0 if i % 17 == 0 else 1, f"{i * 1.5}"))
    alias_rows: list[tuple[str, str | None]] = []
    for i in range(mailboxes // 2):
        source = f"alias{i}@{domains[i % len(domains)]}"
        alias_rows.extend(  # 1 to 4 destinations
            (source, rng.choice(addresses) if j != 3 else "localonly") for j in range(1 + i % 4)
        )
    alias_rows.append(("@example.org", "catchall@example.org"))
    alias_rows.append(("nullgoto@example.org", None))
    keys: list[str] = []
    for address in addresses[: mailboxes // 2] + [a for a, _ in alias_rows[:300]]:
        user, _, domain = address.partition("@")
        keys += [address, address.upper(), f"{user}+ext@{domain}", f"{user}@sub.{domain}"]
        keys += [user, "@" + domain, domain]
    keys += [f"nobody{i}@{rng.choice(domains)}" for i in range(200)]
    keys += ["@", "user@", "@example.org", "x@example.org.", "x@.example.org", "x@a..b.c",
             "a@b@c.example.com", "x@com", "x@example.com", "x@y.a.b.c.d.example.net",
             "it's@example.org", "back\\slash@d2.example.com", "%s@example.org",
             "x@nulltransport.example", "nulltransport.example", "empty.example",
             "1.2.3.4", "x@[1.2.3.4]", "UPPER@Example.ORG", "nullgoto@example.org",
             "MÜLLER@D9.EXAMPLE.COM", "müller@d9.example.com", "STRASSE@d10.example.com",
             "Straße@D10.example.com", "straße@d10.example.com",
             "ΣΊΣΥΦΟΣ@example.org", "x@bücher.example"]  # fmt: skip
    keys = list(dict.fromkeys(keys))  # once each, in order
    return MailData(domain_rows, box_rows, alias_rows, keys)


#: name -> .cf body without the connection settings (dbpath / hosts, user, ...).
CF_VARIANTS: dict[str, str] = {
    "mailbox": "query = SELECT maildir FROM mailbox WHERE username='%s' AND active = 1\n",
    "alias": "query = SELECT goto\n  FROM alias\n  WHERE address='%s'\n",
    "alias_format": (
        "# result_format with the result's parts and the key's\n"
        "query = SELECT goto FROM alias WHERE address='%s'\n"
        "result_format = %u at %d for %U/%D/%S\n"
    ),
    "transport": "query = SELECT transport FROM domains WHERE domain='%s'\nresult_format = [%s]\n",
    "expansions": "query = SELECT '%u|%d|%1|%2|%3|%%|%S|%U|%D|%s'\n",
    "user_only": "query = SELECT '%u' FROM domains WHERE domain='d1.example.com'\n",
    "parts": "query = SELECT transport FROM domains WHERE domain='%2.%1'\n"
    "result_format = %s via %3\n",
    "domain_filter": (
        "query = SELECT maildir FROM mailbox WHERE username='%s'\n"
        "domain = d1.example.com, !d2.example.com d2.example.com,\n"
        "  example.org d3.example.com\n"
    ),
    "expansion_limit": ("query = SELECT goto FROM alias WHERE address='%s'\nexpansion_limit = 4\n"),
    "legacy": (
        "select_field = maildir\ntable = mailbox\nwhere_field = username\n"
        "additional_conditions = AND active = 1\n"
    ),
    "quota": "query = SELECT quota FROM mailbox WHERE username='%s'\n",
}
