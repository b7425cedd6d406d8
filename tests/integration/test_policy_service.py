"""The policy front door over real TCP on 127.0.0.1, with a real ChainRunner and test plugins."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import partial
from types import MappingProxyType

import pytest
import trio
import trio.testing

from filterd.chain.runner import PLUGIN_FAILED, ChainRunner, Entry
from filterd.config.schema import ChainEntryConfig, LimitsConfig, ListenConfig
from filterd.frontdoors.policy.service import (
    PolicyHandler,
    PolicySettings,
    serve_policy_connection,
)
from filterd.frontdoors.shutdown import Shutdown
from filterd.maillog import MailLog
from filterd.model.envelope import Recipient, Session, Transaction
from filterd.protocols.policy import PolicyLimits
from filterd.protocols.policy_map import POLICY_ATTRIBUTES
from filterd.runtime.listeners import accept_loop
from filterd.sdk import (
    Accept,
    AddHeader,
    Continue,
    Discard,
    NoteKey,
    OnClose,
    OnConnect,
    OnHelo,
    OnMailFrom,
    OnRcpt,
    Plugin,
    PluginConfig,
    PluginEnv,
    Quarantine,
    Reject,
    Reply,
    TempFail,
    Verdict,
)
from filterd.sdk.policy_request import policy_door_stage

SPF_FAIL = Reply(550, "5.7.23", "SPF validation failed")
SEEN = NoteKey[int]("test.rcpts_seen")
NO_CHANGE: Mapping[str, object] = MappingProxyType({})


def policy_settings(
    listen: Mapping[str, object] = NO_CHANGE, limits: Mapping[str, object] = NO_CHANGE
) -> PolicySettings:
    """A policy listener's settings: the configuration's defaults but for these keys."""
    return PolicySettings.from_config(
        ListenConfig.model_validate({"address": "127.0.0.1:10040", "protocol": "policy", **listen}),
        LimitsConfig.model_validate(limits),
    )


async def serve_policy(
    listener: trio.SocketListener,
    chain: ChainRunner,
    settings: PolicySettings,
    *,
    shutdown: Shutdown | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept policy connections on ``listener`` until ``shutdown`` begins (forever without
    one). On shutdown: stop accepting, close idle connections at once, let requests in progress
    be answered (at most ``request_timeout``), then return. The caller owns the listener and
    the chain's start/stop."""
    shutdown = shutdown or Shutdown()
    handler = PolicyHandler(chain, settings, shutdown)
    async with trio.open_nursery() as connections:
        async with trio.open_nursery() as accepting:
            accepting.start_soon(accept_loop, listener, handler, connections)
            task_status.started()
            await shutdown.event.wait()
            accepting.cancel_scope.cancel()
        connections.cancel_scope.deadline = trio.current_time() + settings.request_timeout


class RulesConfig(PluginConfig):
    reject_rcpt: str = ""  # recipient prefixes
    tempfail_rcpt: str = ""
    crash_rcpt: str = ""
    hang_rcpt: str = ""
    rcpt_header: bool = False  # AddHeader X-Rcpt-Checked at on_rcpt
    mail_header: str = ""  # AddHeader X-Policy: <value> at on_mail_from
    reject_sender: str = ""
    whitelist_sender: str = ""  # Accept(final=True)
    discard_sender: str = ""
    hold_sender: str = ""
    reject_helo: str = ""


