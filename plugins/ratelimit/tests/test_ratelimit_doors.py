"""The ratelimit plugin in real filterd processes: two of them on one redis-server count
together behind the SMTP door (recipients refused at RCPT, messages at the end of DATA), the
metrics endpoint shows the counts; the policy door answers Postfix's requests (recipients at
RCPT, bytes at END-OF-MESSAGE from the request's size)."""

from __future__ import annotations

import smtplib
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.filterd_proc import FilterdFactory
from tests.support.policy_door import filterd_policy_door
from tests.support.postfix import free_port
from tests.support.postgrey import PolicyClient
from tests.support.redis import redis_installed, running_redis

pytestmark = [pytest.mark.timeout(90)]

MESSAGE = b"From: alice@example.com\r\nSubject: hello\r\n\r\nHi.\r\n"
WAIT = 20.0


def smtp_config(port: int, metrics_port: int, tmp_path: Path, redis_url: str) -> str:
    return f"""
[[listen]]
address = "127.0.0.1:{port}"
hostname = "filterd.test"
[delivery]
method = "maildir"
mailbox_base = "{tmp_path / "mail"}"
mailbox_domains = ["example.org"]
[metrics]
address = "127.0.0.1:{metrics_port}"
[[chain]]
plugin = "ratelimit"
[chain.config]
state = {{ backend = "redis", url = "{redis_url}" }}
[[chain.config.limits]]
name = "sender-rcpts"
key = "sender"
count = "recipients"
limit = 3
window = "1h"
[[chain.config.limits]]
name = "client-msgs"
key = "client"
count = "messages"
limit = 2
window = "1h"
"""


def send(
    port: int, sender: str, rcpts: list[str]
) -> tuple[list[tuple[int, bytes]], tuple[int, bytes] | None]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.example")
        assert client.mail(sender)[0] == 250
        replies = [client.rcpt(r) for r in rcpts]
        if not any(code == 250 for code, _ in replies):
            return replies, None
        return replies, client.data(MESSAGE)


