"""filterd as Postfix's milter (smtpd_milters), end to end with a real smtpd and a real queue,
configured from deploy/postfix/main.cf.milter.snippet."""

from __future__ import annotations

import re
import smtplib
import time

import pytest

from tests.support.filterd_proc import FilterdFactory
from tests.support.postfix import PostfixFactory, free_port, milter_main_cf, postfix_available

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not postfix_available(), reason="Postfix (master) is not installed"),
    pytest.mark.timeout(120),
]

pytest.importorskip("Milter", reason="pymilter (the milter extra) is not installed")


def filterd_milter_config(port: int) -> str:
    return f"""
[[listen]]
address = "127.0.0.1:{port}"
protocol = "milter"
[delivery]
method = "maildir"
[[chain]]
plugin = "example_tagger"
config = {{ refuse_prefix = "forged" }}
[[chain]]
plugin = "header_checks"
config = {{ rules = [
    '/^User-Agent: .*/ IGNORE',
    '/^Subject: hold me/ HOLD held by header_checks',
] }}
"""


MESSAGE = (
    b"From: alice@example.net\r\n"
    b"To: good@example.org\r\n"
    b"Subject: through the milter\r\n"
    b"User-Agent: Leaky/1.0\r\n"
    b"\r\n"
    b"body line\r\n"
)


def test_milter_refuses_at_rcpt_and_edits_the_delivered_message(
    postfix_factory: PostfixFactory, filterd_factory: FilterdFactory
) -> None:
    port = free_port()
    filterd = filterd_factory(filterd_milter_config(port))
    postfix = postfix_factory(main_cf_extra=milter_main_cf(port))
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=30) as client:
        client.ehlo("client.example.net")
        assert client.mail("alice@example.net")[0] == 250
        code, text = client.rcpt("forged@example.org")
        assert (code, text) == (550, b"5.7.1 <forged@example.org>: refused by example_tagger")
        assert client.rcpt("good@example.org")[0] == 250
        code, text = client.data(MESSAGE)
        assert code == 250, text
    [delivered] = postfix.wait_for_delivered(1, "good@example.org")
    head = delivered.split(b"\n\n", 1)[0] + b"\n"
    assert b"\nX-Example-Tag: tagged\n" in head
    assert b"User-Agent" not in head  # removed by header_checks through the milter
    assert b"Subject: through the milter\n" in head
    postfix.wait_for_log(
        r"NOQUEUE: milter-reject: RCPT from \S+: 550 5\.7\.1 <forged@example\.org>"
    )
    assert postfix.delivered_messages("forged@example.org") == []
    log = filterd.output_text()
    assert "connect from unknown[127.0.0.1]" in log  # smtpd_peername_lookup = no
    assert re.search(r"[0-9A-F]{6,}: from=<alice@example\.net>, size=\d+, nrcpt=1", log), log


def test_quarantine_goes_to_the_hold_queue(
    postfix_factory: PostfixFactory, filterd_factory: FilterdFactory
) -> None:
    port = free_port()
    filterd_factory(filterd_milter_config(port))
    postfix = postfix_factory(main_cf_extra=milter_main_cf(port))
    refused = postfix.send_smtp(
        b"Subject: hold me\r\nUser-Agent: Leaky/1.0\r\n\r\nhold this\r\n",
        "alice@example.net",
        ["good@example.org"],
    )
    assert refused == {}
    postfix.wait_for_log(r"milter-hold: END-OF-MESSAGE from \S+: milter triggers HOLD action")
    queue = postfix.queue_json()
    assert [entry["queue_name"] for entry in queue] == ["hold"]
    assert postfix.delivered_messages() == []


WAIT = 60.0  # for every process's milter to listen
MAX_SENT = 60  # messages at most, until two processes have taken a connection


def test_several_processes_serve_and_stop(
    postfix_factory: PostfixFactory, filterd_factory: FilterdFactory
) -> None:
    port = free_port()
    filterd = filterd_factory(
        filterd_milter_config(port).replace("\n[delivery]", "\nprocesses = 3\n[delivery]")
    )
    postfix = postfix_factory(main_cf_extra=milter_main_cf(port))
    # Every process's libmilter waits on the one socket once it logs "milter listening on";
    # which one takes a connection is the kernel's choice: send until two have (bounded).
    deadline = time.monotonic() + WAIT
    while filterd.output_text().count("milter listening on") < 3:
        assert time.monotonic() < deadline, filterd.output_text()
        time.sleep(0.01)
    sent = 0
    served: set[str] = set()
    while sent < 12 or (len(served) < 2 and sent < MAX_SENT):
        # one SMTP session, so one milter connection, each
        assert postfix.send_smtp(MESSAGE, "alice@example.net", [f"r{sent}@example.org"]) == {}
        sent += 1
        served = set(re.findall(r"filterd/milter\[(\d+)\]: connect from ", filterd.output_text()))
    delivered = postfix.wait_for_delivered(sent)
    assert all(b"\nX-Example-Tag: tagged\n" in message for message in delivered)
    assert all(b"User-Agent" not in message.split(b"\n\n", 1)[0] for message in delivered)
    log = filterd.output_text()
    assert len(served) >= 2, f"one process took all {sent} connections:\n{log}"
    assert filterd.stop(sweep=False) == 0
    assert filterd.output_text().count("milter stopped") == 3
