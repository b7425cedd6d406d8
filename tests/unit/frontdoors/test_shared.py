"""What every front door shares: ending a session (``frontdoors.closing``) and settings derived
from the configuration schema, not from defaults of their own."""

from __future__ import annotations

from typing import cast

import pytest
import trio
import trio.testing

from filterd.chain.runner import ChainRunner
from filterd.config.schema import LimitsConfig, ListenConfig
from filterd.frontdoors.closing import CLOSE_TIMEOUT, close_chain
from filterd.frontdoors.milter.bridge import MilterSettings
from filterd.frontdoors.policy.service import PolicySettings
from filterd.model.envelope import Client, Session

SESSION = Session("S1", "127.0.0.1:10025", Client())


class ClosingChain:
    """Stands in for ``ChainRunner.close``: records the session, maybe never returns."""

    def __init__(self, *, hang: bool = False) -> None:
        self.hang = hang
        self.closed: list[Session] = []
        self.finished = False

    async def close(self, session: Session) -> None:
        self.closed.append(session)
        if self.hang:
            await trio.sleep_forever()
        await trio.lowlevel.checkpoint()  # raises Cancelled unless shielded
        self.finished = True


async def test_on_close_runs_even_in_a_cancelled_session() -> None:
    chain = ClosingChain()
    with trio.CancelScope() as scope:
        scope.cancel()  # the session ended by a timeout or a stop
        await close_chain(cast(ChainRunner, chain), SESSION)
    assert chain.closed == [SESSION]
    assert chain.finished


async def test_a_hanging_on_close_is_given_up_after_close_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    chain = ClosingChain(hang=True)
    started = trio.current_time()
    await close_chain(cast(ChainRunner, chain), SESSION)
    assert chain.closed == [SESSION]
    assert not chain.finished
    assert trio.current_time() - started == pytest.approx(CLOSE_TIMEOUT)  # the mock clock


def test_policy_settings_come_from_the_configuration() -> None:
    listen = ListenConfig.model_validate(
        {"address": "127.0.0.1:10040", "protocol": "policy", "accept_as_ok": True}
    )
    limits = LimitsConfig.model_validate({"policy_request_timeout": "80s"})
    settings = PolicySettings.from_config(listen, limits)
    assert settings.name == "127.0.0.1:10040"
    assert settings.accept_as_ok is True
    assert settings.request_timeout == 80.0
    assert settings.idle_timeout == limits.policy_idle_timeout  # the schema's default
    assert settings.max_connections == listen.max_connections


def test_milter_settings_come_from_the_configuration() -> None:
    listen = ListenConfig.model_validate(
        {"address": "unix:/run/filterd/milter.sock", "protocol": "milter", "max_connections": 7}
    )
    limits = LimitsConfig.model_validate({"milter_content_timeout": "200s", "spool_memory": "2MiB"})
    settings = MilterSettings.from_config(listen, limits)
    assert (settings.name, settings.socket) == (
        "unix:/run/filterd/milter.sock",
        "unix:/run/filterd/milter.sock",
    )
    assert settings.max_connections == 7
    assert settings.content_budget == 200.0
    assert settings.command_budget == limits.milter_command_timeout  # the schema's default
    assert (settings.spool_memory, settings.spool_dir) == (2 * 1024 * 1024, None)
    assert settings.shutdown_grace == limits.shutdown_grace
