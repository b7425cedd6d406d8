"""filterd.sdk.policy_request: the policy protocol's attribute names on every door."""

from __future__ import annotations

from types import MappingProxyType

from filterd.model.envelope import SMTP_LOGIN, Client, Recipient, Session, Transaction
from filterd.protocols.milter_map import MILTER_MACROS
from filterd.protocols.policy_map import POLICY_ATTRIBUTES, request_to_envelope
from filterd.sdk.policy_request import policy_door_stage, policy_request, sasl_username


def smtp_session() -> Session:
    return Session("S1", "smtp", Client("192.0.2.7", 40000, "mx.example.com", "helo.example"))


def test_smtp_door_attributes() -> None:
    session = smtp_session()
    t = Transaction("ABCDEF0123", session, sender="a@example.com", size=1234)
    attrs = policy_request(session, t, Recipient("r@example.org"), state="RCPT")
    assert {k: attrs[k] for k in ("client_address", "client_name", "reverse_client_name")} == {
        "client_address": "192.0.2.7",
        "client_name": "mx.example.com",
        "reverse_client_name": "mx.example.com",
    }
    assert attrs["helo_name"] == "helo.example"
    assert attrs["client_port"] == "40000"
    assert (attrs["sender"], attrs["recipient"], attrs["size"]) == (
        "a@example.com",
        "r@example.org",
        "1234",
    )
    assert (attrs["protocol_state"], attrs["recipient_count"], attrs["queue_id"]) == (
        "RCPT",
        "0",
        "ABCDEF0123",
    )
    assert attrs["sasl_username"] == ""
    assert policy_door_stage(session) is None


def test_the_smtp_doors_own_login() -> None:
    session = smtp_session()
    assert sasl_username(session) == ""
    session.notes.set(SMTP_LOGIN, ("PLAIN", "alice@example.org"))
    t = Transaction("ABCDEF0123", session, sender="a@example.com")
    attrs = policy_request(session, t, Recipient("r@example.org"), state="RCPT")
    assert (attrs["sasl_method"], attrs["sasl_username"]) == ("PLAIN", "alice@example.org")
    assert sasl_username(session) == "alice@example.org"


def test_unknown_client_and_milter_macros() -> None:
    session = Session("S2", "milter", Client())
    session.notes.set(
        MILTER_MACROS, MappingProxyType({"{auth_authen}": "alice", "{cipher_bits}": "256"})
    )
    attrs = policy_request(session, state="CONNECT")
    assert (attrs["client_address"], attrs["client_name"]) == ("", "unknown")
    assert (attrs["sasl_username"], attrs["encryption_keysize"]) == ("alice", "256")
    assert (attrs["sender"], attrs["recipient"]) == ("", "")


def test_policy_door_passes_what_postfix_sent() -> None:
    sent = {
        "protocol_state": "RCPT",
        "client_address": "192.0.2.9",
        "helo_name": "h.example",
        "sender": "s@example.com",
        "recipient": "r@example.org",
        "ccert_subject": "x",
    }
    envelope = request_to_envelope(sent)
    attrs = policy_request(envelope.session, envelope.transaction, state="ignored")
    assert attrs == sent
    assert policy_door_stage(envelope.session) == "rcpt"
    mail = request_to_envelope({**sent, "protocol_state": "MAIL", "recipient": ""})
    assert policy_door_stage(mail.session) == "mail_from"
    connect = request_to_envelope({"protocol_state": "CONNECT", "client_address": "192.0.2.9"})
    assert policy_door_stage(connect.session) == "connect"
    assert connect.session.notes.get(POLICY_ATTRIBUTES) is not None


def test_the_policy_door_stage_is_the_request_s_when_requests_share_a_session() -> None:
    """Requests of one message share a session (the policy door puts each one's attributes in
    it): the stage follows the request being answered, not the message's first one."""
    sent = {"protocol_state": "RCPT", "sender": "s@example.com", "recipient": "r@example.org"}
    session = request_to_envelope(sent).session
    assert policy_door_stage(session) == "rcpt"
    session.notes.set(POLICY_ATTRIBUTES, {**sent, "protocol_state": "DATA", "recipient": ""})
    assert policy_door_stage(session) == "mail_from"
    session.notes.set(POLICY_ATTRIBUTES, {**sent, "protocol_state": "END-OF-MESSAGE"})
    assert policy_door_stage(session) == "rcpt"
