"""The guide's example (docs/plugins.md, "rules: ..."): the time-aware grey- and
blacklisting rules are valid settings and answer as the comments say, with a stand-in for the
greylist package's rule action, at set times in the example's time zone."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from filterd_rules import config as rules_config
from filterd_rules.config import RulesConfig, build_rules
from filterd_rules.engine import Engine
from filterd_rules.postfwd_syntax import parse_postfwd

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


async def ask(settings: dict[str, Any], when: datetime, **attrs: str) -> str:
    config = RulesConfig.model_validate(settings["chain"][0]["config"])
    rules = build_rules(config)
    specs = {t.table for r in rules for c in r.conditions for t in c.tests if t.table}
    tables = {spec: open_table(spec) for spec in specs}
    engine = Engine(rules, tables, {"greylist": Greylist()}, config.scores, BERLIN)
    request = {"client_address": "203.0.113.5", "sender": "a@example.org", **attrs}
    return (await engine.decide(request, when.timestamp())).action


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
