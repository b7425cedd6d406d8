"""A mynetworks table in the SMTP session: when it cannot answer, a recipient outside
relay_domains gets 451 4.3.0 (try again), never the 554 of a client that may not relay, and
one in relay_domains is still accepted; the handler logs the failure."""

from __future__ import annotations

import logging
from ipaddress import IPv4Address

import pytest

from filterd.frontdoors.smtp.handler import SmtpHandler
from filterd.frontdoors.smtp.relay_control import DomainList, Networks, RelayControl
from filterd.frontdoors.smtp.session import SessionSettings
from filterd.sdk.tables import Table, TableFailure, TableSettings
from tests.support.fakes import DELIVERED, ScriptedDelivery
from tests.support.session import make_config, session


class BrokenTable(Table):
    async def lookup(self, key: str) -> str | None:
        raise TableFailure(self.name, "server down")


async def test_undecided_relay_defers_only_what_relaying_needs() -> None:
    config = make_config()
    listen = config.listen[0].model_copy(update={"relay_domains": ("example.org",)})
    config = config.model_copy(update={"listen": (listen,)})
    delivery = ScriptedDelivery()
    async with session(delivery, config, relay_allowed=None) as client:
        assert (await client.line()).startswith("220 ")
        await client.send_lines("EHLO client.example")
        await client.reply()
        await client.send_lines(
            "MAIL FROM:<a@example.com>",
            "RCPT TO:<x@elsewhere.example>",
            "RCPT TO:<b@example.org>",
            "DATA",
        )
        answers = [await client.code() for _ in range(4)]
        assert answers[1:3] == [
            "451 4.3.0 <x@elsewhere.example>: Temporary lookup failure",
            "250 2.1.5 Ok",
        ]
        await client.send(b"Subject: x\r\n\r\nhi\r\n.\r\n")
        assert await client.code() == str(DELIVERED)
    assert delivery.messages[0].recipients == ["b@example.org"]


async def test_handler_turns_a_table_failure_into_undecided(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = make_config()
    settings = SessionSettings(config.listen[0], config.limits)
    broken = BrokenTable("mysql:/etc/postfix/mynetworks.cf", TableSettings())
    relay = RelayControl(False, Networks((), (broken,)), DomainList.of([]))
    object.__setattr__(settings, "relay", relay)
    handler = SmtpHandler.__new__(SmtpHandler)
    handler.settings = settings
    with caplog.at_level(logging.WARNING, logger="filterd.smtpd"):
        assert await handler._relay_allowed(IPv4Address("203.0.113.5")) is None
        assert await handler._relay_allowed(None) is True
    assert any(
        "mynetworks lookup of 203.0.113.5: table mysql:/etc/postfix/mynetworks.cf: query error: "
        "server down" in record.getMessage()
        for record in caplog.records
    )
