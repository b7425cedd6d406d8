"""Worker processes that fail: reported with what went wrong, and filterd does not start
(``[[listen]] processes = N``, here on a policy listener; the working cases are in tests/e2e)."""

from __future__ import annotations

import re
import sys

import pytest
import trio

from filterd.config.load import parse_config
from filterd.config.schema import Config
from filterd.frontdoors.shutdown import Shutdown
from filterd.runtime import supervisor
from filterd.runtime import worker_pool as policy_workers
from filterd.runtime.worker_pool import WorkerPool, WorkerStartError
from tests.support.postfix import free_port


def policy_config(port: int, grace: str = "1s") -> Config:
    return parse_config(
        f"""
[[listen]]
address = "127.0.0.1:{port}"
protocol = "policy"
processes = 2
[limits]
shutdown_grace = "{grace}"
[delivery]
method = "maildir"
""",
        source="test.toml",
    )


def start_errors(group: BaseException) -> list[str]:
    """The WorkerStartError messages inside ``group`` (trio wraps them in exception groups)."""
    if isinstance(group, WorkerStartError):
        return [str(group)]
    if isinstance(group, BaseExceptionGroup):
        return [text for exc in group.exceptions for text in start_errors(exc)]
    return []


async def start_workers(command: list[str]) -> list[str]:
    config = policy_config(free_port())
    listen = config.listen[0]
    shutdown = Shutdown()
    workers = WorkerPool(listen, 0, config, shutdown, command=command)
    try:
        await workers.run()
    except BaseException as exc:
        return start_errors(exc)
    return []


async def test_a_worker_that_exits_while_starting_says_with_which_status() -> None:
    errors = await start_workers([sys.executable, "-c", "import sys; sys.exit(3)"])
    assert len(errors) == 1
    assert re.search(r"policy worker 1 of 127\.0\.0\.1:\d+ \(pid \d+\)", errors[0])
    assert "exited while starting (status 3)" in errors[0]


async def test_a_worker_that_never_gets_ready_is_killed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy_workers, "START_TIMEOUT", 0.5)
    with trio.fail_after(10):  # killed at once, not left to a graceful stop
        errors = await start_workers([sys.executable, "-c", "import time; time.sleep(60)"])
    assert len(errors) == 1
    assert "did not start within 0.5s" in errors[0]


def test_filterd_does_not_start_without_its_workers(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(policy_workers, "WORKER_MODULE", "filterd.no_such_module")
    status = supervisor.main(policy_config(free_port()))
    err = capfd.readouterr().err
    assert status == 2  # a start-up failure
    assert "No module named filterd.no_such_module" in err  # the worker's own message
    assert re.search(r"cannot start: policy worker 1 of 127\.0\.0\.1:\d+ \(pid \d+\)", err)
    assert "exited while starting (status 1)" in err
    assert "Traceback" not in err


async def test_stopping_while_a_worker_starts_kills_it_at_once() -> None:
    config = policy_config(free_port(), grace="20s")
    listen = config.listen[0]
    shutdown = Shutdown()
    slow = [sys.executable, "-c", "import time; time.sleep(60)"]  # never says it is ready
    workers = WorkerPool(listen, 0, config, shutdown, command=slow)
    with trio.fail_after(5):  # not shutdown_grace + 10 s: a worker not yet ready serves nothing
        async with trio.open_nursery() as nursery:
            nursery.start_soon(workers.run)
            await trio.sleep(0.5)
            shutdown.begin()
    process = workers.workers[0].process
    assert process is not None
    assert process.returncode == -9
