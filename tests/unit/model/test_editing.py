"""filterd.model.editing: the envelope edits as the SMTP, LMTP and pipe doors apply them."""

from __future__ import annotations

from filterd.model.editing import apply_envelope_edits, expand_redirect
from filterd.model.edits import AddRecipient, Edit, Redirect, RemoveRecipient
from filterd.model.envelope import Client, Recipient, Session, Transaction
from filterd.model.reply import Reply


def transaction(*recipients: str) -> Transaction:
    session = Session(id="s", listener="smtp", peer=Client(address="192.0.2.1"))
    t = Transaction(queue_id="Q", session=session, sender="alice@example.com")
    for address in recipients:
        t.recipients.append(Recipient(address, reply=Reply(250, "2.1.5", "OK")))
    t.recipients.append(Recipient("refused@example.org", reply=Reply(550, "5.1.1", "no")))
    return t


def test_a_redirect_replaces_every_recipient_the_client_gave() -> None:
    t = transaction("a@example.org", "b@example.org")
    edits: list[Edit] = [AddRecipient("bcc@example.net"), Redirect("boss@example.net")]
    edited = apply_envelope_edits(t, edits)
    assert [r.address for r in edited.recipients] == ["bcc@example.net", "boss@example.net"]


def test_the_last_redirect_wins() -> None:
    edits: list[Edit] = [
        Redirect("one@example.net"),
        AddRecipient("x@example.net"),
        Redirect("two@x.net"),
    ]
    assert expand_redirect(edits, ["a@example.org"]) == [
        AddRecipient("x@example.net"),
        RemoveRecipient("a@example.org"),
        AddRecipient("two@x.net"),
    ]
    edited = apply_envelope_edits(transaction("a@example.org"), edits)
    assert [r.address for r in edited.recipients] == ["x@example.net", "two@x.net"]


def test_no_redirect_no_change() -> None:
    edits: list[Edit] = [AddRecipient("x@example.net")]
    assert expand_redirect(edits, ["a@example.org"]) == edits