class Rules(Plugin[RulesConfig], OnConnect, OnHelo, OnMailFrom, OnRcpt, OnClose):
    name = "rules"
    Config = RulesConfig

    def __init__(self, config: RulesConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        self.calls: list[str] = []
        self.closed = trio.Event()

    async def on_connect(self, session: Session) -> Verdict:
        self.calls.append(f"connect {session.peer.address}")
        return Continue()

    async def on_helo(self, session: Session, name: str) -> Verdict:
        self.calls.append(f"helo {name}")
        if self.config.reject_helo and name == self.config.reject_helo:
            return Reject(Reply(550, "5.7.1", "bad HELO"))
        return Continue()

    async def on_mail_from(self, t: Transaction) -> Verdict:
        self.calls.append(f"mail {t.sender}")
        sender = t.sender
        if self.config.reject_sender and sender == self.config.reject_sender:
            return Reject(SPF_FAIL)
        if self.config.whitelist_sender and sender == self.config.whitelist_sender:
            return Accept(final=True)
        if self.config.discard_sender and sender == self.config.discard_sender:
            return Discard("spam trap")
        if self.config.hold_sender and sender == self.config.hold_sender:
            return Quarantine("looks odd")
        if self.config.mail_header:
            return Continue(edits=(AddHeader("X-Policy", self.config.mail_header),))
        return Continue()

    async def on_rcpt(self, t: Transaction, rcpt: Recipient) -> Verdict:
        seen = (t.notes.get(SEEN) or 0) + 1
        t.notes.set(SEEN, seen)
        self.calls.append(f"rcpt {rcpt.address} #{seen}")
        address = rcpt.address
        if self.config.crash_rcpt and address.startswith(self.config.crash_rcpt):
            raise RuntimeError("plugin bug")
        if self.config.hang_rcpt and address.startswith(self.config.hang_rcpt):
            await trio.sleep_forever()
        if self.config.reject_rcpt and address.startswith(self.config.reject_rcpt):
            return Reject(SPF_FAIL)
        if self.config.tempfail_rcpt and address.startswith(self.config.tempfail_rcpt):
            return TempFail(Reply(451, "4.7.24", "SPF temporary error"))
        if self.config.rcpt_header:
            return Continue(edits=(AddHeader("X-Rcpt-Checked", "yes"),))
        return Continue()

    async def on_close(self, session: Session) -> None:
        self.calls.append("close")
        self.closed.set()


def rules(timeout: float = 30.0, **config: object) -> tuple[ChainRunner, Rules]:
    plugin = Rules(
        RulesConfig(**config), PluginEnv("rules", MailLog("rules"), trio.CapacityLimiter(1))
    )
    entry = Entry(
        ChainEntryConfig(plugin="rules", timeout=timeout),
        plugin,  # type: ignore[arg-type]
        trio.CapacityLimiter(10),
        frozenset({"on_connect", "on_helo", "on_mail_from", "on_rcpt", "on_close"}),
    )
    return ChainRunner([entry]), plugin


@asynccontextmanager
async def serving(
    chain: ChainRunner, settings: PolicySettings | None = None, shutdown: Shutdown | None = None
) -> AsyncIterator[trio.SocketListener]:
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(
                    serve_policy, listener, chain, settings or policy_settings(), shutdown=shutdown
                )
            )
            with trio.fail_after(20):
                yield listener
            nursery.cancel_scope.cancel()
    finally:
        await listener.aclose()


