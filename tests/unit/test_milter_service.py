"""The milter service in this process, without libmilter: ``FilterdMilter``'s callbacks are
called as libmilter calls them (from a worker thread, one at a time per connection) on a fake
context, while trio runs the chain on the test's thread. Covers what the miltertest and Postfix
tests cannot see: which callbacks hop into trio, what is negotiated, the counters.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar

import pytest
import trio
import trio.lowlevel

Milter = pytest.importorskip("Milter", reason="pymilter (the milter extra) is not installed")

from filterd.chain.registry import stages_of  # noqa: E402
from filterd.chain.runner import ChainRunner, Entry  # noqa: E402
from filterd.config.schema import ChainEntryConfig, LimitsConfig, ListenConfig  # noqa: E402
from filterd.frontdoors.milter.bridge import MilterBridge, MilterSettings  # noqa: E402
from filterd.frontdoors.milter.callbacks import FilterdMilter  # noqa: E402
from filterd.frontdoors.shutdown import Shutdown  # noqa: E402
from filterd.maillog import MailLog  # noqa: E402
from filterd.model.spool import Spool  # noqa: E402
from filterd.protocols.milter_map import (  # noqa: E402
    CONTINUE,
    FILTER_FAILED,
    MILTER_MACROS,
    NOREPLY,
    SMFIP_NOEOH,
    SMFIP_NOUNKNOWN,
    SMFIP_NR_BODY,
    SMFIP_NR_EOH,
    SMFIP_NR_HDR,
    SMFIP_NR_HELO,
    SMFIP_NR_MAIL,
    SMFIP_NR_RCPT,
    SMFIP_SKIP,
    TEMPFAIL,
    protocol_flags,
)
from filterd.sdk import (  # noqa: E402
    AddHeader,
    ChangeHeader,
    Continue,
    MessageView,
    OnConnect,
    OnHelo,
    OnMailFrom,
    OnMessage,
    OnRcpt,
    Plugin,
    PluginConfig,
    PluginEnv,
    Recipient,
    RemoveHeader,
    Session,
    Transaction,
    Verdict,
    inline,
)

T = TypeVar("T")

# What Postfix 3.7 offers (MILTER_README) plus the "no reply" bits libmilter can fake.
OFFERED_ACTIONS = 0x1FF
OFFERED_PROTOCOL = 0x1FFFFF

CONNECT_MACROS = {
    "j": "mta.example.net",
    "{daemon_name}": "smtpd",
    "{client_addr}": "192.0.2.1",
    "{client_name}": "client.example.net",
    "{client_port}": "40123",
    "v": "Postfix 3.7.11",
}
HELO_MACROS = {"{tls_version}": "TLSv1.3", "{cipher}": "TLS_AES_256_GCM_SHA384"}
MAIL_MACROS = {"{auth_type}": "PLAIN", "{auth_authen}": "bob", "{mail_addr}": "alice@example.net"}
RCPT_MACROS = {"{rcpt_addr}": "good@example.org", "{rcpt_mailer}": "smtp"}
DATA_MACROS = {"i": "4XYZ12345"}
STOPPING = ("451", "4.3.2", "Error: mail filter shutting down, try again later")
FAILED = ("451", "4.3.0", "Error: internal error, try again later")
HEADERS = [
    ("Subject", b"hello"),
    ("X-Remove-Me", b"doomed"),
    ("Received", b"from a\n\tby b"),
    ("Subject", b"second subject"),
]


# ------------------------------------------------------------------------------ fakes
@dataclass
class FakeContext:
    """What pymilter's ``milterContext`` offers a ``Milter.Base``, recorded."""

    macros: dict[str, str] = field(default_factory=dict)
    replies: list[tuple[str, ...]] = field(default_factory=list)
    actions: list[tuple[object, ...]] = field(default_factory=list)
    priv: object = None

    def setpriv(self, priv: object) -> None:
        self.priv = priv

    def getpriv(self) -> object:
        return self.priv

    def getsymval(self, name: str) -> str | None:
        return self.macros.get(name)

    def setreply(self, rcode: str, xcode: str, *lines: str) -> None:
        self.replies.append((rcode, xcode, *lines))

    def addheader(self, name: str, value: str, index: int) -> None:
        self.actions.append(("addheader", name, value, index))

    def chgheader(self, name: str, index: int, value: str) -> None:
        self.actions.append(("chgheader", name, index, value))

    def addrcpt(self, rcpt: str, params: str | None) -> None:
        self.actions.append(("addrcpt", rcpt, params))

    def delrcpt(self, rcpt: str) -> None:
        self.actions.append(("delrcpt", rcpt))

    def chgfrom(self, sender: str, params: str | None) -> None:
        self.actions.append(("chgfrom", sender, params))

    def replacebody(self, chunk: bytes) -> None:
        self.actions.append(("replacebody", chunk))

    def quarantine(self, reason: str) -> None:
        self.actions.append(("quarantine", reason))


