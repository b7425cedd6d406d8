"""Log lines held per turn of the event loop: one write(2) for many lines, none lost at the
end of the loop, a new setup or a fork (filterd.maillog, filterd.runtime.log_batching)."""

from __future__ import annotations

import io
import logging
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from filterd.maillog import MailLog, queue_id_var, setup_logging
from filterd.maillog import logger as maillog
from filterd.maillog.destinations import MAX_HELD, StreamDestination
from filterd.runtime.log_batching import LineBatching

PID = os.getpid()
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """setup_logging and batch_lines change the process's "filterd" logger: put it back."""
    root = logging.getLogger("filterd")
    saved = (root.handlers[:], root.level, root.propagate, maillog._handler, maillog._batching)
    yield
    root.handlers[:], root.level, root.propagate, maillog._handler, maillog._batching = saved


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The length of every os.write (the destinations make them with os.write)."""
    made: list[int] = []
    real = os.write

    def counting(fd: int, data: bytes) -> int:
        made.append(len(data))
        return real(fd, data)

    monkeypatch.setattr(os, "write", counting)
    return made


def texts(path: Path) -> list[str]:
    """Each line's text after ``program[pid]: ``."""
    return [line.partition("]: ")[2] for line in path.read_text().splitlines()]


def test_held_lines_go_out_in_order_with_one_write(tmp_path: Path, writes: list[int]) -> None:
    path = tmp_path / "log"
    with path.open("w") as out:
        stream = StreamDestination(out, hostname="mx1")
        stream.batch()
        for n in range(3):
            stream.write("smtpd", logging.INFO, f"line {n}")
        assert path.read_text() == ""
        assert writes == []
        stream.flush()
        assert texts(path) == ["line 0", "line 1", "line 2"]
        assert len(writes) == 1
        stream.flush()  # nothing held: nothing written
        assert len(writes) == 1
        stream.batch(False)
        stream.write("smtpd", logging.INFO, "line 3")  # at once again
        assert texts(path)[-1] == "line 3"
    first = path.read_text().splitlines()[0]  # the same line as one written at once
    assert re.fullmatch(rf"{STAMP} mx1 filterd/smtpd\[{PID}\]: line 0", first), first


def test_another_threads_lines_are_written_at_once(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with path.open("w") as out:
        stream = StreamDestination(out)
        stream.batch()
        stream.write("smtpd", logging.INFO, "held")
        plugin = threading.Thread(target=stream.write, args=("chain", logging.INFO, "at once"))
        plugin.start()
        plugin.join()
        assert texts(path) == ["at once"]
        stream.close()  # writes what is held
        assert texts(path) == ["at once", "held"]


def test_held_lines_are_bounded(tmp_path: Path, writes: list[int]) -> None:
    path = tmp_path / "log"
    with path.open("w") as out:
        stream = StreamDestination(out)
        stream.batch()
        for n in range(MAX_HELD + 1):
            stream.write("smtpd", logging.INFO, f"line {n}")
        assert len(texts(path)) == MAX_HELD  # written without waiting for a flush
        assert len(writes) == 1
        stream.flush()
        assert texts(path) == [f"line {n}" for n in range(MAX_HELD + 1)]


def test_a_stream_without_a_descriptor_is_never_held() -> None:
    out = io.StringIO()
    stream = StreamDestination(out)
    stream.batch()
    stream.write("smtpd", logging.INFO, "a test's StringIO")
    assert out.getvalue().endswith("a test's StringIO\n")


@pytest.mark.usefixtures("restore_logging")
def test_the_loop_writes_its_lines_before_it_waits_and_when_it_ends(
    tmp_path: Path, writes: list[int]
) -> None:
    path = tmp_path / "log"
    seen: dict[str, list[str]] = {}

    async def serve() -> None:
        log = MailLog("smtpd")
        token = queue_id_var.set("4B2D0A71C3")
        try:
            log.line("client=unknown[192.0.2.1]")
            log.line("from=<a@example.com>, size=1, nrcpt=1")
            seen["in the turn"] = texts(path)
            await trio.lowlevel.checkpoint()  # the loop turns: it looks for I/O first
            seen["next turn"] = texts(path)
            log.warning("the last line, held when the loop ends")
        finally:
            queue_id_var.reset(token)

    with path.open("w") as out:
        setup_logging("info", out)
        trio.run(serve, instruments=[LineBatching()])
        MailLog("main").plain("after the loop: at once")
        assert seen["in the turn"] == []
        assert seen["next turn"] == [
            "4B2D0A71C3: client=unknown[192.0.2.1]",
            "4B2D0A71C3: from=<a@example.com>, size=1, nrcpt=1",
        ]
        assert texts(path)[2:] == [
            "warning: 4B2D0A71C3: the last line, held when the loop ends",
            "after the loop: at once",
        ]
    assert len(writes) == 3  # two lines in one write, then one each


@pytest.mark.usefixtures("restore_logging")
def test_a_new_setup_keeps_holding_and_writes_what_the_old_one_held(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    with first.open("w") as out1, second.open("w") as out2:
        setup_logging("info", out1)
        maillog.batch_lines()
        MailLog("main").plain("to the first")
        setup_logging("info", out2)  # closes the first handler: its lines are written
        assert texts(first) == ["to the first"]
        MailLog("main").plain("to the second, held")
        assert texts(second) == []
        maillog.unbatch_lines()
        assert texts(second) == ["to the second, held"]


@pytest.mark.usefixtures("restore_logging")
def test_a_fork_writes_the_held_lines_first(tmp_path: Path) -> None:
    """A child must neither lose the parent's held lines nor write them a second time."""
    path = tmp_path / "log"
    with path.open("w") as out:
        setup_logging("info", out)
        maillog.batch_lines()
        MailLog("main").plain("held before the fork")
        pid = os.fork()
        if pid == 0:  # the child: whatever it still held would be written at its exit
            maillog.unbatch_lines()
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert texts(path) == ["held before the fork"]
        maillog.unbatch_lines()
        assert texts(path) == ["held before the fork"]
