"""SIGHUP to a real ``filterd run`` with a milter listener, against Debian's ``miltertest``:
libmilter keeps running (it would stop on a SIGHUP of its own), every process serves new
connections with the new chain, the workers of the old configuration finish and exit, and a
change of the milter listener's address is refused with the configuration in force kept."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from tests.integration.test_milter_processes import run_script, wait_for
from tests.support.filterd_proc import FilterdProcess
from tests.support.postfix import free_port
from tests.support.processes import gone, worker_pids

pytest.importorskip("Milter", reason="pymilter (the milter extra) is not installed")

pytestmark = [
    pytest.mark.skipif(shutil.which("miltertest") is None, reason="miltertest is not installed"),
    pytest.mark.timeout(120),
]


def milter_config(address: str, processes: int, tag: str) -> str:
    return f"""
[[listen]]
address = "{address}"
protocol = "milter"
processes = {processes}
[[chain]]
plugin = "example_tagger"
config = {{ text = "{tag}" }}
"""


def tagged(address: str, tag: str, times: int) -> None:
    for _ in range(times):  # on connections of their own: whichever process takes each
        run_script("tagged_as.lua", address, f"tag={tag}")


def reload(filterd: FilterdProcess, text: str, outcome: str, count: int) -> None:
    filterd.config_path.write_text(text)
    assert filterd.pid is not None
    os.kill(filterd.pid, signal.SIGHUP)
    wait_for(outcome, lambda: filterd.output_text().count(outcome) == count, filterd)


@pytest.mark.parametrize("processes", [1, 3])
def test_sighup_gives_every_process_the_new_chain(tmp_path: Path, processes: int) -> None:
    address = f"127.0.0.1:{free_port()}"
    filterd = FilterdProcess(milter_config(address, processes, "one"), tmp_path / "run")
    try:
        filterd.start()
        wait_for(
            "the workers",
            lambda: len(worker_pids(filterd.output_text(), "milter")) == processes - 1,
            filterd,
        )
        old_workers = worker_pids(filterd.output_text(), "milter")
        tagged(address, "one", 2 * processes)
        reload(filterd, milter_config(address, processes, "two"), "configuration reloaded", 1)
        # Done only once every old worker's libmilter accepts nothing more: a connection made
        # after the reload cannot meet the old chain in an old worker.
        text = filterd.output_text()
        done = text.index("configuration reloaded")
        for pid in old_workers:
            assert text.index(f"filterd/milter[{pid}]: milter: no new connections") < done
        tagged(address, "two", 4 * processes)
        wait_for("the old workers to exit", lambda: all(map(gone, old_workers)), filterd)
        moved = milter_config(f"127.0.0.1:{free_port()}", processes, "three")
        reload(filterd, moved, "reload refused", 1)
        tagged(address, "two", processes)  # the configuration in force, on the same address
        text = filterd.output_text()
        assert "listen[0].address: the milter listener's address cannot change at reload" in text
        assert "libmilter stopped unexpectedly" not in text
        assert text.count("milter listening on") == 1 + 2 * (processes - 1)
        assert filterd.stop(sweep=False) == 0
    finally:
        filterd.stop()
        print(filterd.output_text()[-20000:])  # shown when the test fails