@dataclass
class Seen:
    """What ``on_message`` saw: everything a plugin can learn about the envelope."""

    session_id: str
    peer: tuple[str, int | None, str, str | None, str]
    tls: bool
    sender: str
    mail_params: tuple[str, ...]
    recipients: list[str]
    queue_id: str
    macros: dict[str, str]
    headers: list[tuple[str, str]]
    body: bytes


class ProbeConfig(PluginConfig):
    pass


PluginT = TypeVar("PluginT", bound=Plugin[ProbeConfig])


class MessageProbe(Plugin[ProbeConfig], OnMessage):
    """Only ``on_message``: records what it saw and edits headers."""

    name = "message_probe"
    Config = ProbeConfig
    seen: list[Seen]

    async def start(self) -> None:
        self.seen = []

    async def on_message(self, t: Transaction, message: MessageView) -> Verdict:
        peer = t.session.peer
        self.seen.append(
            Seen(
                session_id="-",  # new per connection, compared separately
                peer=(peer.address, peer.port, peer.name, peer.helo, peer.protocol),
                tls=t.session.tls,
                sender=t.sender,
                mail_params=t.mail_params,
                recipients=[r.address for r in t.accepted],
                queue_id=t.queue_id,
                macros=dict(t.session.notes.get(MILTER_MACROS) or {}),
                headers=[(h.name, h.value) for h in message.headers],
                body=b"".join(message.body_chunks()),
            )
        )
        return Continue(
            edits=(
                AddHeader("X-Probe", "seen", at_top=False),
                ChangeHeader("Subject", "changed", occurrence=2),
                RemoveHeader("X-Remove-Me"),
            )
        )


class InlineProbe(MessageProbe):
    """``on_message`` marked ``@inline``: the milter door runs it on libmilter's thread."""

    name = "inline_probe"

    @inline
    async def on_message(self, t: Transaction, message: MessageView) -> Verdict:
        self.thread = threading.current_thread()
        return await super().on_message(t, message)


class BrokenInlineProbe(MessageProbe):
    """Marked ``@inline``, and waits all the same."""

    name = "broken_inline_probe"

    @inline
    async def on_message(self, t: Transaction, message: MessageView) -> Verdict:
        await trio.lowlevel.checkpoint()
        return await super().on_message(t, message)


class RcptProbe(MessageProbe, OnRcpt):
    """``on_rcpt`` and ``on_message``: RCPT has a reply, MAIL has none."""

    name = "rcpt_probe"

    async def on_rcpt(self, t: Transaction, rcpt: Recipient) -> Verdict:
        return Continue()


class RcptEditor(Plugin[ProbeConfig], OnRcpt):
    """Only ``on_rcpt``, with a header edit that is due at end of message."""

    name = "rcpt_editor"
    Config = ProbeConfig

    async def on_rcpt(self, t: Transaction, rcpt: Recipient) -> Verdict:
        return Continue(edits=(ChangeHeader("Subject", "from rcpt", occurrence=2),))


