"""The ``greylist()`` rule action on a fake clock: the greylist plugin's decisions answered as
postgrey answers Postfix (DEFER_IF_PERMIT 4.2.0 ..., PREPEND X-Greylist once per message where
a header can be added, DUNNO), its argument and settings refused with clear errors, and the
rules plugin using it through the SMTP door's view."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest
import trio
from filterd_greylist.rule_action import GreylistAction, make_greylist_action
from filterd_rules import Rules

from filterd.sdk import AddHeader, MailLog, PluginEnv, Reply
from filterd.sdk.rule_actions import load_rule_action
from filterd.testing import run_plugin

START = 1_700_000_000.0
MESSAGE = b"Subject: hi\r\n\r\nbody\r\n"
GREYLISTED = (
    "DEFER_IF_PERMIT 4.2.0 Greylisted, see http://postgrey.schweikert.ch/help/example.org.html"
)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def settings(tmp_path: Path, **more: object) -> dict[str, object]:
    return {
        "state": {"path": str(tmp_path / "greylist.sqlite")},
        "whitelist_clients": [],
        "whitelist_recipients": [],
        "hostname": "mx.test",
        **more,
    }


def env(clock: Clock) -> PluginEnv:
    return PluginEnv("rules", MailLog("rules"), trio.CapacityLimiter(4), clock)


async def started(config: Mapping[str, object], clock: Clock) -> GreylistAction:
    action = make_greylist_action(config, env(clock))
    await action.start()
    return action


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def greylist(tmp_path: Path, clock: Clock) -> AsyncIterator[GreylistAction]:
    action = await started(settings(tmp_path), clock)
    yield action
    await action.stop()


def request(**attrs: str) -> dict[str, str]:
    return {
        "protocol_state": "RCPT",
        "client_address": "192.0.2.10",
        "client_name": "unknown",
        "sender": "alice@example.com",
        "recipient": "bob@example.org",
        "instance": "1.1",
        **attrs,
    }


async def ask(action: GreylistAction, clock: Clock, argument: str = "", **attrs: str) -> str:
    return await action(argument, request(**attrs), clock.now)


async def test_greylisted_then_the_header_once_then_dunno(
    greylist: GreylistAction, clock: Clock
) -> None:
    assert await ask(greylist, clock, instance="1.1") == GREYLISTED
    clock.now += 299
    assert await ask(greylist, clock, instance="1.2") == GREYLISTED
    clock.now += 1
    header = await ask(greylist, clock, instance="1.3")
    assert header.startswith("PREPEND X-Greylist: delayed 300 seconds by filterd-greylist-")
    assert " at mx.test; " in header
    clock.now += 60
    assert await ask(greylist, clock, instance="1.4") == "DUNNO"


async def test_the_header_once_per_message(greylist: GreylistAction, clock: Clock) -> None:
    for rcpt in ("a@example.org", "b@example.org", "c@example.org"):
        assert (await ask(greylist, clock, recipient=rcpt)).startswith("DEFER_IF_PERMIT 4.2.0 ")
    clock.now += 300
    first = await ask(greylist, clock, recipient="a@example.org", instance="7.1")
    assert first.startswith("PREPEND X-Greylist: ")
    assert await ask(greylist, clock, recipient="b@example.org", instance="7.1") == "DUNNO"
    other = await ask(greylist, clock, recipient="c@example.org", instance="8.1")
    assert other.startswith("PREPEND X-Greylist: ")


@pytest.mark.parametrize("state", ["CONNECT", "EHLO", "END-OF-MESSAGE"])
async def test_no_header_where_the_door_cannot_add_one(
    greylist: GreylistAction, clock: Clock, state: str
) -> None:
    assert await ask(greylist, clock, protocol_state=state) == GREYLISTED
    clock.now += 300
    assert await ask(greylist, clock, protocol_state=state) == "DUNNO"


async def test_whitelists_and_unknown_clients(tmp_path: Path, clock: Clock) -> None:
    clients = tmp_path / "clients"
    clients.write_text("trusted.example\n203.0.113.0/24\n")
    recipients = tmp_path / "recipients"
    recipients.write_text("postmaster@\n")
    action = await started(
        settings(tmp_path, whitelist_clients=[clients], whitelist_recipients=[recipients]), clock
    )
    assert await ask(action, clock, client_name="mx.trusted.example") == "DUNNO"
    assert await ask(action, clock, client_address="203.0.113.77") == "DUNNO"
    assert await ask(action, clock, recipient="postmaster@example.org") == "DUNNO"
    assert await ask(action, clock, client_address="") == "DUNNO"
    assert await ask(action, clock) == GREYLISTED
    await action.stop()


async def test_the_plugins_shared_settings(tmp_path: Path, clock: Clock) -> None:
    config = settings(tmp_path, delay="10m", greylist_action="451", greylist_text="wait %ss")
    action = await started(config, clock)
    assert await ask(action, clock) == "451 4.2.0 wait 600s"
    clock.now += 599
    assert await ask(action, clock) == "451 4.2.0 wait 1s"
    clock.now += 1
    assert (await ask(action, clock)).startswith("PREPEND X-Greylist: delayed 600 seconds ")
    await action.stop()


@pytest.mark.parametrize(("policy", "answer"), [("dunno", "DUNNO"), ("tempfail", "451 4.3.0 ")])
async def test_a_store_that_is_down_follows_on_store_failure(
    tmp_path: Path, clock: Clock, policy: str, answer: str
) -> None:
    with trio.socket.socket() as probe:  # a port nothing listens on
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    state = {"backend": "redis", "url": f"redis://127.0.0.1:{port}/0", "timeout": "1s",
             "on_store_failure": policy}  # fmt: skip
    action = await started(settings(tmp_path, state=state), clock)
    with trio.fail_after(10):
        assert (await ask(action, clock)).startswith(answer)
    await action.stop()


async def test_an_argument_is_refused(greylist: GreylistAction, clock: Clock) -> None:
    assert greylist.check_argument("") is None
    assert greylist.check_argument("  ") is None
    problem = greylist.check_argument("300s")
    assert problem is not None
    assert "greylist() takes no argument" in problem
    assert "actions.greylist" in problem
    assert await ask(greylist, clock, argument="300s") == "451 4.3.5 Server configuration error"


def test_bad_settings_name_the_key_and_the_fix(clock: Clock) -> None:
    with pytest.raises(ValueError, match=r"actions\.greylist\.delay: .*fix: "):
        make_greylist_action({"delay": "soon"}, env(clock))
    with pytest.raises(ValueError, match=r"actions\.greylist\.dealy: "):
        make_greylist_action({"dealy": "5m"}, env(clock))


async def test_installed_as_the_rule_action_greylist(tmp_path: Path, clock: Clock) -> None:
    action = load_rule_action("greylist", settings(tmp_path), env(clock))
    await action.start()
    assert await action("", request(), clock.now) == GREYLISTED
    await action.stop()


def rules_at(clock: Clock) -> type[Rules]:
    class Clocked(Rules):
        clock = staticmethod(lambda: clock.now)

    return Clocked


async def test_the_rules_plugin_greylists_at_rcpt(tmp_path: Path, clock: Clock) -> None:
    config = {
        "rules": [{"recipient_domain": "example.org", "action": "greylist()"}],
        "actions": {"greylist": settings(tmp_path)},
    }
    plugin = rules_at(clock)
    first = await run_plugin(plugin, config, message=MESSAGE, rcpts=["bob@example.org"])
    assert first.reply == Reply(
        450,
        "4.2.0",
        "<bob@example.org>: Recipient address rejected: Greylisted, see "
        "http://postgrey.schweikert.ch/help/example.org.html",
    )
    clock.now += 300
    passed = await run_plugin(plugin, config, message=MESSAGE, rcpts=["bob@example.org"])
    assert passed.reply is None
    (header,) = [e for e in passed.edits if isinstance(e, AddHeader)]
    assert header.name == "X-Greylist"
    assert header.value.startswith("delayed 300 seconds by filterd-greylist-")


async def test_the_rules_plugin_refuses_an_argument_at_start_up(tmp_path: Path) -> None:
    config = {
        "rules": [{"id": "GREY", "sender": "=~ /x/", "action": "greylist(5m)"}],
        "actions": {"greylist": settings(tmp_path)},
    }
    with pytest.raises(ValueError, match=r"greylist\(5m\): greylist\(\) takes no argument"):
        await run_plugin(Rules, config, message=MESSAGE)
