"""The chain's rules: order, short-circuit, accumulation, timeouts, failure policy."""

from __future__ import annotations

import logging

import pytest
import trio

from filterd.chain.registry import PluginError, check_plugin_class
from filterd.chain.runner import (
    INCIDENT_GAP,
    MAX_FAILURE_KINDS,
    PLUGIN_FAILED,
    PLUGIN_FAILED_REJECT,
    PLUGIN_TIMEOUT,
    ChainRunner,
    Entry,
    Incidents,
)
from filterd.config.schema import ChainEntryConfig
from filterd.maillog import MailLog
from filterd.model.envelope import Client, Recipient, Session, Transaction
from filterd.sdk import (
    Accept,
    AddHeader,
    ConfigError,
    Continue,
    Finding,
    MessageView,
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
from filterd.testing import run_plugin

MESSAGE = b"Subject: hi\r\nUser-Agent: x\r\n\r\nbody\r\n"
REFUSED = Reply(550, "5.7.1", "no")


class Script(PluginConfig):
    mail: str = "continue"  # continue|reject|tempfail|crash|crash-quoting|hang|accept-final
    header: str = ""
    rcpt_reject: str = ""


class Scripted(Plugin[Script], OnMailFrom, OnRcpt, OnMessage):
    name = "scripted"
    Config = Script
    calls: list[str]

    async def on_mail_from(self, t: Transaction) -> Verdict:
        self.env.log.info("mail seen")
        match self.config.mail:
            case "reject":
                return Reject(REFUSED)
            case "tempfail":
                return TempFail(Reply(451, "4.7.1", "later"))
            case "crash":
                raise RuntimeError("boom")
            case "crash-quoting":
                raise ValueError("bad sender\nfilterd/smtpd[1]: forged line")
            case "hang":
                await trio.sleep_forever()
            case "accept-final":
                return Accept(final=True)
            case "not-a-verdict":
                return "OK"  # type: ignore[return-value]
        return Continue(findings=(Finding(f"{self.env.name}.mail", score=1.0),))

    async def on_rcpt(self, t: Transaction, rcpt: Recipient) -> Verdict:
        if self.config.rcpt_reject and rcpt.address.startswith(self.config.rcpt_reject):
            return Reject(REFUSED)
        return Continue()

    async def on_message(self, t: Transaction, message: MessageView) -> Verdict:
        if self.config.header:
            return Continue(edits=(AddHeader("X-Seen-By", self.config.header),))
        return Continue()


def entry(label: str, timeout: float = 30.0, on_error: str = "tempfail", **script: str) -> Entry:
    config = ChainEntryConfig(plugin="scripted", name=label, timeout=timeout, on_error=on_error)  # type: ignore[arg-type]
    plugin = Scripted(Script(**script), PluginEnv(label, MailLog(label), trio.CapacityLimiter(1)))
    return Entry(
        config,
        plugin,
        trio.CapacityLimiter(5),
        frozenset({"on_mail_from", "on_rcpt", "on_message"}),
    )


def transaction() -> Transaction:
    return Transaction("Q1", Session("S", "test", Client("192.0.2.1")), "a@b.example")


async def test_first_non_continue_ends_the_stage_and_findings_accumulate() -> None:
    chain = ChainRunner([entry("one"), entry("two", mail="reject"), entry("three")])
    outcome = await chain.mail_from(transaction())
    assert outcome.verdict == Reject(REFUSED)
    assert outcome.decided_by == "two"
    assert [r.label for r in outcome.results] == ["one", "two"]  # "three" never ran
    assert [f.name for f in outcome.findings] == ["one.mail"]


async def test_edits_accumulate_in_chain_order() -> None:
    t = transaction()
    chain = ChainRunner([entry("one", header="1"), entry("two", header="2")])
    from filterd.model.spool import Spool

    with Spool(1000) as spool:
        spool.write(MESSAGE)
        outcome = await chain.message(t, MessageView(spool))
    assert outcome.edits == (AddHeader("X-Seen-By", "1"), AddHeader("X-Seen-By", "2"))
    assert outcome.verdict == Continue()


async def test_timeout_is_451_by_default(autojump_clock: trio.testing.MockClock) -> None:
    chain = ChainRunner([entry("slow", timeout=5, mail="hang")])
    outcome = await chain.mail_from(transaction())
    assert outcome.verdict == TempFail(PLUGIN_TIMEOUT)
    assert outcome.results[0].error == "timeout after 5s"


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("tempfail", TempFail(PLUGIN_FAILED)),
        ("continue", Continue()),
        ("reject", Reject(PLUGIN_FAILED_REJECT)),
    ],
)
async def test_exception_follows_on_error(policy: str, expected: Verdict) -> None:
    chain = ChainRunner([entry("crashy", on_error=policy, mail="crash"), entry("after")])
    outcome = await chain.mail_from(transaction())
    assert outcome.verdict == expected
    assert outcome.results[0].error == "RuntimeError: boom"
    ran_after = [r.label for r in outcome.results] == ["crashy", "after"]
    assert ran_after == (policy == "continue")


