"""Differential test of the rate limit actions: one postfwd rule file with ``rate()``,
``size()`` and ``rcpt()`` (the ``$$ITEM`` form too, a WARN that ends the list, a ``jump()`` on
excess, ``$$ratecount``, an attribute the requests lack), and requests from several clients,
senders and logins crossing every limit (lone requests; whole messages, RCPT, DATA and
END-OF-MESSAGE), sent to Debian's postfwd 1.35 and to filterd's policy door (the rules plugin
reading that file, the counters in SQLite): the same actions, compared as Postfix applies them
(test_rules_postfwd.canonical).

``test_counters_are_per_rule``: two rules with the very same limit (postfwd keeps a counter
per rule: ``ID+MAX_SECONDS``), a rule without an id (``R-<index>``), and the ``5321`` kinds
(an address's local part compared as it is).

Within one window only: postfwd's window starts at the request that creates a limit and runs on
the real clock, filterd's slides over buckets of the window's length (filterd_ratelimit.window);
matching them across windows would need the test to wait out real windows on a loaded machine.
So every limit's window is about an hour, chosen so that filterd's current bucket has at least
40 minutes left: every request falls into one window of both, whose counts agree exactly.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_rules_postfwd import canonical, filterd_config

from tests.support.filterd_proc import FilterdFactory
from tests.support.postfix import free_port
from tests.support.postfwd import PolicyClient, postfwd_available, postfwd_server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not postfwd_available(), reason="postfwd (Debian's package) is missing"),
    pytest.mark.timeout(180),
]

ZONE = "Europe/Berlin"


def window_seconds(now: float) -> int:
    """About an hour, with at least 40 minutes left in filterd's bucket ``floor(now / W)``."""
    seconds = 3600
    while now % seconds >= seconds / 3:
        seconds += 1
    return seconds


def rule_file(w: int) -> str:
    return f"""\
id=RATE01; client_name==unknown; protocol_state==RCPT; \
action=rate(client_address/3/{w}/450 4.7.1 sorry, max 3 requests [$$ratecount])
id=SIZE01; protocol_state==END-OF-MESSAGE; \
action=size(sender/20000/{w}/552 5.3.4 too many bytes from $$sender: $$ratecount)
id=RCPT01; protocol_state==DATA; action=rcpt(sender/6/{w}/REJECT too many recipients $$ratecount)
id=RCPT02; protocol_state==DATA; action=rcpt(sender/3/{w}/WARN sender $$sender is yellow)
id=HELO01; protocol_state==RCPT; helo_name==client.example.net; \
action=rate(helo_name/5/{w}/DEFER_IF_PERMIT helo $$helo_name busy)
id=USER01; protocol_state==RCPT; action=rate($$sasl_username/4/{w}/WARN login $$sasl_username busy)
id=JUMP01; recipient==jump@example.org; action=rate(sender/2/{w}/jump(HELD))
id=NONE01; action=rate(ccert_fingerprint/1/{w}/REJECT never: no such attribute)
id=PASSED1; protocol_state==END-OF-MESSAGE; action=DISCARD passed (no PREPEND at END-OF-MESSAGE)
id=PASSED; action=PREPEND X-Passed: from $$client_address to $$recipient
id=HELD; action=HOLD jumped
"""


