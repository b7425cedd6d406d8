"""The guide's example (docs/plugins.md, "rules: ..."): the time-aware grey- and
blacklisting rules are valid settings and answer as the comments say, at set times in the
example's time zone: with a stand-in for the greylist package's rule action, and with the real
one (its state in a temporary SQLite file, no whitelist files), greylisting and passing."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import trio
from filterd_rules import config as rules_config
from filterd_rules.config import RulesConfig, build_rules
from filterd_rules.engine import Engine
from filterd_rules.postfwd_syntax import parse_postfwd

from filterd.sdk import MailLog, PluginEnv
from filterd.sdk.rule_actions import RuleAction, load_rule_action
from filterd.sdk.tables import open_table

GUIDE = Path(__file__).resolve().parents[3] / "docs" / "plugins.md"
BERLIN = ZoneInfo("Europe/Berlin")


def section() -> str:
    text = GUIDE.read_text()
    start = text.index("### rules: ")
    end = text.find("\n### ", start + 1)
    return text[start : end if end != -1 else len(text)]


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", section(), re.DOTALL)


class Greylist:
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def __call__(self, argument: str, request: Mapping[str, str], now: float) -> str:
        return "DEFER_IF_PERMIT 4.2.0 Greylisted"


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    blacklist = tmp_path / "sender_blacklist"
    blacklist.write_text("spammer@example.org REJECT\n")
    text = blocks("toml")[0].replace("hash:/etc/postfix/sender_blacklist", f"texthash:{blacklist}")
    monkeypatch.setattr(rules_config, "installed_rule_actions", lambda: {"greylist": "stand-in"})
    return tomllib.loads(text)


def engine(settings: dict[str, Any], greylist: RuleAction) -> Engine:
    config = RulesConfig.model_validate(settings["chain"][0]["config"])
    rules = build_rules(config)
    specs = {t.table for r in rules for c in r.conditions for t in c.tests if t.table}
    tables = {spec: open_table(spec) for spec in specs}
    return Engine(rules, tables, {"greylist": greylist}, config.scores, BERLIN)


async def ask(settings: dict[str, Any], when: datetime, **attrs: str) -> str:
    request = {"client_address": "203.0.113.5", "sender": "a@example.org", **attrs}
    return (await engine(settings, Greylist()).decide(request, when.timestamp())).action


TUESDAY_NOON = datetime(2026, 6, 2, 12, 0, tzinfo=BERLIN)
TUESDAY_NIGHT = datetime(2026, 6, 2, 23, 0, tzinfo=BERLIN)
SATURDAY_NOON = datetime(2026, 6, 6, 12, 0, tzinfo=BERLIN)


@pytest.mark.parametrize(
    ("when", "attrs", "action"),
    [
        (TUESDAY_NIGHT, {"client_address": "192.0.2.9"}, "DUNNO"),
        (TUESDAY_NOON, {"sender": "spammer@example.org"}, "REJECT 5.7.1 sender blacklisted"),
        (TUESDAY_NOON, {"sender": "news@bulk.example.net"}, "450 4.7.1 not during office hours"),
        (TUESDAY_NIGHT, {"sender": "news@bulk.example.net"}, "DEFER_IF_PERMIT 4.2.0 Greylisted"),
        (TUESDAY_NOON, {"recipient": "intern-joe@example.com"}, "DUNNO"),
        (
            SATURDAY_NOON,
            {"recipient": "intern-joe@example.com"},
            "DEFER_IF_PERMIT 4.7.1 mailbox closed at weekends",
        ),
        (SATURDAY_NOON, {"recipient": "joe@example.com"}, "DEFER_IF_PERMIT 4.2.0 Greylisted"),
        (
            TUESDAY_NOON,
            {"recipient": "sales@example.com", "sender": "x@GMAIL.com"},
            "DEFER_IF_PERMIT 4.2.0 Greylisted",
        ),
        (TUESDAY_NOON, {"recipient": "sales@example.com"}, "DUNNO"),
        (
            TUESDAY_NOON,
            {"recipient": "no-reply@example.com", "sender": ""},
            "REJECT this address sends, it does not receive",
        ),
    ],
)
async def test_the_guides_example(
    example: dict[str, Any], when: datetime, attrs: dict[str, str], action: str
) -> None:
    assert await ask(example, when, **attrs) == action


def test_the_postfwd_form_reads() -> None:
    (cf,) = re.findall(r"```\n(id=TRUSTED.*?)```", section(), re.DOTALL)
    rules = parse_postfwd(cf, "guide")
    assert [r.id for r in rules] == ["TRUSTED", "BULK_OFFICE_HOURS", "GREY_NIGHT"]


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_the_guides_example_with_the_greylist_package(tmp_path: Path) -> None:
    blacklist = tmp_path / "sender_blacklist"
    blacklist.write_text("spammer@example.org REJECT\n")
    text = blocks("toml")[0].replace("hash:/etc/postfix/sender_blacklist", f"texthash:{blacklist}")
    settings = tomllib.loads(text)
    greylist_settings = settings["chain"][0]["config"]["actions"]["greylist"]
    assert greylist_settings == {"delay": "300s"}
    greylist_settings.update(
        state={"path": str(tmp_path / "greylist.sqlite")},
        whitelist_clients=[],
        whitelist_recipients=[],
        hostname="mx.test",
    )
    clock = Clock()
    env = PluginEnv("rules", MailLog("rules"), trio.CapacityLimiter(2), clock)
    action = load_rule_action("greylist", greylist_settings, env)
    await action.start()
    rules = engine(settings, action)

    async def answer(when: datetime, **attrs: str) -> str:
        clock.now = when.timestamp()
        request = {
            "protocol_state": "RCPT",
            "client_address": "203.0.113.5",
            "client_name": "mail.example.net",
            "sender": "news@bulk.example.net",
            "recipient": "joe@example.com",
            "instance": f"{when.timestamp()}",
            **attrs,
        }
        return (await rules.decide(request, clock.now)).action

    greylisted = (
        "DEFER_IF_PERMIT 4.2.0 Greylisted, see http://postgrey.schweikert.ch/help/example.com.html"
    )
    header = "PREPEND X-Greylist: delayed 300 seconds by filterd-greylist-"
    minutes = timedelta(minutes=1)
    try:
        # at night the bulk mailer is greylisted, passes 5 minutes later, then goes through
        assert await answer(TUESDAY_NIGHT) == greylisted
        assert await answer(TUESDAY_NIGHT + 4 * minutes) == greylisted
        assert (await answer(TUESDAY_NIGHT + 5 * minutes)).startswith(header)
        assert await answer(TUESDAY_NIGHT + 6 * minutes) == "DUNNO"
        # a trusted client is never greylisted; a new triplet at noon on a Tuesday neither
        assert await answer(TUESDAY_NIGHT, client_address="192.0.2.9") == "DUNNO"
        assert await answer(TUESDAY_NOON, sender="a@example.org") == "DUNNO"
        # in office hours the bulk mailer is refused before any greylisting
        refused = await answer(TUESDAY_NOON, recipient="ann@example.com")
        assert refused == "450 4.7.1 not during office hours"
        # at weekends everyone is greylisted; free mail to sales at any time
        assert await answer(SATURDAY_NOON, sender="a@example.org") == greylisted
        sales = {"recipient": "sales@example.com", "sender": "x@gmail.com"}
        assert await answer(TUESDAY_NOON, **sales) == greylisted
        assert (await answer(TUESDAY_NOON + 5 * minutes, **sales)).startswith(header)
    finally:
        await action.stop()
