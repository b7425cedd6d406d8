"""Metrics without a server: each process's recording, its files, their sum in the main
process (a process gone: its counters stay, its gauges go), what the chain runner and the
spool record, and ``filterd status`` with no server."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from filterd.chain.runner import ChainRunner
from filterd.cli.main import main as cli_main
from filterd.cli.status import EXIT_NOT_RUNNING, render
from filterd.model import metrics
from filterd.model.spool import Spool
from filterd.runtime.metrics import ServerFacts, metrics_registry, snapshot
from filterd.runtime.recording import BUCKETS, MetricsFiles, Recording
from tests.unit.chain.test_runner import entry, transaction

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class _Alive(ServerFacts):
    """Facts whose processes are the pids given (not real workers)."""

    alive: tuple[int, ...] = ()

    def processes(self) -> list[tuple[int, str]]:
        return [(pid, "test") for pid in self.alive]


def collect(directory: Path, alive: tuple[int, ...]) -> Samples:
    facts = _Alive("test.toml")
    facts.alive = alive
    registry = metrics_registry(directory, facts)
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in registry.collect()
        for sample in family.samples
    }


def test_two_processes_are_summed_and_a_dead_one_keeps_its_counters(tmp_path: Path) -> None:
    first, second = Recording(), Recording()
    files = [MetricsFiles(tmp_path, first, pid=101), MetricsFiles(tmp_path, second, pid=102)]
    for recording in (first, second):
        recording.message("smtp", "accept")
        recording.session("smtp", 1)
        recording.plugin_call("tagger", "on_message", 0.0007, None)
    second.message("smtp", "accept")
    second.plugin_call("tagger", "on_message", 31.0, "timeout")
    second.spool(500)
    for each in files:
        each.flush()

    both = collect(tmp_path, (101, 102))
    messages = ("filterd_messages_total", frozenset({("door", "smtp"), ("outcome", "accept")}))
    assert both[messages] == 3
    assert both[("filterd_sessions", frozenset({("door", "smtp")}))] == 2
    assert both[("filterd_spool_bytes", frozenset())] == 500
    call = frozenset({("plugin", "tagger"), ("stage", "on_message")})
    assert both[("filterd_plugin_duration_seconds_count", call)] == 3
    assert both[("filterd_plugin_duration_seconds_sum", call)] == pytest.approx(31.0014)
    assert both[("filterd_plugin_duration_seconds_bucket", call | {("le", "0.001")})] == 2
    assert both[("filterd_plugin_duration_seconds_bucket", call | {("le", "30.0")})] == 2
    assert both[("filterd_plugin_duration_seconds_bucket", call | {("le", "+Inf")})] == 3
    failed = call | {("failure", "timeout")}
    assert both[("filterd_plugin_failures_total", failed)] == 1

    # Process 102 is gone (killed: no last write): its counts stay, its gauges go.
    second.message("smtp", "accept")  # counted in memory only, never written
    files[0].close()
    after = collect(tmp_path, (101,))
    assert after[messages] == 3
    assert after[("filterd_sessions", frozenset({("door", "smtp")}))] == 1
    assert after[("filterd_spool_bytes", frozenset())] == 0
    assert after[("filterd_plugin_duration_seconds_count", call)] == 3
    assert not list(tmp_path.glob("gauge_livesum_102.db"))
    assert list(tmp_path.glob("counter_102.db"))


def test_a_scrape_while_a_process_creates_its_file_counts_what_is_written(tmp_path: Path) -> None:
    # prometheus-client creates a process's file empty and sizes it just after: a scrape in
    # between failed with struct.error (seen under load in tests/e2e/test_metrics.py).
    recording = Recording()
    recording.message("smtp", "accept")
    MetricsFiles(tmp_path, recording, pid=101).flush()
    (tmp_path / "counter_102.db").touch()
    (tmp_path / "gauge_livesum_102.db").touch()
    samples = collect(tmp_path, (101, 102))
    assert (
        samples[("filterd_messages_total", frozenset({("door", "smtp"), ("outcome", "accept")}))]
        == 1
    )


def test_a_flush_writes_only_what_changed_and_totals_only_grow(tmp_path: Path) -> None:
    recording = Recording()
    files = MetricsFiles(tmp_path, recording, pid=7)
    messages = ("filterd_messages_total", frozenset({("door", "lmtp"), ("outcome", "reject")}))
    seen = []
    for _ in range(3):
        recording.message("lmtp", "reject")
        files.flush()
        seen.append(collect(tmp_path, (7,))[messages])
    assert seen == [1, 2, 3]


def test_buckets_hold_what_is_at_most_their_bound() -> None:
    recording = Recording()
    for seconds in (0.0005, 0.00051, 10.0, 1000.0):
        recording.plugin_call("p", "on_rcpt", seconds, None)
    row = recording.latency[("p", "on_rcpt")]
    assert row[BUCKETS.index(0.0005)] == 1
    assert row[BUCKETS.index(0.001)] == 1
    assert row[BUCKETS.index(10.0)] == 1
    assert row[BUCKETS.index(math.inf)] == 1


@pytest.fixture
def recording() -> Iterator[Recording]:
    installed = Recording()
    previous = metrics.install(installed)
    try:
        yield installed
    finally:
        metrics.install(previous)


async def test_the_chain_records_each_call_and_its_failures(
    recording: Recording, autojump_clock: trio.testing.MockClock
) -> None:
    broken = entry("broken", on_error="continue", mail="crash")
    slow = entry("slow", timeout=5, on_error="continue", mail="hang")
    chain = ChainRunner([entry("fine"), broken, slow])
    await chain.mail_from(transaction())
    calls = {key: sum(row[:-1]) for key, row in recording.latency.items()}
    assert calls == {("fine", "on_mail_from"): 1, ("broken", "on_mail_from"): 1,
                     ("slow", "on_mail_from"): 1}  # fmt: skip
    assert recording.failures == {
        ("broken", "on_mail_from", "error"): 1,
        ("slow", "on_mail_from", "timeout"): 1,
    }


def test_the_spool_counts_its_bytes_until_closed(recording: Recording) -> None:
    spool = Spool(10)
    spool.write(b"x" * 8)
    spool.write(b"y" * 8)  # on disk from here: still counted
    other = Spool(1000)
    other.write(b"z" * 5)
    assert recording.spooled == 21
    spool.close()
    spool.close()
    assert recording.spooled == 5
    other.close()
    assert recording.spooled == 0


def test_outcomes_of_replies_and_verdicts() -> None:
    from filterd.model.reply import Reply
    from filterd.model.verdict import Continue, Discard, Quarantine, Reject, TempFail

    assert metrics.outcome_of_reply(Reply(250, "2.0.0", "Ok")) == "accept"
    assert metrics.outcome_of_reply(Reply(451, "4.3.0", "later")) == "tempfail"
    assert metrics.outcome_of_reply(Reply(554, "5.7.1", "no")) == "reject"
    assert metrics.outcome_of_verdict(Reject(Reply(550, "5.7.1", "no"))) == "reject"
    assert metrics.outcome_of_verdict(TempFail(Reply(450, "4.7.1", "no"))) == "tempfail"
    assert metrics.outcome_of_verdict(Discard("spam")) == "discard"
    assert metrics.outcome_of_verdict(Quarantine("spam")) == "quarantine"
    assert metrics.outcome_of_verdict(Continue()) == "accept"


def test_status_renders_the_server_and_the_figures(tmp_path: Path) -> None:
    recording = Recording()
    recording.message("milter", "discard")
    recording.plugin_call("spamassassin", "on_message", 0.2, None)
    MetricsFiles(tmp_path, recording, pid=5).flush()
    facts = _Alive("/etc/filterd/filterd.toml")
    facts.alive = (5,)
    facts.reloaded(True)
    facts.reloaded(False)
    text = render(snapshot(metrics_registry(tmp_path, facts), facts))
    assert "configuration: /etc/filterd/filterd.toml, loaded at " in text
    assert "(reloads: 1 done, 1 refused)" in text
    assert "processes: 1 (test 5)" in text
    assert "metrics endpoint: none" in text
    assert "\n  milter discard  1\n" in text
    assert "\n  spamassassin on_message  1 calls, mean 200.00 ms, 95% <= 250.00 ms\n" in text


def test_status_without_a_server_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "filterd.sock"
    assert cli_main(["status", "--socket", str(missing)]) == EXIT_NOT_RUNNING
    err = capsys.readouterr().err
    assert f"filterd: no server answers on the control socket {missing}: " in err
    assert "is filterd running?" in err
