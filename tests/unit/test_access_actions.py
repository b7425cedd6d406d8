"""access(5) actions (filterd.sdk.access_actions) as Postfix's smtpd applies them: parsing,
reply wording, codes, enhanced-code rewriting and the DEFER_IF_* and list rules. The replies
are checked against real smtpd in plugins/access/tests/test_access_postfix.py."""

from __future__ import annotations

import pytest

from filterd.model.edits import AddHeader, AddRecipient
from filterd.model.reply import Reply
from filterd.model.verdict import (
    Accept,
    Continue,
    DeferIf,
    Discard,
    Quarantine,
    Reject,
    TempFail,
)
from filterd.sdk.access_actions import (
    CLIENT,
    HELO,
    RECIPIENT,
    SENDER,
    SERVER_CONFIGURATION_ERROR,
    AccessCodes,
    AccessKind,
    RestrictionList,
    fix_status,
    lookup_failure,
    parse_access_action,
)

RCPT = "joe@example.com"


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("OK", AccessKind.OK),
        ("ok trailing text is ignored", AccessKind.OK),
        ("RELAY", AccessKind.OK),
        ("1712345678", AccessKind.OK),
        ("550", AccessKind.OK),  # all-numeric: OK (pop-before-smtp time stamps)
        ("REJECT", AccessKind.REJECT),
        ("reject go away", AccessKind.REJECT),
        ("DEFER", AccessKind.DEFER),
        ("Defer_If_Permit", AccessKind.DEFER_IF_PERMIT),
        ("DEFER_IF_REJECT x", AccessKind.DEFER_IF_REJECT),
        ("550 no such user", AccessKind.CODE),
        ("421 closing", AccessKind.CODE),
        ("DUNNO", AccessKind.DUNNO),
        ("HOLD", AccessKind.HOLD),
        ("DISCARD spam", AccessKind.DISCARD),
        ("PREPEND X-Seen: yes", AccessKind.PREPEND),
        ("REDIRECT a@b", AccessKind.REDIRECT),
        ("BCC a@b", AccessKind.BCC),
        ("FILTER smtp:[127.0.0.1]:10025", AccessKind.FILTER),
        ("INFO hello", AccessKind.INFO),
        ("WARN hello", AccessKind.WARN),
        ("permit", AccessKind.RESTRICTIONS),
        ("reject, defer_if_permit", AccessKind.RESTRICTIONS),
        ("hash:/etc/postfix/other", AccessKind.UNSUPPORTED),
        ("reject_unauth_destination", AccessKind.UNSUPPORTED),
        ("REJECTED", AccessKind.UNSUPPORTED),  # the whole first word is the command
        ("650 text", AccessKind.UNSUPPORTED),
    ],
)
def test_parse(value: str, kind: AccessKind) -> None:
    assert parse_access_action(value).kind is kind


def _applied(value: str, what: str = RECIPIENT, name: str = RCPT, **codes: int) -> RestrictionList:
    state = RestrictionList(name, what, AccessCodes(**codes))
    state.apply(value)
    return state


