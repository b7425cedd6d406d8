"""filterd as Postfix's policy service (check_policy_service), end to end with real smtpd."""

from __future__ import annotations

import smtplib

import pytest

from tests.support.filterd_proc import FilterdFactory
from tests.support.policy_door import postfix_asking_filterd
from tests.support.postfix import PostfixFactory, postfix_available

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not postfix_available(), reason="Postfix (master) is not installed"),
    pytest.mark.timeout(120),
]


def test_policy_refusal_reaches_the_smtp_client_at_rcpt(
    postfix_factory: PostfixFactory, filterd_factory: FilterdFactory
) -> None:
    postfix = postfix_asking_filterd(
        postfix_factory,
        filterd_factory,
        """
[[chain]]
plugin = "example_tagger"
config = { refuse_prefix = "forged" }
""",
    )
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=30) as client:
        client.ehlo("client.example.net")
        assert client.mail("alice@example.net")[0] == 250
        code, text = client.rcpt("forged@example.org")
        # Postfix names the restriction that refused: "Recipient address rejected: <text>".
        assert code == 550
        assert text.startswith(b"5.7.1 <forged@example.org>: Recipient address rejected:")
        assert text.endswith(b"refused by example_tagger")
        assert client.rcpt("good@example.org")[0] == 250
        assert client.data(b"Subject: policy\r\n\r\nbody\r\n")[0] == 250
    postfix.wait_for_delivered(1, "good@example.org")
    postfix.wait_for_log(
        r"NOQUEUE: reject: RCPT from \S+: 550 5\.7\.1 <forged@example\.org>: "
        r"Recipient address rejected: .*refused by example_tagger"
    )
    assert postfix.delivered_messages("forged@example.org") == []
