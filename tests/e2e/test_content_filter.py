"""filterd in Postfix's after-queue content-filter loop, end to end.

Postfix (private instance, deploy/postfix snippets) -> filterd (`python -m filterd run`)
-> Postfix reinjection smtpd -> virtual(8) Maildir. See Postfix FILTER_README and XFORWARD_README.
"""

from __future__ import annotations

import re

import pytest

from tests.support.filterd_proc import FilterdFactory, FilterdProcess, filterd_config
from tests.support.mailcompare import (
    Injection,
    corpus,
    delivery_differences,
    format_problems,
    received_headers,
)
from tests.support.postfix import (
    FilterProtocol,
    PostfixFactory,
    PostfixInstance,
    free_port,
    postfix_available,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not postfix_available(), reason="Postfix (master) is not installed"),
    pytest.mark.timeout(120),
]

SENDER = "sender@example.org"
FILTERD_HOSTNAME = "filterd.test"
REFUSE_BAD = "check_recipient_access inline:{ bad@example.org=REJECT }, permit_mynetworks, reject"

MESSAGE = (
    b"From: Alice <alice@example.net>\r\n"
    b"To: good@example.org, bad@example.org\r\n"
    b"Subject: filterd e2e\r\n"
    b"Message-ID: <e2e@example.net>\r\n"
    b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"\r\n"
    b".\r\n"
    b".leading dot\r\n"
    b"body\r\n"
)


def _filter_loop(
    postfix_factory: PostfixFactory,
    filterd_factory: FilterdFactory,
    protocol: FilterProtocol,
    *,
    next_hop_port: int | None = None,
    main_cf_extra: dict[str, str] | None = None,
    reinject_options: dict[str, str] | None = None,
) -> tuple[PostfixInstance, FilterdProcess]:
    """A Postfix instance whose content_filter is a running filterd.

    filterd relays to the instance's reinjection smtpd, or to `next_hop_port`.
    """
    filter_port = free_port()
    postfix = postfix_factory(
        content_filter=protocol,
        filter_port=filter_port,
        main_cf_extra=main_cf_extra,
        reinject_options=reinject_options,
    )
    config = filterd_config(
        listen=f"127.0.0.1:{filter_port}",
        protocol=protocol,
        hostname=FILTERD_HOSTNAME,
        next_hop=f"127.0.0.1:{next_hop_port or postfix.reinject_port}",
    )
    return postfix, filterd_factory(config)


def _to_filter(postfix: PostfixInstance, client: str, rcpt: str) -> str:
    """Log pattern: Postfix's `client` (smtp/lmtp) delivered to `rcpt` via the filter port."""
    return (
        rf"postfix/{client}\[\d+\]: \w+: to=<{re.escape(rcpt)}>, "
        rf"relay=127\.0\.0\.1\[127\.0\.0\.1\]:{postfix.filter_port},"
    )


def _assert_corpus_delivered(postfix: PostfixInstance, injection: Injection, client: str) -> None:
    files = corpus()
    messages = {f"c{i:02d}@example.org": path.read_bytes() for i, path in enumerate(files)}
    for rcpt, message in messages.items():
        if injection == "smtp":
            assert postfix.send_smtp(message, SENDER, [rcpt]) == {}
        else:
            postfix.sendmail(message, SENDER, [rcpt])

    postfix.wait_for_delivered(len(messages), timeout=60)
    problems: dict[str, list[str]] = {}
    for (rcpt, original), path in zip(messages.items(), files, strict=True):
        copies = postfix.delivered_messages(rcpt)
        if len(copies) != 1:
            problems[path.name] = [f"{len(copies)} copies delivered"]
            continue
        # Received: inbound smtpd/pickup, filterd's own, the reinjection smtpd.
        diffs = delivery_differences(
            original,
            copies[0],
            injection=injection,
            received_added=3,
        )
        received = received_headers(copies[0])
        if len(received) < 2 or not re.search(rb"\bby\s+filterd\.test\b", received[1]):
            diffs.append(f"second Received: is not filterd's: {received[1:2]!r}")
        if diffs:
            problems[path.name] = diffs
    assert not problems, format_problems(problems, len(messages))

    postfix.wait_for_empty_queue()
    log = postfix.log_text()
    for rcpt in messages:
        pattern = _to_filter(postfix, client, rcpt) + r".*status=sent"
        assert re.search(pattern, log), f"no delivery to filterd logged for {rcpt}"
    assert postfix.delivered_messages(SENDER) == [], "unexpected bounce"


def test_corpus_passes_through_filterd_unchanged_smtp(
    postfix_factory: PostfixFactory, filterd_factory: FilterdFactory
) -> None:
    """(a) 48 messages via SMTP: Postfix -> filterd (SMTP) -> reinjection -> Maildir."""
    postfix, filterd = _filter_loop(postfix_factory, filterd_factory, "smtp")
    _assert_corpus_delivered(postfix, injection="smtp", client="smtp")
    assert filterd.running()


