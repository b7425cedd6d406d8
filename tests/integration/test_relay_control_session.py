"""Relay control in the session shell, on memory streams: a client that may not relay is
refused before the chain sees the recipient, and the refusal is logged as Postfix logs it."""

from __future__ import annotations

import logging

import pytest
import trio

from filterd.chain.registry import stages_of
from filterd.chain.runner import ChainRunner, Entry
from filterd.config.schema import ChainEntryConfig
from filterd.maillog import MailLog
from filterd.model.envelope import Recipient, Transaction
from filterd.sdk import Continue, OnRcpt, Plugin, PluginConfig, PluginEnv, Verdict
from tests.support.fakes import DELIVERED, ScriptedDelivery
from tests.support.session import make_config, session


class SeenConfig(PluginConfig):
    pass


class SeenRcpts(Plugin[SeenConfig], OnRcpt):
    name = "seen_rcpts"
    Config = SeenConfig

    def __init__(self, config: SeenConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        self.seen: list[str] = []

    async def on_rcpt(self, t: Transaction, rcpt: Recipient) -> Verdict:
        self.seen.append(rcpt.address)
        return Continue()


def recording_chain() -> tuple[ChainRunner, SeenRcpts]:
    plugin = SeenRcpts(SeenConfig(), PluginEnv("seen", MailLog("seen"), trio.CapacityLimiter(1)))
    entry = Entry(
        ChainEntryConfig(plugin="seen_rcpts"),
        plugin,
        trio.CapacityLimiter(10),
        frozenset(stages_of(SeenRcpts)),
    )
    return ChainRunner([entry]), plugin


async def test_refused_before_the_chain(caplog: pytest.LogCaptureFixture) -> None:
    chain, plugin = recording_chain()
    delivery = ScriptedDelivery()
    config = make_config()
    listen = config.listen[0].model_copy(update={"relay_domains": ("example.org",)})
    config = config.model_copy(update={"listen": (listen,)})
    with caplog.at_level(logging.INFO, logger="filterd.smtpd"):
        async with session(delivery, config, chain, relay_allowed=False) as client:
            assert (await client.line()).startswith("220 ")
            await client.send_lines("EHLO client.example")
            await client.reply()
            await client.send_lines(
                "MAIL FROM:<a@example.com>",
                "RCPT TO:<x@elsewhere.example>",
                "RCPT TO:<b@example.org>",
                "RCPT TO:<y@elsewhere.example>",
                "DATA",
            )
            answers = [await client.code() for _ in range(5)]
            assert answers[1:4] == [
                "554 5.7.1 <x@elsewhere.example>: Relay access denied",
                "250 2.1.5 Ok",
                "554 5.7.1 <y@elsewhere.example>: Relay access denied",
            ]
            await client.send(b"Subject: x\r\n\r\nhi\r\n.\r\n")
            assert await client.code() == str(DELIVERED)
    assert plugin.seen == ["b@example.org"]
    assert delivery.messages[0].recipients == ["b@example.org"]
    rejects = [r.getMessage() for r in caplog.records if "reject: RCPT" in r.getMessage()]
    assert rejects[0] == (
        "NOQUEUE: reject: RCPT from client.example[192.0.2.10]: 554 5.7.1 <x@elsewhere.example>: "
        "Relay access denied; from=<a@example.com> to=<x@elsewhere.example> proto=ESMTP "
        "helo=<client.example>"
    )
    queue_id = rejects[1].partition(":")[0]
    assert len(queue_id) == 10
    assert rejects[1].startswith(f"{queue_id}: reject: RCPT from client.example[192.0.2.10]")


async def test_a_client_that_may_relay_goes_to_the_chain() -> None:
    chain, plugin = recording_chain()
    async with session(ScriptedDelivery(), make_config(), chain) as client:
        assert (await client.line()).startswith("220 ")
        await client.send_lines("EHLO client.example")
        await client.reply()
        await client.send_lines("MAIL FROM:<a@example.com>", "RCPT TO:<x@elsewhere.example>")
        assert [await client.code() for _ in range(2)][1] == "250 2.1.5 Ok"
    assert plugin.seen == ["x@elsewhere.example"]
