"""The rules decide every policy request, as postfwd does, also the DATA and END-OF-MESSAGE
requests of a message whose RCPT requests came on the same connection (Postfix keeps one
policy connection per service for all its restriction classes, and sends a real ``instance``):
the policy door runs a message's stages once and reuses their outcomes for its later requests,
but runs the request's last stage again for the rules (``decides_each_policy_request``)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from test_rules_postfwd_rates import window_seconds

from tests.support.filterd_proc import FilterdFactory
from tests.support.policy_door import ask_on_one_connection, filterd_policy_door, policy_request

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def message(instance: str, recipients: list[str], size: int, **more: str) -> list[dict[str, str]]:
    """A message's requests as Postfix sends them: RCPT per recipient, DATA, END-OF-MESSAGE
    (``recipient`` named only for a message with one)."""
    later = {
        "recipient": recipients[0] if len(recipients) == 1 else "",
        "recipient_count": str(len(recipients)),
        **more,
    }
    return [
        *(policy_request("RCPT", instance, recipient=r, **more) for r in recipients),
        policy_request("DATA", instance, **later),
        policy_request("END-OF-MESSAGE", instance, queue_id="4F2A81", size=str(size), **later),
    ]


def test_data_and_end_of_message_rules_decide_on_the_connection_of_the_rcpt_requests(
    tmp_path: Path, filterd_factory: FilterdFactory
) -> None:
    w = window_seconds(time.time())  # every count in one window (see test_rules_postfwd_rates)
    port = filterd_policy_door(
        filterd_factory,
        f"""
[[chain]]
plugin = "rules"
[chain.config.actions]
rcpt = {{ state = {{ path = "{tmp_path / "rcpts.sqlite"}" }} }}
size = {{ state = {{ path = "{tmp_path / "sizes.sqlite"}" }} }}
[[chain.config.rules]]
id = "FRIEND"
protocol_state = "== RCPT"
recipient = "== friend@example.org"
action = "OK"
[[chain.config.rules]]
id = "CLOSED"
recipient = "== closed@example.org"
action = "REJECT mailbox closed"
[[chain.config.rules]]
id = "LATE"
protocol_state = "== DATA"
sender = "== late@example.com"
action = "451 4.7.1 no DATA from $$sender"
[[chain.config.rules]]
id = "BIG"
protocol_state = "== END-OF-MESSAGE"
size = "> 1000000"
action = "REJECT message too big"
[[chain.config.rules]]
id = "RCPTS"
protocol_state = "== DATA"
action = "rcpt(sender/3/{w}/452 4.5.3 too many recipients [$$ratecount])"
[[chain.config.rules]]
id = "BYTES"
protocol_state = "== END-OF-MESSAGE"
action = "size(sender/5000/{w}/552 5.3.4 too many bytes [$$ratecount])"
""",
        listen="accept_as_ok = true\n",
    )
    asked = [
        policy_request("RCPT", "m0", recipient="friend@example.org"),
        policy_request("RCPT", "m0", recipient="closed@example.org"),
        *message("m1", ["friend@example.org", "r2@example.org"], 2_000_000),
        *message("m2", ["r1@example.org"], 3000),
        *message("m3", ["r1@example.org"], 3000),
        *message("m4", ["friend@example.org"], 100, sender="bob@example.com"),
        *message("m5", ["r1@example.org"], 100, sender="late@example.com"),
    ]
    answers = ask_on_one_connection(port, asked)
    assert answers == [
        # m0: an OK ends the checks of its request only, not of the message's other recipients
        "OK",
        "554 5.7.1 mailbox closed",
        # m1: the RCPT rule's OK holds for its request only; the size rule fires at the end
        "OK",
        "DUNNO",
        "DUNNO",  # 2 recipients counted
        "554 5.7.1 message too big",  # not counted: BIG decided first
        # m2
        "DUNNO",
        "DUNNO",  # 3 recipients
        "DUNNO",  # 3000 bytes
        # m3: both limits crossed, by the requests after the RCPT one
        "DUNNO",
        "452 4.5.3 too many recipients [4]",
        "552 5.3.4 too many bytes [6000]",
        # m4: one recipient (named at DATA and END-OF-MESSAGE): the RCPT request's OK is not
        # the later requests' answer
        "OK",
        "DUNNO",
        "DUNNO",
        # m5
        "DUNNO",
        "451 4.7.1 no DATA from late@example.com",
        "DUNNO",
    ]