def requests(count: int, seed: int) -> Iterator[dict[str, str]]:
    rng = random.Random(seed)
    clients = [
        ("192.0.2.5", "mx.example.com"),
        ("192.0.2.200", "unknown"),
        ("198.51.100.8", "unknown"),
        ("2001:db8::25", "unknown"),
        ("203.0.113.9", "host.example.com"),
    ]
    senders = ["", "alice@example.com", "Alice@Example.COM", "bob@example.net", "carol@example.org"]
    helos = ["mx.example.com", "MX.example.com", "client.example.net", "[192.0.2.5]"]
    rcpts = ["r1@example.org", "r2@example.org", "jump@example.org", "JUMP@example.org"]
    for _ in range(count):
        address, name = rng.choice(clients)
        state = rng.choice(["RCPT"] * 6 + ["DATA"] * 2 + ["END-OF-MESSAGE"] * 2)
        recipients = 0 if state == "RCPT" else rng.choice([1, 1, 2, 3])
        yield {
            "protocol_state": state,
            "protocol_name": "ESMTP",
            "client_address": address,
            "client_name": name,
            "reverse_client_name": name,
            "helo_name": rng.choice(helos),
            "sender": rng.choice(senders),
            "recipient": rng.choice(rcpts) if state == "RCPT" or recipients == 1 else "",
            "recipient_count": str(recipients),
            "size": str(rng.choice([0, 800, 5000, 12000, 30000])),
            "sasl_username": rng.choice(["", "", "alice", "Alice", "bob"]),
            "queue_id": "",
            "instance": "",
        }


def messages(count: int, seed: int) -> Iterator[dict[str, str]]:
    """Whole messages as Postfix asks about them: one ``instance`` each, a RCPT request per
    recipient, then DATA and END-OF-MESSAGE (``recipient`` named only for a message with one)."""
    rng = random.Random(seed)
    lone = iter(requests(10 * count, seed))
    for number in range(count):
        base = next(lone)
        chosen = rng.sample(["r1@example.org", "r2@example.org", "jump@example.org"],
                            rng.choice([1, 1, 2, 3]))  # fmt: skip
        base.update(instance=f"8F1.{seed}.{number}", recipient_count="0")
        for recipient in chosen:
            yield {**base, "protocol_state": "RCPT", "recipient": recipient}
        one = chosen[0] if len(chosen) == 1 else ""
        later = {"recipient": one, "recipient_count": str(len(chosen))}
        yield {**base, "protocol_state": "DATA", **later}
        yield {**base, "protocol_state": "END-OF-MESSAGE", "queue_id": f"Q{number}", **later}


@pytest.mark.parametrize("sequence", ["requests", "messages"])
def test_rate_limits_answer_as_postfwd_does(
    tmp_path: Path, filterd_factory: FilterdFactory, sequence: str
) -> None:
    """``requests``: lone requests (no ``instance``), over one connection. ``messages``: whole
    messages, their RCPT, DATA and END-OF-MESSAGE requests over one connection with a real
    ``instance``, as Postfix sends them when check_policy_service is in
    smtpd_recipient_restrictions, smtpd_data_restrictions and smtpd_end_of_data_restrictions:
    filterd's policy door runs a message's stages once, but the rules decide every request
    (``decides_each_policy_request``: filterd/frontdoors/policy/service.py)."""
    w = window_seconds(time.time())
    cf = tmp_path / "postfwd.cf"
    cf.write_text(rule_file(w))
    port = free_port()
    chain = (
        f'actions = {{ rate = {{ state = {{ path = "{tmp_path / "rates.sqlite"}" }} }}, '
        f'size = {{ state = {{ path = "{tmp_path / "sizes.sqlite"}" }} }}, '
        f'rcpt = {{ state = {{ path = "{tmp_path / "rcpts.sqlite"}" }} }} }}\n'
        f'[[chain.config.rules]]\npostfwd_file = "{cf}"\n'
    )
    filterd_factory(filterd_config(port, chain))
    with postfwd_server(tmp_path, cf.read_text(), env={"TZ": ZONE}) as postfwd_port:
        postfwd = PolicyClient(postfwd_port)
        filterd = PolicyClient(port)
        asked = requests(300, seed=19) if sequence == "requests" else messages(80, seed=17)
        try:
            seen: dict[tuple[str, ...], int] = {}
            disagreements = []
            for number, request in enumerate(asked):
                expected, got = postfwd.ask(request), filterd.ask(request)
                seen[canonical(expected)] = seen.get(canonical(expected), 0) + 1
                if canonical(got) != canonical(expected):
                    disagreements.append((number, request, expected, got))
        finally:
            postfwd.close()
            filterd.close()
    assert disagreements == [], "\n".join(map(str, disagreements[:20]))
    # every limit was crossed, and the list went on below the limits
    kinds = {answer[0] for answer in seen}
    assert {"refuse", "DUNNO", "PREPEND", "HOLD", "DISCARD", "DEFER_IF_PERMIT"} <= kinds, seen
    texts = " ".join(" ".join(answer) for answer in seen)
    for part in ("max 3 requests [4]", "too many bytes from", "too many recipients"):
        assert part in texts, seen
    assert "never" not in texts, seen


