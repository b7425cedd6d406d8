"""The milter front door's pure mappings: macros → model, verdicts → SMFIS codes and setreply,
edits → modification actions (no libmilter needed)."""

from __future__ import annotations

import pytest

from filterd.chain.outcome import Outcome
from filterd.config.load import parse_config
from filterd.config.types import parse_endpoint
from filterd.errors import ConfigError
from filterd.model.edits import (
    AddHeader,
    AddRecipient,
    ChangeHeader,
    ChangeSender,
    Edit,
    InsertHeader,
    Redirect,
    RemoveHeader,
    RemoveRecipient,
    ReplaceBody,
)
from filterd.model.headers import Header, apply_header_edits
from filterd.model.reply import Reply
from filterd.model.verdict import Accept, Continue, Discard, Quarantine, Reject, TempFail
from filterd.protocols.milter_map import (
    ACCEPT,
    BODY_CHUNK,
    CONTINUE,
    DISCARD,
    MILTER_MACROS,
    REJECT,
    TEMPFAIL,
    AddHeaderAction,
    AddRcptAction,
    ChangeFromAction,
    ChangeHeaderAction,
    DelRcptAction,
    InsertHeaderAction,
    MilterAction,
    QuarantineAction,
    ReplaceBodyAction,
    Response,
    SetReply,
    apply_helo,
    client_from_connect,
    escape_percent,
    header_actions,
    libmilter_socket,
    plan_eom,
    recipient_from_rcpt,
    render_stage,
    session_from_connect,
    strip_path,
    transaction_from_mail,
)

# ------------------------------------------------------------------------------ sockets


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:10029", "inet:10029@127.0.0.1"),
        ("[::1]:10029", "inet6:10029@::1"),
        ("unix:/run/filterd/milter.sock", "unix:/run/filterd/milter.sock"),
    ],
)
def test_libmilter_socket_syntax(address: str, expected: str) -> None:
    assert libmilter_socket(parse_endpoint(address)) == expected


# ------------------------------------------------------------------------------ envelope


def test_client_from_connect_without_ptr_is_unknown() -> None:
    client = client_from_connect("[192.0.2.1]", ("192.0.2.1", 40123), {})
    assert (client.name, client.address, client.port) == ("unknown", "192.0.2.1", 40123)
    assert client.describe() == "unknown[192.0.2.1]"


def test_client_macros_win_over_connect_arguments() -> None:
    macros = {
        "{client_addr}": "IPv6:2001:db8::1",
        "{client_name}": "mx.example.net",
        "{client_port}": "2525",
    }
    client = client_from_connect("[127.0.0.1]", ("127.0.0.1", 1), macros)
    assert (client.name, client.address, client.port) == ("mx.example.net", "2001:db8::1", 2525)


def test_unix_and_unknown_families() -> None:
    assert client_from_connect("localhost", "/run/sock", {}).address == "unknown"
    assert client_from_connect("", None, {}).name == "unknown"


def test_session_helo_and_transaction_from_macros() -> None:
    session = session_from_connect(
        "mx.example.net",
        ("192.0.2.1", 25),
        {"j": "mta.test", "{daemon_name}": "smtpd"},
        session_id="S1",
        listener="127.0.0.1:10029",
    )
    apply_helo(session, "helo.example.net", {"{tls_version}": "TLSv1.3"})
    assert session.peer.helo == "helo.example.net"
    assert session.tls
    t = transaction_from_mail(
        session, "<alice@example.net>", ["BODY=8BITMIME"], {"{auth_authen}": "bob", "i": "QID"}
    )
    assert (t.sender, t.mail_params, t.queue_id) == ("alice@example.net", ("BODY=8BITMIME",), "QID")
    assert session.peer.protocol == "ESMTPSA"
    macros = session.notes.get(MILTER_MACROS)
    assert macros is not None
    assert macros["j"] == "mta.test"
    assert macros["{auth_authen}"] == "bob"


def test_queue_id_is_noqueue_until_postfix_has_one() -> None:
    session = session_from_connect("h", None, {}, session_id="S", listener="l")
    t = transaction_from_mail(session, "<>", [], {})
    assert (t.sender, t.queue_id) == ("", "NOQUEUE")
    assert session.peer.protocol == "SMTP"


def test_paths() -> None:
    assert strip_path(" <a@b> ") == "a@b"
    assert strip_path("a@b") == "a@b"
    rcpt = recipient_from_rcpt("<x@y>", ["NOTIFY=NEVER"])
    assert (rcpt.address, rcpt.params) == ("x@y", ("NOTIFY=NEVER",))