class PolicyClient:
    """Postfix's side, by hand."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = b""

    @classmethod
    async def connect(cls, listener: trio.SocketListener) -> PolicyClient:
        return cls(await trio.testing.open_stream_to_socket_listener(listener))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def answer(self) -> str:
        while b"\n\n" not in self.buffer:
            data = await self.stream.receive_some(65536)
            assert data, f"connection closed before an answer; got {self.buffer!r}"
            self.buffer += data
        answer, _, self.buffer = self.buffer.partition(b"\n\n")
        assert answer.startswith(b"action=")
        assert b"\n" not in answer
        return answer.removeprefix(b"action=").decode()

    async def ask(self, **attrs: str) -> str:
        await self.send(policy_request(**attrs))
        return await self.answer()

    async def closed_without_answer(self) -> bool:
        """True when the server closed (EOF or reset) and sent nothing more."""
        try:
            while data := await self.stream.receive_some(65536):
                self.buffer += data
        except trio.BrokenResourceError:
            pass
        return self.buffer == b""

    async def aclose(self) -> None:
        await self.stream.aclose()


def policy_request(**attrs: str) -> bytes:
    base = {
        "request": "smtpd_access_policy",
        "protocol_state": "RCPT",
        "protocol_name": "ESMTP",
        "client_address": "192.0.2.10",
        "client_name": "mx.sender.example",
        "client_port": "40000",
        "reverse_client_name": "mx.sender.example",
        "helo_name": "mx.sender.example",
        "sender": "alice@sender.example",
        "recipient": "bob@example.org",
        "queue_id": "",
        "instance": "1a2b.65f0a1b2.c3d4e.0",
        "size": "0",
    }
    base.update(attrs)
    return "".join(f"{k}={v}\n" for k, v in base.items()).encode() + b"\n"


# ---------------------------------------------------------------------------------- verdicts
async def test_reject_at_rcpt_keeps_the_exact_code_and_accept_is_dunno() -> None:
    chain, _ = rules(reject_rcpt="spamtrap")
    async with serving(chain) as listener:
        client = await PolicyClient.connect(listener)
        assert (
            await client.ask(recipient="spamtrap@example.org") == "550 5.7.23 SPF validation failed"
        )
        assert await client.ask(recipient="bob@example.org") == "DUNNO"
        await client.aclose()


async def test_tempfail_discard_and_hold() -> None:
    chain, _ = rules(
        tempfail_rcpt="later", discard_sender="trap@x.example", hold_sender="odd@x.example"
    )
    async with serving(chain) as listener:
        client = await PolicyClient.connect(listener)
        assert await client.ask(recipient="later@example.org") == "451 4.7.24 SPF temporary error"
        assert await client.ask(sender="trap@x.example", instance="i2") == "DISCARD spam trap"
        assert await client.ask(sender="odd@x.example", instance="i3") == "HOLD looks odd"
        await client.aclose()


async def test_accept_is_dunno_unless_the_admin_opts_in_to_ok() -> None:
    chain, _ = rules(whitelist_sender="friend@x.example")
    async with serving(chain) as listener:
        client = await PolicyClient.connect(listener)
        assert await client.ask(sender="friend@x.example") == "DUNNO"
    chain, _ = rules(whitelist_sender="friend@x.example")
    async with serving(chain, policy_settings(listen={"accept_as_ok": True})) as listener:
        client = await PolicyClient.connect(listener)
        assert await client.ask(sender="friend@x.example") == "OK"
        assert await client.ask(sender="other@x.example", instance="i2") == "DUNNO"


async def test_prepend_once_per_message_and_again_for_the_next_message() -> None:
    chain, _ = rules(mail_header="checked")
    async with serving(chain) as listener:
        client = await PolicyClient.connect(listener)
        assert await client.ask(recipient="a@example.org") == "PREPEND X-Policy: checked"
        assert await client.ask(recipient="b@example.org") == "DUNNO"  # same message
        assert await client.ask(instance="next.1") == "PREPEND X-Policy: checked"


async def test_a_per_recipient_header_is_prepended_once_and_one_header_per_answer() -> None:
    chain, _ = rules(mail_header="checked", rcpt_header=True)
    async with serving(chain) as listener:
        client = await PolicyClient.connect(listener)
        assert await client.ask(recipient="a@example.org") == "PREPEND X-Policy: checked"
        assert await client.ask(recipient="b@example.org") == "PREPEND X-Rcpt-Checked: yes"
        assert await client.ask(recipient="c@example.org") == "DUNNO"


async def test_no_prepend_before_mail_from_or_at_end_of_message() -> None:
    chain, _ = rules(mail_header="checked")
    async with serving(chain) as listener:
        client = await PolicyClient.connect(listener)
        assert await client.ask(protocol_state="MAIL") == "DUNNO"
        assert await client.ask(protocol_state="END-OF-MESSAGE", instance="e.1") == "DUNNO"


# ------------------------------------------------------------------------ the stages it runs
async def test_three_requests_on_one_connection_run_each_stage_once_per_message() -> None:
    chain, plugin = rules(reject_rcpt="x")
    async with serving(chain) as listener:
        client = await PolicyClient.connect(listener)
        answers = [
            await client.ask(recipient=r) for r in ("a@o.example", "x@o.example", "b@o.example")
        ]
        assert answers == ["DUNNO", "550 5.7.23 SPF validation failed", "DUNNO"]
        assert plugin.calls == [
            "connect 192.0.2.10",
            "helo mx.sender.example",
            "mail alice@sender.example",
            "rcpt a@o.example #1",
            "rcpt x@o.example #2",  # transaction notes carry over within the message
            "rcpt b@o.example #3",
        ]
        # END-OF-MESSAGE of the same message: nothing runs again.
        assert (
            await client.ask(protocol_state="END-OF-MESSAGE", recipient="", queue_id="4F2A81")
            == "DUNNO"
        )
        assert len(plugin.calls) == 6
        # The next message ends this one: on_close runs, then the stages for the new one.
        assert await client.ask(instance="next.2", recipient="c@o.example") == "DUNNO"
        assert plugin.calls[6:] == [
            "close",
            "connect 192.0.2.10",
            "helo mx.sender.example",
            "mail alice@sender.example",
            "rcpt c@o.example #1",
        ]
        plugin.closed = trio.Event()
        await client.aclose()  # Postfix hangs up: the message's session is closed too
        await plugin.closed.wait()
        assert plugin.calls[-1] == "close"


class EachRequest(Plugin[PluginConfig], OnMailFrom, OnRcpt):
    """Decides every policy request (as the rules and access plugins do): at the request's
    last stage, refusing a DATA request."""

    name = "each"
    decides_each_policy_request = True

    def __init__(self, config: PluginConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        self.calls: list[str] = []

    def _decide(self, t: Transaction, stage: str) -> Verdict:
        attrs = t.session.notes.get(POLICY_ATTRIBUTES) or {}
        state = attrs.get("protocol_state", "")
        if policy_door_stage(t.session) != stage:
            return Continue()
        self.calls.append(f"{stage} {state}")
        if state == "DATA" and attrs.get("recipient_count") == "3":
            return TempFail(Reply(452, "4.5.3", "too many recipients"))
        return Continue(edits=(AddHeader("X-Each", state),))

    async def on_mail_from(self, t: Transaction) -> Verdict:
        return self._decide(t, "mail_from")

    async def on_rcpt(self, t: Transaction, rcpt: Recipient) -> Verdict:
        return self._decide(t, "rcpt")


def once_and_each() -> tuple[ChainRunner, Rules, EachRequest]:
    """A chain of a plugin that decides once per message (the test's Rules) and one that
    decides every request."""
    chain, once = rules()
    each = EachRequest(PluginConfig(), PluginEnv("each", MailLog("each"), trio.CapacityLimiter(1)))
    entry = Entry(
        ChainEntryConfig(plugin="each"),
        each,  # type: ignore[arg-type]
        trio.CapacityLimiter(10),
        frozenset({"on_mail_from", "on_rcpt"}),
    )
    return ChainRunner([*chain.entries, entry]), once, each


async def test_a_plugin_deciding_every_request_decides_the_later_requests_of_a_message() -> None:
    chain, once, each = once_and_each()
    async with serving(chain) as listener:
        client = await PolicyClient.connect(listener)
        rcpts = [await client.ask(recipient=r) for r in ("a@o.example", "b@o.example")]
        data = await client.ask(protocol_state="DATA", recipient="", recipient_count="2")
        end = await client.ask(protocol_state="END-OF-MESSAGE", recipient="", queue_id="4F2A")
        assert (rcpts, data, end) == (["PREPEND X-Each: RCPT", "DUNNO"], "PREPEND X-Each: DATA",
                                      "DUNNO")  # fmt: skip
        # one recipient, named at DATA: the rcpt stage again; a refusal at DATA
        instance = {"instance": "next.1", "recipient": "c@o.example"}
        assert await client.ask(**instance) == "PREPEND X-Each: RCPT"
        assert await client.ask(protocol_state="DATA", recipient_count="1", **instance) == (
            "PREPEND X-Each: DATA"  # the same header as at RCPT, sent as the plugin answers it
        )
        instance = {"instance": "next.2", "recipient": ""}
        for r in ("d@o.example", "e@o.example", "f@o.example"):
            await client.ask(instance="next.2", recipient=r)
        assert await client.ask(protocol_state="DATA", recipient_count="3", **instance) == (
            "452 4.5.3 too many recipients"
        )
    assert each.calls == [
        "rcpt RCPT",
        "rcpt RCPT",
        "mail_from DATA",
        "mail_from END-OF-MESSAGE",
        "rcpt RCPT",
        "rcpt DATA",
        "rcpt RCPT",
        "rcpt RCPT",
        "rcpt RCPT",
        "mail_from DATA",
    ]
    # the plugin that decides once per message ran its stages once per message
    assert [c for c in once.calls if c.startswith(("mail", "rcpt"))] == [
        "mail alice@sender.example",
        "rcpt a@o.example #1",
        "rcpt b@o.example #2",
        "mail alice@sender.example",
        "rcpt c@o.example #1",
        "mail alice@sender.example",
        "rcpt d@o.example #1",
        "rcpt e@o.example #2",
        "rcpt f@o.example #3",
    ]


async def test_a_refusal_at_mail_from_answers_every_recipient_of_the_message() -> None:
    chain, plugin = rules(reject_sender="forged@x.example")
    async with serving(chain) as listener:
        client = await PolicyClient.connect(listener)
        for rcpt in ("a@o.example", "b@o.example"):
            answer = await client.ask(sender="forged@x.example", recipient=rcpt)
            assert answer == "550 5.7.23 SPF validation failed"
    assert [c for c in plugin.calls if c.startswith(("mail", "rcpt"))] == ["mail forged@x.example"]


async def test_requests_before_rcpt_are_answered_on_their_own() -> None:
    chain, plugin = rules(reject_helo="bad.example")
    async with serving(chain) as listener:
        client = await PolicyClient.connect(listener)
        assert (
            await client.ask(protocol_state="CONNECT", helo_name="", sender="", recipient="")
            == "DUNNO"
        )
        assert (
            await client.ask(protocol_state="EHLO", helo_name="bad.example") == "550 5.7.1 bad HELO"
        )
        assert plugin.calls == [
            "connect 192.0.2.10",
            "close",
            "connect 192.0.2.10",
            "helo bad.example",
            "close",
        ]


async def test_plugins_see_every_attribute_in_a_session_note() -> None:
    seen: list[str] = []

    class Peek(Rules):
        async def on_rcpt(self, t: Transaction, rcpt: Recipient) -> Verdict:
            attrs = t.session.notes.get(POLICY_ATTRIBUTES) or {}
            seen.append(attrs.get("sasl_username", "?"))
            return Continue()

    chain, _ = rules()
    chain.entries[0].plugin = Peek(
        RulesConfig(), PluginEnv("peek", MailLog("peek"), trio.CapacityLimiter(1))
    )  # type: ignore[assignment]
    async with serving(chain) as listener:
        client = await PolicyClient.connect(listener)
        assert await client.ask(sasl_username="alice") == "DUNNO"
    assert seen == ["alice"]


# --------------------------------------------------------------------------------- failures
async def test_a_plugin_crash_is_a_451_answer_not_a_dead_service() -> None:
    chain, _ = rules(crash_rcpt="boom")
    async with serving(chain) as listener:
        client = await PolicyClient.connect(listener)
        assert await client.ask(recipient="boom@example.org") == str(PLUGIN_FAILED)
        assert await client.ask(recipient="fine@example.org") == "DUNNO"


async def test_a_bug_of_ours_closes_that_connection_only(monkeypatch: pytest.MonkeyPatch) -> None:
    chain, _ = rules()
    async with serving(chain) as listener:
        good = await PolicyClient.connect(listener)
        assert await good.ask() == "DUNNO"

        async def broken(t: Transaction, rcpt: Recipient) -> None:
            raise RuntimeError("bug in the runner")

        monkeypatch.setattr(chain, "rcpt", broken)
        bad = await PolicyClient.connect(listener)
        await bad.send(policy_request(instance="bad.1"))
        assert await bad.closed_without_answer()
        monkeypatch.undo()
        assert await good.ask(recipient="again@example.org") == "DUNNO"


MALFORMED = {
    "no empty line, then EOF": b"request=smtpd_access_policy\nprotocol_state=RCPT\n",
    "a one-megabyte attribute": b"request=smtpd_access_policy\nhelo_name="
    + b"a" * 1_048_576
    + b"\n\n",
    "binary garbage": bytes(range(256)) * 64,
    "a line without '='": b"request=smtpd_access_policy\nhello world\n\n",
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
async def test_malformed_input_closes_that_connection_without_an_answer(case: str) -> None:
    chain, _ = rules(reject_rcpt="x")
    async with serving(chain) as listener:
        other = await PolicyClient.connect(listener)
        assert await other.ask() == "DUNNO"
        bad = await PolicyClient.connect(listener)
        try:
            await bad.send(MALFORMED[case])
            if case.startswith("no empty line"):
                await bad.stream.send_eof()  # type: ignore[attr-defined]
        except trio.BrokenResourceError:
            pass  # the server already hung up on us
        assert await bad.closed_without_answer()
        # The other connection (and new ones) keep being served.
        assert await other.ask(recipient="x@example.org") == "550 5.7.23 SPF validation failed"
        fresh = await PolicyClient.connect(listener)
        assert await fresh.ask() == "DUNNO"


async def test_request_deadline_closes_without_an_answer(caplog: pytest.LogCaptureFixture) -> None:
    chain, _ = rules(timeout=1000, hang_rcpt="slow")
    async with serving(chain, policy_settings(limits={"policy_request_timeout": 0.3})) as listener:
        client = await PolicyClient.connect(listener)
        await client.send(policy_request(recipient="slow@example.org"))
        assert await client.closed_without_answer()
    assert "not answered within 0.3s; closing without an answer" in caplog.text


async def test_a_request_trickling_in_is_bounded_by_the_request_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    chain, _ = rules()
    async with serving(
        chain, policy_settings(limits={"policy_request_timeout": 0.3, "policy_idle_timeout": 60})
    ) as listener:
        client = await PolicyClient.connect(listener)
        await client.send(b"request=smtpd_access_policy\n")
        assert await client.closed_without_answer()
    assert "timeout reading a request from" in caplog.text


async def test_a_pipelined_request_trickling_in_is_bounded_by_the_request_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The part of a request that came with the previous one is under the request deadline
    once that one is answered, not under the idle timeout (60 s: fail_after would end it)."""
    chain, _ = rules()
    async with serving(
        chain, policy_settings(limits={"policy_request_timeout": 0.3, "policy_idle_timeout": 60})
    ) as listener:
        client = await PolicyClient.connect(listener)
        with trio.fail_after(30):
            await client.send(policy_request() + b"request=smtpd_access_policy\n")
            assert await client.answer() == "DUNNO"
            assert await client.closed_without_answer()
    assert "timeout reading a request from" in caplog.text


async def test_the_request_deadline_runs_from_the_first_byte_not_from_the_last_answer() -> None:
    """After an answer the idle timeout applies again, however short the request deadline."""
    chain, _ = rules()
    async with serving(
        chain, policy_settings(limits={"policy_request_timeout": 0.2, "policy_idle_timeout": 60})
    ) as listener:
        client = await PolicyClient.connect(listener)
        assert await client.ask() == "DUNNO"
        await trio.sleep(0.5)
        assert await client.ask() == "DUNNO"


async def test_idle_connection_times_out(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="filterd")
    chain, _ = rules()
    async with serving(chain, policy_settings(limits={"policy_idle_timeout": 0.2})) as listener:
        client = await PolicyClient.connect(listener)
        assert await client.ask() == "DUNNO"
        assert await client.closed_without_answer()
    assert "idle timeout: closing idle connection from" in caplog.text


async def test_pipelined_requests_are_answered_in_order() -> None:
    chain, _ = rules(reject_rcpt="x")
    async with serving(chain) as listener:
        client = await PolicyClient.connect(listener)
        await client.send(
            policy_request(recipient="x@o.example") + policy_request(recipient="y@o.example")
        )
        assert [await client.answer(), await client.answer()] == [
            "550 5.7.23 SPF validation failed",
            "DUNNO",
        ]


async def test_small_limits_come_from_the_settings() -> None:
    chain, _ = rules()
    settings = dataclasses.replace(policy_settings(), limits=PolicyLimits(max_attributes=5))
    async with serving(chain, settings) as listener:
        client = await PolicyClient.connect(listener)
        await client.send(policy_request())
        assert await client.closed_without_answer()


async def test_beyond_max_connections_a_connection_is_closed_at_once() -> None:
    chain, _ = rules()
    async with serving(chain, policy_settings(listen={"max_connections": 1})) as listener:
        first = await PolicyClient.connect(listener)
        assert await first.ask() == "DUNNO"
        second = await PolicyClient.connect(listener)
        await second.send(policy_request())
        assert await second.closed_without_answer()
        assert await first.ask(recipient="more@example.org") == "DUNNO"


async def test_shutdown_closes_idle_connections_and_serve_policy_returns() -> None:
    chain, _ = rules()
    shutdown = Shutdown()
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(serve_policy, listener, chain, policy_settings(), shutdown=shutdown)
            )
            client = await PolicyClient.connect(listener)
            assert await client.ask() == "DUNNO"
            shutdown.begin()
            assert await client.closed_without_answer()
        # serve_policy returned by itself: the nursery closed without being cancelled.
    await listener.aclose()


