"""The pipe(8) door end to end: a private Postfix whose inbound smtpd filters through a pipe
transport running ``filterd pipe`` as nobody (master.cf as docs/deploy.md writes it). What
Postfix's queue and log show, with filterd handing messages on to its configured next hop,
Postfix's reinjection smtpd (``deliver_to = "delivery"``):

- a message the chain passes is delivered once, with the chain's edits;
- a message the chain rejects is bounced with the chain's reason and enhanced status code
  (pipe(8) takes them from filterd's output), and the sender gets the bounce;
- a message the chain cannot check (spamd down: the plugin fails, ``on_error = "tempfail"``)
  is deferred with filterd's reason, stays in the queue, and once spamd answers it is
  delivered, once.

and with the default ``deliver_to = "sendmail"``, reinjection through Postfix's sendmail(1) as
the pipe transport's user (tests/support/pipe_door.py says how the private Postfix lets it):

- a message the chain passes comes back through pickup, from nobody, and is delivered once,
  with the chain's edits, without being filtered again;
- a message the chain answers with a temporary refusal is deferred with filterd's code and
  reason, stays in the queue, and nothing is delivered.

and with ``filterd pipe --via``, the client that hands each message to a running filterd's
LMTP listener (which runs the chain and relays to the reinjection smtpd): the same two.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.message import EmailMessage

import pytest

from tests.support.filterd_proc import FilterdFactory
from tests.support.pipe_door import NOBODY, filterd_command, postfix_with_pipe
from tests.support.postfix import PostfixInstance, free_port, make_base_dir, postfix_available
from tests.support.spamd import running_spamd, spamd_installed

pytestmark = [
    pytest.mark.skipif(not postfix_available(), reason="Postfix (master) is not installed"),
    pytest.mark.skipif(not spamd_installed(), reason="spamd is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="pipe(8) runs the command as another user"),
]

SENDER = "alice@example.net"
TIMEOUT = 60.0


def _relay_config(spamd_port: int, next_hop: int) -> str:
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


SENDMAIL_CONFIG = """\
[log]
level = "info"

[[chain]]
plugin = "example_tagger"

[[chain]]
plugin = "header_checks"
[chain.config]
rules = ['/^Subject: .*later/ REJECT 4.7.1 Busy here, try again later']
"""


@contextmanager
def _postfix(write_config: Callable[[PostfixInstance], str]) -> Iterator[PostfixInstance]:
    """A started Postfix whose pipe transport runs filterd with the configuration that
    ``write_config`` gives for the built instance."""
    base = make_base_dir()
    config = base / "filterd.toml"
    command = filterd_command(base)
    argv = f"{command} pipe -c {config} -f ${{sender}} -- ${{recipient}}"
    instance = postfix_with_pipe(base, argv)
    config.write_text(write_config(instance))
    config.chmod(0o644)
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def setup() -> Iterator[tuple[PostfixInstance, int]]:
    spamd_port = free_port()
    with _postfix(lambda instance: _relay_config(spamd_port, instance.reinject_port)) as instance:
        yield instance, spamd_port


def _queue_ids(instance: PostfixInstance, since: int, subject: str) -> str:
    """Postfix's queue id of the message submitted with ``subject`` (its cleanup line)."""
    match = instance.wait_for_log(
        rf"postfix/cleanup\[\d+\]: ([0-9A-F]+): message-id=<{subject.replace(' ', '[.]')}@",
        since=since,
    )
    return match.group(1)


def _send(instance: PostfixInstance, subject: str, recipient: str, outcome: str) -> tuple[str, int]:
    """Submit a message with ``subject`` to ``recipient`` and wait for pipe(8)'s line for it,
    which ends with ``outcome`` (a regex: its dsn and status); its queue id and the log offset
    before it was sent."""
    since = instance.log_offset()
    instance.send_smtp(_message(subject), SENDER, [recipient])
    queue_id = _queue_ids(instance, since, subject)
    instance.wait_for_log(
        rf"{queue_id}: to=<{recipient}>, relay=filterd, .*{outcome}", since=since, timeout=TIMEOUT
    )
    return queue_id, since


def _tempfail_is_deferred(instance: PostfixInstance) -> str:
    """A temporary refusal: deferred with filterd's code and reason, kept, not delivered; the
    message's queue id."""
    later, _ = _send(
        instance,
        "call me later",
        "carol@example.org",
        r"dsn=4\.7\.1, status=deferred \(Busy here, try again later",
    )
    _assert_still_queued(instance, later, "Busy here, try again later")
    assert instance.delivered_messages("carol@example.org") == []
    return later


