"""The plugin base class, its configuration model and its environment."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Generic, TypeVar

import trio
from pydantic import BaseModel, ConfigDict

from filterd.maillog import MailLog


class PluginConfig(BaseModel):
    """Base of every plugin's settings: frozen, and unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


ConfigT = TypeVar("ConfigT", bound=PluginConfig)


@dataclass(frozen=True, slots=True)
class PluginEnv:
    """What filterd gives a plugin instead of globals."""

    name: str  # the chain entry's label
    log: MailLog  # lines appear as filterd/<name>[pid]: QUEUEID: ...
    thread_limiter: trio.CapacityLimiter  # for trio.to_thread.run_sync(..., limiter=...)
    # Wall-clock time (unix seconds) for plugins that keep time-based state (greylisting, rate
    # limits): tests give a fake one instead of sleeping.
    clock: Callable[[], float] = field(default=time.time)


class Plugin(Generic[ConfigT]):
    """Subclass this and the stage protocols you handle (OnRcpt, OnMessage, ...).

    ``name`` must equal the entry-point name; ``Config`` is the settings model (the
    ``config`` table of the ``[[chain]]`` entry is validated against it at start-up).
    """

    name: ClassVar[str]
    Config: ClassVar[type[PluginConfig]] = PluginConfig

    decides_each_policy_request: ClassVar[bool] = False
    """At the policy door, whether this plugin decides every request Postfix sends afresh, as
    postfwd and Postfix's ``check_*_access`` do (True), or once per message (False: a later
    request of the message reuses the outcomes of the stages it already ran, so
    ``on_mail_from`` runs once and ``on_rcpt`` once per recipient). A plugin that sets it has
    the request's last stage (``policy_door_stage``) run again for it on every request."""

    def __init__(self, config: ConfigT, env: PluginEnv) -> None:
        self.config = config
        self.env = env

    async def start(self) -> None:
        """Open pools and connections; runs once before the first message."""

    async def stop(self) -> None:
        """Close what ``start`` opened; runs once at shutdown."""
