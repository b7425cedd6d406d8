"""A milter listener served by several processes (``[[listen]] processes = N``), against
Debian's ``miltertest`` and a real ``filterd run``: every process's libmilter accepts from the
one socket, ``max_connections`` counts them all, and each stops (alone, or with the rest).

Which process served a connection: its ``connect from`` line carries the pid."""

from __future__ import annotations

import collections
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.filterd_proc import FilterdProcess
from tests.support.postfix import free_port
from tests.support.processes import gone, worker_pids

pytest.importorskip("Milter", reason="pymilter (the milter extra) is not installed")

pytestmark = [
    pytest.mark.skipif(shutil.which("miltertest") is None, reason="miltertest is not installed"),
    pytest.mark.timeout(120),
]

SCRIPTS = Path(__file__).resolve().parents[1] / "milter"
WAIT = 30.0
CONNECT = re.compile(r"filterd/milter\[(\d+)\]: connect from client\.example\.net")


def milter_config(address: str, processes: int, extra: str = "") -> str:
    return f"""
[[listen]]
address = "{address}"
protocol = "milter"
processes = {processes}
{extra}
[[chain]]
plugin = "example_tagger"
"""


def wait_for(what: str, check: object, filterd: FilterdProcess) -> None:
    deadline = time.monotonic() + WAIT
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {WAIT:g}s:\n{filterd.output_text()}")
        time.sleep(0.05)


@pytest.fixture(params=["unix", "tcp"])
def address(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "unix":
        return f"unix:{tmp_path / 'milter.sock'}"
    return f"127.0.0.1:{free_port()}"


def start(tmp_path: Path, address: str, processes: int, extra: str = "") -> FilterdProcess:
    filterd = FilterdProcess(milter_config(address, processes, extra), tmp_path / "run")
    filterd.start()
    wait_for(
        "the workers are up",
        lambda: (
            len(worker_pids(filterd.output_text(), "milter")) == processes - 1
            and "milter listening on" in filterd.output_text()
        ),
        filterd,
    )
    return filterd


@pytest.fixture
def stopped_at_end() -> Iterator[list[FilterdProcess]]:
    started: list[FilterdProcess] = []
    try:
        yield started
    finally:
        for filterd in started:
            filterd.stop()
            print(filterd.output_text()[-10000:])


def run_script(name: str, address: str, *defines: str) -> str:
    if address.startswith("unix:"):
        sock = address
    else:
        host, _, port = address.rpartition(":")
        sock = f"inet:{port}@{host}"
    variables = [
        arg for name in (f"sock={sock}", f"dir={SCRIPTS}", *defines) for arg in ("-D", name)
    ]
    result = subprocess.run(
        ["miltertest", "-s", str(SCRIPTS / name), *variables],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "FAIL" not in output, output
    return output


def test_every_process_serves(
    tmp_path: Path, address: str, stopped_at_end: list[FilterdProcess]
) -> None:
    filterd = start(tmp_path, address, processes=3)
    stopped_at_end.append(filterd)
    assert filterd.pid is not None
    pids = {filterd.pid, *worker_pids(filterd.output_text(), "milter")}
    for _ in range(12):  # each connection answered and tagged, by whichever process took it
        run_script("one_message.lua", address)
    served = collections.Counter(int(pid) for pid in CONNECT.findall(filterd.output_text()))
    assert sum(served.values()) == 12
    assert set(served) <= pids
    assert len(served) >= 2, f"one process took every connection: {served}"
    assert filterd.stop(sweep=False) == 0
    text = filterd.output_text()
    assert text.count("milter stopped") == 3  # each process's libmilter
    assert all(gone(pid) for pid in pids)
    if address.startswith("unix:"):
        assert not Path(address.removeprefix("unix:")).exists()


def test_max_connections_counts_every_process(
    tmp_path: Path, address: str, stopped_at_end: list[FilterdProcess]
) -> None:
    filterd = start(tmp_path, address, processes=3, extra="max_connections = 1")
    stopped_at_end.append(filterd)
    run_script("over_the_limit.lua", address)
    assert filterd.output_text().count("too many milter connections (1): tempfail") == 4
    run_script("one_message.lua", address)  # the first one's place is free again


def test_a_worker_stopped_alone_is_replaced(
    tmp_path: Path, stopped_at_end: list[FilterdProcess]
) -> None:
    address = f"127.0.0.1:{free_port()}"
    filterd = start(tmp_path, address, processes=2)
    stopped_at_end.append(filterd)
    (worker,) = worker_pids(filterd.output_text(), "milter")
    os.kill(worker, signal.SIGTERM)  # an admin's kill of that one process
    wait_for(
        "a new worker", lambda: len(worker_pids(filterd.output_text(), "milter")) == 2, filterd
    )
    assert gone(worker)
    text = filterd.output_text()
    assert f"filterd/milter[{worker}]: milter stopped" in text
    assert f"filterd/main[{worker}]: milter worker 1 stopped" in text
    for _ in range(4):  # the others went on serving, the replacement serves
        run_script("one_message.lua", address)
    assert filterd.stop(sweep=False) == 0
