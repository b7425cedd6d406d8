"""Greylisting on filterd's SMTP and LMTP doors: a new triplet gets 450 4.2.0 at RCPT (the
DEFER_IF_PERMIT the chain holds becomes the answer when nothing else refuses), the retry after
the delay is accepted and the delivered message carries the X-Greylist header, once."""

from __future__ import annotations

import re
import smtplib
import time
from pathlib import Path

import pytest

from tests.support.filterd_proc import FilterdFactory
from tests.support.postfix import free_port

pytestmark = [pytest.mark.timeout(60)]

MESSAGE = b"From: alice@example.com\r\nSubject: hello\r\n\r\nHi.\r\n"


@pytest.mark.parametrize("protocol", ["smtp", "lmtp"])
def test_greylisted_at_rcpt_then_delivered_with_the_header(
    filterd_factory: FilterdFactory, tmp_path: Path, protocol: str
) -> None:
    port = free_port()
    filterd_factory(
        f"""
[[listen]]
address = "127.0.0.1:{port}"
protocol = "{protocol}"
hostname = "filterd.test"
[delivery]
method = "maildir"
mailbox_base = "{tmp_path / "mail"}"
mailbox_domains = ["example.org"]
[[chain]]
plugin = "greylist"
[chain.config]
delay = "1s"
hostname = "mx.test"
whitelist_clients = []
whitelist_recipients = []
state = {{ path = "{tmp_path / "greylist.sqlite"}" }}
"""
    )
    client_class = smtplib.LMTP if protocol == "lmtp" else smtplib.SMTP

    def send() -> tuple[list[tuple[int, bytes]], int | None]:
        with client_class("127.0.0.1", port, timeout=30) as client:
            client.ehlo_or_helo_if_needed()
            assert client.mail("alice@example.com")[0] == 250
            replies = [client.rcpt(r) for r in ("bob@example.org", "carol@example.org")]
            if not any(code == 250 for code, _ in replies):
                return replies, None
            code, _ = client.data(MESSAGE)
            if protocol == "lmtp":  # one reply per accepted recipient; smtplib reads the first
                accepted = sum(1 for c, _ in replies if c == 250)
                codes = [code] + [client.getreply()[0] for _ in range(accepted - 1)]
                code = max(codes)
            return replies, code

    replies, _ = send()
    for code, text in replies:
        assert code == 450
        assert text == b"4.2.0 Greylisted, see http://postgrey.schweikert.ch/help/example.org.html"
    time.sleep(2.2)  # the delay runs on the real clock in a filterd process
    replies, data_code = send()
    assert [code for code, _ in replies] == [250, 250]
    assert data_code == 250
    for user in ("bob", "carol"):
        (delivered,) = (tmp_path / "mail" / "example.org" / user / "new").iterdir()
        headers = delivered.read_bytes().split(b"\n\n", 1)[0]
        greylist_lines = [line for line in headers.split(b"\n") if line.startswith(b"X-Greylist:")]
        assert len(greylist_lines) == 1, headers
        # the delay in whole seconds of the real clock: at least the configured one
        assert re.fullmatch(
            rb"X-Greylist: delayed [1-9]\d* seconds by filterd-greylist-\S+ at mx\.test; .+",
            greylist_lines[0],
        ), greylist_lines
