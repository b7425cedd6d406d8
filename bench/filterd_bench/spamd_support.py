"""The pieces of bench/spamd_bench.py: the message set, the two clients (spamc straight to spamd,
SMTP through filterd), filterd with the spamassassin plugin, and the reading of spamd's log.

Message set: the 48 messages of tests/data/mail/cpython-test-email plus one GTUBE
message, CRLF line ends, repeated in order up to the pass size.
"""

from __future__ import annotations

import re
import smtplib
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from string import Template

from filterd_bench.procs import Processes, free_port, wait_for_smtp
from filterd_bench.repo_support import MAIL_CORPUS, SPAMC
from filterd_bench.servers import (
    START_TIMEOUT,
    FilterdSettings,
    Server,
    filterd_binary,
    filterd_config,
)

MAIL_DIR = MAIL_CORPUS
SENDER = "bench-sender@example.com"
RECIPIENT = "bench-rcpt@example.com"
HELO = "bench.localhost"
SCAN_TIMEOUT = 60  # spamc -t, the plugin's timeout and the SMTP client's timeout, seconds

SPAMASSASSIN_CHAIN = Template(
    """
# bench/spamd_bench.py: the spamassassin plugin (symbols mode, its default) in front of spamd.
[[chain]]
plugin = "spamassassin"
timeout = "${timeout}s"
on_error = "tempfail"
config = { address = "${address}", max_connections = ${children} }
"""
)

# spamd logs one "result:" line per scanned message: "spamd: result: Y 1000 - GTUBE,... scantime"
_RESULT = re.compile(rb"spamd: result: ([Y.]) +\S+ - (\S*)")


def gtube_message(gtube: str) -> bytes:
    lines = [
        "From: GTUBE sender <gtube@example.com>",
        f"To: <{RECIPIENT}>",
        "Subject: GTUBE, the generic test for unsolicited bulk email",
        "Date: Wed, 25 Nov 2026 12:00:00 +0000",
        "Message-ID: <gtube.spamd-bench@example.com>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        "This message carries the GTUBE line, which SpamAssassin scores 1000:",
        "",
        gtube,
        "",
    ]
    return "\r\n".join(lines).encode("ascii")


def message_set(count: int, gtube: str) -> list[bytes]:
    """``count`` messages: the corpus (sorted by name) and GTUBE, in order, repeated; CRLF."""
    corpus = []
    for path in sorted(MAIL_DIR.glob("msg_*.txt")):
        data = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        corpus.append(data)
    if len(corpus) != 48:
        raise RuntimeError(f"expected 48 messages in {MAIL_DIR}, found {len(corpus)}")
    corpus.append(gtube_message(gtube))
    return [corpus[i % len(corpus)] for i in range(count)]


class SpamcSession:
    """``spamc -y`` (the SYMBOLS request, as the plugin's default mode sends) per message; ``-x``
    makes an error an exit status instead of spamc's safe fallback."""

    def __init__(self, host: str, port: int) -> None:
        self.argv = [SPAMC, "-d", host, "-p", str(port), "-x", "-y", "-t", str(SCAN_TIMEOUT)]

    def handle(self, job: bytes) -> str:
        done = subprocess.run(
            self.argv, input=job, capture_output=True, timeout=SCAN_TIMEOUT + 10, check=False
        )
        if done.returncode != 0:
            detail = done.stderr.decode(errors="replace").strip()[-200:]
            raise RuntimeError(f"spamc exit {done.returncode}: {detail}")
        return "gtube" if b"GTUBE" in done.stdout else "scanned"

    def close(self) -> None:
        pass


class SpamdSession:
    """The spamd protocol straight from this process (no spamc process per message): SYMBOLS,
    one connection per message, as spamc and the plugin do. Shows spamd's own capacity."""

    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)

    def handle(self, job: bytes) -> str:
        head = f"SYMBOLS SPAMC/1.5\r\nContent-length: {len(job)}\r\n\r\n".encode("ascii")
        with socket.create_connection(self.address, timeout=SCAN_TIMEOUT) as sock:
            sock.sendall(head + job)
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        answer = b"".join(chunks)
        status = answer.split(b"\r\n", 1)[0]
        if not status.startswith(b"SPAMD/") or status.split()[1:2] != [b"0"]:
            raise RuntimeError(f"spamd answered {status[:100]!r}")
        return "gtube" if b"GTUBE" in answer.partition(b"\r\n\r\n")[2] else "scanned"

    def close(self) -> None:
        pass


class SmtpSession:
    """One SMTP connection to filterd, one transaction per message (as Postfix's content filter
    transport reuses its connections)."""

    def __init__(self, port: int) -> None:
        self.client = smtplib.SMTP("127.0.0.1", port, local_hostname=HELO, timeout=SCAN_TIMEOUT)
        self.client.ehlo(HELO)

    def handle(self, job: bytes) -> str:
        refused = self.client.sendmail(SENDER, [RECIPIENT], job)
        if refused:
            raise RuntimeError(f"recipient refused: {refused}")
        return "relayed"

    def close(self) -> None:
        try:
            self.client.quit()
        except (smtplib.SMTPException, OSError):
            self.client.close()


def start_filterd_spamassassin(
    procs: Processes,
    workdir: Path,
    sink_port: int,
    spamd: tuple[str, int],
    children: int,
    *,
    level: str = "warning",
) -> Server:
    """filterd from bench/filterd.toml (the relay benchmark's configuration) plus one chain
    entry: the spamassassin plugin aimed at ``spamd`` with ``max_connections = children``."""
    port = free_port()
    host, spamd_port = spamd
    text = filterd_config(port, sink_port, FilterdSettings(level, "empty"))
    values = {"address": f"{host}:{spamd_port}", "children": children, "timeout": SCAN_TIMEOUT}
    config = workdir / "filterd-spamassassin.toml"
    config.write_text(text + SPAMASSASSIN_CHAIN.substitute(values))
    argv = [str(filterd_binary()), "run", "-c", str(config)]
    child = procs.start("filterd", argv, log=workdir / "filterd.log")
    wait_for_smtp(child, port, START_TIMEOUT)
    return Server(child, port)


@dataclass(frozen=True)
class ScanCounts:
    """What spamd's log says it scanned: messages, of which spam, of which hit GTUBE."""

    scanned: int = 0
    spam: int = 0
    gtube: int = 0

    def __sub__(self, other: ScanCounts) -> ScanCounts:
        return ScanCounts(
            self.scanned - other.scanned, self.spam - other.spam, self.gtube - other.gtube
        )


def count_results(log_text: bytes) -> ScanCounts:
    results = _RESULT.findall(log_text)
    return ScanCounts(
        len(results),
        sum(1 for flag, _ in results if flag == b"Y"),
        sum(1 for _, tests in results if b"GTUBE" in tests.split(b",")),
    )
