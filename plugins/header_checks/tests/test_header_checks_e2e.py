"""header_checks through the real Postfix content-filter loop (Postfix → filterd → Postfix)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.filterd_proc import FilterdFactory, filterd_config
from tests.support.postfix import PostfixFactory, PostfixInstance, free_port, postfix_available

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not postfix_available(), reason="Postfix (master) is not installed"),
    pytest.mark.timeout(120),
]

SENDER = "sender@example.org"
TABLE = """\
# the seed: hide the sender's IP and mail client on outgoing mail
/^Received: .*/     IGNORE
/^User-Agent: .*/   IGNORE
/^Subject: .*reject me/   REJECT 5.7.1 Content refused by policy
/^Subject: .*hold me/     HOLD held for review
/^Subject: .*discard me/  DISCARD dropped by policy
"""


def message(subject: str) -> bytes:
    return (
        b"From: Alice <alice@example.net>\r\n"
        b"To: bob@example.org\r\n"
        b"Subject: " + subject.encode() + b"\r\n"
        b"User-Agent: Mutt/2.2.9\r\n"
        b"Message-ID: <hc-" + subject.replace(" ", "-").encode() + b"@example.net>\r\n"
        b"\r\n"
        b"body\r\n"
    )


def loop(
    postfix_factory: PostfixFactory, filterd_factory: FilterdFactory, tmp_path: Path
) -> tuple[PostfixInstance, Path]:
    table = tmp_path / "header_checks"
    table.write_text(TABLE)
    quarantine = tmp_path / "quarantine"
    port = free_port()
    postfix = postfix_factory(content_filter="smtp", filter_port=port)
    config = filterd_config(
        listen=f"127.0.0.1:{port}", next_hop=f"127.0.0.1:{postfix.reinject_port}"
    )
    config += f"""
[quarantine]
root = "{quarantine}"

[[chain]]
plugin = "header_checks"
config = {{ header_checks = ["regexp:{table}"] }}
"""
    filterd_factory(config)
    return postfix, quarantine


def test_seed_rules_strip_received_and_user_agent(
    postfix_factory: PostfixFactory, filterd_factory: FilterdFactory, tmp_path: Path
) -> None:
    postfix, _ = loop(postfix_factory, filterd_factory, tmp_path)
    postfix.send_smtp(message("hello"), SENDER, ["bob@example.org"], helo="client.example.net")
    (delivered,) = postfix.wait_for_delivered(1, "bob@example.org")
    head = delivered.split(b"\n\n", 1)[0]
    received = re.findall(rb"^Received:", head, re.MULTILINE)
    # Only the reinjection smtpd's own Received: is left; the client's IP is gone.
    assert len(received) == 1
    assert b"client.example.net" not in head
    assert b"User-Agent" not in head
    assert b"Subject: hello" in head


def test_reject_is_5xx_and_postfix_bounces(
    postfix_factory: PostfixFactory, filterd_factory: FilterdFactory, tmp_path: Path
) -> None:
    postfix, _ = loop(postfix_factory, filterd_factory, tmp_path)
    postfix.send_smtp(message("please reject me"), SENDER, ["bob@example.org"])
    postfix.wait_for_log(
        r"to=<bob@example\.org>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:\d+,.*status=bounced "
        r"\(host 127\.0\.0\.1\[127\.0\.0\.1\] said: 550 5\.7\.1 Content refused by policy"
    )
    (bounce,) = postfix.wait_for_delivered(1, SENDER)
    assert b"Content refused by policy" in bounce
    assert postfix.delivered_messages("bob@example.org") == []


def test_hold_lands_in_quarantine_and_discard_drops_with_250(
    postfix_factory: PostfixFactory, filterd_factory: FilterdFactory, tmp_path: Path
) -> None:
    postfix, quarantine = loop(postfix_factory, filterd_factory, tmp_path)
    postfix.send_smtp(message("hold me"), SENDER, ["bob@example.org"])
    postfix.send_smtp(message("discard me"), SENDER, ["bob@example.org"])
    postfix.wait_for_empty_queue()
    log = postfix.log_text()
    assert len(re.findall(r"to=<bob@example\.org>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:\d+,"
                          r".*status=sent \(250 2\.0\.0 Ok: queued as", log)) == 2  # fmt: skip
    (held,) = list((quarantine / "new").iterdir())
    content = held.read_bytes()
    assert b"X-Filterd-Quarantine-Meta: {" in content  # the record: reason, envelope, ...
    assert b'"reason": "held for review"' in content
    assert b'"queue_id": "' in content
    assert b'"recipients": [{"address": "bob@example.org"' in content
    assert b"Subject: hold me" in content
    assert postfix.delivered_messages("bob@example.org") == []
    assert postfix.delivered_messages(SENDER) == []  # no bounce