async def test_a_non_verdict_is_a_plugin_error() -> None:
    outcome = await ChainRunner([entry("bad", mail="not-a-verdict")]).mail_from(transaction())
    assert outcome.verdict == TempFail(PLUGIN_FAILED)


async def test_accept_final_skips_every_later_check_of_the_transaction() -> None:
    t = transaction()
    chain = ChainRunner([entry("whitelist", mail="accept-final"), entry("strict", rcpt_reject="x")])
    outcome = await chain.mail_from(t)
    assert outcome.verdict == Accept(final=True)
    rcpt_outcome = await chain.rcpt(t, Recipient("x@y.example"))
    assert rcpt_outcome.verdict == Continue()
    assert rcpt_outcome.results == ()


async def test_per_recipient_outcomes_with_the_harness() -> None:
    result = await run_plugin(
        Scripted, {"rcpt_reject": "bad"}, message=MESSAGE, rcpts=["good@x.example", "bad@x.example"]
    )
    assert result.rcpt_outcomes["good@x.example"].verdict == Continue()
    assert result.rcpt_outcomes["bad@x.example"].verdict == Reject(REFUSED)
    assert result.recipients == ["good@x.example"]


async def test_harness_applies_edits_and_captures_log_lines() -> None:
    result = await run_plugin(Scripted, {"header": "me"}, message=MESSAGE)
    assert result.message.split(b"\r\n")[0].startswith(b"X-Seen-By: me")
    assert result.message.endswith(b"Subject: hi\r\nUser-Agent: x\r\n\r\nbody\r\n")
    assert any("mail seen" in line for line in result.log)


async def test_harness_validates_plugin_config() -> None:
    with pytest.raises(ConfigError, match=r'config\.no_such_key: unknown key "no_such_key"'):
        await run_plugin(Scripted, {"no_such_key": 1}, message=MESSAGE)


async def test_a_crash_logs_its_traceback_once_per_incident(
    caplog: pytest.LogCaptureFixture,
) -> None:
    chain = ChainRunner([entry("crashy", on_error="continue", mail="crash")])
    with caplog.at_level(logging.INFO, logger="filterd"):
        for _ in range(3):
            outcome = await chain.mail_from(transaction())
            assert outcome.results[0].error == "RuntimeError: boom"
    tracebacks = [r for r in caplog.records if "Traceback:" in r.getMessage()]
    assert len(tracebacks) == 1
    assert tracebacks[0].levelno == logging.ERROR
    first, *trace = tracebacks[0].getMessage().split("\n")
    assert first.endswith(
        "crashy: on_mail_from raised (traceback once per incident), error=RuntimeError: boom"
    )
    assert any("in on_mail_from" in line for line in trace)  # the plugin's own frame
    assert all(line.startswith("  ") for line in trace)  # nothing reads as a line of its own
    assert trace[-1] == "  RuntimeError: boom"
    assert caplog.text.count("status=plugin-error") == 3


def test_an_incident_is_a_kind_of_failure_and_ends_after_a_quiet_gap() -> None:
    incidents = Incidents()

    def fail(kind: type[Exception]) -> Exception:
        try:
            raise kind("x")
        except Exception as exc:
            return exc

    assert incidents.is_new(fail(RuntimeError), now=0.0)
    assert not incidents.is_new(fail(RuntimeError), now=INCIDENT_GAP)  # the storm goes on
    assert incidents.is_new(fail(ValueError), now=INCIDENT_GAP)  # another kind
    assert not incidents.is_new(fail(RuntimeError), now=2 * INCIDENT_GAP)
    assert incidents.is_new(fail(RuntimeError), now=3 * INCIDENT_GAP + 1)  # quiet, then again