@pytest.mark.parametrize(
    ("value", "what", "name", "reply"),
    [
        (
            "REJECT",
            RECIPIENT,
            RCPT,
            Reply(554, "5.7.1", f"<{RCPT}>: Recipient address rejected: Access denied"),
        ),
        (
            "REJECT go away",
            SENDER,
            "s@x",
            Reply(554, "5.7.1", "<s@x>: Sender address rejected: go away"),
        ),
        (
            "REJECT 5.1.1 no such user",
            SENDER,
            "s@x",
            Reply(554, "5.1.7", "<s@x>: Sender address rejected: no such user"),
        ),
        (
            "REJECT 5.1.7 bad",
            RECIPIENT,
            RCPT,
            Reply(554, "5.1.3", f"<{RCPT}>: Recipient address rejected: bad"),
        ),
        (
            "REJECT 5.1.1 x",
            CLIENT,
            "h[1.2.3.4]",
            Reply(554, "5.0.0", "<h[1.2.3.4]>: Client host rejected: x"),
        ),
        (
            "REJECT 5.7.9 policy",
            HELO,
            "helo.example",
            Reply(554, "5.7.9", "<helo.example>: Helo command rejected: policy"),
        ),
        (
            "REJECT 4.7.1 class follows the code",
            RECIPIENT,
            RCPT,
            Reply(554, "5.7.1", f"<{RCPT}>: Recipient address rejected: class follows the code"),
        ),
        (
            "DEFER",
            RECIPIENT,
            RCPT,
            Reply(450, "4.7.1", f"<{RCPT}>: Recipient address rejected: Access denied"),
        ),
        (
            "DEFER later",
            CLIENT,
            "u[1.2.3.4]",
            Reply(450, "4.7.1", "<u[1.2.3.4]>: Client host rejected: later"),
        ),
        (
            "550 no",
            RECIPIENT,
            RCPT,
            Reply(550, "5.7.1", f"<{RCPT}>: Recipient address rejected: no"),
        ),
        (
            "451 4.3.2 busy",
            RECIPIENT,
            RCPT,
            Reply(451, "4.3.2", f"<{RCPT}>: Recipient address rejected: busy"),
        ),
        (
            "421 closing",
            RECIPIENT,
            RCPT,
            Reply(421, "4.7.1", f"<{RCPT}>: Recipient address rejected: closing"),
        ),
        (
            "521 5.1.1 gone",
            SENDER,
            "s@x",
            Reply(521, "5.1.7", "<s@x>: Sender address rejected: gone"),
        ),
        (
            "reject",
            RECIPIENT,
            RCPT,
            Reply(554, "5.7.1", f"<{RCPT}>: Recipient address rejected: Access denied"),
        ),
        (  # a command word in any case is the command, not the restriction
            "defer",
            RECIPIENT,
            RCPT,
            Reply(450, "4.7.1", f"<{RCPT}>: Recipient address rejected: Access denied"),
        ),
        (  # the restriction (smtpd's defer_code, 4.3.2)
            "defer,permit",
            RECIPIENT,
            RCPT,
            Reply(450, "4.3.2", f"<{RCPT}>: Recipient address rejected: Try again later"),
        ),
        ("hash:/etc/x", RECIPIENT, RCPT, SERVER_CONFIGURATION_ERROR),
        ("reject_unauth_destination", RECIPIENT, RCPT, SERVER_CONFIGURATION_ERROR),
    ],
)
def test_refusals_are_worded_as_smtpd(value: str, what: str, name: str, reply: Reply) -> None:
    state = _applied(value, what, name)
    assert state.refusal == reply
    assert state.decided
    expected = Reject(reply) if reply.is_permanent else TempFail(reply)
    assert state.verdict() == expected


def test_the_map_codes_are_settings() -> None:
    assert _applied("REJECT", access_map_reject_code=550).refusal == Reply(
        550, "5.7.1", f"<{RCPT}>: Recipient address rejected: Access denied"
    )
    assert _applied("DEFER", access_map_defer_code=451).refusal == Reply(
        451, "4.7.1", f"<{RCPT}>: Recipient address rejected: Access denied"
    )
    assert _applied("reject", reject_code=550).refusal == Reply(
        554, "5.7.1", f"<{RCPT}>: Recipient address rejected: Access denied"
    )  # REJECT, the command
    assert _applied("reject,permit", reject_code=550).refusal == Reply(
        550, "5.7.1", f"<{RCPT}>: Recipient address rejected: Access denied"
    )  # reject, the restriction


@pytest.mark.parametrize(
    ("status", "what", "fixed"),
    [
        ("5.1.1", SENDER, "5.1.7"),
        ("5.1.2", SENDER, "5.1.8"),
        ("5.1.5", SENDER, "5.1.0"),
        ("5.1.9", SENDER, "5.1.0"),
        ("5.1.7", RECIPIENT, "5.1.3"),
        ("5.1.8", RECIPIENT, "5.1.2"),
        ("4.1.1", RECIPIENT, "4.1.1"),
        ("5.1.1", HELO, "5.0.0"),
        ("4.1.1", CLIENT, "4.0.0"),
        ("5.7.1", SENDER, "5.7.1"),
        ("5.2.2", RECIPIENT, "5.2.2"),
    ],
)
def test_fix_status_as_smtpd_dsn_fix(status: str, what: str, fixed: str) -> None:
    assert fix_status(status, what) == fixed


def test_ok_dunno_and_restriction_permit() -> None:
    assert _applied("OK").verdict() == Accept()
    assert _applied("1234").verdict() == Accept()
    assert _applied("permit").verdict() == Accept()
    dunno = _applied("DUNNO")
    assert not dunno.decided
    assert dunno.verdict() == Continue()


def test_defer_if_permit_and_defer_if_reject_are_held_not_applied() -> None:
    state = _applied("DEFER_IF_PERMIT not now")
    reply = Reply(450, "4.7.1", f"<{RCPT}>: Recipient address rejected: not now")
    assert not state.decided
    assert state.verdict() == Continue(defer_if=(DeferIf("permit", reply),))
    state = _applied("DEFER_IF_REJECT")
    generic = Reply(450, "4.7.1", f"<{RCPT}>: Recipient address rejected: Service unavailable")
    assert state.verdict() == Continue(defer_if=(DeferIf("reject", generic),))
    named = _applied("defer_if_permit, permit")  # the restriction, then permit
    requested = Reply(
        450, "4.7.0", f"<{RCPT}>: Recipient address rejected: defer_if_permit requested"
    )
    assert named.verdict() == Accept(defer_if=(DeferIf("permit", requested),))