class EnvelopeProbe(MessageProbe, OnConnect, OnHelo, OnMailFrom, OnRcpt):
    """Every stage: the chain runs (and so the service hops) at each of them."""

    name = "envelope_probe"

    async def on_connect(self, session: Session) -> Verdict:
        return Continue()

    async def on_helo(self, session: Session, name: str) -> Verdict:
        return Continue()

    async def on_mail_from(self, t: Transaction) -> Verdict:
        return Continue()

    async def on_rcpt(self, t: Transaction, rcpt: Recipient) -> Verdict:
        return Continue()


def chain_of(cls: type[PluginT]) -> tuple[ChainRunner, PluginT]:
    plugin = cls(ProbeConfig(), PluginEnv(cls.name, MailLog(cls.name), trio.CapacityLimiter(1)))
    entry = Entry(
        ChainEntryConfig(plugin=cls.name),
        plugin,
        trio.CapacityLimiter(10),
        frozenset(stages_of(cls)),
    )
    return ChainRunner([entry]), plugin


class CountingBridge(MilterBridge):
    """Counts the hops into trio."""

    hops = 0

    def run(self, fn: Callable[[], Awaitable[T]], budget: float, queue_id: str) -> T:
        self.hops += 1
        return super().run(fn, budget, queue_id)


async def make_bridge(
    chain: ChainRunner,
    shutdown: Shutdown | None = None,
    *,
    listen: Mapping[str, object] = MappingProxyType({}),
    limits: Mapping[str, object] = MappingProxyType({}),
) -> CountingBridge:
    """A bridge with the configuration's defaults but for the ``listen`` and ``limits`` keys."""
    await chain.start()
    settings = MilterSettings.from_config(
        ListenConfig.model_validate({"address": "127.0.0.1:10029", "protocol": "milter", **listen}),
        LimitsConfig.model_validate(limits),
    )
    return CountingBridge(
        chain, settings, shutdown or Shutdown(), trio.lowlevel.current_trio_token()
    )


class Connection:
    """One MTA connection, driven as libmilter drives it (call from a worker thread)."""

    def __init__(self, bridge: MilterBridge) -> None:
        self.ctx = FakeContext()
        self.milter = FilterdMilter(bridge)
        self.milter._setctx(self.ctx)
        self.codes: dict[str, int] = {}

    def negotiate(self, protocol: int = OFFERED_PROTOCOL) -> list[int]:
        opts = [OFFERED_ACTIONS, protocol, 0, 0]
        self.codes["negotiate"] = self.milter.negotiate(opts)
        return opts

    def stage(self, name: str, macros: Mapping[str, str], call: Callable[[], int]) -> int:
        self.ctx.macros.update(macros)
        code = call()
        self.codes[name] = code
        return code

    def connect(self) -> int:
        return self.stage(
            "connect",
            CONNECT_MACROS,
            lambda: self.milter.connect("[192.0.2.1]", 4, ("192.0.2.1", 40123)),
        )

    def message(self, headers: list[tuple[str, bytes]] = HEADERS) -> int:
        """HELO, MAIL, RCPT, DATA, the headers, the body; returns the end-of-message code."""
        m = self.milter
        self.stage("helo", HELO_MACROS, lambda: m.hello("helo.example.net"))
        self.stage("mail", MAIL_MACROS, lambda: m.envfrom("<alice@example.net>", "BODY=8BITMIME"))
        self.stage("rcpt", RCPT_MACROS, lambda: m.envrcpt("<good@example.org>"))
        self.stage("data", DATA_MACROS, m.data)
        for name, value in headers:
            self.stage("header", {}, lambda name=name, value=value: m.header(name, value))
        if not m._protocol & SMFIP_NOEOH:  # else the MTA skips it (only its macros come)
            self.stage("eoh", {}, m.eoh)
        self.stage("body", {}, lambda: m.body(b"line one\r\nline two\r\n"))
        return self.stage("eom", {}, m.eom)

    def close(self) -> int:
        return self.stage("close", {}, self.milter.close)


