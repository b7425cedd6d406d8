"""Differential test: the same rules, written in postfwd's syntax and in filterd's TOML, and
the same few hundred generated policy requests give the same actions from Debian's postfwd
1.35 and from filterd's policy door with the rules plugin (once with the TOML rules, once
reading the postfwd file itself): lone requests, and whole messages (RCPT, DATA and
END-OF-MESSAGE requests on one connection with a real ``instance``, as Postfix sends them).

Actions are compared as Postfix applies them (the access(5) action as Postfix reads it):

- filterd answers a refusal with its exact numeric form (``554 5.7.1 TEXT``), postfwd with the
  rule's ``REJECT TEXT``: Postfix turns both into ``554 5.7.1 <rcpt>: Recipient address
  rejected: TEXT``, so both are compared as (code, status, text);
- HOLD and DISCARD: the text is only logged by Postfix (filterd's names the recipient);
  compared by the action word;
- WARN and INFO: Postfix logs and goes on, filterd logs and answers DUNNO: compared as DUNNO;
- trailing blanks (``REJECT bad helo $$helo_name`` with an empty HELO name): filterd's policy
  door trims the action line; a reply's trailing blanks mean nothing to the client.

The time windows are chosen around the current time in Europe/Berlin (both servers run in
that zone) with margins, so the answers cannot change while the test runs.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from filterd.sdk.access_actions import AccessKind, parse_access_action
from filterd.sdk.action_text import dsn_split
from tests.support.filterd_proc import FilterdFactory
from tests.support.policy_door import policy_door_config
from tests.support.postfix import free_port
from tests.support.postfwd import PolicyClient, postfwd_available, postfwd_server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not postfwd_available(), reason="postfwd (Debian's package) is missing"),
    pytest.mark.timeout(180),
]

ZONE = "Europe/Berlin"
SCORE_ACTION = "554 5.7.1 postfwd2 score exceeded"
DAY_NAMES = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
MONTH_NAMES = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


@dataclass(frozen=True)
class R:
    """One rule: its id, its (item, operator, value) conditions, its action."""

    id: str
    conditions: tuple[tuple[str, str, str], ...]
    action: str


def windows(now: datetime) -> dict[str, str]:
    """Time windows true (and false) for the whole test run: days and dates include today
    and tomorrow (or exclude both), the time window is two hours around now, or the whole day
    near midnight; the false time window is an hour away from now."""

    def clock(moment: datetime) -> str:
        return moment.strftime("%H:%M:%S")

    def date(moment: datetime) -> str:
        return moment.strftime("%d.%m.%Y")

    today = (now.weekday() + 1) % 7
    tomorrow = (today + 1) % 7
    others = [d for d in range(7) if d not in (today, tomorrow)]
    hour = timedelta(hours=1)
    if now.hour in (0, 23):
        true_time, false_time = "00:00:00-23:59:59", "25:00:00-26:00:00"
    else:
        true_time = f"{clock(now - hour)}-{clock(now + hour)}"
        later = now + 2 * hour if now.hour < 21 else now - 3 * hour
        false_time = f"{later.strftime('%H')}:00:00-{later.strftime('%H')}:59:59"
    month = now.month - 1
    return {
        "DAYS_TRUE": f"{DAY_NAMES[today]}, {DAY_NAMES[tomorrow]}",
        "DAYS_TRUE_NUM": f"{today}-{today}, {tomorrow}",
        "DAYS_FALSE": ", ".join(DAY_NAMES[d] for d in others[:2]),
        "TIME_TRUE": true_time,
        "TIME_FALSE": false_time,
        "DATE_OPEN": date(now - timedelta(days=1)) + "-",
        "DATE_ENDED": "-" + date(now - timedelta(days=2)),
        "DATE_RANGE": f"{date(now - timedelta(days=1))}-{date(now + timedelta(days=2))}",
        "MONTHS_TRUE": f"{MONTH_NAMES[month]}-{MONTH_NAMES[month]}",
        "MONTHS_FALSE": MONTH_NAMES[(month + 6) % 12],
    }


def rule_list(w: dict[str, str]) -> list[R]:
    def r(id_: str, *conditions: tuple[str, str, str], action: str) -> R:
        return R(id_, conditions, action)

    def rcpt(n: int) -> tuple[str, str, str]:
        return ("recipient", "==", f"r{n:02d}@example.org")

    return [
        r("R01", rcpt(1), ("sender", "=~", r"@spam\.example$"), action="REJECT spam from $$sender"),
        r(
            "R02",
            rcpt(2),
            ("client_address", "=", "192.0.2.0/24, 198.51.100.7"),
            action="DEFER_IF_PERMIT listed network",
        ),
        r(
            "R03",
            rcpt(3),
            ("size", ">", "100000"),
            ("size", "<", "1000"),
            action="450 4.7.1 small or large",
        ),
        r(
            "R04",
            rcpt(4),
            ("size", "=", "5000"),
            ("recipient_count", "<=", "1"),
            action="554 5.7.1 at least 5000 bytes",
        ),
        r(
            "R05",
            rcpt(5),
            ("helo_name", "=", r"!!(\.example\.com$)"),
            action="REJECT bad helo $$helo_name",
        ),
        r("R06", rcpt(6), ("client_name", "!=", "unknown"), action="OK"),
        r("R07", rcpt(7), ("sasl_username", "=~", "^(alice|bob)$"), action="DUNNO"),
        r("R08", rcpt(8), action="jump(J08)"),
        r("R09", rcpt(9), action="set(helo_name=flagged.example)"),
        r("R09b", rcpt(9), ("helo_name", "==", "FLAGGED.example"), action="REJECT flagged"),
        r("R10", ("recipient", "=~", "^r10@"), action="score(+3)"),
        r("R10b", ("recipient", "=~", "^r1[0-1]@"), action="score(+3)"),
        r(
            "R11",
            rcpt(11),
            ("client_address", "!=", "192.0.2.0/24"),
            action="PREPEND X-Outside: $$client_address",
        ),
        r(
            "R12",
            rcpt(12),
            ("days", "=", w["DAYS_TRUE"]),
            ("time", "=", w["TIME_TRUE"]),
            ("sender", "!~", "^x"),
            action="REJECT in the window",
        ),
        r("R13", rcpt(13), ("days", "=", w["DAYS_FALSE"]), action="REJECT never on these days"),
        r("R13b", rcpt(13), ("time", "=", w["TIME_FALSE"]), action="REJECT never at this time"),
        r(
            "R14",
            rcpt(14),
            ("date", "=", w["DATE_OPEN"]),
            ("months", "=", w["MONTHS_TRUE"]),
            action="DEFER open-ended date",
        ),
        r("R15", rcpt(15), ("date", "=", w["DATE_ENDED"]), action="REJECT ended"),
        r("R15b", rcpt(15), ("months", "=", w["MONTHS_FALSE"]), action="REJECT other month"),
        r(
            "R15c",
            rcpt(15),
            ("date", "=", w["DATE_RANGE"]),
            ("days", "=", w["DAYS_TRUE_NUM"]),
            action="HOLD in the date range",
        ),
        r(
            "R16",
            rcpt(16),
            ("time", "=", f"!!({w['TIME_FALSE']})"),
            action="DISCARD outside the false window",
        ),
        r("R17", rcpt(17), ("sender", "==", "<>"), action="REJECT no bounces"),
        r(
            "R18",
            rcpt(18),
            ("sender_localpart", "=~", r"^(x|y)\d+$"),
            action="REJECT localpart $$sender_localpart",
        ),
        r(
            "R19",
            rcpt(19),
            ("sender_domain", "==", "example.net"),
            action="REJECT domain $$sender_domain",
        ),
        r(
            "R20",
            ("recipient", "=~", "^r2[0-4]@"),
            ("client_address", "=", "10.0.0.0/8"),
            action="550 5.7.1 ten net",
        ),
        r("R21", rcpt(21), ("helo_name", "=~", "$$client_name"), action="REJECT helo is the name"),
        r("R22", rcpt(22), ("sender", "==", "$$recipient"), action="REJECT sender is recipient"),
        r(
            "R23",
            rcpt(23),
            ("client_address", "=", "!!(203.0.113.0/25)"),
            ("protocol_state", "==", "RCPT"),
            action="WARN outside 203.0.113.0/25",
        ),
        r("R19b", rcpt(19), ("sasl_username", "!=", "mallory"), action="REJECT not mallory"),
        r("R24", rcpt(24), action="set(size+=100000, sasl_username.=x)"),
        r("R24b", rcpt(24), ("sasl_username", "==", "alicex"), action="REJECT alice plus x"),
        r(
            "R30",
            ("client_address", "=", "203.0.113.0/25"),
            ("sender", "=~", "^(x|y)[0-9]+@"),
            action="REJECT general rule",
        ),
        r("R31", ("helo_name", "=~", r"^\[?[0-9.]+\]?$"), action="REJECT helo is an address"),
        r("R32", ("size", "!<", "100000"), action="552 5.3.4 too big"),
        r(
            "R33",
            ("recipient", "=~", r"@example\.net$"),
            ("sender", "!~", "example"),
            action="DEFER_IF_REJECT maybe",
        ),
        r(
            "R34",
            ("protocol_state", "==", "MAIL"),
            ("sender", "=~", "^bad"),
            action="REJECT bad sender",
        ),
        r("R35", ("sasl_username", "==", "mallory"), action="REJECT 5.7.0 not you"),
        r("J08", ("sender", "=~", r"\.org$"), action="HOLD held"),
        r(
            "J08b",
            ("recipient", "==", "r08@example.org"),
            ("client_name", "=~", "^mx"),
            action="DISCARD dropped",
        ),
    ]


def postfwd_text(rules: list[R]) -> str:
    lines = []
    for rule in rules:
        parts = [f"id={rule.id}"]
        parts += [f"{item}{op}{value}" for item, op, value in rule.conditions]
        parts.append(f"action={rule.action}")
        lines.append("; ".join(parts))
    return "\n".join(lines) + "\n"


def toml_rules(rules: list[R]) -> str:
    out = []
    for rule in rules:
        out.append("[[chain.config.rules]]")
        out.append(f"id = {json.dumps(rule.id)}")
        grouped: dict[str, list[str]] = {}
        for item, op, value in rule.conditions:
            grouped.setdefault(item, []).append(f"{op} {value}")
        for item, values in grouped.items():
            out.append(f"{item} = [{', '.join(json.dumps(v) for v in values)}]")
        out.append(f"action = {json.dumps(rule.action)}")
    return "\n".join(out) + "\n"


def requests(count: int, seed: int) -> Iterator[dict[str, str]]:
    rng = random.Random(seed)
    clients = [
        ("192.0.2.5", "mx.example.com"),
        ("192.0.2.200", "unknown"),
        ("198.51.100.7", "mail.example.net"),
        ("198.51.100.8", "unknown"),
        ("10.1.2.3", "mx10.example.org"),
        ("203.0.113.9", "host.example.com"),
        ("203.0.113.200", "mx.other.example"),
        ("2001:db8::25", "v6.example.com"),
        ("127.0.0.1", "localhost"),
    ]
    helos = [
        "mx.example.com",
        "MX.Example.COM",
        "client.example.net",
        "[192.0.2.5]",
        "192.0.2.5",
        "localhost",
        "mx10.example.org",
        "host.example.com",
        "",
    ]
    senders = [
        "",
        "alice@example.com",
        "x1@spam.example",
        "Y22@SPAM.example",
        "bob@example.net",
        "carol@example.org",
        "bad@example.com",
        "r22@example.org",
        "z@elsewhere.test",
    ]
    rcpts = [f"r{n:02d}@example.org" for n in range(1, 25)] + [
        "R01@Example.ORG",
        "user@example.net",
        "admin@example.org",
        "r09@example.org",
    ]
    for _ in range(count):
        address, name = rng.choice(clients)
        state = rng.choice(["RCPT"] * 9 + ["MAIL"])
        request = {
            "protocol_state": state,
            "protocol_name": rng.choice(["SMTP", "ESMTP"]),
            "client_address": address,
            "client_name": name,
            "reverse_client_name": name,
            "helo_name": rng.choice(helos),
            "sender": rng.choice(senders),
            "recipient": rng.choice(rcpts) if state == "RCPT" else "",
            "recipient_count": "0",
            "size": str(rng.choice([0, 500, 999, 1000, 4999, 5000, 99999, 100000, 2000000])),
            "sasl_username": rng.choice(["", "", "alice", "bob", "mallory", "Alice"]),
            "queue_id": "",
            "instance": "",
        }
        yield request


def messages(count: int, seed: int) -> Iterator[dict[str, str]]:
    """Whole messages as Postfix asks about them on one connection: one ``instance`` each, a
    RCPT request per recipient, then DATA and END-OF-MESSAGE (``recipient`` named only for a
    message with one). The policy door runs a message's stages once; the rules still decide
    every request."""
    rng = random.Random(seed)
    lone = (r for r in requests(20 * count, seed) if r["protocol_state"] == "RCPT")
    for number in range(count):
        chosen = [next(lone) for _ in range(rng.choice([1, 1, 2, 3]))]
        base = {**chosen[0], "instance": f"7A2.{seed}.{number}"}
        for rcpt in chosen:
            yield {**base, "recipient": rcpt["recipient"]}
        one = chosen[0]["recipient"] if len(chosen) == 1 else ""
        later = {"recipient": one, "recipient_count": str(len(chosen))}
        yield {**base, "protocol_state": "DATA", **later}
        yield {**base, "protocol_state": "END-OF-MESSAGE", "queue_id": f"Q{number}", **later}


def canonical(action: str) -> tuple[str, ...]:
    """What Postfix does with an action: see the module docstring."""
    parsed = parse_access_action(action)
    text = parsed.text.rstrip()  # trailing blanks of a reply line mean nothing
    match parsed.kind:
        case AccessKind.REJECT:
            return ("refuse", "554", *dsn_split("5.7.1", text))
        case AccessKind.DEFER:
            return ("refuse", "450", *dsn_split("4.7.1", text))
        case AccessKind.CODE:
            return ("refuse", str(parsed.code), *dsn_split(f"{parsed.raw[0]}.7.1", text))
        case AccessKind.DEFER_IF_PERMIT | AccessKind.DEFER_IF_REJECT:
            return (parsed.kind.value, *dsn_split("4.7.1", text))
        case AccessKind.HOLD | AccessKind.DISCARD:
            return (parsed.kind.value,)
        case AccessKind.INFO | AccessKind.WARN | AccessKind.DUNNO:
            return ("DUNNO",)
        case AccessKind.PREPEND:
            return ("PREPEND", text)
    return (parsed.kind.value, text)


def filterd_config(port: int, chain_config: str) -> str:
    return policy_door_config(
        port,
        f"""