def per_rule_file(w: int) -> str:
    return f"""\
id=A; client_address==192.0.2.5; protocol_state==RCPT; \
action=rate(sender/2/{w}/450 4.7.1 rule A [$$ratecount])
protocol_state==RCPT; action=rate5321(sender/3/{w}/450 4.7.1 strict [$$ratecount])
id=B; protocol_state==RCPT; action=rate(sender/2/{w}/450 4.7.1 rule B [$$ratecount])
protocol_state==END-OF-MESSAGE; action=size5321(sender/9000/{w}/552 5.3.4 bytes $$ratecount)
protocol_state==DATA; action=rcpt5321(sender/4/{w}/452 4.5.3 rcpts $$ratecount)
id=PASSED1; protocol_state==END-OF-MESSAGE; action=DISCARD passed (no PREPEND at END-OF-MESSAGE)
id=PASSED; action=PREPEND X-Passed: $$sender
"""


def per_rule_requests(count: int, seed: int) -> Iterator[dict[str, str]]:
    rng = random.Random(seed)
    senders = ["Bob@Example.ORG", "bob@example.org", "Bob@example.org", "carol@example.net"]
    for _ in range(count):
        state = rng.choice(["RCPT"] * 6 + ["DATA"] * 2 + ["END-OF-MESSAGE"] * 2)
        yield {
            "protocol_state": state,
            "protocol_name": "ESMTP",
            "client_address": rng.choice(["192.0.2.5", "198.51.100.8"]),
            "client_name": "unknown",
            "sender": rng.choice(senders),
            "recipient": "r1@example.org",
            "recipient_count": "0" if state == "RCPT" else str(rng.choice([1, 2])),
            "size": str(rng.choice([0, 800, 3000])),
            "queue_id": "",
            "instance": "",
        }


def test_counters_are_per_rule(tmp_path: Path, filterd_factory: FilterdFactory) -> None:
    """Rules A and B have the same limit: a request from 192.0.2.5 below A's limit counts for
    both, each in its own counter (one shared counter would count it twice)."""
    w = window_seconds(time.time())
    cf = tmp_path / "postfwd.cf"
    cf.write_text(per_rule_file(w))
    port = free_port()
    state = f'state = {{ path = "{tmp_path / "rates.sqlite"}" }}'
    chain = (
        f"actions = {{ rate = {{ {state} }}, rate5321 = {{ {state} }}, "
        f"size5321 = {{ {state} }}, rcpt5321 = {{ {state} }} }}\n"
        f'[[chain.config.rules]]\npostfwd_file = "{cf}"\n'
    )
    filterd_factory(filterd_config(port, chain))
    with postfwd_server(tmp_path, cf.read_text(), env={"TZ": ZONE}) as postfwd_port:
        postfwd = PolicyClient(postfwd_port)
        filterd = PolicyClient(port)
        try:
            seen: dict[tuple[str, ...], int] = {}
            disagreements = []
            for number, request in enumerate(per_rule_requests(160, seed=23)):
                expected, got = postfwd.ask(request), filterd.ask(request)
                seen[canonical(expected)] = seen.get(canonical(expected), 0) + 1
                if canonical(got) != canonical(expected):
                    disagreements.append((number, request, expected, got))
        finally:
            postfwd.close()
            filterd.close()
    assert disagreements == [], "\n".join(map(str, disagreements[:20]))
    texts = " ".join(" ".join(answer) for answer in seen)
    for part in ("rule A [3]", "rule B [3]", "strict [4]", "bytes", "rcpts"):
        assert part in texts, seen
