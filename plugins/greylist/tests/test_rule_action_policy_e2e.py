"""The rules plugin's ``greylist()`` behind Postfix's check_policy_service (deploy/postfix's
policy snippet): a new triplet is deferred with 450 4.2.0 (the DEFER_IF_PERMIT defers once
Postfix's permit_mynetworks permits), the retry after the delay is accepted, and the message
delivered to two recipients carries one X-Greylist header (Postfix's PREPEND, once per
message: the second recipient's request has the same ``instance``; the action and the policy
door each send a header only once per message)."""

from __future__ import annotations

import re
import smtplib
import time
from pathlib import Path

import pytest

from tests.support.filterd_proc import FilterdFactory
from tests.support.policy_door import postfix_asking_filterd
from tests.support.postfix import PostfixFactory, postfix_available

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not postfix_available(), reason="Postfix (master) is not installed"),
    pytest.mark.timeout(120),
]

MESSAGE = b"From: alice@example.com\r\nSubject: hello\r\n\r\nHi.\r\n"
RECIPIENTS = ("bob@example.org", "carol@example.org")


def test_greylist_rule_through_the_policy_door(
    postfix_factory: PostfixFactory, filterd_factory: FilterdFactory, tmp_path: Path
) -> None:
    postfix = postfix_asking_filterd(
        postfix_factory,
        filterd_factory,
        f"""
[[chain]]
plugin = "rules"
[chain.config.actions.greylist]
delay = "1s"
hostname = "mx.test"
whitelist_clients = []
whitelist_recipients = []
state = {{ path = "{tmp_path / "greylist.sqlite"}" }}
[[chain.config.rules]]
recipient_domain = "== example.org"
action = "greylist()"
""",
    )

    def send() -> tuple[list[tuple[int, bytes]], int | None]:
        with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=30) as client:
            client.ehlo("client.example")
            assert client.mail("alice@example.com")[0] == 250
            replies = [client.rcpt(r) for r in RECIPIENTS]
            if not any(code == 250 for code, _ in replies):
                return replies, None
            return replies, client.data(MESSAGE)[0]

    replies, _ = send()
    for (code, text), rcpt in zip(replies, RECIPIENTS, strict=True):
        assert code == 450
        assert (
            text
            == (
                f"4.2.0 <{rcpt}>: Recipient address rejected: Greylisted, see "
                "http://postgrey.schweikert.ch/help/example.org.html"
            ).encode()
        )
    time.sleep(2.2)  # the delay runs on the real clock in a filterd process
    replies, data_code = send()
    assert [code for code, _ in replies] == [250, 250]
    assert data_code == 250
    for rcpt in RECIPIENTS:
        (delivered,) = postfix.wait_for_delivered(1, rcpt)
        headers = delivered.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
        lines = [line for line in headers.split(b"\n") if line.startswith(b"X-Greylist:")]
        assert len(lines) == 1, headers
        assert re.fullmatch(
            rb"X-Greylist: delayed [1-9]\d* seconds by filterd-greylist-\S+ at mx\.test; .+",
            lines[0],
        ), lines
