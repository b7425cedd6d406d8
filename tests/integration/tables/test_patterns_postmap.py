"""Differential test: ``regexp:`` and ``pcre:`` tables used as access/lookup tables answer as
``postmap -q KEY type:table`` does, on generated tables and a few thousand keys (addresses with
and without extensions, domains and subdomains, client names and addresses, case variants,
UTF-8, misses). Zero disagreements: no difference is accepted.

postmap runs with Postfix's defaults (``smtputf8_enable = yes``), as the table type does.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from filterd.sdk.tables import Table, open_table
from tests.support.postmap import Postmap, postmap  # noqa: F401 - the fixture

FLAVOURS = ("regexp", "pcre")
USERS = 120
DOMAINS = 24


def _escape(text: str) -> str:
    return text.replace(".", "\\.")


def access_rules(rng: random.Random) -> list[str]:
    """An access(5)-style table: the rules an administrator writes for senders, recipients,
    client names and addresses; generated rules per user and domain, in both flavours' common
    syntax (POSIX ERE that PCRE reads the same)."""
    rules = [
        "# generated access rules",
        "/^postmaster@/ OK",
        "/^(abuse|hostmaster)@([^@]+)$/ OK role $1 at $2",
        "/^([^@]+)-outgoing@([^@]+)$/ 550 Use ${1}@${2} instead",
        "/^([^@+]+)\\+([^@]*)@lists\\.example\\.org$/ DUNNO list $1 ext $2",
        "/^[0-9]+-[0-9]+-[0-9]+-[0-9]+\\.(dyn|dsl|pool)\\./ 450 4.7.1 dynamic client",
        "/^(mail|mx|smtp)[0-9]*\\.([a-z0-9.-]+)$/ OK mail host of $2",
        "/\\.(example\\.test|invalid)$/ REJECT test domain",
        "/^192\\.168\\.([0-9]+)\\.([0-9]+)$/ OK lan $1/$2",
        "/^10\\.0\\.0\\.[0-9]+$/ PERMIT",
        "/^2001:db8:/ OK documentation v6",
        "if /@corp[0-9]*\\.example$/",
        "/^ceo@/ HOLD",
        "!/^[a-z]+\\.[a-z]+@/ REJECT corp addresses are first.last",
        "/^([a-z]+)\\.([a-z]+)@corp([0-9]*)\\.example$/ FILTER smtp:[corp$3]:25 for $2, $1",
        "endif",
        "/(é+)/ WARN eight-bit [$1]",
        "/^UPPER@/i OK case-sensitive upper",
        "/^Mixed\\.Case@/ OK insensitive by default",
    ]
    for i in range(USERS):
        domain = f"d{i % DOMAINS}.example.net"
        if i % 3 == 0:
            rules.append(f"/^user{i}(\\+[^@]*)?@{_escape(domain)}$/ OK user {i} ext [$1]")
        elif i % 3 == 1:
            rules.append(f"/^user{i}@/ REJECT 5.7.1 user {i} not allowed")
        else:
            rules.append(f"/^(user{i})[-+.]([a-z0-9]+)@(.*)$/ DUNNO $1 $2 $3")
    for d in range(DOMAINS):
        op = rng.choice(["REJECT", "OK", "DEFER_IF_PERMIT later", "450 busy", "relay:[h]"])
        rules.append(f"/(^|[.@])sub{d}\\.zone{d % 5}\\.example$/ {op} zone {d}")
    rules.append("/^(.)(.)(.)$/ THREE $3$2$1")
    return rules


def regexp_only_rules() -> list[str]:
    """What only regexp: reads: the /p1/!/p2/ pair."""
    return [
        "/^user[0-9]*7[-.+]/!/@d7\\.example\\.net$/ PAIR not d7",
        "/\\.host[0-9]*5\\.example$/!/^www/ PAIR host",
    ]


def pcre_only_rules() -> list[str]:
    """What only pcre: reads: PCRE syntax, more flags."""
    return [
        "/^(?<user>[a-z]+)\\d{2,}@(?:d\\d+)\\.example\\.net$/ PCRE digits $1",
        "/^user(?=1)\\d+\\+(\\w+)@/ LOOKAHEAD $1",
        "/^(?i)MIXED-(\\S+)@/ INLINE-OPTION $1",
        "/^anchored/A ANCHORED",
        "/^sub\\d+\\.zone[0-4]\\.example$/x X-FLAG",
        "/^(a+?)(a*)$/U UNGREEDY $1|$2",
    ]


def keys(rng: random.Random) -> list[str]:
    found: list[str] = []
    extensions = ["", "+tag", "+", "-list", "+a+b", ".dot"]
    for i in range(USERS + 10):
        domain = f"d{i % DOMAINS}.example.net"
        found.extend(f"user{i}{ext}@{domain}" for ext in extensions)
        found.append(f"USER{i}@{domain.upper()}")
        found.append(f"user{i}@other.example")
        found.append(f"owner-user{i}-outgoing@{domain}")
    for d in range(DOMAINS + 4):
        zone = f"sub{d}.zone{d % 5}.example"
        found += [zone, "x." + zone, "@" + zone, "a@" + zone, zone.upper(), "pre" + zone]
    for who in ["postmaster", "abuse", "hostmaster", "ceo", "john.doe", "jd", "John.Doe"]:
        for domain in ["corp.example", "corp7.example", "Corp.example", "example.com"]:
            found.append(f"{who}@{domain}")
    for n in range(300):
        a, b, c, d = (rng.randrange(256) for _ in range(4))
        found.append(f"{a}-{b}-{c}-{d}.{rng.choice(['dyn', 'dsl', 'pool', 'static'])}.isp.example")
        found.append(f"{rng.choice(['mail', 'mx', 'smtp', 'www'])}{n % 4 or ''}.host{n}.example")
        found.append(f"192.168.{c}.{d}")
        found.append(f"10.0.{n % 2}.{d}")
        found.append(f"2001:db8:{n:x}::{d:x}")
        found.append(f"2001:DB8::{n}")
    found += [
        "nobody",
        "x",
        "ab",
        "abc",
        "user1@lists.example.org",
        "user1+ext@lists.example.org",
        "UPPER@x",
        "upper@x",
        "Mixed.Case@x",
        "mixed.case@x",
        "MIXED-Thing@x",
        "mixed-thing@x",
        "anchored",
        "not anchored",
        "aaaa",
        "ééé@x",
        "ÄÖÜ",
        "a b c",
        "a$b@c",
        "trailing.example.test",
        "foo.invalid",
        "user12+ext@d12.example.net",
    ]
    return list(dict.fromkeys(found))  # once each, in order


def _answers(table: Table, queries: list[str]) -> dict[str, str]:
    async def run() -> dict[str, str]:
        found: dict[str, str] = {}
        for key in queries:
            value = await table.lookup(key)
            if value is not None:
                found[key] = value
        return found

    return trio.run(run)


def _disagreements(ours: dict[str, str], theirs: dict[str, str]) -> list[str]:
    return [
        f"{key!r}: filterd {ours.get(key)!r}, postmap {theirs.get(key)!r}"
        for key in sorted(set(ours) | set(theirs))
        if ours.get(key) != theirs.get(key)
    ]


def _tables(tmp_path: Path) -> Iterator[tuple[str, str]]:
    rng = random.Random(15)
    common = access_rules(rng)
    extra = {"regexp": regexp_only_rules(), "pcre": pcre_only_rules()}
    for flavour in FLAVOURS:
        path = tmp_path / f"access.{flavour}"
        # Flavour-specific rules after the common ones; a rule for what has no "@" last.
        lines = [*common, *extra[flavour], "!/[@.:]/ REJECT no domain in [$$]"]
        path.write_text("\n".join(lines) + "\n")
        yield flavour, f"{flavour}:{path}"


def test_file_tables_answer_as_postmap(postmap: Postmap, tmp_path: Path) -> None:  # noqa: F811
    queries = keys(random.Random(7))
    assert len(queries) > 2500
    for flavour, spec in _tables(tmp_path):
        theirs = postmap.query_many(queries, spec)
        ours = _answers(open_table(spec), queries)
        assert _disagreements(ours, theirs) == [], flavour
        # Not vacuous: many hits, many misses, $n substitution and every kind of rule used.
        assert 800 < len(theirs) < len(queries) - 300, (flavour, len(theirs))
        values = set(theirs.values())
        for expected in ("OK user 0 ext [+tag]", "DUNNO user2 tag d2.example.net"):
            assert expected in values, (flavour, expected)
        assert "FILTER smtp:[corp]:25 for doe, john" in values
        assert "REJECT corp addresses are first.last" in values
        assert "REJECT no domain in [$]" in values
        assert "THREE cba" in values
        assert any(value.startswith("PAIR ") for value in values) == (flavour == "regexp")
        assert any(value.startswith("LOOKAHEAD ") for value in values) == (flavour == "pcre")


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_inline_tables_answer_as_postmap(
    postmap: Postmap,  # noqa: F811
    flavour: str,
) -> None:
    rules = [
        "/^(.*)@example\\.com$/ OK local $1",
        "!/@/ REJECT bare",
        "if /^x/",
        "/y$/ XY",
        "endif",
        "/^a{2}b/ TWO-A",
        "/,/ COMMA",
    ]
    spec = f"{flavour}:{{ " + ", ".join("{ " + rule + " }" for rule in rules) + " }"
    queries = ["bob@example.com", "BOB@EXAMPLE.COM", "bare", "xy@z", "xy", "aab@q", "a,b@c", "z@z"]
    theirs = postmap.query_many(queries, spec)
    assert _disagreements(_answers(open_table(spec), queries), theirs) == []
    assert theirs["xy"] == "REJECT bare"
    assert theirs["aab@q"] == "TWO-A"
