"""The pipe(8) door end to end: a private Postfix whose inbound smtpd filters through a pipe
transport running ``filterd pipe`` as nobody (master.cf as docs/deploy.md writes it), filterd
handing messages on to its configured next hop, Postfix's reinjection smtpd
(tests/support/pipe_door.py says why not through sendmail here). What Postfix's queue and log
show:

- a message the chain passes is delivered once, with the chain's edits;
- a message the chain rejects is bounced with the chain's reason and enhanced status code
  (pipe(8) takes them from filterd's output), and the sender gets the bounce;
- a message the chain cannot check (spamd down: the plugin fails, ``on_error = "tempfail"``)
  is deferred with filterd's reason, stays in the queue, and once spamd answers it is
  delivered, once.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from email.message import EmailMessage

import pytest

from tests.support.pipe_door import filterd_command, postfix_with_pipe
from tests.support.postfix import PostfixInstance, free_port, make_base_dir, postfix_available
from tests.support.spamd import running_spamd, spamd_installed

pytestmark = [
    pytest.mark.skipif(not postfix_available(), reason="Postfix (master) is not installed"),
    pytest.mark.skipif(not spamd_installed(), reason="spamd is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="pipe(8) runs the command as another user"),
]

SENDER = "alice@example.net"
TIMEOUT = 60.0


def _config(spamd_port: int, next_hop: int) -> str:
    return f"""\
[log]
level = "info"

[pipe]
deliver_to = "delivery"

[delivery]
method = "relay"
next_hop = "127.0.0.1:{next_hop}"

[[chain]]
plugin = "example_tagger"
[chain.config]
refuse_words = ["forbidden"]

[[chain]]
plugin = "spamassassin"
on_error = "tempfail"
timeout = "20s"
[chain.config]
address = "127.0.0.1:{spamd_port}"
"""


def _message(subject: str) -> bytes:
    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = "bob@example.org"
    message["Subject"] = subject
    message["Message-ID"] = f"<{subject.replace(' ', '.')}@example.net>"
    message.set_content(f"{subject}\n")
    return bytes(message)


@pytest.fixture
def setup() -> Iterator[tuple[PostfixInstance, int]]:
    base = make_base_dir()
    spamd_port = free_port()
    config = base / "filterd.toml"
    command = filterd_command(base)
    argv = f"{command} pipe -c {config} -f ${{sender}} -- ${{recipient}}"
    instance = postfix_with_pipe(base, argv)
    config.write_text(_config(spamd_port, instance.reinject_port))
    config.chmod(0o644)
    try:
        instance.start()
        yield instance, spamd_port
    finally:
        instance.stop()
        shutil.rmtree(base, ignore_errors=True)


def _queue_ids(instance: PostfixInstance, since: int, subject: str) -> str:
    """Postfix's queue id of the message submitted with ``subject`` (its cleanup line)."""
    match = instance.wait_for_log(
        rf"postfix/cleanup\[\d+\]: ([0-9A-F]+): message-id=<{subject.replace(' ', '[.]')}@",
        since=since,
    )
    return match.group(1)


def test_accepted_rejected_and_deferred_then_delivered_once(
    setup: tuple[PostfixInstance, int],
) -> None:
    instance, spamd_port = setup

    # spamd is not there yet: the chain cannot check the message, Postfix defers it
    since = instance.log_offset()
    instance.send_smtp(_message("first message"), SENDER, ["bob@example.org"])
    first = _queue_ids(instance, since, "first message")
    deferred = instance.wait_for_log(
        rf"{first}: to=<bob@example.org>, relay=filterd, .*dsn=4\.3\.0, status=deferred "
        r"\(Error: message check failed, try again later",
        since=since,
        timeout=TIMEOUT,
    )
    assert deferred
    queued = {entry["queue_id"]: entry for entry in instance.queue_json()}
    # still queued: in the deferred queue, or being retried already (1 s backoff)
    assert queued[first]["queue_name"] in ("deferred", "active")
    reason = queued[first]["recipients"][0]["delay_reason"]
    assert reason.startswith("Error: message check failed, try again later"), reason

    # a refused word: the chain rejects, pipe(8) bounces with filterd's code and reason
    since = instance.log_offset()
    instance.send_smtp(_message("forbidden offer"), SENDER, ["carol@example.org"])
    refused = _queue_ids(instance, since, "forbidden offer")
    instance.wait_for_log(
        rf"{refused}: to=<carol@example.org>, relay=filterd, .*dsn=5\.7\.1, status=bounced "
        r"\(Message refused by example_tagger",
        since=since,
        timeout=TIMEOUT,
    )
    bounce = instance.wait_for_delivered(1, SENDER, timeout=TIMEOUT)[0]
    assert b"Message refused by example_tagger" in bounce
    assert instance.delivered_messages("carol@example.org") == []

    # spamd answers now: the deferred message goes through, once, with the chain's edits
    with running_spamd(extra_args=["-i", f"127.0.0.1:{spamd_port}"]):
        since = instance.log_offset()
        instance.flush()
        instance.wait_for_log(
            rf"{first}: to=<bob@example.org>, relay=filterd, .*status=sent", since=since,
            timeout=TIMEOUT,
        )  # fmt: skip
        instance.wait_for_empty_queue(timeout=TIMEOUT)
        delivered = instance.wait_for_delivered(1, "bob@example.org", timeout=TIMEOUT)
        assert len(delivered) == 1
        copy = delivered[0]
        assert b"\nX-Example-Tag: tagged\n" in copy
        assert b"\nX-Spam-Status: " in copy or b"\nX-Spam-Flag: " in copy
        assert b"Subject: first message\n" in copy
        assert copy.count(b"Return-Path: ") == 1

        # a plain accepted message, straight through
        since = instance.log_offset()
        instance.send_smtp(_message("second message"), SENDER, ["dave@example.org"])
        second = _queue_ids(instance, since, "second message")
        instance.wait_for_log(
            rf"{second}: to=<dave@example.org>, relay=filterd, .*dsn=2\.0\.0, status=sent",
            since=since,
            timeout=TIMEOUT,
        )
        assert len(instance.wait_for_delivered(1, "dave@example.org", timeout=TIMEOUT)) == 1
    instance.wait_for_empty_queue(timeout=TIMEOUT)
    assert len(instance.delivered_messages("bob@example.org")) == 1