# ------------------------------------------------------------------------------ stages


def test_reject_renders_reply_code_and_escapes_percent() -> None:
    response = render_stage(Reject(Reply(550, "5.7.1", "100% spam\nsecond line")))
    assert response == Response(REJECT, SetReply("550", "5.7.1", ("100%% spam", "second line")))


def test_tempfail_renders_tempfail() -> None:
    response = render_stage(TempFail(Reply(451, "4.7.1", "later")))
    assert response == Response(TEMPFAIL, SetReply("451", "4.7.1", ("later",)))


def test_reply_without_enhanced_code_gets_a_generic_one() -> None:
    assert render_stage(Reject(Reply(550, "", "no"))).reply == SetReply("550", "5.0.0", ("no",))


@pytest.mark.parametrize(
    "verdict",
    [Continue(), Accept(), Discard("x"), Quarantine("y"), Accept(final=True)],
)
def test_other_verdicts_continue_before_end_of_message(
    verdict: Continue | Accept | Discard | Quarantine,
) -> None:
    assert render_stage(verdict) == Response(CONTINUE)


def test_final_accept_is_accept_only_when_nothing_is_due() -> None:
    assert render_stage(Accept(final=True), may_accept=True) == Response(ACCEPT)
    assert render_stage(Accept(), may_accept=True) == Response(CONTINUE)


def test_escape_percent() -> None:
    assert escape_percent("50%%/100%") == "50%%%%/100%%"


# ------------------------------------------------------------------------------ end of message
NAMES = ["Received", "Subject", "X-Spam", "To", "X-Spam"]


def test_header_edits_become_modifications() -> None:
    edits: list[Edit] = [
        AddHeader("X-Top", "1"),
        AddHeader("X-End", "2", at_top=False),
        ChangeHeader("Subject", "new"),
        RemoveHeader("X-Spam"),
        InsertHeader(1, "X-Ins", "3"),
    ]
    assert header_actions(NAMES, edits) == [
        InsertHeaderAction(0, "X-Top", "1"),
        AddHeaderAction("X-End", "2"),
        ChangeHeaderAction("Subject", 1, "new"),
        ChangeHeaderAction("X-Spam", 2, ""),  # last one first: indexes stay right
        ChangeHeaderAction("X-Spam", 1, ""),
        InsertHeaderAction(2, "X-Ins", "3"),  # after X-Top, before Subject
    ]


def test_edits_of_absent_headers_are_dropped() -> None:
    # chgheader beyond the last occurrence would make Postfix add the header.
    edits: list[Edit] = [ChangeHeader("Subject", "x", occurrence=2), RemoveHeader("Nope")]
    assert header_actions(NAMES, edits) == []


def test_per_name_index_skips_headers_added_at_the_top() -> None:
    # The chain's semantics: occurrence counts the message's own headers, not added tops.
    edits: list[Edit] = [AddHeader("X-Spam", "ours"), ChangeHeader("X-Spam", "changed")]
    assert header_actions(NAMES, edits)[1] == ChangeHeaderAction("X-Spam", 2, "changed")


def _simulate(names: list[str], actions: list[MilterAction]) -> list[tuple[str, str]]:
    """Postfix's side: apply modifications to (name, value) fields in order."""
    fields = [(n, "orig") for n in names]
    for action in actions:
        match action:
            case InsertHeaderAction(index=i, name=n, value=v):
                fields.insert(i, (n, v))
            case AddHeaderAction(name=n, value=v):
                fields.append((n, v))
            case ChangeHeaderAction(name=n, index=i, value=v):
                positions = [p for p, f in enumerate(fields) if f[0].lower() == n.lower()]
                if v:
                    fields[positions[i - 1]] = (fields[positions[i - 1]][0], v)
                else:
                    del fields[positions[i - 1]]
            case _:
                pass
    return fields


@pytest.mark.parametrize(
    "edits",
    [
        [AddHeader("A", "1"), AddHeader("B", "2"), InsertHeader(0, "C", "3")],
        [RemoveHeader("X-Spam", 2), ChangeHeader("X-Spam", "c"), AddHeader("X-Spam", "t")],
        [InsertHeader(99, "Z", "z"), RemoveHeader("Received"), ChangeHeader("To", "t")],
        [AddHeader("To", "top"), RemoveHeader("To"), InsertHeader(2, "To", "mid")],
    ],
)
def test_modifications_give_what_the_proxy_would_give(edits: list[Edit]) -> None:
    """The milter's result equals the SMTP proxy's ``apply_header_edits`` on the same edits."""
    headers = [Header.build(n, "orig") for n in NAMES]
    expected = [(h.name, h.value) for h in apply_header_edits(headers, edits)]
    assert _simulate(NAMES, header_actions(NAMES, edits)) == expected