def plugin_events(metrics_port: int, event: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "filterd_plugin_events_total" and sample.labels == {
                "plugin": "ratelimit",
                "event": event,
            }:
                return sample.value
    return 0.0


def settled(metrics_port: int, event: str) -> float:
    """The counter once it shows (the process writes its counts once a second)."""
    deadline = time.monotonic() + WAIT
    while (value := plugin_events(metrics_port, event)) == 0:
        assert time.monotonic() < deadline, f"{event} never showed in the metrics"
        time.sleep(0.1)
    return value


@pytest.mark.skipif(not redis_installed(), reason="redis-server is not installed")
def test_two_processes_on_one_redis_count_together(
    filterd_factory: FilterdFactory, tmp_path: Path
) -> None:
    with running_redis() as redis:
        ports = [free_port(), free_port()]
        metrics = [free_port(), free_port()]
        for port, metrics_port, name in zip(ports, metrics, "ab", strict=True):
            filterd_factory(smtp_config(port, metrics_port, tmp_path / name, redis.url))
        a, b = ports
        replies, data = send(a, "alice@example.com", ["bob@example.org", "carol@example.org"])
        assert [code for code, _ in replies] == [250, 250]
        assert data is not None
        assert data[0] == 250
        # on the other process: the sender's third recipient passes, its fourth does not
        replies, data = send(b, "alice@example.com", ["dave@example.org", "erin@example.org"])
        assert replies == [
            (250, b"2.1.5 Ok"),
            (450, b"4.7.1 <erin@example.org>: Recipient address rejected: "
                  b"Rate limit exceeded: more than 3 recipients per 1h"),
        ]  # fmt: skip
        assert data is not None
        assert data[0] == 250
        # the client's third message, back on the first process
        replies, data = send(a, "frank@example.com", ["gina@example.org"])
        assert [code for code, _ in replies] == [250]
        assert data == (
            450,
            b"4.7.1 <frank@example.com>: Sender address rejected: "
            b"Rate limit exceeded: more than 2 messages per 1h",
        )
    delivered = sorted(p.parent.parent.name for p in (tmp_path).glob("*/mail/example.org/*/new/*"))
    assert delivered == ["bob", "carol", "dave"]
    # what each process counted, on its own metrics endpoint (written once a second)
    assert settled(metrics[0], "client-msgs.exceeded") == 1
    assert plugin_events(metrics[0], "sender-rcpts.counted") == 3  # bob, carol; gina (frank)
    assert plugin_events(metrics[0], "client-msgs.counted") == 1  # the refused one: not kept
    assert settled(metrics[1], "sender-rcpts.exceeded") == 1
    assert plugin_events(metrics[1], "sender-rcpts.counted") == 1  # dave (erin was refused)
    assert plugin_events(metrics[1], "client-msgs.counted") == 1


def request(state: str, **more: str) -> dict[str, str]:
    return {
        "request": "smtpd_access_policy",
        "protocol_state": state,
        "protocol_name": "ESMTP",
        "client_address": "192.0.2.10",
        "client_name": "client.example",
        "helo_name": "client.example",
        "sender": "alice@example.com",
        "recipient": "",
        "recipient_count": "0",
        "queue_id": "",
        "instance": "1.1",
        "size": "0",
        "sasl_username": "alice",
        **more,
    }


def test_policy_door(filterd_factory: FilterdFactory, tmp_path: Path) -> None:
    port = filterd_policy_door(
        filterd_factory,
        f"""
[[chain]]
plugin = "ratelimit"
[chain.config]
state = {{ path = "{tmp_path / "ratelimit.sqlite"}" }}
[[chain.config.limits]]
name = "user-rcpts"
key = "sasl_username"
count = "recipients"
limit = 2
window = "1h"
action = "DEFER_IF_PERMIT 4.7.1 {{key}} sent to too many recipients"
[[chain.config.limits]]
name = "sender-bytes"
key = "sender"
count = "bytes"
limit = "1kB"
window = "1d"
""",
    )
    rcpt_client = PolicyClient(("127.0.0.1", port))  # smtpd_recipient_restrictions
    eom_client = PolicyClient(("127.0.0.1", port))  # smtpd_end_of_data_restrictions
    try:
        at_rcpt = [
            rcpt_client.ask(request("RCPT", recipient="bob@example.org")),
            rcpt_client.ask(request("RCPT", recipient="carol@example.org")),
            rcpt_client.ask(request("RCPT", recipient="dave@example.org", instance="1.2")),
            rcpt_client.ask(request("RCPT", recipient="dave@example.org", instance="1.3",
                                    sasl_username="")),
        ]  # fmt: skip
        at_end = [
            eom_client.ask(request("END-OF-MESSAGE", recipient_count="2", size="600",
                                   instance="2.1", sasl_username="")),
            eom_client.ask(request("END-OF-MESSAGE", recipient="dave@example.org", size="600",
                                   recipient_count="1", instance="2.2", sasl_username="")),
            eom_client.ask(request("END-OF-MESSAGE", recipient_count="3", size="100",
                                   instance="2.3", sasl_username="carl")),
            eom_client.ask(request("END-OF-MESSAGE", recipient_count="2", size="400",
                                   instance="2.4", sasl_username="carl")),
        ]  # fmt: skip
    finally:
        rcpt_client.close()
        eom_client.close()
    assert at_rcpt == [
        "DUNNO",
        "DUNNO",
        "DEFER_IF_PERMIT 4.7.1 alice sent to too many recipients",
        "DUNNO",  # no login: not limited
    ]
    assert at_end == [
        "DUNNO",
        "450 4.7.1 Rate limit exceeded: more than 1000 bytes per 1d",
        "DEFER_IF_PERMIT 4.7.1 carl sent to too many recipients",  # 3 at once
        "DUNNO",  # 600 + 400 bytes; the refused 100 were given back
    ]


def test_policy_door_counts_a_message_once_beside_plugins_deciding_every_request(
    filterd_factory: FilterdFactory, tmp_path: Path
) -> None:
    """The rules plugin decides every request, also a message's DATA and END-OF-MESSAGE on the
    connection of its RCPT requests; ratelimit still counts the message once, at its first
    request (the policy door reruns a reused stage for such plugins only)."""
    port = filterd_policy_door(
        filterd_factory,
        f"""
[[chain]]
plugin = "rules"
[[chain.config.rules]]
protocol_state = "== DATA"
action = "PREPEND X-Rules: at DATA"
[[chain]]
plugin = "ratelimit"
[chain.config]
state = {{ path = "{tmp_path / "ratelimit.sqlite"}" }}
[[chain.config.limits]]
name = "client-msgs"
key = "client"
count = "messages"
limit = 1
window = "1h"
""",
    )
    client = PolicyClient(("127.0.0.1", port))  # one connection for every restriction class
    try:
        answers = [
            client.ask(request("RCPT", recipient="bob@example.org")),
            client.ask(request("RCPT", recipient="carol@example.org")),
            client.ask(request("DATA", recipient_count="2")),
            client.ask(request("END-OF-MESSAGE", recipient_count="2", size="600")),
            client.ask(request("RCPT", recipient="bob@example.org", instance="1.2")),
        ]
    finally:
        client.close()
    assert answers[:4] == ["DUNNO", "DUNNO", "PREPEND X-Rules: at DATA", "DUNNO"]
    assert answers[4].startswith("450 4.7.1 Rate limit exceeded"), answers