def test_a_later_5xx_of_the_list_becomes_the_defer_if_reject_reply() -> None:
    state = RestrictionList(RCPT, RECIPIENT)
    state.apply("DEFER_IF_REJECT maybe")
    state.apply("REJECT no")
    assert state.refusal == Reply(450, "4.7.1", f"<{RCPT}>: Recipient address rejected: maybe")
    state = RestrictionList(RCPT, RECIPIENT)
    state.apply("DEFER_IF_REJECT maybe")
    state.apply("451 busy")  # a 4xx stays
    assert state.refusal == Reply(451, "4.7.1", f"<{RCPT}>: Recipient address rejected: busy")


def test_defer_if_reject_ends_with_its_list_defer_if_permit_carries_over() -> None:
    state = RestrictionList("u[1.2.3.4]", CLIENT)
    state.apply("DEFER_IF_REJECT maybe")
    state.apply("DEFER_IF_PERMIT later")
    assert state.decided  # both pending: generic_checks() stops the list
    state.next(RCPT, RECIPIENT)
    assert not state.decided
    state.apply("REJECT no")
    assert state.refusal == Reply(554, "5.7.1", f"<{RCPT}>: Recipient address rejected: no")
    state = RestrictionList("u[1.2.3.4]", CLIENT)
    state.apply("DEFER_IF_PERMIT later")
    state.next(RCPT, RECIPIENT)
    state.apply("OK")
    client = Reply(450, "4.7.1", "<u[1.2.3.4]>: Client host rejected: later")
    assert state.verdict() == Accept(defer_if=(DeferIf("permit", client),))


def test_prepend_bcc_hold_discard_redirect_info() -> None:
    state = RestrictionList(RCPT, RECIPIENT)
    for value in (
        "PREPEND X-One: 1",
        "PREPEND not a header",
        "BCC archive@example.net",
        "BCC nobody",
        "INFO hello",
        "WARN careful",
        "REDIRECT other@example.net",
        "FILTER smtp:[127.0.0.1]:10025",
        "HOLD look at it",
    ):
        state.apply(value)
        assert not state.decided
    assert state.edits == [AddHeader("X-One", "1"), AddRecipient("archive@example.net")]
    assert state.redirect == "other@example.net"
    kinds = [kind for kind, _ in state.notices]
    assert kinds == ["warning", "bcc", "warning", "info", "warn", "redirect", "warning", "hold"]
    hold = f"<{RCPT}>: Recipient address look at it"
    assert state.verdict() == Quarantine(hold, tuple(state.edits))
    state.apply("DISCARD")
    assert state.decided
    assert state.verdict() == Discard(f"<{RCPT}>: Recipient address triggers DISCARD action")


def test_a_pending_defer_if_permit_outweighs_discard_and_hold() -> None:
    state = RestrictionList(RCPT, RECIPIENT)
    state.apply("DEFER_IF_PERMIT later")
    state.apply("DISCARD")
    verdict = state.verdict()
    assert isinstance(verdict, Accept)
    assert [d.when for d in verdict.defer_if] == ["permit"]


def test_lookup_failure_reply() -> None:
    assert lookup_failure(RCPT) == Reply(451, "4.3.0", f"<{RCPT}>: Temporary lookup failure")


def test_a_reply_is_printable_and_at_most_510_characters() -> None:
    state = _applied("REJECT " + "x" * 600)
    assert state.refusal is not None
    assert len(state.refusal.to_bytes()) == 512


def test_the_policy_door_answer_leaves_out_what_postfix_puts_before_it() -> None:
    from filterd.model.verdict import Continue, DeferIf, Reject
    from filterd.sdk.access_actions import RECIPIENT, without_postfix_prefix

    own = Reply(554, "5.7.1", "<b@example.org>: Recipient address rejected: closed")
    bare = without_postfix_prefix(Reject(own), "b@example.org", RECIPIENT)
    assert bare == Reject(Reply(554, "5.7.1", "closed"))
    other = Reply(554, "5.7.1", "<1.2.3.4>: Client host rejected: go away")
    assert without_postfix_prefix(Reject(other), "b@example.org", RECIPIENT) == Reject(other)
    later = Reply(450, "4.7.1", "<b@example.org>: Recipient address rejected: closed")
    held = Continue(defer_if=(DeferIf("permit", later),))
    (kept,) = without_postfix_prefix(held, "b@example.org", RECIPIENT).defer_if
    assert kept.reply.text == "closed"
