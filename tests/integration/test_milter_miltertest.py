"""The milter front door against Debian's ``miltertest`` (libmilter's MTA side, Lua scripts in
tests/milter/), with filterd running as a real process: libmilter runs once per process, so
filterd cannot be hosted inside the pytest process.

The process is ``python -m tests.integration.test_milter_miltertest CONFIG`` (the bottom of
this file): ``filterd.runtime.supervisor.serve`` with a chain holding ``MilterProbe``, a plugin
that turns what it saw into headers and refuses, holds or drops recipients by their prefix.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from filterd.chain.registry import stages_of
from filterd.chain.runner import ChainRunner, Entry
from filterd.config.load import load_config
from filterd.config.schema import ChainEntryConfig
from filterd.maillog import MailLog, setup_logging
from filterd.sdk import (
    AddHeader,
    ChangeHeader,
    Continue,
    Discard,
    MessageView,
    OnMessage,
    OnRcpt,
    Plugin,
    PluginConfig,
    PluginEnv,
    Quarantine,
    Recipient,
    Reject,
    RemoveHeader,
    Reply,
    TempFail,
    Transaction,
    Verdict,
)

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "tests" / "milter"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0  # libmilter notices a stop only every 5 s

pytestmark = [
    pytest.mark.skipif(shutil.which("miltertest") is None, reason="miltertest is not installed"),
    pytest.mark.timeout(120),
]


class ProbeConfig(PluginConfig):
    pass


class MilterProbe(Plugin[ProbeConfig], OnRcpt, OnMessage):
    """Shows, as headers, what a plugin sees through the milter front door."""

    name = "milter_probe"
    Config = ProbeConfig

    async def on_rcpt(self, t: Transaction, rcpt: Recipient) -> Verdict:
        address = rcpt.address
        if address.startswith("refused"):
            return Reject(Reply(550, "5.7.1", f"<{address}>: refused by the probe"))
        if address.startswith("later"):
            return TempFail(Reply(451, "4.7.1", f"<{address}>: try again later"))
        if address.startswith("hold"):
            return Quarantine("held by the probe")
        if address.startswith("drop"):
            return Discard("dropped by the probe")
        return Continue()

    async def on_message(self, t: Transaction, message: MessageView) -> Verdict:
        if message.header("Subject") == "slow":
            self.env.log.info("slow message started")
            await trio.sleep(3)
        if message.header("Subject") == "reject me":
            return Reject(Reply(554, "5.7.0", "rejected 100% by the probe"))
        peer = t.session.peer
        to = ",".join(r.address for r in t.accepted)
        envelope = (
            f"client={peer.name}[{peer.address}]:{peer.port} helo={peer.helo} from={t.sender}"
            f" to={to} queue_id={t.queue_id}"
        )
        body = b"".join(message.body_chunks()).decode()
        received = " ".join((message.header("Received") or "").split())
        seen = (
            f"subject={message.header('Subject')} received={received}"
            f" lines={'|'.join(body.splitlines())}"
        )
        return Continue(
            edits=(
                AddHeader("X-Probe-Envelope", envelope, at_top=False),
                AddHeader("X-Probe-Body", seen, at_top=False),
                AddHeader("X-Probe-Top", "top"),
                ChangeHeader("Subject", "changed by the probe"),
                RemoveHeader("X-Remove-Me"),
            )
        )


def _probe_chain() -> ChainRunner:
    env = PluginEnv("milter_probe", MailLog("milter_probe"), trio.CapacityLimiter(4))
    entry = Entry(
        ChainEntryConfig(plugin="milter_probe"),
        MilterProbe(ProbeConfig(), env),
        trio.CapacityLimiter(100),
        frozenset(stages_of(MilterProbe)),
    )
    return ChainRunner([entry])


# ----------------------------------------------------------------------------- the process
class ProbeFilterd:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.socket = workdir / "milter.sock"
        self.output = workdir / "filterd.out"
        config = workdir / "filterd.toml"
        config.write_text(
            f'[[listen]]\naddress = "unix:{self.socket}"\nprotocol = "milter"\n'
            '[delivery]\nmethod = "maildir"\n'
        )
        with self.output.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.integration.test_milter_miltertest", str(config)],
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_until_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while "milter listening on" not in self.text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("filterd did not start:\n" + self.text())
            time.sleep(0.05)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(STOP_TIMEOUT)
        return self.proc.returncode


@pytest.fixture
def probe_filterd(tmp_path: Path) -> Iterator[ProbeFilterd]:
    proc = ProbeFilterd(tmp_path)
    try:
        proc.wait_until_listening()
        yield proc
    finally:
        proc.stop()
        print(proc.text()[-10000:])


def _command(name: str, filterd: ProbeFilterd) -> list[str]:
    return [
        "miltertest",
        "-s",
        str(SCRIPTS / name),
        "-D",
        f"sock=unix:{filterd.socket}",
        "-D",
        f"dir={SCRIPTS}",
    ]


def run_script(name: str, filterd: ProbeFilterd) -> str:
    result = subprocess.run(
        _command(name, filterd),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    print(output)
    assert result.returncode == 0, output
    assert "FAIL" not in output
    return output


def test_rcpt_refusal_and_header_edits(probe_filterd: ProbeFilterd) -> None:
    output = run_script("envelope_and_edits.lua", probe_filterd)
    assert "ok Subject changed" in output
    log = probe_filterd.text()
    assert (
        "reject: RCPT from client.example.net[192.0.2.1]: 550 5.7.1 <refused@example.org>: "
        "refused by the probe; from=<alice@example.net> to=<refused@example.org>" in log
    )
    assert "4XYZ12345: from=<alice@example.net>, size=" in log


def test_hold_discard_and_tempfail(probe_filterd: ProbeFilterd) -> None:
    run_script("dispositions.lua", probe_filterd)
    assert "hold: END-OF-MESSAGE" in probe_filterd.text()
    # each decision in one line, as Postfix's smtpd words its own (milter-hold, -discard)
    peer = "client.example.net[192.0.2.1]"
    tail = "from=<alice@example.net> to=<{}@example.org> proto=SMTP helo=<helo.example.net>"
    lines = [line.split(": ", 2)[2] for line in probe_filterd.text().splitlines()
             if "END-OF-MESSAGE" in line]  # fmt: skip
    assert lines[0] == f"hold: END-OF-MESSAGE from {peer}: held by the probe; {tail.format('hold')}"
    assert lines[1].startswith(f"discard: END-OF-MESSAGE from {peer}: ")
    assert lines[1].endswith(tail.format("drop"))


def test_sigterm_stops_cleanly(probe_filterd: ProbeFilterd) -> None:
    run_script("dispositions.lua", probe_filterd)
    assert probe_filterd.stop() == 0
    log = probe_filterd.text()
    assert "signal SIGTERM: graceful stop" in log
    assert "milter stopped" in log
    assert not probe_filterd.socket.exists()


def _wait_for_log(filterd: ProbeFilterd, text: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while text not in filterd.text():
        assert time.monotonic() < deadline, f"no {text!r} in the log:\n{filterd.text()}"
        time.sleep(0.05)


def test_sigterm_lets_the_message_in_progress_finish(probe_filterd: ProbeFilterd) -> None:
    slow = subprocess.Popen(
        _command("slow.lua", probe_filterd),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_for_log(probe_filterd, "slow message started")
        probe_filterd.proc.send_signal(signal.SIGTERM)
        _wait_for_log(probe_filterd, "signal SIGTERM: graceful stop")
        run_script("stopping.lua", probe_filterd)
        output, _ = slow.communicate(timeout=60)
    finally:
        if slow.poll() is None:
            slow.kill()
            slow.wait()
    print(output)
    assert slow.returncode == 0, output
    assert "FAIL" not in output
    assert probe_filterd.proc.wait(STOP_TIMEOUT) == 0
    assert "milter stopped" in probe_filterd.text()


def _main(config_path: str) -> None:
    config = load_config(config_path)
    setup_logging("info")
    from filterd.runtime.supervisor import serve

    async def run() -> None:
        chain = _probe_chain()
        await chain.start()
        try:
            await serve(config, chain=chain)
        finally:
            await chain.stop()

    trio.run(run)


if __name__ == "__main__":
    _main(sys.argv[1])
