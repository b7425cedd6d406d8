"""The greylist plugin's decisions on a fake clock (no sleeping): postgrey 1.37's sequence of
greylisting, passing, the retry window, auto-whitelisting and the store-failure policy."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TypeGuard

import pytest
import trio
from filterd_greylist.plugin import Greylist

from filterd.sdk import (
    AddHeader,
    Client,
    Continue,
    MailLog,
    PluginEnv,
    Recipient,
    Reply,
    Session,
    TempFail,
    Transaction,
    Verdict,
)
from filterd.testing import validate_config

START = 1_700_000_000.0
DAY = 86_400


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def started(config: Mapping[str, object], clock: Clock) -> Greylist:
    plugin = Greylist(
        validate_config(Greylist, config),
        PluginEnv("greylist", MailLog("greylist"), trio.CapacityLimiter(4), clock),
    )
    await plugin.start()
    return plugin


@pytest.fixture
async def greylist(tmp_path: Path, clock: Clock) -> AsyncIterator[Greylist]:
    plugin = await started(base_config(tmp_path), clock)
    yield plugin
    await plugin.stop()


def base_config(tmp_path: Path, **more: object) -> dict[str, object]:
    return {
        "state": {"path": str(tmp_path / "greylist.sqlite")},
        "whitelist_clients": [],
        "whitelist_recipients": [],
        "hostname": "mx.test",
        **more,
    }


def transaction(sender: str, ip: str = "192.0.2.10", name: str = "unknown") -> Transaction:
    session = Session("s1", "test", Client(address=ip, name=name, helo="client.example"))
    return Transaction("QID", session, sender=sender)


async def ask(
    plugin: Greylist, sender: str, rcpt: str, ip: str = "192.0.2.10", name: str = "unknown"
) -> Verdict:
    return await plugin.on_rcpt(transaction(sender, ip, name), Recipient(rcpt))


def greylisted(verdict: Verdict) -> Reply:
    """The greylisting reply: held as DEFER_IF_PERMIT (the default action), or a TempFail."""
    if isinstance(verdict, Continue):
        (held,) = verdict.defer_if
        assert held.when == "permit"
        return held.reply
    assert isinstance(verdict, TempFail), verdict
    return verdict.reply


def goes_on(verdict: Verdict) -> TypeGuard[Continue]:
    """Not greylisted: a Continue with no deferral held."""
    return isinstance(verdict, Continue) and not verdict.defer_if


async def test_new_triplet_is_greylisted_then_passes_after_the_delay(
    greylist: Greylist, clock: Clock
) -> None:
    first = greylisted(await ask(greylist, "alice@example.com", "bob@example.org"))
    assert (first.code, first.status) == (450, "4.2.0")
    assert first.text == "Greylisted, see http://postgrey.schweikert.ch/help/example.org.html"
    clock.now += 299
    greylisted(await ask(greylist, "alice@example.com", "bob@example.org"))
    clock.now += 1  # 300 s after the first attempt
    passed = await ask(greylist, "alice@example.com", "bob@example.org")
    assert goes_on(passed)
    assert isinstance(passed, Continue)
    (header,) = passed.edits
    assert isinstance(header, AddHeader)
    assert header.name == "X-Greylist"
    assert header.value.startswith("delayed 300 seconds by filterd-greylist-0.1.0 at mx.test; ")
    clock.now += 10 * DAY
    again = await ask(greylist, "alice@example.com", "bob@example.org")
    assert again == Continue(findings=again.findings)
    assert not again.edits


async def test_sender_normalisation_and_client_network_share_a_triplet(
    greylist: Greylist, clock: Clock
) -> None:
    greylisted(await ask(greylist, "prvs=0123456789=list+123@example.com", "bob@example.org"))
    clock.now += 300
    # another host of the same /24, another BATV tag and extension: the same triplet
    passed = await ask(greylist, "prvs=9876543210=list+456@example.com", "bob@example.org",
                       ip="192.0.2.200")  # fmt: skip
    assert goes_on(passed)
    # another /24: a new triplet
    greylisted(await ask(greylist, "list@example.com", "bob@example.org", ip="192.0.3.1"))


async def test_seconds_left_in_the_text(tmp_path: Path, clock: Clock) -> None:
    plugin = await started(
        base_config(tmp_path, greylist_text="wait %s more seconds for %r", greylist_action="451"),
        clock,
    )
    greylisted(await ask(plugin, "a@example.com", "b@example.org"))
    clock.now += 100
    verdict = await ask(plugin, "a@example.com", "b@example.org")
    assert isinstance(verdict, TempFail)  # a numeric action refuses at once
    assert verdict.reply == Reply(451, "4.2.0", "wait 200 more seconds for example.org")
    await plugin.stop()


async def test_a_first_retry_after_the_retry_window_starts_over(
    greylist: Greylist, clock: Clock
) -> None:
    greylisted(await ask(greylist, "a@example.com", "b@example.org"))
    clock.now += 2 * DAY + 1
    verdict = await ask(greylist, "a@example.com", "b@example.org")
    greylisted(verdict)
    assert verdict.findings[0].detail.startswith("new")  # first reset to now
    clock.now += 300
    assert goes_on(await ask(greylist, "a@example.com", "b@example.org"))


async def test_a_passed_triplet_is_forgotten_after_max_age(
    greylist: Greylist, clock: Clock
) -> None:
    greylisted(await ask(greylist, "a@example.com", "b@example.org"))
    clock.now += 300
    assert goes_on(await ask(greylist, "a@example.com", "b@example.org"))
    clock.now += 35 * DAY - 1
    assert goes_on(await ask(greylist, "a@example.com", "b@example.org"))
    clock.now += 35 * DAY + 1
    greylisted(await ask(greylist, "a@example.com", "b@example.org"))


async def test_header_once_per_message(greylist: Greylist, clock: Clock) -> None:
    t = transaction("a@example.com")
    for rcpt in ("one@example.org", "two@example.org"):
        greylisted(await greylist.on_rcpt(t, Recipient(rcpt)))
    clock.now += 400
    t = transaction("a@example.com")
    first = await greylist.on_rcpt(t, Recipient("one@example.org"))
    second = await greylist.on_rcpt(t, Recipient("two@example.org"))
    assert goes_on(first)
    assert len(first.edits) == 1
    assert goes_on(second)
    assert not second.edits


async def test_auto_whitelist_after_five_passes_counted_once_an_hour(
    greylist: Greylist, clock: Clock
) -> None:
    ip = "198.51.100.9"
    # five triplets pass within one hour: they count once
    for n in range(5):
        greylisted(await ask(greylist, "a@example.com", f"r{n}@example.org", ip=ip))
    clock.now += 300
    for n in range(5):
        assert goes_on(await ask(greylist, "a@example.com", f"r{n}@example.org", ip=ip))
    greylisted(await ask(greylist, "a@example.com", "new@example.org", ip=ip))
    # four more passes, each an hour apart: five counted
    for n in range(4):
        clock.now += 3600
        greylisted(await ask(greylist, "b@example.com", f"h{n}@example.org", ip=ip))
        clock.now += 300
        assert goes_on(await ask(greylist, "b@example.com", f"h{n}@example.org", ip=ip))
    whitelisted = await ask(greylist, "c@example.com", "never-seen@example.org", ip=ip)
    assert goes_on(whitelisted)
    assert [f.detail for f in whitelisted.findings] == ["client-awl"]
    # the address is whitelisted, not its network
    greylisted(await ask(greylist, "c@example.com", "never-seen@example.org", ip="198.51.100.10"))


async def test_auto_whitelist_off(tmp_path: Path, clock: Clock) -> None:
    plugin = await started(base_config(tmp_path, auto_whitelist_clients=0), clock)
    for n in range(6):
        greylisted(await ask(plugin, "a@example.com", f"r{n}@example.org"))
        clock.now += 3600
        assert goes_on(await ask(plugin, "a@example.com", f"r{n}@example.org"))
    greylisted(await ask(plugin, "a@example.com", "new@example.org"))
    await plugin.stop()


async def test_whitelists_and_unknown_clients(tmp_path: Path, clock: Clock) -> None:
    (tmp_path / "clients").write_text("trusted.example\n203.0.113\n")
    (tmp_path / "rcpts").write_text("postmaster@\n")
    config = base_config(
        tmp_path,
        whitelist_clients=[str(tmp_path / "clients")],
        whitelist_recipients=[str(tmp_path / "rcpts")],
    )
    plugin = await started(config, clock)
    for verdict in (
        await ask(plugin, "a@example.com", "b@example.org", name="mx.trusted.example"),
        await ask(plugin, "a@example.com", "b@example.org", ip="203.0.113.77"),
        await ask(plugin, "a@example.com", "postmaster@example.org"),
        await ask(plugin, "a@example.com", "b@example.org", ip="unknown"),
    ):
        assert goes_on(verdict)
        assert not verdict.edits
    greylisted(await ask(plugin, "a@example.com", "b@example.org"))
    await plugin.stop()


@pytest.mark.parametrize(("policy", "tempfails"), [("dunno", False), ("tempfail", True)])
async def test_a_store_that_is_down_follows_on_store_failure(
    tmp_path: Path, clock: Clock, policy: str, tempfails: bool
) -> None:
    with trio.socket.socket() as probe:  # a port nothing listens on
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    state = {"backend": "redis", "url": f"redis://127.0.0.1:{port}/0", "timeout": "1s",
             "on_store_failure": policy}  # fmt: skip
    plugin = await started(base_config(tmp_path, state=state), clock)
    with trio.fail_after(10):
        verdict = await ask(plugin, "a@example.com", "b@example.org")
    if tempfails:
        assert isinstance(verdict, TempFail)
        assert (verdict.reply.code, verdict.reply.status) == (451, "4.3.0")
    else:
        assert goes_on(verdict)
        assert [str(f) for f in verdict.findings] == ["greylist=store-failure"]
    await plugin.stop()


async def test_sqlite_state_survives_a_restart(tmp_path: Path, clock: Clock) -> None:
    plugin = await started(base_config(tmp_path), clock)
    greylisted(await ask(plugin, "a@example.com", "b@example.org"))
    await plugin.stop()
    clock.now += 300
    restarted = await started(base_config(tmp_path), clock)
    passed = await ask(restarted, "a@example.com", "b@example.org")
    assert goes_on(passed)
    assert passed.edits
    await restarted.stop()
