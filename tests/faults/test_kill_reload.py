"""filterd SIGKILLed at random points of 200 transactions, and reloaded in the middle of 100,
while a private Postfix sends through it (its after-queue content filter) and delivers what
filterd passes back (its reinjection smtpd) into a Maildir, where each message is counted.

A kill can land after the next hop took a message and before filterd answered the final dot:
the sender then logs "message may be sent more than once" and tries again; a second copy is
allowed for those messages only. Everything else arrives exactly once, nothing is lost."""

from __future__ import annotations

import os
import random
import re
import signal
import time
from collections.abc import Callable

import pytest

from tests.faults.ledger import Ledger
from tests.support.filterd_proc import FilterdFactory, FilterdProcess
from tests.support.postfix import PostfixFactory, PostfixInstance, free_port, postfix_available
from tests.support.processes import worker_pids

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not postfix_available(), reason="Postfix (master) is not installed"),
    pytest.mark.timeout(400),
]

WAIT = 60.0


def config(port: int, reinject: int, processes: int, tag: str = "first") -> str:
    return f"""
[[listen]]
address = "127.0.0.1:{port}"
hostname = "filterd.test"
processes = {processes}
[delivery]
method = "relay"
next_hop = "127.0.0.1:{reinject}"
[[chain]]
plugin = "example_tagger"
config = {{ text = "{tag}" }}
"""


def start(
    postfix_factory: PostfixFactory, filterd_factory: FilterdFactory, processes: int
) -> tuple[PostfixInstance, FilterdProcess, int]:
    port = free_port()
    postfix = postfix_factory(content_filter="smtp", filter_port=port)
    filterd = filterd_factory(config(port, postfix.reinject_port, processes))
    if processes > 1:
        wait_for(lambda: len(worker_pids(filterd.output_text(), "smtp")) >= 1, "the worker")
    return postfix, filterd, port


def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, f"{what} within {WAIT:g}s"
        time.sleep(0.02)


def test_filterd_and_workers_sigkilled_at_random_points(
    postfix_factory: PostfixFactory, filterd_factory: FilterdFactory
) -> None:
    seed = int(os.environ.get("FILTERD_FAULTS_SEED", random.randrange(2**32)))
    print(f"FILTERD_FAULTS_SEED={seed}")
    rng = random.Random(seed)
    postfix, filterd, port = start(postfix_factory, filterd_factory, processes=2)
    ledger = Ledger(postfix, port, postfix.delivered_messages, 200, reinjected=True)
    kills = sorted(rng.sample(range(5, 190), 8))
    kinds = [rng.choice(["worker", "service"]) for _ in kills]
    print(f"kills after {kills} deliveries: {kinds}")
    ledger.inject()
    for at, kind in zip(kills, kinds, strict=True):
        wait_for(lambda at=at: len(postfix.delivered_messages()) >= at, f"{at} deliveries")
        time.sleep(rng.uniform(0, 0.2))  # somewhere in the next transactions
        assert filterd.pid is not None
        workers = worker_pids(filterd.output_text(), "smtp")
        if kind == "worker":
            os.kill(workers[-1], signal.SIGKILL)
        else:
            os.killpg(filterd.pid, signal.SIGKILL)  # the main process and its workers
            assert filterd.wait(WAIT) == -signal.SIGKILL
            ledger.check()
            time.sleep(rng.uniform(0, 1))
            filterd.start()
        known = len(workers)
        wait_for(  # the killed worker's replacement, or the new service's worker
            lambda known=known: len(worker_pids(filterd.output_text(), "smtp")) > known,
            "a new worker",
        )
    snap = ledger.wait_all_delivered(timeout=240)
    twice = sorted(rcpt for rcpt, copies in snap.at_sink.items() if copies > 1)
    print(f"delivered twice (lost answer to the final dot): {twice}")
    assert filterd.running()


@pytest.mark.parametrize("processes", [1, 2])
def test_reload_in_a_stream_of_100(
    postfix_factory: PostfixFactory, filterd_factory: FilterdFactory, processes: int
) -> None:
    postfix, filterd, port = start(postfix_factory, filterd_factory, processes)
    before = Ledger(postfix, port, postfix.delivered_messages, 50, reinjected=True)
    after = Ledger(postfix, port, postfix.delivered_messages, 50, first=50, reinjected=True)
    before.inject()
    wait_for(lambda: len(postfix.delivered_messages()) >= 20, "20 deliveries")
    filterd.config_path.write_text(config(port, postfix.reinject_port, processes, "second"))
    assert filterd.pid is not None
    os.kill(filterd.pid, signal.SIGHUP)  # while the first 50 are still on their way
    wait_for(lambda: "configuration reloaded (" in filterd.output_text(), "the reload")
    after.inject()
    for ledger in (before, after):
        snap = ledger.wait_all_delivered()
        assert all(copies == 1 for copies in snap.at_sink.values()), snap.describe()
        assert snap.deferred == [], snap.describe()  # the sender never saw an error
    # Each passed the chain once, the first generation's or the second's: sessions that Postfix
    # opened before the reload (it caches them) keep the first one's until they close.
    for raw in postfix.delivered_messages():
        tags = re.findall(rb"^X-Example-Tag: (first|second)\r?$", raw, re.MULTILINE)
        assert len(tags) == 1, raw
    assert "reload refused" not in filterd.output_text()
    assert filterd.running()
