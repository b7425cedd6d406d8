"""The milter door's thread bridge: what libmilter's threads share with trio.

A libmilter callback runs on one of libmilter's threads (one per MTA connection, its callbacks
one at a time). It reaches the chain only through ``MilterBridge.run``: a hop into the trio
thread (``trio.from_thread.run``), made only for a stage some plugin implements, and not
for a stage whose plugins all only compute (``@inline``): ``MilterBridge.consult`` runs that
one on the libmilter thread itself (``filterd.chain.inline.run_now``). Everything else — the
counters, the stop check — is under the bridge's ``threading.Lock``, not a hop.

- **Timeouts inside the hop**: a hop runs as a trio system task that no cancel scope of ours
  reaches, so each hop has its own deadline (``budget``): ``command_budget`` (under Postfix's
  ``milter_command_timeout``, 30 s) for CONNECT..RCPT, ``content_budget`` (under
  ``milter_content_timeout``, 300 s) at end of message. Too slow → ``HopFailed`` with
  451 4.4.5.
- **Trio gone or going** (``RunFinishedError``, ``Cancelled``) → ``HopFailed`` with 451 4.3.2:
  never ACCEPT, so nothing is lost.
- **Overload**: at most ``max_connections`` MTA connections; one more is told 451 4.3.2 at
  CONNECT, never queued. With several processes (``processes = N``) they are counted in every
  process together (a ``ConnectionTally`` shared by them).
- **Stop**: once ``shutdown.stopping``, no new connection and no new message; a stop waits
  (``wait_for_messages``) for the messages in progress.
- **Reload**: what a connection runs — the chain, the stages that need a hop, the steps to
  negotiate, the settings — is a ``MilterChain``, taken when the connection opens and kept to
  its end. A reload puts a new one in the bridge (``swap``); the old one's ``drained`` is set
  once its last connection has closed, and only then may its chain stop.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import trio

from filterd.chain.inline import BrokenInlinePromise, run_now
from filterd.chain.runner import ChainRunner
from filterd.config.schema import LimitsConfig, ListenConfig
from filterd.config.types import Endpoint
from filterd.frontdoors.closing import CLOSE_TIMEOUT
from filterd.frontdoors.shutdown import Shutdown
from filterd.maillog import MailLog, queue_id_var
from filterd.model import metrics
from filterd.model.reply import Reply
from filterd.protocols.milter_map import (
    FILTER_BUSY,
    FILTER_FAILED,
    FILTER_STOPPING,
    FILTER_TIMEOUT,
    MACRO_NAMES,
    MAIL_MACRO_NAMES,
    libmilter_socket,
    protocol_flags,
)
from filterd.sdk.stages import STAGES

__all__ = [
    "MTA_TIMEOUT",
    "ConnectionTally",
    "HopFailed",
    "MilterBridge",
    "MilterChain",
    "MilterSettings",
]

log = MailLog("milter")

T = TypeVar("T")

MTA_TIMEOUT = 600
"""``smfi_settimeout``: how long libmilter waits for the MTA (not configurable)."""


@dataclass(frozen=True, slots=True)
class MilterSettings:
    """What the milter listener needs, derived once at start-up from its configuration
    (``from_config``: the schema holds every default)."""

    address: Endpoint  # where libmilter listens, as configured
    max_connections: int
    command_budget: float  # < milter_command_timeout (30 s)
    content_budget: float  # < milter_content_timeout (300 s)
    spool_memory: int
    spool_dir: Path | None
    shutdown_grace: float
    mta_timeout: int = MTA_TIMEOUT

    @classmethod
    def from_config(cls, listen: ListenConfig, limits: LimitsConfig) -> MilterSettings:
        return cls(
            address=listen.address,
            max_connections=listen.max_connections,
            command_budget=limits.milter_command_timeout,
            content_budget=limits.milter_content_timeout,
            spool_memory=limits.spool_memory,
            spool_dir=limits.spool_dir,
            shutdown_grace=limits.shutdown_grace,
        )

    @property
    def name(self) -> str:
        """``Session.listener``: the address as configured."""
        return str(self.address)

    @property
    def socket(self) -> str:
        """The address in libmilter's syntax: ``inet:PORT@HOST`` or ``unix:/path``."""
        return libmilter_socket(self.address)


