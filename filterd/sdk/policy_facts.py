"""What a plugin may need beyond the model at the envelope stages: the policy door's request
attributes (``protocol_state``, ``size``, ``recipient_count``, ``sasl_username``, ...) and the
SASL user name wherever a door knows it (the policy request; the milter door's
``{auth_authen}`` macro)."""

from __future__ import annotations

from collections.abc import Mapping

from filterd.model.envelope import Session
from filterd.protocols.milter_map import MILTER_MACROS
from filterd.protocols.policy_map import POLICY_ATTRIBUTES

__all__ = ["policy_attributes", "sasl_username"]


def policy_attributes(session: Session) -> Mapping[str, str] | None:
    """At the policy door, the attributes of the request being answered; None elsewhere."""
    return session.notes.get(POLICY_ATTRIBUTES)


def sasl_username(session: Session) -> str:
    """The SASL user name the client logged in as, or "" (not logged in, or not known: the
    SMTP door's own AUTH is not shown to plugins)."""
    attrs = session.notes.get(POLICY_ATTRIBUTES)
    if attrs is not None:
        return attrs.get("sasl_username", "")
    macros = session.notes.get(MILTER_MACROS)
    return macros.get("{auth_authen}", "") if macros is not None else ""
