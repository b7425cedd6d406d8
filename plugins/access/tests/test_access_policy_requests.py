"""The access plugin checks every policy request, as smtpd's check_*_access does in each
restriction list, also a DATA request on the connection that carried the message's RCPT
request (Postfix keeps one policy connection per service for all its restriction classes, and
sends a real ``instance``): the policy door runs the request's last stage again for it
(``decides_each_policy_request``) instead of answering with the RCPT request's outcome."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.filterd_proc import FilterdFactory
from tests.support.policy_door import ask_on_one_connection, filterd_policy_door, policy_request

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def test_a_check_at_data_answers_on_the_connection_of_the_rcpt_request(
    tmp_path: Path, filterd_factory: FilterdFactory
) -> None:
    senders = tmp_path / "senders"
    senders.write_text("alice@example.com PREPEND X-Sender-Checked: yes\n")
    recipients = tmp_path / "recipients"
    recipients.write_text("held@example.org HOLD kept for review\n")
    port = filterd_policy_door(
        filterd_factory,
        f"""
[[chain]]
plugin = "access"
[chain.config]
sender = ["texthash:{senders}"]
recipient = ["texthash:{recipients}"]
""",
    )
    one = {"recipient": "bob@example.org", "recipient_count": "1"}
    held = {"recipient": "held@example.org", "recipient_count": "1"}
    asked = [
        policy_request("RCPT", "m1", recipient="bob@example.org"),
        policy_request("RCPT", "m1", recipient="carol@example.org"),  # same header: not sent again
        policy_request("RCPT", "m2", recipient="bob@example.org"),
        policy_request("DATA", "m2", **one),
        policy_request("END-OF-MESSAGE", "m2", queue_id="4F2A81", size="300", **one),
        policy_request("RCPT", "m3", recipient="held@example.org"),
        policy_request("DATA", "m3", **held),
    ]
    answers = ask_on_one_connection(port, asked)
    assert answers == [
        "PREPEND X-Sender-Checked: yes",
        "DUNNO",
        "PREPEND X-Sender-Checked: yes",
        # check_sender_access in smtpd_data_restrictions prepends again, as smtpd would
        "PREPEND X-Sender-Checked: yes",
        "DUNNO",  # Postfix takes no PREPEND at END-OF-MESSAGE
        "HOLD <held@example.org>: Recipient address kept for review",
        "HOLD <held@example.org>: Recipient address kept for review",
    ]
