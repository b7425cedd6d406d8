"""DEFER_IF_PERMIT and DEFER_IF_REJECT in the chain (``DeferIf`` on Continue/Accept), as
Postfix's smtpd applies them to its restriction lists (a stage being one list), and how the
policy door passes a pending one on to Postfix."""

from __future__ import annotations

import pytest
import trio

from filterd.chain.outcome import Outcome
from filterd.chain.runner import ChainRunner, Entry
from filterd.config.schema import ChainEntryConfig
from filterd.maillog import MailLog
from filterd.model.envelope import Client, Recipient, Session, Transaction
from filterd.model.verdict import DeferIf
from filterd.protocols.policy_map import render_action
from filterd.sdk import (
    Accept,
    Continue,
    Discard,
    MessageView,
    OnConnect,
    OnHelo,
    OnMailFrom,
    OnMessage,
    OnRcpt,
    Plugin,
    PluginConfig,
    PluginEnv,
    Reject,
    Reply,
    TempFail,
    Verdict,
)

IF_PERMIT = DeferIf("permit", Reply(450, "4.7.1", "<x>: Client host rejected: later"))
IF_REJECT = DeferIf("reject", Reply(450, "4.7.1", "<x>: Sender address rejected: maybe"))
REFUSED = Reply(554, "5.7.1", "<r@x>: Recipient address rejected: no")


class Script(PluginConfig):
    verdicts: dict[str, str] = {}  # stage -> continue|permit|reject|if-permit|if-reject|...


def _verdict(word: str) -> Verdict:
    match word:
        case "if-permit":
            return Continue(defer_if=(IF_PERMIT,))
        case "if-reject":
            return Continue(defer_if=(IF_REJECT,))
        case "both":
            return Continue(defer_if=(IF_REJECT, IF_PERMIT))
        case "accept-if-permit":
            return Accept(defer_if=(IF_PERMIT,))
        case "permit":
            return Accept()
        case "reject":
            return Reject(REFUSED)
        case "tempfail":
            return TempFail(Reply(451, "4.3.0", "later"))
        case "discard":
            return Discard("dropped")
    return Continue()


class Scripted(Plugin[Script], OnConnect, OnHelo, OnMailFrom, OnRcpt, OnMessage):
    name = "scripted"
    Config = Script

    def _at(self, stage: str) -> Verdict:
        return _verdict(self.config.verdicts.get(stage, "continue"))

    async def on_connect(self, session: Session) -> Verdict:
        return self._at("connect")

    async def on_helo(self, session: Session, name: str) -> Verdict:
        return self._at("helo")

    async def on_mail_from(self, t: Transaction) -> Verdict:
        return self._at(
            "mail:" + t.sender if "mail:" + t.sender in self.config.verdicts else "mail"
        )

    async def on_rcpt(self, t: Transaction, rcpt: Recipient) -> Verdict:
        return (
            self._at("rcpt:" + rcpt.address)
            if "rcpt:" + rcpt.address in (self.config.verdicts)
            else self._at("rcpt")
        )

    async def on_message(self, t: Transaction, message: MessageView) -> Verdict:
        return self._at("message")


STAGES = frozenset({"on_connect", "on_helo", "on_mail_from", "on_rcpt", "on_message"})


def chain(*scripts: dict[str, str]) -> ChainRunner:
    entries = []
    for index, verdicts in enumerate(scripts):
        label = f"p{index}"
        config = ChainEntryConfig(plugin="scripted", name=label)
        env = PluginEnv(label, MailLog(label), trio.CapacityLimiter(1))
        entries.append(
            Entry(config, Scripted(Script(verdicts=verdicts), env), trio.CapacityLimiter(5), STAGES)
        )
    return ChainRunner(entries)


def transaction() -> Transaction:
    return Transaction("Q1", Session("S", "test", Client("192.0.2.1")), "s@x")


async def _through_rcpt(runner: ChainRunner, t: Transaction, rcpt: str = "r@x") -> list[Outcome]:
    return [
        await runner.connect(t.session),
        await runner.helo(t.session, "helo.example"),
        await runner.mail_from(t),
        await runner.rcpt(t, Recipient(rcpt)),
    ]


async def test_defer_if_reject_turns_a_later_reject_of_the_stage_into_its_deferral() -> None:
    outcome = await chain({"rcpt": "if-reject"}, {"rcpt": "reject"}).rcpt(
        transaction(), Recipient("r@x")
    )
    assert outcome.verdict == TempFail(IF_REJECT.reply)
    assert outcome.decided_by == "p1"


async def test_defer_if_reject_does_not_outlive_its_stage() -> None:
    t = transaction()
    runner = chain({"mail": "if-reject", "rcpt": "reject"})
    outcomes = await _through_rcpt(runner, t)
    assert outcomes[2].verdict == Continue()
    assert outcomes[2].conditional == IF_REJECT  # pending at the end of MAIL, for the policy door
    assert outcomes[3].verdict == Reject(REFUSED)


async def test_defer_if_reject_without_a_reject_changes_nothing() -> None:
    outcome = await chain({"rcpt": "if-reject"}, {"rcpt": "tempfail"}).rcpt(
        transaction(), Recipient("r@x")
    )
    assert outcome.verdict == TempFail(Reply(451, "4.3.0", "later"))