def test_envelope_and_body_edits() -> None:
    body = b"x" * (BODY_CHUNK + 10)
    outcome = Outcome(
        Continue(),
        edits=(
            AddRecipient("new@example.org"),
            RemoveRecipient("old@example.org"),
            ChangeSender("", ("BODY=8BITMIME",)),
            ReplaceBody(body),
        ),
    )
    plan = plan_eom(outcome, [])
    assert plan.actions == (
        ReplaceBodyAction(body[:BODY_CHUNK]),
        ReplaceBodyAction(body[BODY_CHUNK:]),
        AddRcptAction("<new@example.org>"),
        DelRcptAction("<old@example.org>"),
        ChangeFromAction("<>", ("BODY=8BITMIME",)),
    )
    assert plan.response == Response(CONTINUE)


def test_empty_replacement_body_is_one_empty_chunk() -> None:
    plan = plan_eom(Outcome(Continue(), edits=(ReplaceBody(b""),)), [])
    assert plan.actions == (ReplaceBodyAction(b""),)


def test_earlier_edits_come_first() -> None:
    plan = plan_eom(
        Outcome(Accept(), edits=(AddHeader("B", "2", at_top=False),)),
        [],
        earlier_edits=[AddHeader("A", "1", at_top=False)],
    )
    assert plan.actions == (AddHeaderAction("A", "1"), AddHeaderAction("B", "2"))
    assert plan.response == Response(ACCEPT)


def test_reject_at_end_of_message_sends_no_modifications() -> None:
    plan = plan_eom(
        Outcome(Reject(Reply(554, "5.7.0", "no")), edits=(AddHeader("A", "1"),)),
        ["Subject"],
        earlier_edits=[AddHeader("B", "2")],
    )
    assert plan.actions == ()
    assert plan.response == Response(REJECT, SetReply("554", "5.7.0", ("no",)))


def test_quarantine_is_edits_then_quarantine_then_accept() -> None:
    plan = plan_eom(
        Outcome(
            Quarantine("spammy", edits=(AddHeader("X-Q", "1"),)), edits=(AddHeader("X-Q", "1"),)
        ),
        [],
    )
    assert plan.actions == (InsertHeaderAction(0, "X-Q", "1"), QuarantineAction("spammy"))
    assert plan.response == Response(ACCEPT)


def test_disposition_from_an_earlier_stage_wins_unless_refused() -> None:
    held = plan_eom(Outcome(Continue()), [], disposition=Quarantine("from rcpt"))
    assert held.actions == (QuarantineAction("from rcpt"),)
    dropped = plan_eom(
        Outcome(Continue(edits=(AddHeader("A", "1"),))), [], disposition=Discard("d")
    )
    assert dropped == plan_eom(Outcome(Discard("d")), [])
    assert dropped.response == Response(DISCARD)
    assert dropped.actions == ()
    refused = plan_eom(
        Outcome(TempFail(Reply(451, "4.3.0", "later"))), [], disposition=Discard("d")
    )
    assert refused.response.code == TEMPFAIL


# ------------------------------------------------------------------------------ configuration
def _milter_config(*addresses: str) -> str:
    tables = "".join(f'[[listen]]\naddress = "{a}"\nprotocol = "milter"\n' for a in addresses)
    return tables + '[delivery]\nmethod = "maildir"\n'


def test_config_accepts_one_milter_listener() -> None:
    config = parse_config(_milter_config("127.0.0.1:10029"))
    assert config.listen[0].protocol == "milter"


def test_config_refuses_port_zero_and_a_second_milter() -> None:
    with pytest.raises(ConfigError, match="fixed port"):
        parse_config(_milter_config("127.0.0.1:0"))
    with pytest.raises(ConfigError, match="only one milter listener"):
        parse_config(_milter_config("127.0.0.1:10029", "unix:/run/m.sock"))


def test_a_redirect_removes_the_recipients_and_adds_its_address() -> None:
    plan = plan_eom(
        Outcome(Continue(), edits=(AddRecipient("bcc@example.net"),)),
        [],
        earlier_edits=[Redirect("first@example.net"), Redirect("boss@example.net")],
        recipients=["a@example.org", "b@example.org"],
    )
    assert plan.actions == (  # the last REDIRECT wins, as in Postfix
        DelRcptAction("<a@example.org>"),
        DelRcptAction("<b@example.org>"),
        AddRcptAction("<boss@example.net>"),
        AddRcptAction("<bcc@example.net>"),
    )
