"""The same policy requests to Debian's postgrey 1.37 and to filterd's policy door with the
greylist plugin give the same actions: new triplets, retries before and after the delay,
whitelisted clients (name, address, partial address) and recipients, normalised senders (BATV,
+extension, numbers), the X-Greylist header once per message, and auto-whitelisting after N
passes counted at most once an hour.

postgrey's clock cannot be faked from outside (``policy_test_time`` is a request attribute
filterd does not honour): both run with ``delay`` 3 s on the real clock, and the test waits
once, 4.5 s, so that every retry is clearly before or after the delay whatever the second
boundaries. The hourly rule shows within that time: with N=2, two triplets of one client pass
in the same hour and count once, so the client is not whitelisted; with N=1 the first pass
whitelists it.

filterd runs three times: with SQLite (restarted between the first attempts and the retries:
the state survives), and as two processes sharing one redis-server, each message going to one
of them in turn (Postfix keeps one policy connection per smtpd): the same answers as one.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.filterd_proc import FilterdFactory, FilterdProcess
from tests.support.policy_door import policy_door_config
from tests.support.postfix import free_port
from tests.support.postgrey import PolicyClient, postgrey_installed, running_postgrey
from tests.support.redis import redis_installed, running_redis

pytestmark = [
    pytest.mark.skipif(not postgrey_installed(), reason="postgrey is not installed"),
    pytest.mark.skipif(not redis_installed(), reason="redis-server is not installed"),
    pytest.mark.timeout(120),
]

DELAY = 3
WAIT = DELAY + 1.5

CLIENTS = "# postgrey syntax\nmx.trusted.example\n198.51.100\n/^relay\\d+\\.regex\\.example$/\n"
RECIPIENTS = "postmaster@\nwhitelisted.example\n"


@dataclass(frozen=True)
class Ask:
    """One message: the same client and sender, one RCPT request per recipient."""

    instance: str
    client_address: str
    sender: str
    recipients: tuple[str, ...]
    client_name: str = "unknown"

    def requests(self) -> Iterator[dict[str, str]]:
        for recipient in self.recipients:
            yield {
                "request": "smtpd_access_policy",
                "protocol_state": "RCPT",
                "protocol_name": "ESMTP",
                "client_address": self.client_address,
                "client_name": self.client_name,
                "reverse_client_name": self.client_name,
                "client_port": "40000",
                "helo_name": "client.example",
                "sender": self.sender,
                "recipient": recipient,
                "recipient_count": "0",
                "queue_id": "",
                "instance": self.instance,
                "size": "0",
                "etrn_domain": "",
                "stress": "",
            }


BEFORE = [
    Ask("i1", "192.0.2.10", "prvs=0123456789=bounce-17@lists.example", ("bob@example.org",)),
    Ask("i2", "192.0.2.10", "alice@example.com", ("dave@example.org", "erin@example.org")),
    Ask("i3", "203.0.113.5", "x@example.com", ("bob@example.org",), "mx.trusted.example"),
    Ask("i4", "203.0.113.6", "x@example.com", ("bob@example.org",), "relay7.regex.example"),
    Ask("i5", "198.51.100.200", "x@example.com", ("bob@example.org",)),
    Ask("i6", "192.0.2.10", "x@example.com", ("postmaster@example.org", "a@whitelisted.example")),
    Ask("i7", "192.0.2.10", "prvs=0123456789=bounce-17@lists.example", ("bob@example.org",)),
]
AFTER = [
    # another host of the /24, another BATV tag, extension and number: the same triplet
    Ask("i8", "192.0.2.77", "prvs=9876543210=bounce-18+x@lists.example", ("bob@example.org",)),
    Ask("i9", "192.0.2.77", "prvs=9876543210=bounce-18@lists.example", ("bob@example.org",)),
    # both pass; the header goes on the first recipient's answer only
    Ask("i10", "192.0.2.10", "alice@example.com", ("dave@example.org", "erin@example.org")),
    # N=1: 192.0.2.10 is whitelisted now; N=2: it counted once this hour, not whitelisted
    Ask("i11", "192.0.2.10", "frank@example.com", ("gina@example.org",)),
    Ask("i12", "192.0.2.11", "frank@example.com", ("gina@example.org",)),
]

_HEADER = re.compile(
    r"PREPEND X-Greylist: delayed (\d+) seconds by \S+ at mx\.test; "
    r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} [A-Z]+"
)


def normalised(action: str) -> str:
    """The X-Greylist header with its delay checked (at least the configured one; how much
    more depends on the machine's load) and the software and date left out."""
    match = _HEADER.fullmatch(action)
    if match is None:
        return action
    assert int(match.group(1)) >= DELAY, action
    return "PREPEND X-Greylist: delayed N seconds by SOFTWARE at mx.test; DATE"


def filterd_config(port: int, state: str, files: Path, awl: int) -> str:
    return policy_door_config(
        port,
        f"""
[[chain]]
plugin = "greylist"
[chain.config]
delay = "{DELAY}s"
auto_whitelist_clients = {awl}
hostname = "mx.test"
whitelist_clients = ["{files / "clients"}", "{files / "clients.local"}"]
whitelist_recipients = ["{files / "recipients"}"]
state = {state}
""",
    )


class Target:
    """Where the requests go: one policy server, or several taking messages in turn."""

    def __init__(self, *addresses: tuple[str, int]) -> None:
        self.clients = [PolicyClient(address) for address in addresses]
        self.turn = 0

    def ask(self, message: Ask) -> list[str]:
        client = self.clients[self.turn % len(self.clients)]
        self.turn += 1
        return [normalised(client.ask(request)) for request in message.requests()]

    def reconnect(self) -> None:
        for client in self.clients:
            client.close()


def start(factory: FilterdFactory, state: str, files: Path, awl: int) -> tuple[FilterdProcess, int]:
    port = free_port()
    return factory(filterd_config(port, state, files, awl)), port


@pytest.mark.parametrize("awl", [1, 2])
def test_same_actions_as_postgrey(
    filterd_factory: FilterdFactory, tmp_path: Path, awl: int
) -> None:
    (tmp_path / "clients").write_text(CLIENTS)
    (tmp_path / "recipients").write_text(RECIPIENTS)
    sqlite_state = f'{{ path = "{tmp_path / "greylist.sqlite"}" }}'
    with (
        running_redis() as redis,
        running_postgrey(
            delay=DELAY,
            whitelist_clients=[tmp_path / "clients"],
            whitelist_recipients=[tmp_path / "recipients"],
            auto_whitelist_clients=awl,
        ) as postgrey,
    ):
        redis_state = f'{{ backend = "redis", url = "{redis.url}", prefix = "awl{awl}:" }}'
        sqlite_filterd, sqlite_port = start(filterd_factory, sqlite_state, tmp_path, awl)
        _, redis_a = start(filterd_factory, redis_state, tmp_path, awl)
        _, redis_b = start(filterd_factory, redis_state, tmp_path, awl)
        targets = {
            "postgrey": Target(postgrey.address),
            "filterd/sqlite": Target(("127.0.0.1", sqlite_port)),
            "filterd/redis x2": Target(("127.0.0.1", redis_a), ("127.0.0.1", redis_b)),
        }
        answers: dict[str, list[list[str]]] = {name: [] for name in targets}
        for message in BEFORE:
            for name, target in targets.items():
                answers[name].append(target.ask(message))
        targets["filterd/sqlite"].reconnect()
        sqlite_filterd.stop()
        sqlite_filterd.start()
        time.sleep(WAIT)  # postgrey's clock is the real one
        for message in AFTER:
            for name, target in targets.items():
                answers[name].append(target.ask(message))
        for target in targets.values():
            target.reconnect()

    expected = answers["postgrey"]
    greylisted = (
        "DEFER_IF_PERMIT 4.2.0 Greylisted, see http://postgrey.schweikert.ch/help/example.org.html"
    )
    header = "PREPEND X-Greylist: delayed N seconds by SOFTWARE at mx.test; DATE"
    # What postgrey answered is what this test means to cover (a guard against a test that
    # compares two wrong things).
    assert expected == [
        [greylisted],
        [greylisted, greylisted],
        ["DUNNO"],
        ["DUNNO"],
        ["DUNNO"],
        ["DUNNO", "DUNNO"],
        [greylisted],
        [header],
        ["DUNNO"],
        [header, "DUNNO"],
        ["DUNNO" if awl == 1 else greylisted],
        [greylisted],
    ]
    assert answers["filterd/sqlite"] == expected
    assert answers["filterd/redis x2"] == expected