class ConnectionTally(Protocol):
    """The MTA connections of every process of a milter listener (``filterd.runtime.tally``)."""

    def admit(self, limit: int) -> int | None:
        """Count one more connection of this process unless all have ``limit``: ``None`` when
        counted, else how many they have."""
        ...

    def release(self) -> None:
        """One connection of this process has ended."""
        ...


class HopFailed(Exception):
    """A hop could not give the chain's answer; ``reply`` is what to tell Postfix."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


@dataclass(eq=False)
class MilterChain:
    """What an MTA connection runs, fixed when it opens: the chain of one configuration, the
    stages some plugin implements (a hop for each), the steps to negotiate, the settings. The
    counts are kept under the bridge's lock."""

    chain: ChainRunner
    settings: MilterSettings
    stages: frozenset[str] = field(init=False)
    protocol: int = field(init=False)
    inline: frozenset[str] = field(init=False)  # stages run on libmilter's thread (@inline)
    # The macros read at MAIL: without a plugin at MAIL (or at close, which may follow an
    # unfinished message) only what the transaction needs; the end of message (or RCPT with
    # a plugin) reads every macro, and libmilter keeps the MAIL ones till then.
    mail_macros: tuple[str, ...] = field(init=False)
    connections: int = 0  # open connections that run this chain
    retired: bool = False  # a reload replaced it: no new connection takes it
    drained: trio.Event = field(default_factory=trio.Event)  # retired and no connection left

    def __post_init__(self) -> None:
        self.stages = frozenset(stage for stage in STAGES if self.chain.has_stage(stage))
        self.protocol = protocol_flags(self.stages)
        self.inline = frozenset(s for s in self.stages if self.chain.runs_inline(s))
        none_at_mail = self.stages.isdisjoint(("on_mail_from", "on_close"))
        self.mail_macros = MAIL_MACRO_NAMES if none_at_mail else MACRO_NAMES