def test_incidents_remember_a_bounded_number_of_kinds() -> None:
    incidents = Incidents()

    def fail_at(line: int) -> Exception:
        try:
            exec(compile("\n" * line + "raise RuntimeError", "generated.py", "exec"))
        except RuntimeError as exc:
            return exc
        raise AssertionError("unreachable")

    assert incidents.is_new(fail_at(0), now=0.0)
    for line in range(1, MAX_FAILURE_KINDS + 1):
        assert incidents.is_new(fail_at(line), now=0.0)
    assert incidents.is_new(fail_at(0), now=0.0)  # the oldest kind was forgotten
    assert not incidents.is_new(fail_at(MAX_FAILURE_KINDS), now=0.0)


def test_registry_refuses_misspelled_stage_and_stage_less_plugins() -> None:
    class Typo(Plugin[PluginConfig], OnRcpt):
        name = "typo"

        async def on_rcpt(self, t: Transaction, rcpt: Recipient) -> Verdict:
            return Continue()

        async def on_rcpt_to(self, t: Transaction, rcpt: Recipient) -> Verdict:
            return Continue()

    class Empty(Plugin[PluginConfig]):
        name = "empty"

    class Misnamed(Plugin[PluginConfig], OnRcpt):
        name = "other"

        async def on_rcpt(self, t: Transaction, rcpt: Recipient) -> Verdict:
            return Continue()

    class Unimplemented(Plugin[PluginConfig], OnRcpt, OnMessage):
        name = "unimplemented"

        async def on_rcpt(self, t: Transaction, rcpt: Recipient) -> Verdict:
            return Continue()

    with pytest.raises(PluginError, match="declares OnMessage but does not implement on_message"):
        check_plugin_class("unimplemented", Unimplemented)
    with pytest.raises(PluginError, match="no stage: on_rcpt_to"):
        check_plugin_class("typo", Typo)
    with pytest.raises(PluginError, match="implements no stage"):
        check_plugin_class("empty", Empty)
    with pytest.raises(PluginError, match="entry point 'misnamed'"):
        check_plugin_class("misnamed", Misnamed)

    class Nameless(Plugin[PluginConfig], OnRcpt):
        async def on_rcpt(self, t: Transaction, rcpt: Recipient) -> Verdict:
            return Continue()

    with pytest.raises(PluginError, match='Nameless has no name: add name = "nameless" to the'):
        check_plugin_class("nameless", Nameless)


async def test_a_traceback_escapes_what_the_exception_quotes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An exception's text often quotes what a peer sent: a CR/LF in it must not start a line
    that looks like one of ours."""

    chain = ChainRunner([entry("quoting", on_error="continue", mail="crash-quoting")])
    with caplog.at_level(logging.INFO, logger="filterd"):
        await chain.mail_from(transaction())
    (record,) = [r for r in caplog.records if "Traceback:" in r.getMessage()]
    lines = record.getMessage().split("\n")
    assert not any(line.startswith("filterd/") for line in lines)
    assert lines[-1] == "  ValueError: bad sender\\x0afilterd/smtpd[1]: forged line"


async def test_one_line_per_decision_a_plain_continue_only_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A decision, findings or a failure: a line at info. A plain Continue (with edits or
    not) decides nothing: at debug only, so a quiet chain costs a message no line."""
    t = transaction()
    chain = ChainRunner([entry("quiet", header="1"), entry("decider", mail="reject")])
    from filterd.model.spool import Spool

    with caplog.at_level(logging.INFO, logger="filterd"), Spool(1000) as spool:
        spool.write(MESSAGE)
        await chain.message(t, MessageView(spool))  # both continue, "quiet" with an edit
        await chain.mail_from(t)  # "quiet" finds something, "decider" rejects
    lines = [r.getMessage() for r in caplog.records if r.name == "filterd.chain"]
    assert not any("on_message" in line for line in lines)
    assert any("quiet: on_mail_from continue findings=quiet.mail" in line for line in lines)
    assert any("decider: on_mail_from reject (550 5.7.1 no)" in line for line in lines)
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="filterd"), Spool(1000) as spool:
        spool.write(MESSAGE)
        await chain.message(t, MessageView(spool))
    debug = [r for r in caplog.records if r.name == "filterd.chain"]
    assert {r.levelno for r in debug} == {logging.DEBUG}
    assert any("quiet: on_message continue" in r.getMessage() for r in debug)