def _assert_still_queued(instance: PostfixInstance, queue_id: str, reason: str) -> None:
    """The message is still in Postfix's queue: deferred with ``reason``, or already moved
    back for a retry (1 s backoff), where postqueue shows no delay reason (the log line that
    said "deferred" showed it); under load postqueue was seen to show a deferred entry without
    one too."""
    queued = {entry["queue_id"]: entry for entry in instance.queue_json()}
    entry = queued[queue_id]
    assert entry["queue_name"] in ("deferred", "incoming", "active")
    said = entry["recipients"][0].get("delay_reason")
    if entry["queue_name"] == "deferred" and said is not None:  # None: queue manager at work
        assert said.startswith(reason), said


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
    _assert_still_queued(instance, first, "Error: message check failed, try again later")

    # a refused word: the chain rejects, pipe(8) bounces with filterd's code and reason
    _send(
        instance,
        "forbidden offer",
        "carol@example.org",
        r"dsn=5\.7\.1, status=bounced \(Message refused by example_tagger",
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
        _send(instance, "second message", "dave@example.org", r"dsn=2\.0\.0, status=sent")
        assert len(instance.wait_for_delivered(1, "dave@example.org", timeout=TIMEOUT)) == 1
    instance.wait_for_empty_queue(timeout=TIMEOUT)
    assert len(instance.delivered_messages("bob@example.org")) == 1


def test_sendmail_reinjects_accepted_mail_once_and_tempfail_is_deferred() -> None:
    with _postfix(lambda instance: SENDMAIL_CONFIG) as instance:
        first, since = _send(
            instance, "plain message", "bob@example.org", r"dsn=2\.0\.0, status=sent"
        )
        # back through sendmail(1): postdrop's maildrop file, picked up, from pipe(8)'s user
        picked = instance.wait_for_log(
            rf"postfix/pickup\[\d+\]: ([0-9A-F]+): uid={NOBODY.pw_uid} from=<{SENDER}>",
            since=since,
            timeout=TIMEOUT,
        )
        again = picked.group(1)
        assert again != first
        instance.wait_for_log(
            rf"{again}: to=<bob@example.org>, relay=virtual, .*status=sent",
            since=since,
            timeout=TIMEOUT,
        )
        instance.wait_for_empty_queue(timeout=TIMEOUT)
        copy = instance.wait_for_delivered(1, "bob@example.org", timeout=TIMEOUT)[0]
        assert b"\nX-Example-Tag: tagged\n" in copy
        assert b"Subject: plain message\n" in copy
        assert copy.count(b"Return-Path: <alice@example.net>") == 1
        log = instance.log_text()[since:]
        assert len(re.findall(r"relay=filterd,", log)) == 1  # pickup does not filter again

        later = _tempfail_is_deferred(instance)
        assert [entry["queue_id"] for entry in instance.queue_json()] == [later]
        assert len(instance.delivered_messages("bob@example.org")) == 1


def _via_config(listen_port: int, next_hop: int) -> str:
    return f"""\
[[listen]]
address = "127.0.0.1:{listen_port}"
protocol = "lmtp"

[delivery]
method = "relay"
next_hop = "127.0.0.1:{next_hop}"

{SENDMAIL_CONFIG}"""


def test_via_hands_mail_to_a_running_filterd_and_tempfail_is_deferred(
    filterd_factory: FilterdFactory,
) -> None:
    """``filterd pipe --via``: the pipe transport's command hands each message to a running
    filterd's LMTP listener, which runs the chain and relays to Postfix's reinjection smtpd."""
    base = make_base_dir()
    listen_port = free_port()
    argv = (
        f"{filterd_command(base)} pipe --via 127.0.0.1:{listen_port} --queue-id ${{queue_id}}"
        " -f ${sender} -- ${recipient}"
    )
    instance = postfix_with_pipe(base, argv)
    try:
        filterd_factory(_via_config(listen_port, instance.reinject_port))
        instance.start()
        _send(instance, "via message", "bob@example.org", r"dsn=2\.0\.0, status=sent")
        instance.wait_for_empty_queue(timeout=TIMEOUT)
        copy = instance.wait_for_delivered(1, "bob@example.org", timeout=TIMEOUT)[0]
        assert b"\nX-Example-Tag: tagged\n" in copy
        assert b"Subject: via message\n" in copy

        _tempfail_is_deferred(instance)
        assert len(instance.delivered_messages("bob@example.org")) == 1
    finally:
        instance.stop()
        shutil.rmtree(base, ignore_errors=True)