async def test_a_request_arriving_as_shutdown_begins_is_still_answered() -> None:
    """Shutdown closes connections that wait for a request; one whose request arrived in the
    same instant has stopped waiting, and gets its answer before the connection closes."""
    chain, _ = rules()
    shutdown = Shutdown()
    client, server = trio.testing.memory_stream_pair()
    received = b""
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                partial(
                    serve_policy_connection, server, chain, policy_settings(), shutdown=shutdown
                )
            )
            await trio.testing.wait_all_tasks_blocked()
            await client.send_all(policy_request())
            shutdown.begin()
            while chunk := await client.receive_some():
                received += chunk
    assert received == b"action=DUNNO\n\n"


async def test_an_answer_larger_than_the_socket_buffer_arrives_whole() -> None:
    # PolicyConnection writes an answer straight to the socket when it takes it all; the rest
    # (a partial write) goes through trio: every byte arrives, in order.
    from filterd.frontdoors.policy.service import PolicyConnection

    ours, theirs = trio.socket.socketpair()
    big = bytes(range(256)) * 8192  # 2 MiB: far more than a socket buffer holds
    received = bytearray()
    connection = PolicyConnection(trio.SocketStream(ours), ChainRunner([]), policy_settings())

    async def read_all() -> None:
        while len(received) < len(big):
            received.extend(await theirs.recv(65536))

    with trio.move_on_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all)
            await connection._send(big)
    assert len(received) == len(big)
    assert bytes(received) == big
    theirs.close()

    async def answer_until_refused() -> None:  # the first write after a close still succeeds
        for _ in range(100):
            await connection._send(b"action=DUNNO\n\n")

    with pytest.raises(trio.BrokenResourceError):  # the client has gone: trio's error, as before
        await answer_until_refused()
    ours.close()


