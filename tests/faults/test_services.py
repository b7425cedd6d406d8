"""A service a plugin needs is down or hangs while a private Postfix sends through filterd (its
after-queue content filter, relaying back to its reinjection smtpd): spamd for the spamassassin
plugin, Redis for the greylist plugin's state (``on_store_failure = "tempfail"``), MariaDB for
a mysql: table of the access plugin, and DNS for the spf plugin (the test DNS server answers
SERVFAIL, or never). A ``Gate``
in front of the real server resets each connection (down) or holds it without a byte (slow).

While it lasts, every message gets filterd's 4xx and stays queued at the sender, nothing is
delivered; once the service is back, every message is delivered exactly once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.ledger import Ledger
from tests.support.dns_server import DnsServer
from tests.support.filterd_proc import FilterdFactory
from tests.support.gate import Gate, Mode
from tests.support.mariadb import DATABASE, PASSWORD, USER, mariadb_installed, running_mariadb
from tests.support.postfix import PostfixFactory, free_port, postfix_available
from tests.support.redis import redis_installed, running_redis
from tests.support.spamd import running_spamd, spamd_installed

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not postfix_available(), reason="Postfix (master) is not installed"),
    pytest.mark.timeout(240),
]

MESSAGES = 8
FAULTS: list[Mode] = ["down", "slow"]


def run_case(
    postfix_factory: PostfixFactory,
    filterd_factory: FilterdFactory,
    recover: Callable[[], None],
    chain: str,
) -> None:
    port = free_port()
    postfix = postfix_factory(content_filter="smtp", filter_port=port)
    filterd = filterd_factory(
        f"""
[[listen]]
address = "127.0.0.1:{port}"
hostname = "filterd.test"
[delivery]
method = "relay"
next_hop = "127.0.0.1:{postfix.reinject_port}"
"""
        + chain
    )
    ledger = Ledger(postfix, port, postfix.delivered_messages, MESSAGES, reinjected=True)
    ledger.inject()
    ledger.wait_until_attempted()
    ledger.check_held()
    recover()
    snap = ledger.wait_all_delivered()
    assert all(copies == 1 for copies in snap.at_sink.values()), snap.describe()
    assert filterd.running()


@pytest.fixture
def spamd_gate() -> Iterator[Gate]:
    if not spamd_installed():
        pytest.skip("spamd is not installed (deploy/install-system-packages.sh)")
    with running_spamd(children=2) as spamd, Gate(spamd.address) as gate:
        yield gate


@pytest.fixture
def redis_gate() -> Iterator[Gate]:
    if not redis_installed():
        pytest.skip("redis-server is not installed (deploy/install-system-packages.sh)")
    with running_redis() as redis, Gate(("127.0.0.1", redis.port)) as gate:
        yield gate


@pytest.fixture
def mariadb_gate() -> Iterator[Gate]:
    if not mariadb_installed():
        pytest.skip("MariaDB is not installed (deploy/install-system-packages.sh)")
    with running_mariadb() as db, Gate(("127.0.0.1", db.port)) as gate:
        yield gate


@pytest.mark.parametrize("fault", FAULTS)
def test_spamd_down_or_slow(
    postfix_factory: PostfixFactory, filterd_factory: FilterdFactory, spamd_gate: Gate, fault: Mode
) -> None:
    spamd_gate.mode = fault
    chain = f"""
[[chain]]
plugin = "spamassassin"
timeout = "3s"
config = {{ address = "127.0.0.1:{spamd_gate.port}" }}
"""
    run_case(postfix_factory, filterd_factory, spamd_gate.up, chain)


@pytest.mark.parametrize("fault", FAULTS)
def test_redis_down_or_slow_for_greylisting(
    postfix_factory: PostfixFactory, filterd_factory: FilterdFactory, redis_gate: Gate, fault: Mode
) -> None:
    redis_gate.mode = fault
    chain = f"""
[[chain]]
plugin = "greylist"
[chain.config]
delay = "1s"
whitelist_clients = []
whitelist_recipients = []
[chain.config.state]
backend = "redis"
url = "redis://127.0.0.1:{redis_gate.port}/0"
timeout = "2s"
on_store_failure = "tempfail"
"""
    run_case(postfix_factory, filterd_factory, redis_gate.up, chain)


def test_mariadb_down_for_access(
    postfix_factory: PostfixFactory,
    filterd_factory: FilterdFactory,
    mariadb_gate: Gate,
    tmp_path: Path,
) -> None:
    """Down only: a host that failed is not asked again for a minute (Postfix's mysql: client
    does the same), so this case takes a minute whatever the fault; a hanging server is the
    spamd and Redis cases' fault."""
    mariadb_gate.mode = "down"
    table = tmp_path / "access.cf"
    table.write_text(
        f"hosts = 127.0.0.1:{mariadb_gate.port}\nuser = {USER}\npassword = {PASSWORD}\n"
        f"dbname = {DATABASE}\nquery = SELECT 'OK' FROM DUAL WHERE '%s' <> ''\n"
    )
    chain = f"""
[[chain]]
plugin = "access"
timeout = "3s"
config = {{ recipient = ["mysql:{table}"] }}
"""
    run_case(postfix_factory, filterd_factory, mariadb_gate.up, chain)


@pytest.mark.parametrize("fault", ["SERVFAIL", "TIMEOUT"])
def test_dns_failing_or_silent_for_spf(
    postfix_factory: PostfixFactory, filterd_factory: FilterdFactory, fault: str
) -> None:
    broken = {"example.org": [{"RCODE": "SERVFAIL"}] if fault == "SERVFAIL" else ["TIMEOUT"]}
    with DnsServer(broken) as dns:
        chain = f"""
[[chain]]
plugin = "spf"
[chain.config]
skip_networks = []
resolver = {{ nameservers = ["{dns.address}"], timeout = "1s", lifetime = "2s" }}
"""
        passing = {"example.org": [{"TXT": "v=spf1 ip4:127.0.0.1 -all"}]}
        run_case(postfix_factory, filterd_factory, lambda: dns.set_zone(passing), chain)