class MilterBridge:
    """What the libmilter threads share: the chain (reached by a hop into trio), the counters
    (under ``_lock``) and the stop flag."""

    def __init__(
        self,
        chain: ChainRunner,
        settings: MilterSettings,
        shutdown: Shutdown,
        token: trio.lowlevel.TrioToken,
        tally: ConnectionTally | None = None,
    ) -> None:
        self.current = MilterChain(chain, settings)  # what a new connection takes
        self.tally = tally  # with several processes: they count connections together
        self.shutdown = shutdown
        self.token = token
        self.connections = 0  # admitted at CONNECT (max_connections)
        self.attached = 0  # every open connection, admitted or not
        self.messages = 0
        self._lock = threading.Lock()
        self._draining = False  # a stop waits for the messages in progress: tell it when done
        self._drained = trio.Event()
        self._all_closed: trio.Event | None = None  # set when ``attached`` reaches 0

    @property
    def chain(self) -> ChainRunner:
        return self.current.chain

    @property
    def settings(self) -> MilterSettings:
        return self.current.settings

    @property
    def stages(self) -> frozenset[str]:
        return self.current.stages

    @property
    def protocol(self) -> int:
        return self.current.protocol

    # ------------------------------------------------------------- libmilter threads
    def consult(
        self,
        view: MilterChain,
        stage: str,
        fn: Callable[[], Coroutine[Any, Any, T]],
        budget: float,
        queue_id: str,
    ) -> T:
        """``view``'s chain at ``stage`` (``fn``): here if the stage runs inline, else by a
        hop."""
        if stage not in view.inline:
            return self.run(fn, budget, queue_id)
        try:
            return run_now(fn())
        except BrokenInlinePromise as exc:  # a plugin's failures are the runner's; not this
            log.error(f"{stage}: {exc}: tempfail")
            raise HopFailed(FILTER_FAILED) from None

    def run(self, fn: Callable[[], Awaitable[T]], budget: float, queue_id: str) -> T:
        """Run ``fn`` on the trio thread under ``budget`` seconds; failures → ``HopFailed``."""
        try:
            return trio.from_thread.run(self._call, fn, budget, queue_id, trio_token=self.token)
        except trio.TooSlowError:
            log.warning(f"chain did not answer within {budget:g}s: tempfail")
            raise HopFailed(FILTER_TIMEOUT) from None
        except (trio.RunFinishedError, trio.Cancelled):
            raise HopFailed(FILTER_STOPPING) from None

    def run_quietly(self, fn: Callable[[], Awaitable[None]], queue_id: str) -> None:
        """For endings (close): trio being gone is not worth a line."""
        try:
            self.run(fn, CLOSE_TIMEOUT, queue_id)
        except HopFailed:
            pass

    def attach(self) -> MilterChain:
        """A connection opens: the chain it runs to its end (``detach`` when it closes)."""
        with self._lock:
            view = self.current
            view.connections += 1
            self.attached += 1
            return view

    def detach(self, view: MilterChain) -> None:
        with self._lock:
            view.connections -= 1
            self.attached -= 1
            drained = view.retired and view.connections == 0
            all_closed = self._all_closed if self.attached == 0 else None
            if all_closed is not None:
                self._all_closed = None
        for event in (view.drained if drained else None, all_closed):
            if event is not None:
                try:
                    self.token.run_sync_soon(event.set)
                except trio.RunFinishedError:
                    pass

    def open_connection(self) -> Reply | None:
        """Admit one more MTA connection, or say why not (stopping, too many)."""
        limit = self.current.settings.max_connections
        with self._lock:
            if self.shutdown.stopping:
                return FILTER_STOPPING
            if self.tally is not None:
                busy = self.tally.admit(limit)
            else:
                busy = self.connections if self.connections >= limit else None
            if busy is None:
                self.connections += 1
                metrics.recorder.session("milter", 1)
                return None
        log.warning(f"too many milter connections ({busy}): tempfail")
        return FILTER_BUSY

    def close_connection(self) -> None:
        with self._lock:
            self.connections -= 1
            metrics.recorder.session("milter", -1)
            if self.tally is not None:
                self.tally.release()

    def begin_message(self) -> Reply | None:
        """Count one more message in progress, or refuse it while stopping. A stop reads the
        count under the same lock after setting ``stopping``, so it never misses one."""
        with self._lock:
            if self.shutdown.stopping:
                return FILTER_STOPPING
            self.messages += 1
            return None

    def end_message(self) -> None:
        with self._lock:
            self.messages -= 1
            drained = self._draining and self.messages == 0
        if drained:
            try:
                self.token.run_sync_soon(self._drained.set)
            except trio.RunFinishedError:
                pass

    # ------------------------------------------------------------------ trio thread
    async def _call(self, fn: Callable[[], Awaitable[T]], budget: float, queue_id: str) -> T:
        queue_id_var.set(queue_id)
        with trio.CancelScope(deadline=trio.current_time() + budget):  # cheaper than fail_after
            return await fn()
        raise trio.TooSlowError

    def in_progress(self) -> int:
        with self._lock:
            return self.messages

    def swap(self, chain: ChainRunner, settings: MilterSettings) -> MilterChain:
        """A reload: new connections run ``chain`` with ``settings``. Returns the chain they
        ran until now, whose ``drained`` is set once its last connection has closed."""
        with self._lock:
            old, self.current = self.current, MilterChain(chain, settings)
            old.retired = True
            idle = old.connections == 0
        if idle:
            old.drained.set()
        return old

    async def wait_for_connections(self) -> None:
        """Until every connection has closed (the listener stopped: no new one opens)."""
        with self._lock:
            if self.attached == 0:
                return
            if self._all_closed is None:
                self._all_closed = trio.Event()
            all_closed = self._all_closed
        await all_closed.wait()

    async def wait_for_messages(self) -> None:
        """Until no message is in progress (while stopping, no new one can begin)."""
        with self._lock:
            if self.messages == 0:
                return
            self._draining = True
        await self._drained.wait()