async def test_defer_if_permit_at_rcpt_defers_a_permit_and_an_implicit_permit() -> None:
    for second in ("permit", "continue", "discard"):
        outcome = await chain({"rcpt": "if-permit"}, {"rcpt": second}).rcpt(
            transaction(), Recipient("r@x")
        )
        assert outcome.verdict == TempFail(IF_PERMIT.reply), second
        assert outcome.conditional == IF_PERMIT


async def test_defer_if_permit_yields_to_a_reject() -> None:
    outcome = await chain({"rcpt": "if-permit"}, {"rcpt": "reject"}).rcpt(
        transaction(), Recipient("r@x")
    )
    assert outcome.verdict == Reject(REFUSED)


async def test_a_client_defer_if_permit_waits_for_rcpt_and_holds_for_every_message() -> None:
    runner = chain({"connect": "if-permit", "rcpt:bad@x": "reject"})
    t = transaction()
    outcomes = await _through_rcpt(runner, t)
    assert [o.verdict for o in outcomes[:3]] == [Continue()] * 3  # nothing acts before RCPT
    assert outcomes[3].verdict == TempFail(IF_PERMIT.reply)
    assert (await runner.rcpt(t, Recipient("bad@x"))).verdict == Reject(REFUSED)
    second = Transaction("Q2", t.session, "other@x")
    assert (await runner.mail_from(second)).conditional == IF_PERMIT
    assert (await runner.rcpt(second, Recipient("r@x"))).verdict == TempFail(IF_PERMIT.reply)


async def test_a_mail_defer_if_permit_holds_for_its_message_only() -> None:
    runner = chain({"mail:s@x": "if-permit"}, {})
    t = transaction()
    outcomes = await _through_rcpt(runner, t)
    assert outcomes[3].verdict == TempFail(IF_PERMIT.reply)
    second = Transaction("Q2", t.session, "other@x")
    assert (await runner.mail_from(second)).conditional is None
    assert (await runner.rcpt(second, Recipient("r@x"))).verdict == Continue()


async def test_a_rcpt_defer_if_permit_holds_for_that_recipient_only() -> None:
    runner = chain({"rcpt:first@x": "if-permit"})
    t = transaction()
    assert (await runner.rcpt(t, Recipient("first@x"))).verdict == TempFail(IF_PERMIT.reply)
    assert (await runner.rcpt(t, Recipient("second@x"))).verdict == Continue()


async def test_an_accept_carrying_defer_if_permit_defers_at_rcpt() -> None:
    outcome = await chain({"rcpt": "accept-if-permit"}).rcpt(transaction(), Recipient("r@x"))
    assert outcome.verdict == TempFail(IF_PERMIT.reply)


async def test_the_first_deferral_of_a_kind_wins() -> None:
    other = DeferIf("permit", Reply(450, "4.7.1", "second"))

    class Second(Scripted):
        async def on_rcpt(self, t: Transaction, rcpt: Recipient) -> Verdict:
            return Continue(defer_if=(other,))

    runner = chain({"rcpt": "if-permit"})
    config = ChainEntryConfig(plugin="scripted", name="p1")
    env = PluginEnv("p1", MailLog("p1"), trio.CapacityLimiter(1))
    runner = ChainRunner(
        [*runner.entries, Entry(config, Second(Script(), env), trio.CapacityLimiter(5), STAGES)]
    )
    outcome = await runner.rcpt(transaction(), Recipient("r@x"))
    assert outcome.verdict == TempFail(IF_PERMIT.reply)


def test_the_policy_door_passes_a_pending_deferral_on_to_postfix() -> None:
    # pending at MAIL (or CONNECT/HELO): Postfix holds it over its own later restrictions
    assert render_action(Outcome(Continue(), conditional=IF_PERMIT)) == (
        "DEFER_IF_PERMIT 4.7.1 <x>: Client host rejected: later"
    )
    assert render_action(Outcome(Continue(), conditional=IF_REJECT)) == (
        "DEFER_IF_REJECT 4.7.1 <x>: Sender address rejected: maybe"
    )
    # a permit the chain turned into the deferral: still DEFER_IF_PERMIT (Postfix's later
    # restrictions may reject)
    assert render_action(Outcome(TempFail(IF_PERMIT.reply), conditional=IF_PERMIT)) == (
        "DEFER_IF_PERMIT 4.7.1 <x>: Client host rejected: later"
    )
    # a refusal of its own is answered as such
    tempfail = Reply(451, "4.3.0", "later")
    assert render_action(Outcome(TempFail(tempfail), conditional=IF_PERMIT)) == ("451 4.3.0 later")
    assert render_action(Outcome(Accept(), conditional=IF_PERMIT), accept_as_ok=True) == (
        "DEFER_IF_PERMIT 4.7.1 <x>: Client host rejected: later"
    )


def test_a_deferral_needs_a_4xx_reply() -> None:
    with pytest.raises(ValueError, match="4xx"):
        DeferIf("permit", Reply(554, "5.7.1", "no"))
