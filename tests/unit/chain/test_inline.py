"""``@inline`` stages: they run without limiter and timeout, on any thread without an event
loop (``run_now``), and a plugin that breaks the promise (it suspends) fails as a plugin."""

from __future__ import annotations

import threading
import types
from collections.abc import Generator

import pytest
import trio
import trio.lowlevel

from filterd.chain.inline import BrokenInlinePromise, run_now
from filterd.chain.runner import ChainRunner, Entry
from filterd.config.schema import ChainEntryConfig
from filterd.maillog import MailLog
from filterd.model.envelope import Client, Session, Transaction
from filterd.model.spool import Spool
from filterd.sdk import (
    AddHeader,
    Continue,
    MessageView,
    OnMailFrom,
    OnMessage,
    Plugin,
    PluginConfig,
    PluginEnv,
    Reject,
    Reply,
    TempFail,
    Verdict,
    inline,
)
from filterd.sdk.stages import inline_stages
from filterd.testing import run_plugin

MESSAGE = b"Subject: hi\r\n\r\nbody\r\n"


class Tags(Plugin[PluginConfig], OnMessage, OnMailFrom):
    """Inline at end of message (it only looks at the subject); not at MAIL."""

    name = "tags"
    Config = PluginConfig

    @inline
    async def on_message(self, t: Transaction, message: MessageView) -> Verdict:
        if message.header("Subject") == "reject me":
            return Reject(Reply(550, "5.7.1", "no"))
        return Continue(edits=(AddHeader("X-Tagged", threading.current_thread().name),))

    async def on_mail_from(self, t: Transaction) -> Verdict:
        await trio.lowlevel.checkpoint()
        return Continue()


class Liar(Plugin[PluginConfig], OnMessage):
    """Says inline, then waits."""

    name = "liar"
    Config = PluginConfig

    @inline
    async def on_message(self, t: Transaction, message: MessageView) -> Verdict:
        await trio.lowlevel.checkpoint()
        return Continue()


class Waits(Plugin[PluginConfig], OnMessage):
    name = "waits"
    Config = PluginConfig

    async def on_message(self, t: Transaction, message: MessageView) -> Verdict:
        await trio.lowlevel.checkpoint()
        return Continue()


def entry(cls: type[Plugin[PluginConfig]], on_error: str = "tempfail") -> Entry:
    config = ChainEntryConfig(plugin=cls.name, on_error=on_error)  # type: ignore[arg-type]
    plugin = cls(PluginConfig(), PluginEnv(cls.name, MailLog(cls.name), trio.CapacityLimiter(1)))
    stages = frozenset(s for s in ("on_mail_from", "on_message") if hasattr(cls, s))
    return Entry(config, plugin, trio.CapacityLimiter(1), stages)


def transaction() -> Transaction:
    session = Session(id="s", listener="test", peer=Client(address="192.0.2.1"))
    return Transaction(queue_id="QID", session=session, sender="a@example.net")


def check(chain: ChainRunner, raw: bytes = MESSAGE) -> object:
    """The chain's end of message for ``raw``, run here without trio."""
    with Spool(1 << 20) as spool:
        spool.write(raw)
        return run_now(chain.message(transaction(), MessageView(spool)))


def test_the_marked_stages_are_known_per_plugin_and_per_chain() -> None:
    assert inline_stages(Tags) == {"on_message"}
    assert inline_stages(Waits) == frozenset()
    chain = ChainRunner([entry(Tags)])
    assert chain.runs_inline("on_message")
    assert not chain.runs_inline("on_mail_from")  # not marked
    assert not chain.runs_inline("on_rcpt")  # nobody implements it
    # one entry that may wait makes the whole stage wait
    assert not ChainRunner([entry(Tags), entry(Waits)]).runs_inline("on_message")


def test_an_inline_stage_runs_on_a_thread_without_trio_and_decides() -> None:
    chain = ChainRunner([entry(Tags)])
    results: list[object] = []
    worker = threading.Thread(target=lambda: results.append(check(chain)), name="libmilter-ish")
    worker.start()
    worker.join(10)
    [outcome] = results
    assert outcome.verdict == Continue()  # type: ignore[attr-defined]
    assert outcome.edits == (AddHeader("X-Tagged", "libmilter-ish"),)  # type: ignore[attr-defined]
    refused = check(chain, b"Subject: reject me\r\n\r\n")
    assert refused.verdict == Reject(Reply(550, "5.7.1", "no"))  # type: ignore[attr-defined]


@pytest.mark.parametrize(("on_error", "expected"), [("tempfail", TempFail), ("continue", Continue)])
def test_a_plugin_that_breaks_the_promise_fails_as_a_plugin(
    on_error: str, expected: type, caplog: pytest.LogCaptureFixture
) -> None:
    outcome = check(ChainRunner([entry(Liar, on_error)]))
    assert isinstance(outcome.verdict, expected)  # type: ignore[attr-defined]
    [result] = outcome.results  # type: ignore[attr-defined]
    assert result.error is not None
    assert "BrokenInlinePromise" in result.error or "RuntimeError" in result.error


def test_run_now_gives_up_on_a_coroutine_that_keeps_suspending() -> None:
    @types.coroutine
    def suspend() -> Generator[None, None, None]:
        yield  # what an event loop's trap does

    async def stubborn() -> None:
        while True:
            try:
                await suspend()
            except Exception:
                pass

    with pytest.raises(BrokenInlinePromise):
        run_now(stubborn())


async def test_the_harness_runs_inline_stages_inline_so_a_broken_promise_shows() -> None:
    kept = await run_plugin(Tags, message=MESSAGE)
    assert kept.decision("on_message") == Continue()
    broken = await run_plugin(Liar, message=MESSAGE)
    assert isinstance(broken.decision("on_message"), TempFail)
    [result] = [r for r in broken.results if r.stage == "on_message"]
    assert result.error is not None
    assert "BrokenInlinePromise" in result.error


async def test_in_trio_an_inline_stage_takes_no_limiter_slot() -> None:
    held = entry(Tags)
    chain = ChainRunner([held])
    async with held.limiter:  # every slot taken: a limited call would wait forever
        with trio.fail_after(5):
            with Spool(1 << 20) as spool:
                spool.write(MESSAGE)
                outcome = await chain.message(transaction(), MessageView(spool))
    assert outcome.verdict == Continue()
