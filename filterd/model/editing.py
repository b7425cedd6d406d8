"""Applying the chain's edits at end of message (the SMTP proxy's side of "edits are data")."""

from __future__ import annotations

import copy
from collections.abc import Sequence

from filterd.model.edits import (
    HEADER_EDITS,
    AddRecipient,
    ChangeSender,
    Edit,
    Redirect,
    RemoveRecipient,
    ReplaceBody,
)
from filterd.model.envelope import Recipient, Transaction
from filterd.model.headers import apply_header_edits
from filterd.model.message import MessageView


def apply_content_edits(view: MessageView, edits: Sequence[Edit]) -> None:
    """Header and body edits → the spool hands on the edited message. Byte-exact when no edit
    touches the content."""
    header_edits = [e for e in edits if isinstance(e, HEADER_EDITS)]
    bodies = [e.body for e in edits if isinstance(e, ReplaceBody)]
    if not header_edits and not bodies:
        return
    headers = apply_header_edits(view.headers, header_edits)
    view.rewrite(headers, bodies[-1] if bodies else None)


def expand_redirect(edits: Sequence[Edit], recipients: Sequence[str]) -> list[Edit]:
    """``edits`` with the last ``Redirect`` (the one in force, as in Postfix) spelled out as
    removing each of ``recipients`` (the ones the client gave) and adding its address; an
    earlier one is dropped."""
    redirects = [i for i, edit in enumerate(edits) if isinstance(edit, Redirect)]
    if not redirects:
        return list(edits)
    last = redirects[-1]
    expanded: list[Edit] = []
    for index, edit in enumerate(edits):
        if index == last:
            assert isinstance(edit, Redirect)
            expanded.extend(RemoveRecipient(address) for address in recipients)
            expanded.append(AddRecipient(edit.address))
        elif not isinstance(edit, Redirect):
            expanded.append(edit)
    return expanded


def apply_envelope_edits(t: Transaction, edits: Sequence[Edit]) -> Transaction:
    """A copy of the transaction with the sender and recipients edited (replies cleared)."""
    edited = copy.copy(t)
    recipients = [Recipient(r.address, r.params) for r in t.accepted]
    for edit in expand_redirect(edits, [r.address for r in recipients]):
        match edit:
            case ChangeSender(address=address, params=params):
                edited.sender = address
                edited.mail_params = params or t.mail_params
            case AddRecipient(address=address, params=params):
                if not any(r.address.lower() == address.lower() for r in recipients):
                    recipients.append(Recipient(address, params))
            case RemoveRecipient(address=address):
                recipients = [r for r in recipients if r.address.lower() != address.lower()]
            case _:
                pass
    edited.recipients = recipients
    return edited
