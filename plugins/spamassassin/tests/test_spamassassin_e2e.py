"""spamassassin through the real Postfix content-filter loop (Postfix → filterd → Postfix), with
a real spamd."""

from __future__ import annotations

import re

import pytest

from tests.support.data import MAIL_CORPUS
from tests.support.filterd_proc import FilterdFactory, filterd_config
from tests.support.postfix import PostfixFactory, free_port, postfix_available
from tests.support.spamd import GTUBE, SpamdInstance, spamd_installed

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not postfix_available(), reason="Postfix (master) is not installed"),
    pytest.mark.skipif(not spamd_installed(), reason="spamd is not installed"),
    pytest.mark.timeout(120),
]

SENDER = "sender@example.org"
HAM = MAIL_CORPUS / "msg_01.txt"


def spam() -> bytes:
    return (
        b"From: Spammer <spammer@example.net>\r\n"
        b"To: bob@example.org\r\n"
        b"Subject: cheap watches\r\n"
        b"Message-ID: <gtube-e2e@example.net>\r\n"
        b"\r\n"
        b"Buy now.\r\n" + GTUBE.encode() + b"\r\n"
    )


def test_gtube_bounces_and_ham_is_delivered_tagged(
    postfix_factory: PostfixFactory,
    filterd_factory: FilterdFactory,
    spamd: SpamdInstance,
) -> None:
    port = free_port()
    postfix = postfix_factory(content_filter="smtp", filter_port=port)
    config = filterd_config(
        listen=f"127.0.0.1:{port}", next_hop=f"127.0.0.1:{postfix.reinject_port}"
    )
    config += f"""
[[chain]]
plugin = "spamassassin"
timeout = "20s"
on_error = "tempfail"
config = {{ address = "{spamd.host}:{spamd.port}", max_connections = {spamd.children}, \
reject_score = 20, reject_text = "Spam is not accepted here" }}
"""
    filterd_factory(config)

    postfix.send_smtp(spam(), SENDER, ["bob@example.org"])
    postfix.wait_for_log(
        r"to=<bob@example\.org>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:\d+,.*status=bounced "
        r"\(host 127\.0\.0\.1\[127\.0\.0\.1\] said: 550 5\.7\.1 Spam is not accepted here"
    )
    (bounce,) = postfix.wait_for_delivered(1, SENDER)
    assert b"Spam is not accepted here" in bounce

    postfix.send_smtp(HAM.read_bytes(), SENDER, ["bob@example.org"])
    (delivered,) = postfix.wait_for_delivered(1, "bob@example.org")
    head = delivered.split(b"\n\n", 1)[0]
    assert re.search(rb"^X-Spam-Status: No, score=-?\d+\.\d required=5\.0 tests=", head, re.M)
    assert b"X-Spam-Flag" not in head
    assert b"Subject: This is a test message" in head
    assert delivered.endswith(b"Do you like this message?\n\n-Me\n")
