"""filterd.testing as a plugin author uses it: what a stage decided and what the plugin returned,
config errors as the CLI shows them, plugin instances, tracebacks in the captured log."""

from __future__ import annotations

import pytest

from filterd.sdk import (
    AddHeader,
    ConfigError,
    Continue,
    Field,
    Finding,
    MessageView,
    OnMailFrom,
    OnMessage,
    OnRcpt,
    Plugin,
    PluginConfig,
    Recipient,
    Reject,
    Reply,
    Transaction,
    Verdict,
    field_validator,
)
from filterd.testing import PluginError, make_plugin, run_plugin, validate_config

MESSAGE = b"Subject: hi\r\n\r\nbody\r\n"


class TagConfig(PluginConfig):
    header: str = Field(default="X-Tag", description="The header added.")
    fail: bool = False

    @field_validator("header")
    @classmethod
    def _no_colon(cls, value: str) -> str:
        if ":" in value:
            raise ValueError(f'a header name has no colon, got "{value}"')
        return value


class Tag(Plugin[TagConfig], OnMailFrom, OnMessage):
    name = "tag"
    Config = TagConfig

    async def on_mail_from(self, t: Transaction) -> Verdict:
        return Continue(findings=(Finding("tag.mail"),))

    async def on_message(self, t: Transaction, message: MessageView) -> Verdict:
        if self.config.fail:
            raise RuntimeError("tag broke")
        return Continue(edits=(AddHeader(self.config.header, "yes"),))


async def test_decision_is_the_stage_and_returned_is_the_plugin() -> None:
    result = await run_plugin(Tag, {}, message=MESSAGE)
    # Nothing decided on_message: the chain's decision is a bare Continue ...
    assert result.decision("on_message") == Continue()
    # ... while the plugin returned its edit, which the result also accumulates.
    assert result.returned("on_message") == Continue(edits=(AddHeader("X-Tag", "yes"),))
    assert result.returned("on_message", "tag") == result.returned("on_message")
    assert result.returned("on_mail_from") == Continue(findings=(Finding("tag.mail"),))
    assert result.edits == [AddHeader("X-Tag", "yes")]
    with pytest.raises(LookupError, match="was not called at on_rcpt"):
        result.returned("on_rcpt")
    with pytest.raises(LookupError, match="other was not called at on_message"):
        result.returned("on_message", "other")


async def test_returned_names_the_error_of_a_plugin_that_raised() -> None:
    result = await run_plugin(Tag, {"fail": True}, message=MESSAGE)
    with pytest.raises(AssertionError, match="tag returned nothing at on_message: RuntimeError"):
        result.returned("on_message")
    assert result.results[-1].error == "RuntimeError: tag broke"
    # The traceback is in the captured log, once, with the plugin's own frame in it.
    (logged,) = [line for line in result.log if "Traceback" in line]
    assert (
        "tag: on_message raised (traceback once per incident), error=RuntimeError: tag broke"
        in logged
    )
    assert 'raise RuntimeError("tag broke")' in logged


class PerRcpt(Plugin[PluginConfig], OnRcpt):
    name = "per_rcpt"

    async def on_rcpt(self, t: Transaction, rcpt: Recipient) -> Verdict:
        if rcpt.address.startswith("no"):
            return Reject(Reply(550, "5.7.1", "no"))
        return Continue()


async def test_returned_per_recipient() -> None:
    result = await run_plugin(PerRcpt, message=MESSAGE, rcpts=["no@x.example", "yes@x.example"])
    assert result.returned("on_rcpt", rcpt="no@x.example") == Reject(Reply(550, "5.7.1", "no"))
    assert result.returned("on_rcpt") == Continue()  # the last recipient's


async def test_bad_settings_are_a_config_error_as_the_cli_shows_it() -> None:
    with pytest.raises(ConfigError) as info:
        await run_plugin(Tag, {"headr": "X-A", "header": "X-B:"}, message=MESSAGE)
    assert [str(problem) for problem in info.value.problems] == [
        '<settings of Tag>: config.header: a header name has no colon, got "X-B:"',
        '<settings of Tag>: config.headr: unknown key "headr" '
        "(fix: did you mean header? valid keys here: header, fail)",
    ]
    with pytest.raises(ConfigError, match=r"config\.fail: expected true or false"):
        validate_config(Tag, {"fail": "maybe"})
    with pytest.raises(ConfigError, match="on_error"):
        await run_plugin(Tag, {}, message=MESSAGE, on_error="explode")


async def test_make_plugin_validates_and_gives_an_environment() -> None:
    plugin = make_plugin(Tag, {"header": "X-Made"})
    assert plugin.config == TagConfig(header="X-Made")
    assert plugin.env.name == "tag"
    plugin.env.log.info("seen")  # a working logger
    with pytest.raises(ConfigError, match=r"config\.header"):
        make_plugin(Tag, {"header": "X:"})


async def test_a_plugin_class_without_a_name_is_told_what_to_add() -> None:
    class Nameless(Plugin[PluginConfig], OnMailFrom):
        async def on_mail_from(self, t: Transaction) -> Verdict:
            return Continue()

    message = r'plugin class .*Nameless has no name: add name = "\.\.\." to the class'
    with pytest.raises(PluginError, match=message):
        await run_plugin(Nameless, message=MESSAGE)