def test_corpus_passes_through_filterd_unchanged_lmtp(
    postfix_factory: PostfixFactory, filterd_factory: FilterdFactory
) -> None:
    """(b) 48 messages via sendmail: Postfix lmtp(8) -> filterd (LMTP) -> reinjection."""
    postfix, filterd = _filter_loop(postfix_factory, filterd_factory, "lmtp")
    _assert_corpus_delivered(postfix, injection="sendmail", client="lmtp")
    assert filterd.running()


def test_xforward_reaches_the_reinjection_smtpd(
    postfix_factory: PostfixFactory, filterd_factory: FilterdFactory
) -> None:
    """filterd passes Postfix's XFORWARD on: the reinjection logs the original queue id."""
    postfix, _ = _filter_loop(postfix_factory, filterd_factory, "smtp")
    postfix.send_smtp(MESSAGE, SENDER, ["good@example.org"], helo="client.example.net")
    postfix.wait_for_delivered(1, "good@example.org")
    first = postfix.wait_for_log(r"smtpd\[\d+\]: (\w+): client=unknown\[127\.0\.0\.1\]$")
    postfix.wait_for_log(
        rf"smtpd\[\d+\]: \w+: client=\S+, orig_queue_id={first.group(1)}, orig_client=\S+"
    )


def test_next_hop_down_defers_and_keeps_mail(
    postfix_factory: PostfixFactory, filterd_factory: FilterdFactory
) -> None:
    """(c) filterd's next hop is a closed port: Postfix defers with a 4xx and keeps the mail."""
    postfix, filterd = _filter_loop(
        postfix_factory, filterd_factory, "smtp", next_hop_port=free_port()
    )
    postfix.send_smtp(MESSAGE, SENDER, ["held@example.org"])

    deferred = _to_filter(postfix, "smtp", "held@example.org")
    deferred += r".*dsn=4\.\d+\.\d+, status=deferred \((?P<reason>.*)\)$"
    match = postfix.wait_for_log(deferred)
    # filterd answered with a 4xx reply; Postfix did not merely fail to reach filterd.
    assert re.search(r"(said|refused to talk to me): 4\d\d ", match["reason"]), match.group(0)

    # Retrying (queue_run_delay is 1 s; flush forces it) defers again: nothing bounces.
    since = postfix.log_offset()
    postfix.flush()
    postfix.wait_for_log(deferred, since=since)
    (entry,) = postfix.queue_json()
    assert entry["queue_name"] in ("deferred", "active")
    assert [r["address"] for r in entry["recipients"]] == ["held@example.org"]
    assert postfix.delivered_messages() == [], "nothing may be delivered, nor bounced"
    assert "status=bounced" not in postfix.log_text()
    assert filterd.running()


def test_next_hop_refuses_one_recipient_at_rcpt(
    postfix_factory: PostfixFactory, filterd_factory: FilterdFactory
) -> None:
    """(d) The reinjection smtpd refuses bad@: filterd passes that on at RCPT, good@ gets it."""
    postfix, _ = _filter_loop(
        postfix_factory,
        filterd_factory,
        "smtp",
        main_cf_extra={"reinject_rcpt_checks": REFUSE_BAD},
        reinject_options={"smtpd_recipient_restrictions": "$reinject_rcpt_checks"},
    )
    postfix.send_smtp(MESSAGE, SENDER, ["good@example.org", "bad@example.org"])

    (good,) = postfix.wait_for_delivered(1, "good@example.org")
    assert delivery_differences(MESSAGE, good, injection="smtp", received_added=3) == []
    postfix.wait_for_log(
        _to_filter(postfix, "smtp", "bad@example.org")
        + r".*dsn=5\.\d+\.\d+, status=bounced \(host "
        r"127\.0\.0\.1\[127\.0\.0\.1\] said: 5\d\d .*\(in reply to RCPT TO command\)\)$"
    )
    postfix.wait_for_log(_to_filter(postfix, "smtp", "good@example.org") + r".*status=sent")
    postfix.wait_for_log(r"NOQUEUE: reject: RCPT from \S+: 554 5\.7\.1 <bad@example\.org>")

    (bounce,) = postfix.wait_for_delivered(1, SENDER)
    assert b"Final-Recipient: rfc822; bad@example.org" in bounce
    assert b"Final-Recipient: rfc822; good@example.org" not in bounce
    postfix.wait_for_empty_queue()
    assert postfix.delivered_messages("bad@example.org") == []
    assert len(postfix.delivered_messages("good@example.org")) == 1
