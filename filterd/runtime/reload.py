"""Reload (SIGHUP, ``systemctl reload filterd``): read the configuration again and serve new
connections with it, or refuse it and keep the one in force.

A reload is all or nothing, in two phases:

1. **Prepare**, while the configuration in force goes on serving: read the file as ``filterd
   check-config`` does (the same checks, the same messages: file, line, key and fix), check
   what cannot change at reload (``fixed_settings``) and what the machine must allow
   (``check_before_serving``), bind the new listening sockets, build the next ``Generation``
   (every plugin loaded and configured again, so every table or file it reads is read again),
   start its plugins and its worker processes. Any failure undoes what was prepared and refuses
   the reload: ``reload refused: <why>; keeping the configuration loaded at <time>``.
2. **Switch** (no failure possible): stop accepting on the sockets given up, hand new
   connections to the new generation, give the milter listener the new chain, retire the old
   generation (its sessions end with the chain they started with: see ``generation``), and log
   ``configuration reloaded (N listeners, chain: a, b)``.

Reloads run one at a time; SIGHUPs that arrive during one make one more after it. A stop
cancels a reload in preparation.

Hooks: ``ReloadHooks.reload_begins`` / ``reload_ends`` are called where a reload starts and ends
(``Reloader.reload``), for ``sd_notify`` ``RELOADING=1`` / ``READY=1``.

Status: ``configuration_status()`` says which configuration is in force in this process, since
when, and how many reloads were applied or refused (for ``filterd status`` and the metrics).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Protocol

import trio

from filterd.config.load import EMBEDDED_SOURCE, load_config, locate_key
from filterd.config.schema import Config, ListenConfig
from filterd.errors import ConfigError
from filterd.frontdoors.shutdown import Shutdown
from filterd.maillog import MailLog
from filterd.runtime import metrics
from filterd.runtime.generation import ChainStartError, Generation
from filterd.runtime.handlers import milter_settings
from filterd.runtime.listener_set import ListenerSet, Listening, MilterDoor
from filterd.runtime.observing import Observing
from filterd.runtime.startup import StartupError, check_before_serving
from filterd.runtime.worker_pool import DRAIN_CONFIRM_TIMEOUT, WorkerStartError

__all__ = [
    "ConfigurationStatus",
    "ReloadHooks",
    "Reloader",
    "configuration_status",
    "fixed_settings",
    "reread",
]

log = MailLog("main")

ConfigReader = Callable[[], Config]
"""Reads the configuration file again, as ``filterd check-config`` reads it (``ConfigError``)."""

RESTART = "systemctl restart filterd"


# --- what the metrics and `filterd status` read ------------------------------------------------


@dataclass(frozen=True)
class ConfigurationStatus:
    """The configuration in force in this process."""

    source: str  # the file it was read from
    loaded_at: float  # when (time.time()): start-up, or the last reload applied
    generation: int  # 1 at start-up, one more for each reload applied
    reloads: int  # reloads applied
    refused: int  # reloads refused
    last_refusal: str | None  # why the last refused reload was refused

    @property
    def loaded_at_text(self) -> str:
        """``loaded_at`` as the log lines write time: ``2026-01-31 12:00:00``."""
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.loaded_at))


_status: ConfigurationStatus | None = None


def configuration_status() -> ConfigurationStatus | None:
    """The configuration in force in this process; ``None`` when it serves nothing."""
    return _status


def _set_status(status: ConfigurationStatus | None) -> None:
    global _status
    _status = status


# --- where a reload starts and ends ------------------------------------------------------------


class ReloadHooks(Protocol):
    """Told where each reload starts and ends (``sd_notify``: ``RELOADING=1``, ``READY=1``)."""

    def reload_begins(self) -> None: ...

    def reload_ends(self, applied: bool) -> None:
        """``applied``: the new configuration is in force (else the old one still is)."""
        ...


class _NoHooks:
    def reload_begins(self) -> None:
        pass

    def reload_ends(self, applied: bool) -> None:
        pass


def reread(config: Config) -> ConfigReader:
    """Read the file ``config`` came from again (the embedded default: that again)."""
    path = None if config.source == EMBEDDED_SOURCE else config.source
    return partial(load_config, path, serving=True)


# --- what a reload cannot change ---------------------------------------------------------------


def fixed_settings(old: Config, new: Config) -> list[ConfigError]:
    """What ``new`` changes that a reload cannot: the milter listener (libmilter binds its socket
    once per process and runs until filterd stops), which cannot be added or removed, nor
    change its address, nor go from one process to several or back."""
    old_milter = _milter_listener(old)
    new_milter = _milter_listener(new)
    if old_milter is None and new_milter is None:
        return []
    source = new.source
    if new_milter is None:
        assert old_milter is not None
        return [
            ConfigError(
                source,
                None,
                "listen",
                f"the milter listener on {old_milter[1].address} cannot be removed by a reload "
                "(libmilter runs until filterd stops)",
                f"restart filterd to remove it ({RESTART})",
            )
        ]
    index, listen = new_milter
    where = ("listen", index)
    if old_milter is None:
        return [
            _fixed(
                new,
                (*where, "protocol"),
                "a milter listener cannot be added by a reload (libmilter starts once per "
                "process, with filterd)",
                f"restart filterd to add it ({RESTART})",
            )
        ]
    was = old_milter[1]
    problems = []
    if listen.address != was.address:
        problems.append(
            _fixed(
                new,
                (*where, "address"),
                f"the milter listener's address cannot change at reload (libmilter binds "
                f"{was.address} once per process)",
                f'put back address = "{was.address}", or restart filterd ({RESTART})',
            )
        )
    if (listen.process_count > 1) != (was.process_count > 1):
        problems.append(
            _fixed(
                new,
                (*where, "processes"),
                "the milter listener cannot go from one process to several or back at reload "
                f"(it has {was.process_count}: libmilter binds its socket itself in one "
                "process, the main process binds it for several)",
                f"keep processes {'= 1' if was.process_count == 1 else 'above 1'}, or restart "
                f"filterd ({RESTART})",
            )
        )
    return problems


def _milter_listener(config: Config) -> tuple[int, ListenConfig] | None:
    return next(
        ((index, each) for index, each in enumerate(config.listen) if each.protocol == "milter"),
        None,
    )


def _fixed(config: Config, loc: tuple[str | int, ...], message: str, hint: str) -> ConfigError:
    key = f"{loc[0]}[{loc[1]}].{loc[2]}"
    return ConfigError(config.source, locate_key(config.source, loc), key, message, hint)


# --- the reload --------------------------------------------------------------------------------


class _Refused(Exception):
    """A reload that cannot be applied; ``str()`` says why, for the log line."""


class Reloader:
    """Reloads the configuration of a running filterd, one reload at a time."""

    def __init__(self, read: ConfigReader | None = None, hooks: ReloadHooks | None = None) -> None:
        self.read = read  # None: ``reread`` of the configuration ``attach`` is given
        self.hooks: ReloadHooks = hooks or _NoHooks()
        self.generation: Generation | None = None  # in force
        self._listeners: ListenerSet | None = None
        self._milter: MilterDoor | None = None
        self._generations: trio.Nursery | None = None
        self._observing: Observing | None = None
        self._shutdown = Shutdown()
        self._requested = trio.Event()
        self._lock = trio.Lock()
        self._scope = trio.CancelScope()

    def attach(
        self,
        first: Generation,
        listeners: ListenerSet,
        milter: MilterDoor | None,
        generations: trio.Nursery,
        shutdown: Shutdown,
        observing: Observing | None = None,
    ) -> None:
        """Serving has begun with ``first``: what a reload changes (``observing``: the
        metrics, which a new generation's workers record into too)."""
        self.generation = first
        self._observing = observing
        self._listeners = listeners
        self._milter = milter
        self._generations = generations
        self._shutdown = shutdown
        if self.read is None:
            self.read = reread(first.config)
        _set_status(ConfigurationStatus(first.config.source, time.time(), first.number, 0, 0, None))

    @property
    def listeners(self) -> ListenerSet:
        assert self._listeners is not None, "serving has begun"
        return self._listeners

    def request(self) -> None:
        """Reload soon (SIGHUP): once, however many requests come before it begins."""
        self._requested.set()

    async def run(self) -> None:
        """Reload on each request until ``stop``."""
        with self._scope:
            while True:
                await self._requested.wait()
                self._requested = trio.Event()
                await self.reload()

    def stop(self) -> None:
        """filterd stops: no reload any more (one in preparation is cancelled)."""
        self._scope.cancel()
        _set_status(None)

    async def reload(self) -> bool:
        """Read the configuration again and switch to it; False if it was refused (logged,
        and the configuration in force stays). Where a reload starts and ends: the hooks."""
        async with self._lock:
            applied = False
            self.hooks.reload_begins()
            try:
                applied = await self._reload()
            finally:
                self.hooks.reload_ends(applied)
            return applied

    async def _reload(self) -> bool:
        old = self.generation
        assert old is not None, "attach() first"
        status = _status
        loaded_at = status.loaded_at_text if status is not None else "start-up"
        log.plain(f"reloading configuration from {old.config.source}")
        try:
            if self._shutdown.stopping:
                raise _Refused("filterd is stopping")
            new, opened = await self._prepare(old)
        except _Refused as refused:
            log.error(f"reload refused: {refused}; keeping the configuration loaded at {loaded_at}")
            metrics.reloaded(False)
            if status is not None:
                _set_status(replace(status, refused=status.refused + 1, last_refusal=str(refused)))
            return False
        with trio.CancelScope(shield=True):  # nothing here fails: never half switched
            await self._switch(old, new, opened)
        logging.getLogger("filterd").setLevel(new.config.log.level.upper())
        if status is not None:
            _set_status(
                replace(
                    status,
                    source=new.config.source,
                    loaded_at=time.time(),
                    generation=new.number,
                    reloads=status.reloads + 1,
                )
            )
        metrics.reloaded(True)
        chain = ", ".join(new.labels) or "empty"
        log.plain(f"configuration reloaded ({len(new.config.listen)} listeners, chain: {chain})")
        return True

    async def _prepare(self, old: Generation) -> tuple[Generation, list[Listening]]:
        """Everything the new configuration needs, started, or ``_Refused`` with nothing of it
        left running."""
        assert self.read is not None
        assert self._generations is not None
        try:
            config = self.read()
            fixed = fixed_settings(old.config, config)
            if fixed:
                raise ConfigError.collect(fixed)
            # The milter listener is bound already (it cannot change): not checked again.
            others = tuple(listen for listen in config.listen if listen.protocol != "milter")
            checked = config.model_copy(update={"listen": others})
            await trio.to_thread.run_sync(check_before_serving, checked)  # may resolve names
        except (ConfigError, StartupError) as exc:
            raise _Refused(_one_line(exc)) from None
        try:
            opened = await self.listeners.bind_new(config)
        except StartupError as exc:
            raise _Refused(str(exc)) from None
        try:
            new = Generation(
                config,
                old.number + 1,
                self._shutdown,
                milter=self._milter,
                observing=self._observing,
            )
            await self._generations.start(new.run)
        except Exception as exc:  # every failure refuses the reload
            for listening in opened:
                listening.close()
            raise _Refused(_describe(exc)) from None
        except BaseException:
            for listening in opened:
                listening.close()
            raise
        return new, opened

    async def _switch(self, old: Generation, new: Generation, opened: list[Listening]) -> None:
        listeners = self.listeners
        gone = await listeners.stop_given_up(new.config)
        listeners.generation = new
        self.generation = new
        listeners.replace(new.config, opened, gone)
        milter = self._milter
        if milter is not None and milter.bridge is not None:
            listen = next(each for each in new.config.listen if each.protocol == "milter")
            old.milter_chain = milter.bridge.swap(new.chain, milter_settings(listen, new.config))
        old.retire()
        # Done only once no process of the old configuration accepts a new connection: a milter
        # connection made after "configuration reloaded" meets the new chain, whichever
        # process's libmilter accepts it.
        with trio.move_on_after(DRAIN_CONFIRM_TIMEOUT) as waiting:
            async with trio.open_nursery() as racing:  # a stop ends the wait: no reload to finish

                async def until_stop() -> None:
                    await self._shutdown.event.wait()
                    racing.cancel_scope.cancel()

                racing.start_soon(until_stop)
                await old.wait_taking_nothing()
                racing.cancel_scope.cancel()
        if waiting.cancelled_caught:
            log.warning(
                f"a worker process of the old configuration did not confirm within "
                f"{DRAIN_CONFIRM_TIMEOUT:g}s that it accepts nothing more; it may still take "
                "a connection with the old chain"
            )


def _one_line(exc: ConfigError | StartupError) -> str:
    if isinstance(exc, ConfigError):
        return "; ".join(problem.describe() for problem in exc.problems)
    return str(exc)


def _describe(exc: BaseException) -> str:
    """A failure to start the new configuration: what each part that failed said."""
    leaves: list[BaseException] = []

    def collect(error: BaseException) -> None:
        if isinstance(error, BaseExceptionGroup):
            for inner in error.exceptions:
                collect(inner)
        else:
            leaves.append(error)

    collect(exc)
    parts = []
    for leaf in leaves:
        if isinstance(leaf, ConfigError | StartupError):
            parts.append(_one_line(leaf))
        elif isinstance(leaf, ChainStartError):
            parts.append(str(leaf))
        elif isinstance(leaf, WorkerStartError):
            parts.append(f"a worker process did not start: {leaf}")
        else:
            text = str(leaf)
            parts.append(f"{type(leaf).__name__}: {text}" if text else type(leaf).__name__)
    return "; ".join(parts)
