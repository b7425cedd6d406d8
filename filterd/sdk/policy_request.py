"""A request's attributes as Postfix's policy protocol names them (SMTPD_POLICY_README), the
same names on every front door, for plugins whose rules are written in those names (``rules``,
``greylist``, ``ratelimit``):

- at the policy door, the attributes Postfix sent, unchanged (and the stage filterd answers
  the request at: :func:`policy_door_stage`);
- at the SMTP and LMTP doors and the milter door, what the door knows, under the same names:
  ``client_address``, ``client_name`` (also as ``reverse_client_name``: the doors learn one
  name), ``client_port``, ``helo_name``, ``protocol_name``, ``protocol_state``, ``queue_id``,
  ``sender``, ``recipient``, ``recipient_count``, ``size``, ``instance``, and from the milter
  macros ``sasl_method``, ``sasl_username``, ``sasl_sender``, ``encryption_protocol``,
  ``encryption_cipher``, ``encryption_keysize``. Attributes a door does not know are empty,
  as Postfix sends them.
"""

from __future__ import annotations

from collections.abc import Mapping

from filterd.model.envelope import SMTP_LOGIN, Recipient, Session, Transaction
from filterd.model.notes import NoteKey
from filterd.protocols.milter_map import MILTER_MACROS
from filterd.protocols.policy_map import POLICY_ATTRIBUTES, request_to_envelope

__all__ = ["policy_attributes", "policy_door_stage", "policy_request", "sasl_username"]

_STAGE = NoteKey[tuple[Mapping[str, str], str]]("filterd.policy.answer_stage")

_FROM_MACROS = (
    ("sasl_method", "{auth_type}"),
    ("sasl_username", "{auth_authen}"),
    ("sasl_sender", "{auth_author}"),
    ("encryption_protocol", "{tls_version}"),
    ("encryption_cipher", "{cipher}"),
    ("encryption_keysize", "{cipher_bits}"),
)


def _known(value: object) -> str:
    return "" if value in (None, "unknown") else str(value)


def policy_door_stage(session: Session) -> str | None:
    """At the policy door: the last stage the chain runs for the request being answered
    (``connect``, ``helo``, ``mail_from`` or ``rcpt``), where a plugin that answers once per
    request answers; None at the other doors."""
    attrs = session.notes.get(POLICY_ATTRIBUTES)
    if attrs is None:
        return None
    cached = session.notes.get(_STAGE)
    if cached is not None and cached[0] is attrs:
        return cached[1]
    # Requests of one message share a session: the stage is the request's (its attributes').
    stage = request_to_envelope(attrs).stages[-1]
    session.notes.set(_STAGE, (attrs, stage))
    return stage


def policy_request(
    session: Session,
    transaction: Transaction | None = None,
    recipient: Recipient | None = None,
    *,
    state: str,
) -> dict[str, str]:
    """The request's attributes (a fresh dict the caller may change). ``state`` is the
    ``protocol_state`` at the SMTP and milter doors (``CONNECT``, ``EHLO``, ``MAIL``,
    ``RCPT``); the policy door's request carries its own."""
    sent = session.notes.get(POLICY_ATTRIBUTES)
    if sent is not None:
        return dict(sent)
    client = transaction.client if transaction is not None else session.peer
    attrs = {
        "request": "smtpd_access_policy",
        "protocol_state": state,
        "protocol_name": client.protocol,
        "client_address": _known(client.address),
        "client_name": client.name or "unknown",
        "reverse_client_name": client.name or "unknown",
        "client_port": _known(client.port),
        "helo_name": client.helo or "",
        "queue_id": "",
        "sender": "",
        "recipient": "",
        "recipient_count": "0",
        "size": "0",
        "instance": "",
    }
    macros: Mapping[str, str] = session.notes.get(MILTER_MACROS) or {}
    for name, macro in _FROM_MACROS:
        attrs[name] = macros.get(macro, "")
    login = session.notes.get(SMTP_LOGIN)
    if login is not None:
        attrs["sasl_method"], attrs["sasl_username"] = login
    if transaction is not None:
        queue_id = transaction.queue_id
        attrs["queue_id"] = "" if queue_id == "NOQUEUE" else queue_id
        attrs["instance"] = f"{session.id}.{queue_id}"
        attrs["sender"] = transaction.sender
        attrs["size"] = str(transaction.size)
        if state not in ("RCPT", "MAIL"):  # Postfix: DATA and END-OF-MESSAGE only
            attrs["recipient_count"] = str(len(transaction.accepted))
    if recipient is not None:
        attrs["recipient"] = recipient.address
    return attrs


def policy_attributes(session: Session) -> Mapping[str, str] | None:
    """At the policy door, the attributes of the request being answered (as Postfix sent
    them); None elsewhere."""
    return session.notes.get(POLICY_ATTRIBUTES)


def sasl_username(session: Session) -> str:
    """The SASL user name the client logged in as, or "" (not logged in, or not known): the
    policy request's, the SMTP door's own AUTH (filterd as the relay, with ``auth_socket``),
    or the milter door's ``{auth_authen}`` macro. Behind Postfix (content filter, XFORWARD)
    the SMTP door does not learn the login: XFORWARD has no attribute for it."""
    attrs = session.notes.get(POLICY_ATTRIBUTES)
    if attrs is not None:
        return attrs.get("sasl_username", "")
    login = session.notes.get(SMTP_LOGIN)
    if login is not None:
        return login[1]
    macros: Mapping[str, str] = session.notes.get(MILTER_MACROS) or {}
    return macros.get(dict(_FROM_MACROS)["sasl_username"], "")