[[chain]]
plugin = "rules"
[chain.config]
time_zone = "{ZONE}"
scores = {{ "5.0" = "{SCORE_ACTION}" }}
{chain_config}
""",
        listen="accept_as_ok = true\n",
    )


@pytest.mark.parametrize("sequence", ["requests", "messages"])
def test_rules_answer_as_postfwd_does(
    tmp_path: Path, filterd_factory: FilterdFactory, sequence: str
) -> None:
    """``requests``: lone requests (no ``instance``). ``messages``: whole messages, their
    RCPT, DATA and END-OF-MESSAGE requests on one connection with a real ``instance``."""
    now = datetime.now(ZoneInfo(ZONE))
    rules = rule_list(windows(now))
    cf = tmp_path / "postfwd.cf"
    cf.write_text(postfwd_text(rules))
    toml_port, file_port = free_port(), free_port()
    filterd_factory(filterd_config(toml_port, toml_rules(rules)))
    filterd_factory(filterd_config(file_port, f'[[chain.config.rules]]\npostfwd_file = "{cf}"\n'))
    with postfwd_server(
        tmp_path, cf.read_text(), extra_args=["--scores", f"5.0={SCORE_ACTION}"], env={"TZ": ZONE}
    ) as postfwd_port:
        clients = {
            "postfwd": PolicyClient(postfwd_port),
            "toml": PolicyClient(toml_port),
            "postfwd.cf": PolicyClient(file_port),
        }
        try:
            seen: dict[str, int] = {}
            answers_seen: set[tuple[str, ...]] = set()
            disagreements = []
            # every rule that can answer answers
            asked = requests(400, seed=26) if sequence == "requests" else messages(120, seed=27)
            for request in asked:
                answers = {name: client.ask(request) for name, client in clients.items()}
                expected = canonical(answers["postfwd"])
                seen[expected[0]] = seen.get(expected[0], 0) + 1
                answers_seen.add(expected)
                disagreements.extend(
                    (request, name, answers["postfwd"], answers[name])
                    for name in ("toml", "postfwd.cf")
                    if canonical(answers[name]) != expected
                )
        finally:
            for client in clients.values():
                client.close()
    assert disagreements == [], "\n".join(map(str, disagreements[:20]))
    # the requests reach every kind of answer, and most rules
    assert len(answers_seen) >= 30, sorted(answers_seen)
    assert {"refuse", "DUNNO", "OK", "PREPEND", "HOLD", "DISCARD", "DEFER_IF_PERMIT"} <= set(
        seen
    ), seen