class _StepCounter(trio.abc.Instrument):
    def __init__(self, name: str) -> None:
        self.name = name
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith(self.name):
            self.steps += 1


async def test_pipelined_requests_give_other_tasks_a_turn_after_every_answer() -> None:
    # An answer written straight to the socket is no checkpoint, and a warm chain may not
    # yield either: with requests already buffered, the loop itself must let others run.
    ours, theirs = trio.socket.socketpair()
    counter = _StepCounter("serve_policy_connection")
    trio.lowlevel.add_instrument(counter)
    requests = 50
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                serve_policy_connection, trio.SocketStream(ours), ChainRunner([]), policy_settings()
            )
            await theirs.send(b"request=smtpd_access_policy\nprotocol_state=RCPT\n\n" * requests)
            answers = b""
            with trio.fail_after(10):
                while answers.count(b"\n\n") < requests:
                    answers += await theirs.recv(65536)
            theirs.close()
    finally:
        trio.lowlevel.remove_instrument(counter)
    assert answers == b"action=DUNNO\n\n" * requests
    assert counter.steps >= requests


async def test_a_chain_no_plugin_of_which_sees_policy_stages_answers_and_logs_as_any(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A chain without a policy stage builds no model per request: its answers, and its log
    lines, are those of a chain whose plugins let every request pass."""
    caplog.set_level("DEBUG", logger="filterd.policy")
    lines: list[list[str]] = []
    for chain in (ChainRunner([]), rules()[0]):
        caplog.clear()
        async with serving(chain) as listener:
            client = await PolicyClient.connect(listener)
            assert await client.ask() == "DUNNO"
            assert await client.ask(protocol_state="MAIL", recipient="") == "DUNNO"
        lines.append([r.getMessage() for r in caplog.records if "action" in r.getMessage()])
    assert len(lines[0]) == 2
    assert lines[0] == lines[1]


async def test_a_request_timeout_of_zero_does_not_make_the_connection_spin(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The configuration allows 0s: the connection's watchdog still sleeps between its checks
    (at least 10 ms: without that floor it wakes hundreds of times per 10 ms), and the request
    is refused for its deadline."""
    chain, _ = rules(hang_rcpt="slow")
    counter = _StepCounter("_watch")
    with trio.fail_after(30):
        async with serving(chain, policy_settings(limits={"policy_request_timeout": 0})) as lst:
            client = await PolicyClient.connect(lst)
            await trio.sleep(0.05)
            trio.lowlevel.add_instrument(counter)
            try:
                started = trio.current_time()
                await trio.sleep(0.2)  # idle: the watchdog sleeps, it does not spin
                elapsed = trio.current_time() - started
            finally:
                trio.lowlevel.remove_instrument(counter)
            await client.send(policy_request(recipient="slow@example.org"))
            assert await client.closed_without_answer()
    assert counter.steps <= 2 * elapsed / 0.01 + 10
    assert "not answered within 0s; closing without an answer" in caplog.text