async def in_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` as libmilter would: on a thread that is not trio's."""
    return await trio.to_thread.run_sync(fn)


def one_message(bridge: MilterBridge) -> Connection:
    conn = Connection(bridge)
    conn.negotiate()
    conn.connect()
    conn.message()
    conn.close()
    return conn


# ------------------------------------------------------------------------------ negotiation
def test_protocol_constants_are_libmilters() -> None:
    assert (SMFIP_NR_HDR, SMFIP_NR_EOH, SMFIP_NR_BODY, SMFIP_NOEOH) == (
        Milter.P_NR_HDR,
        Milter.P_NR_EOH,
        Milter.P_NR_BODY,
        Milter.P_NOEOH,
    )
    assert (SMFIP_NR_HELO, SMFIP_NR_MAIL, SMFIP_NR_RCPT, SMFIP_NOUNKNOWN, SMFIP_SKIP) == (
        Milter.P_NR_HELO,
        Milter.P_NR_MAIL,
        Milter.P_NR_RCPT,
        Milter.P_NOUNKNOWN,
        Milter.P_SKIP,
    )
    assert NOREPLY == Milter.NOREPLY


@pytest.mark.parametrize(
    ("stages", "quiet_envelope"),
    [
        ({"on_message"}, Milter.P_NR_HELO | Milter.P_NR_MAIL | Milter.P_NR_RCPT),
        ({"on_message", "on_rcpt"}, Milter.P_NR_HELO | Milter.P_NR_MAIL),
        ({"on_helo", "on_message"}, Milter.P_NR_MAIL | Milter.P_NR_RCPT),
        ({"on_mail_from", "on_close"}, Milter.P_NR_HELO | Milter.P_NR_RCPT),
        ({"on_helo", "on_mail_from", "on_rcpt"}, 0),
    ],
)
def test_protocol_flags_ask_no_reply_only_where_filterd_never_refuses(
    stages: set[str], quiet_envelope: int
) -> None:
    content = Milter.P_NR_HDR | Milter.P_NOEOH | Milter.P_NR_EOH | Milter.P_NR_BODY
    assert protocol_flags(stages) == (Milter.P_NOUNKNOWN | Milter.P_SKIP | content | quiet_envelope)
    # CONNECT (busy, stopping), DATA (see protocol_flags) and end of message keep a reply;
    # every step whose data builds the model is sent.
    never = (
        Milter.P_NR_CONN
        | Milter.P_NR_DATA
        | Milter.P_NOCONNECT
        | Milter.P_NOHELO
        | Milter.P_NOMAIL
        | Milter.P_NORCPT
        | Milter.P_NODATA
        | Milter.P_NOHDRS
        | Milter.P_NOBODY
        | Milter.P_RCPT_REJ
        | Milter.P_HDR_LEADSPC
    )
    assert protocol_flags(stages) & never == 0


async def test_negotiate_answers_with_the_chains_flags_and_keeps_every_action() -> None:
    chain, _ = chain_of(MessageProbe)
    bridge = await make_bridge(chain)
    conn = Connection(bridge)
    opts = conn.negotiate()
    assert conn.codes["negotiate"] == CONTINUE
    assert opts == [OFFERED_ACTIONS, protocol_flags({"on_message"}), 0, 0]
    assert conn.milter._protocol == opts[1]
    assert conn.milter._actions == OFFERED_ACTIONS
    # An MTA that offers fewer bits gets only what it offers.
    older = Connection(bridge)
    assert older.negotiate(Milter.P_NR_HDR | Milter.P_NOUNKNOWN)[1] == (
        Milter.P_NR_HDR | Milter.P_NOUNKNOWN
    )


async def test_broken_negotiation_falls_back_to_replies_for_everything() -> None:
    chain, _ = chain_of(MessageProbe)
    bridge = await make_bridge(chain)
    conn = Connection(bridge)
    assert conn.milter.negotiate([]) == Milter.ALL_OPTS
    assert conn.milter._protocol == 0
    # Without "no reply" bits, a header answers CONTINUE (not NOREPLY).
    await in_thread(conn.connect)
    await in_thread(lambda: conn.stage("mail", MAIL_MACROS, lambda: conn.milter.envfrom("<a@b>")))
    assert conn.milter.header("Subject", b"x") == CONTINUE


# ------------------------------------------------------------------------------ hops and model
async def test_stages_without_plugins_answer_without_a_hop() -> None:
    chain, probe = chain_of(MessageProbe)
    bridge = await make_bridge(chain)
    conn = await in_thread(lambda: one_message(bridge))
    assert bridge.hops == 1  # end of message only
    assert conn.codes == {
        "negotiate": CONTINUE,
        "connect": CONTINUE,
        "helo": NOREPLY,
        "mail": NOREPLY,
        "rcpt": NOREPLY,
        "data": CONTINUE,
        "header": NOREPLY,
        "body": NOREPLY,
        "eom": CONTINUE,
        "close": CONTINUE,
    }
    assert len(probe.seen) == 1
    assert (bridge.connections, bridge.messages) == (0, 0)


async def test_a_plugin_cannot_tell_whether_the_envelope_stages_hopped() -> None:
    quiet_chain, quiet = chain_of(MessageProbe)
    quiet_bridge = await make_bridge(quiet_chain)
    await in_thread(lambda: one_message(quiet_bridge))
    full_chain, full = chain_of(EnvelopeProbe)
    full_bridge = await make_bridge(full_chain)
    conn = await in_thread(lambda: one_message(full_bridge))
    assert full_bridge.hops == 5  # connect, helo, mail, rcpt, end of message
    # With a plugin there, a reply: the plugin may refuse.
    assert conn.codes["helo"] == conn.codes["mail"] == conn.codes["rcpt"] == CONTINUE

    [seen] = quiet.seen
    assert seen == full.seen[0]
    # ... and it is the model the macros describe (connect, helo, mail, rcpt and DATA's).
    assert seen.peer == ("192.0.2.1", 40123, "client.example.net", "helo.example.net", "ESMTPSA")
    assert seen.tls
    assert (seen.sender, seen.mail_params) == ("alice@example.net", ("BODY=8BITMIME",))
    assert seen.recipients == ["good@example.org"]
    assert seen.queue_id == "4XYZ12345"
    assert seen.macros == {
        **CONNECT_MACROS,
        **HELO_MACROS,
        **MAIL_MACROS,
        **RCPT_MACROS,
        **DATA_MACROS,
    }
    assert seen.headers == [  # folded lines arrive with "\n"; the view unfolds them
        ("Subject", "hello"),
        ("X-Remove-Me", "doomed"),
        ("Received", "from a\tby b"),
        ("Subject", "second subject"),
    ]
    assert seen.body == b"line one\r\nline two\r\n"


async def test_an_inline_end_of_message_runs_on_the_libmilter_thread_and_sees_the_same() -> None:
    hop_chain, hopped = chain_of(MessageProbe)
    hop_bridge = await make_bridge(hop_chain)
    hop_conn = await in_thread(lambda: one_message(hop_bridge))
    inline_chain, inline_probe = chain_of(InlineProbe)
    inline_bridge = await make_bridge(inline_chain)
    conn = await in_thread(lambda: one_message(inline_bridge))
    assert (hop_bridge.hops, inline_bridge.hops) == (1, 0)
    assert inline_probe.thread is not threading.current_thread()  # not trio's
    assert inline_probe.seen == hopped.seen  # the same model, macros included
    assert conn.codes == hop_conn.codes
    assert conn.ctx.actions == hop_conn.ctx.actions  # and the same edits


async def test_an_inline_stage_that_waits_all_the_same_tempfails_its_message() -> None:
    chain, probe = chain_of(BrokenInlineProbe)
    bridge = await make_bridge(chain)
    conn = await in_thread(lambda: one_message(bridge))
    assert bridge.hops == 0
    assert conn.codes["eom"] == TEMPFAIL
    assert probe.seen == []
    assert conn.ctx.actions == []
    assert (bridge.connections, bridge.messages) == (0, 0)


async def test_without_on_message_the_end_of_message_needs_no_hop_yet_applies_edits() -> None:
    chain, _ = chain_of(RcptEditor)
    bridge = await make_bridge(chain)
    conn = await in_thread(lambda: one_message(bridge))
    assert bridge.hops == 1  # RCPT only
    assert conn.codes["rcpt"] == CONTINUE  # a plugin is there: a reply
    assert conn.codes["eom"] == CONTINUE
    assert conn.ctx.actions == [("chgheader", "Subject", 2, "from rcpt")]


async def test_header_edits_are_counted_over_headers_received_without_replies() -> None:
    chain, _ = chain_of(MessageProbe)
    bridge = await make_bridge(chain)
    conn = await in_thread(lambda: one_message(bridge))
    assert conn.codes["header"] == NOREPLY
    assert conn.ctx.actions == [  # in the order of the edits
        ("addheader", "X-Probe", "seen", -1),
        ("chgheader", "Subject", 2, "changed"),  # the second Subject of the four headers
        ("chgheader", "X-Remove-Me", 1, ""),
    ]


async def test_a_failure_without_a_reply_refuses_the_message_at_its_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chain, probe = chain_of(MessageProbe)
    bridge = await make_bridge(chain)

    def broken_write(self: Spool, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    conn = Connection(bridge)
    conn.negotiate()
    await in_thread(conn.connect)
    monkeypatch.setattr(Spool, "write", broken_write)
    code = await in_thread(conn.message)
    assert conn.codes["header"] == conn.codes["body"] == NOREPLY  # nothing sent mid-content
    assert code == TEMPFAIL
    assert conn.ctx.replies == [FAILED]
    assert probe.seen == []  # never ACCEPT or CONTINUE a message the chain did not check
    assert bridge.hops == 0
    assert bridge.messages == 0


async def test_a_failed_helo_without_a_reply_refuses_the_next_message() -> None:
    chain, probe = chain_of(MessageProbe)
    bridge = await make_bridge(chain)
    conn = Connection(bridge)
    conn.negotiate()

    def run() -> None:
        conn.connect()
        session, conn.milter.session = conn.milter.session, None  # HELO fails on None
        conn.stage("helo", HELO_MACROS, lambda: conn.milter.hello("helo.example.net"))
        conn.milter.session = session
        conn.message()

    await in_thread(run)
    assert conn.codes["helo"] == conn.codes["mail"] == conn.codes["rcpt"] == NOREPLY
    assert conn.codes["data"] == conn.codes["eom"] == TEMPFAIL  # never passed unchecked
    assert conn.ctx.replies == [FAILED, FAILED]
    assert probe.seen == []
    assert bridge.messages == 0


async def test_a_message_refused_at_data_stops_counting_but_stays_refused() -> None:
    """libmilter sends no abort after a refusal at DATA: the message must not keep a stop
    waiting, and a step of it that still arrives is refused, never passed."""
    chain, probe = chain_of(MessageProbe)
    bridge = await make_bridge(chain)
    conn = Connection(bridge)
    conn.negotiate()
    m = conn.milter

    def run() -> None:
        conn.connect()
        conn.stage("helo", HELO_MACROS, lambda: m.hello("helo.example.net"))
        conn.stage("mail", MAIL_MACROS, lambda: m.envfrom("<alice@example.net>"))
        conn.stage("rcpt", RCPT_MACROS, lambda: m.envrcpt("<good@example.org>"))
        assert m.message is not None
        m.message.refusal = FILTER_FAILED  # as a failed step without a reply leaves it
        conn.stage("data", DATA_MACROS, m.data)

    await in_thread(run)
    assert conn.codes["data"] == TEMPFAIL
    assert bridge.messages == 0
    assert await in_thread(m.eom) == TEMPFAIL
    assert probe.seen == []
    await in_thread(conn.close)
    assert (bridge.connections, bridge.messages) == (0, 0)


# ------------------------------------------------------------------------------ bookkeeping
async def test_stopping_refuses_new_connections_and_messages_without_a_hop() -> None:
    chain, probe = chain_of(MessageProbe)
    shutdown = Shutdown()
    bridge = await make_bridge(chain, shutdown)
    early = Connection(bridge)
    early.negotiate()
    await in_thread(early.connect)
    shutdown.begin()
    late = Connection(bridge)
    late.negotiate()
    assert await in_thread(late.connect) == TEMPFAIL
    assert late.ctx.replies == [STOPPING]
    # MAIL has no reply (no plugin has on_mail_from): the new message is refused at DATA,
    # before any content, and stays refused if Postfix sent more of it.
    assert await in_thread(early.message) == TEMPFAIL
    assert (early.codes["mail"], early.codes["rcpt"], early.codes["data"]) == (
        NOREPLY,
        NOREPLY,
        TEMPFAIL,
    )
    assert early.ctx.replies == [STOPPING, STOPPING]  # DATA, end of message
    assert probe.seen == []
    assert bridge.hops == 0
    await in_thread(early.close)
    await in_thread(late.close)
    assert (bridge.connections, bridge.messages) == (0, 0)


async def test_without_negotiation_steps_answer_continue_and_still_never_refuse() -> None:
    """A new SMTP session on the same milter connection (SMFIC_QUIT_NC) brings no negotiation:
    pymilter makes a fresh object with ``_protocol`` 0 while libmilter keeps the "no reply"
    steps. Those steps answer CONTINUE (which libmilter turns into no reply where negotiated)
    and never a refusal (which libmilter would drop, losing step with the MTA)."""
    chain, probe = chain_of(MessageProbe)
    shutdown = Shutdown()
    bridge = await make_bridge(chain, shutdown)
    conn = Connection(bridge)  # no negotiate()
    assert await in_thread(conn.connect) == CONTINUE
    shutdown.begin()
    assert await in_thread(conn.message) == TEMPFAIL
    assert conn.codes["helo"] == conn.codes["mail"] == conn.codes["rcpt"] == CONTINUE
    assert conn.codes["header"] == conn.codes["body"] == CONTINUE
    assert conn.codes["data"] == TEMPFAIL  # the first step that surely has a reply
    assert probe.seen == []


@pytest.mark.parametrize("cls", [EnvelopeProbe, RcptProbe])
async def test_stopping_refuses_at_the_first_step_with_a_reply(cls: type[MessageProbe]) -> None:
    chain, probe = chain_of(cls)
    shutdown = Shutdown()
    bridge = await make_bridge(chain, shutdown)
    conn = Connection(bridge)
    conn.negotiate()
    await in_thread(conn.connect)
    hops = bridge.hops  # on_connect ran before the stop
    shutdown.begin()
    m = conn.milter

    def run() -> None:
        conn.stage("mail", MAIL_MACROS, lambda: m.envfrom("<alice@example.net>"))
        conn.stage("rcpt", RCPT_MACROS, lambda: m.envrcpt("<good@example.org>"))
        conn.stage("rcpt2", RCPT_MACROS, lambda: m.envrcpt("<other@example.org>"))
        conn.stage("data", DATA_MACROS, m.data)
        conn.stage("eom", {}, m.eom)

    await in_thread(run)
    if cls is EnvelopeProbe:  # MAIL has a reply: refused there, Postfix sends no more
        assert conn.codes["mail"] == TEMPFAIL
    else:  # MAIL without reply: every RCPT is refused (each one has a reply)
        assert conn.codes["mail"] == NOREPLY
        assert conn.codes["rcpt"] == conn.codes["rcpt2"] == TEMPFAIL
        assert conn.codes["data"] == conn.codes["eom"] == TEMPFAIL
    assert set(conn.ctx.replies) == {STOPPING}
    assert probe.seen == []
    assert bridge.hops == hops  # no chain stage ran for the refused message
    await in_thread(conn.close)
    assert (bridge.connections, bridge.messages) == (0, 0)


async def test_connections_beyond_the_limit_are_refused_at_connect() -> None:
    chain, _ = chain_of(MessageProbe)
    bridge = await make_bridge(chain, listen={"max_connections": 2})
    first, second, third = Connection(bridge), Connection(bridge), Connection(bridge)
    assert await in_thread(first.connect) == CONTINUE
    assert await in_thread(second.connect) == CONTINUE
    assert await in_thread(third.connect) == TEMPFAIL
    assert third.ctx.replies == [("451", "4.3.2", "Error: mail filter busy, try again later")]
    await in_thread(third.close)  # not counted: closing it frees nothing
    assert bridge.connections == 2
    await in_thread(first.close)
    fourth = Connection(bridge)
    assert await in_thread(fourth.connect) == CONTINUE
    for conn in (second, fourth):
        await in_thread(conn.close)
    assert bridge.connections == 0


async def test_counters_hold_under_concurrent_connections() -> None:
    chain, probe = chain_of(MessageProbe)
    bridge = await make_bridge(chain, listen={"max_connections": 1000})
    per_thread, threads = 25, 8

    def worker() -> None:
        for _ in range(per_thread):
            one_message(bridge)

    async with trio.open_nursery() as nursery:
        for _ in range(threads):
            nursery.start_soon(in_thread, worker)
    assert len(probe.seen) == per_thread * threads
    assert (bridge.connections, bridge.messages) == (0, 0)


async def test_a_stop_waits_for_the_message_in_progress() -> None:
    chain, _ = chain_of(MessageProbe)
    shutdown = Shutdown()
    bridge = await make_bridge(chain, shutdown)
    conn = Connection(bridge)
    conn.negotiate()
    await in_thread(conn.connect)
    await in_thread(
        lambda: conn.stage("mail", MAIL_MACROS, lambda: conn.milter.envfrom("<a@example.net>"))
    )
    assert bridge.messages == 1
    shutdown.begin()
    finished = threading.Event()

    async def finish_later() -> None:
        await trio.sleep(0.2)
        await in_thread(lambda: conn.stage("eom", {}, conn.milter.eom))
        finished.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(finish_later)
            await bridge.wait_for_messages()
            assert bridge.messages == 0
    assert finished.is_set()
    assert conn.codes["eom"] == CONTINUE  # the message in progress was checked and answered


async def test_a_slow_chain_is_answered_tempfail_never_accept() -> None:
    class Slow(MessageProbe):
        name = "slow_probe"

        async def on_message(self, t: Transaction, message: MessageView) -> Verdict:
            await trio.sleep(5)
            return Continue()

    chain, _ = chain_of(Slow)
    bridge = await make_bridge(chain, limits={"milter_content_timeout": 0.2})
    conn = await in_thread(lambda: one_message(bridge))
    assert conn.codes["eom"] == TEMPFAIL
    assert conn.ctx.replies == [("451", "4.4.5", "Error: message check timed out, try again later")]
    assert conn.ctx.actions == []
    assert bridge.messages == 0


async def test_a_slow_envelope_stage_is_a_tempfail_logged_as_a_refusal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class SlowRcpt(RcptProbe):
        name = "slow_rcpt"

        async def on_rcpt(self, t: Transaction, rcpt: Recipient) -> Verdict:
            await trio.sleep(5)
            return Continue()

    chain, _ = chain_of(SlowRcpt)
    bridge = await make_bridge(chain, limits={"milter_command_timeout": 0.2})
    with caplog.at_level(logging.INFO, logger="filterd"):
        conn = await in_thread(lambda: one_message(bridge))
    assert conn.codes["rcpt"] == TEMPFAIL
    timed_out = ("451", "4.4.5", "Error: message check timed out, try again later")
    assert conn.ctx.replies[0] == timed_out
    assert (
        "reject: RCPT from client.example.net[192.0.2.1]: 451 4.4.5 Error: message check timed "
        "out, try again later; from=<alice@example.net> to=<good@example.org> proto=ESMTPSA"
    ) in caplog.text
    assert bridge.messages == 0
