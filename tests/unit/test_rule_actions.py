"""filterd.sdk.rule_actions: rule actions found by entry point, made with their settings."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import EntryPoint

import pytest
import trio
from pydantic import ValidationError

from filterd.maillog import MailLog
from filterd.sdk import PluginEnv, rule_actions
from filterd.sdk.rule_actions import (
    ENTRY_POINT_GROUP,
    argument_problem,
    installed_rule_actions,
    load_rule_action,
)


class Echo:
    def __init__(self, settings: Mapping[str, object]) -> None:
        self.settings = settings

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def __call__(self, argument: str, request: Mapping[str, str], now: float) -> str:
        return f"REJECT {argument} {self.settings['word']}"


def make_echo(settings: Mapping[str, object], env: PluginEnv) -> Echo:
    return Echo(settings)


@pytest.fixture
def echo_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    point = EntryPoint("echo", f"{__name__}:make_echo", ENTRY_POINT_GROUP)

    def entry_points(*, group: str) -> list[EntryPoint]:
        return [point] if group == ENTRY_POINT_GROUP else []

    monkeypatch.setattr(rule_actions, "entry_points", entry_points)


def env() -> PluginEnv:
    return PluginEnv("rules", MailLog("rules"), trio.CapacityLimiter(1))


@pytest.mark.usefixtures("echo_installed")
async def test_an_installed_action_is_made_with_its_settings() -> None:
    assert installed_rule_actions() == {"echo": f"{__name__}:make_echo"}
    action = load_rule_action("echo", {"word": "bye"}, env())
    assert await action("x", {}, 0.0) == "REJECT x bye"


@pytest.mark.usefixtures("echo_installed")
def test_a_missing_action_says_what_is_installed() -> None:
    with pytest.raises(LookupError, match=r"greylist\(\) is not installed .*echo"):
        load_rule_action("greylist", {}, env())


class Picky(Echo):
    def check_argument(self, argument: str) -> str | None:
        return None if argument == "ok" else "say ok"


def test_an_action_checks_arguments_only_when_it_says_how() -> None:
    assert argument_problem(Echo({}), "anything") is None
    assert argument_problem(Picky({}), "ok") is None
    assert argument_problem(Picky({}), "no") == "say ok"


@pytest.mark.usefixtures("echo_installed")
def test_settings_without_a_declared_model_are_left_to_the_factory() -> None:
    rule_actions.check_action_settings({"echo": {"anything": 1}}, at=("actions",))
    with pytest.raises(ValidationError) as caught:
        rule_actions.check_action_settings({"ecko": {}}, at=("actions",))
    (error,) = caught.value.errors()
    assert error["loc"] == ("actions", "ecko")
    assert "did you mean echo?" in error["ctx"]["hint"]
