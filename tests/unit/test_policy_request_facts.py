"""filterd.sdk.policy_request's policy_attributes and sasl_username: the policy request's
attributes and the SASL user name, from the policy door's request or the milter door's macros;
nothing at a door that knows none."""

from __future__ import annotations

from filterd.model.envelope import Client, Session
from filterd.protocols.milter_map import MILTER_MACROS
from filterd.protocols.policy_map import request_to_envelope
from filterd.sdk.policy_request import policy_attributes, sasl_username


def test_policy_door() -> None:
    request = {"protocol_state": "END-OF-MESSAGE", "size": "123", "sasl_username": "alice"}
    session = request_to_envelope(request).session
    attrs = policy_attributes(session)
    assert attrs is not None
    assert attrs["size"] == "123"
    assert sasl_username(session) == "alice"


def test_milter_door() -> None:
    session = Session("s", "milter", Client())
    session.notes.set(MILTER_MACROS, {"{auth_authen}": "bob"})
    assert policy_attributes(session) is None
    assert sasl_username(session) == "bob"


def test_a_door_that_knows_nothing() -> None:
    session = Session("s", "smtp", Client())
    assert policy_attributes(session) is None
    assert sasl_username(session) == ""
