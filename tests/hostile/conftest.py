"""The hostile-client suite's fixtures: a real ``filterd run`` per door, with Postfix's
``smtp-sink`` as the next hop, where the tests count what was really delivered.

Each door is started once per test module (``door``), with the options the module asks for,
and stopped by PID when the module ends, also after a failure (its output is printed then)."""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.filterd_proc import FilterdFactory, FilterdProcess
from tests.support.nexthop import Sink, smtp_sink
from tests.support.postfix import free_port


@dataclass(frozen=True)
class Delivered:
    """One transaction as smtp-sink dumped it: its envelope and its content."""

    sender: str
    recipients: tuple[str, ...]
    raw: bytes


def _parse_dump(raw: bytes) -> Delivered:
    """smtp-sink's dump: X-Mail-Args / X-Rcpt-Args lines ahead of the message."""
    text = raw.decode("utf-8", "replace")
    sender = re.search(r"^X-Mail-Args: (.*)$", text, re.M)
    recipients = re.findall(r"^X-Rcpt-Args: (.*)$", text, re.M)
    return Delivered(sender.group(1) if sender else "", tuple(recipients), raw)


@dataclass
class Door:
    """A running filterd door and the next hop behind it."""

    port: int
    protocol: str
    filterd: FilterdProcess
    sink: Sink

    @property
    def lmtp(self) -> bool:
        return self.protocol == "lmtp"

    def delivered(self) -> list[Delivered]:
        return [_parse_dump(raw) for raw in self.sink.dumps()]

    def delivered_with(self, word: str) -> list[Delivered]:
        return [d for d in self.delivered() if word.encode() in d.raw]

    def assert_running(self) -> None:
        assert self.filterd.running(), "filterd died:\n" + self.filterd.output_text()[-5000:]


def door_config(
    port: int,
    protocol: str,
    sink_port: int,
    *,
    listen: str = "",
    limits: str = "",
    processes: int = 1,
    extra: str = "",
) -> str:
    """filterd with one listener relaying to ``sink_port``; ``extra``: more TOML (a chain)."""
    return f"""
[[listen]]
address = "127.0.0.1:{port}"
protocol = "{protocol}"
hostname = "filterd.test"
processes = {processes}
{listen}
[limits]
{limits}
[delivery]
method = "relay"
next_hop = "127.0.0.1:{sink_port}"
{extra}
"""


DoorStarter = Callable[..., Door]


@pytest.fixture(scope="module")
def start_door(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DoorStarter]:
    """``start_door(protocol, listen=..., limits=..., processes=1, extra=...)``: a running door
    for this module (``listen``, ``limits``: TOML lines for its [[listen]] and [limits] tables;
    ``extra``: TOML after the rest)."""
    base = tmp_path_factory.mktemp("hostile")
    factory = FilterdFactory(base / "filterd")
    failed_before = request.session.testsfailed

    with contextlib.ExitStack() as sinks:

        def start(
            protocol: str = "smtp",
            *,
            listen: str = "",
            limits: str = "",
            processes: int = 1,
            extra: str = "",
        ) -> Door:
            sink = sinks.enter_context(smtp_sink(base))
            port = free_port()
            config = door_config(
                port,
                protocol,
                sink.port,
                listen=listen,
                limits=limits,
                processes=processes,
                extra=extra,
            )
            proc = factory(config)
            return Door(port, protocol, proc, sink)

        try:
            yield start
        finally:
            factory.close()
            if request.session.testsfailed != failed_before:
                for proc in factory.processes:
                    print(f"\n=== filterd {proc.workdir} ===", file=sys.stderr)
                    print(proc.output_text()[-20000:], file=sys.stderr)


def tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate for 127.0.0.1 (trustme): (cert, key, ca)."""
    import trustme

    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    cert, key, ca_path = directory / "cert.pem", directory / "key.pem", directory / "ca.pem"
    issued.private_key_pem.write_to_path(str(key))
    issued.cert_chain_pems[0].write_to_path(str(cert))
    ca.cert_pem.write_to_path(str(ca_path))
    return cert, key, ca_path
