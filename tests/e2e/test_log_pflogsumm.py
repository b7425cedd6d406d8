"""filterd's log read by Debian's pflogsumm, the summary tool written for Postfix's log.

A real filterd relays to Postfix's smtp-sink with a header_checks chain; a client sends mail
over SMTP, some of it rejected, held (quarantined) or discarded by header_checks rules. Whatever
the destination, stderr (rsyslog's file format), the journal (native protocol) or syslog
(datagrams to a /dev/log), pflogsumm's grand totals count exactly what the test sent. The
journal and syslog lines go to a private systemd-journald (``tests/support/journald.py``),
the same daemon a host runs, and are read back with journalctl.
"""

from __future__ import annotations

import re
import shutil
import smtplib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import journald
from tests.support.filterd_proc import FilterdProcess, filterd_process
from tests.support.nexthop import smtp_sink
from tests.support.postfix import free_port

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("pflogsumm") is None, reason="pflogsumm is not installed"),
    pytest.mark.timeout(120),
]

RULES = [
    "/^Subject: .*buy spam/ REJECT 5.7.1 spam is not welcome here",
    "/^Subject: .*looks odd/ HOLD odd subject",
    "/^Subject: .*ignore me/ DISCARD not wanted",
]


@dataclass(frozen=True)
class Sent:
    delivered: int = 4
    rejected: int = 3
    held: int = 2
    discarded: int = 1

    @property
    def received(self) -> int:
        return self.delivered + self.rejected + self.held + self.discarded

    @property
    def subjects(self) -> list[str]:
        return (
            [f"hello {n}" for n in range(self.delivered)]
            + [f"buy spam {n}" for n in range(self.rejected)]
            + [f"this looks odd {n}" for n in range(self.held)]
            + [f"ignore me {n}" for n in range(self.discarded)]
        )


SENT = Sent()


def config(port: int, sink_port: int, log: str = "") -> str:
    rules = ", ".join(f"'{rule}'" for rule in RULES)
    return f"""
[log]
{log}
[[listen]]
address = "127.0.0.1:{port}"
hostname = "filterd.test"
[delivery]
method = "relay"
next_hop = "127.0.0.1:{sink_port}"
[[chain]]
plugin = "header_checks"
[chain.config]
rules = [{rules}]
"""


def send_all(port: int) -> None:
    """One message per connection (one ``client=`` each), one recipient each."""
    for n, subject in enumerate(SENT.subjects):
        message = f"From: a@example.net\r\nTo: b{n}@example.org\r\nSubject: {subject}\r\n\r\nhi\r\n"
        with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example.net") as client:
            if subject.startswith("buy spam"):
                with pytest.raises(smtplib.SMTPDataError) as refused:
                    client.sendmail("a@example.net", [f"b{n}@example.org"], message)
                assert refused.value.smtp_code == 550
            else:
                client.sendmail("a@example.net", [f"b{n}@example.org"], message)


def totals(log: str, syslog_name: str) -> dict[str, int]:
    """pflogsumm's grand totals for ``log``: {"received": n, "delivered": n, ...}."""
    done = subprocess.run(
        ["pflogsumm", f"--syslog-name={syslog_name}"],
        input=log,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    grand = done.stdout.split("Grand Totals", 1)[1].split("bytes received", 1)[0]
    return {word: int(n) for n, word in re.findall(r"^\s*(\d+)\s+([a-z]+)", grand, re.M)}


def expected() -> dict[str, int]:
    return {
        "received": SENT.received,
        "delivered": SENT.delivered,
        "forwarded": 0,
        "deferred": 0,
        "bounced": 0,
        "rejected": SENT.rejected,
        "reject": 0,  # "reject warnings"
        "held": SENT.held,
        "discarded": SENT.discarded,
    }


def done_with_every_message(lines: list[str]) -> bool:
    ends = sum("END-OF-MESSAGE from" in line for line in lines)
    sent = sum("status=sent (250 " in line for line in lines)
    return ends == SENT.rejected + SENT.held + SENT.discarded and sent == SENT.delivered


def run_filterd(tmp_path: Path, log: str = "") -> FilterdProcess:
    """Send every message through a filterd with ``[log]`` settings ``log``; the stopped
    process (its stderr in ``output_text()``)."""
    with smtp_sink(tmp_path) as sink:
        port = free_port()
        with filterd_process(config(port, sink.port, log), tmp_path / "run") as proc:
            send_all(port)
        assert len(sink.dumps()) == SENT.delivered
    return proc


def test_pflogsumm_counts_the_messages_from_filterds_stderr(tmp_path: Path) -> None:
    proc = run_filterd(tmp_path)
    log = proc.output_text()
    assert done_with_every_message(log.splitlines()), log
    assert totals(log, "filterd") == expected(), log
    # what the held messages became: files in the quarantine
    held = list((tmp_path / "run" / "var" / "quarantine" / "new").iterdir())
    assert len(held) == SENT.held


@pytest.fixture
def jd() -> Iterator[journald.Journald]:
    reason = journald.unavailable()
    if reason is not None:
        pytest.skip(reason)
    with journald.private_journald() as running:
        yield running


def test_pflogsumm_counts_the_messages_from_the_journal(
    tmp_path: Path, jd: journald.Journald
) -> None:
    """The native protocol: each line its own entry, the identifier filterd-in/smtpd."""
    log = f'destination = "journal"\nsocket = "{jd.socket}"\nsyslog_name = "filterd-in"'
    proc = run_filterd(tmp_path, log)
    lines = jd.wait_for(done_with_every_message)
    entries = jd.entries()
    assert totals("\n".join(lines), "filterd-in") == expected(), lines
    assert "filterd-in/smtpd" not in proc.output_text()  # nothing went to stderr instead
    first = next(e for e in entries if ": client=" in str(e["MESSAGE"]))
    assert first["SYSLOG_IDENTIFIER"] == "filterd-in/smtpd"
    assert first["PRIORITY"] == "6"  # info
    assert first["SYSLOG_FACILITY"] == "2"  # mail
    assert first["SYSLOG_PID"] == first["_PID"] == str(proc.pid)


def test_pflogsumm_counts_the_messages_a_syslog_daemon_received(
    tmp_path: Path, jd: journald.Journald
) -> None:
    """syslog(3)'s datagrams, to the /dev/log of a private journald (which parses them as
    syslog daemons do: priority, identifier, pid), with the local3 facility."""
    log = f'destination = "syslog"\nsocket = "{jd.dev_log}"\nfacility = "local3"'
    proc = run_filterd(tmp_path, log)
    lines = jd.wait_for(done_with_every_message)
    entries = jd.entries()
    assert totals("\n".join(lines), "filterd") == expected(), lines
    assert "filterd/smtpd" not in proc.output_text()
    first = next(e for e in entries if ": client=" in str(e["MESSAGE"]))
    assert first["SYSLOG_IDENTIFIER"] == "filterd/smtpd"
    assert first["PRIORITY"] == "6"
    assert first["SYSLOG_FACILITY"] == "19"  # local3
    assert first["SYSLOG_PID"] == str(proc.pid)
