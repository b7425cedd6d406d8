"""What bench/run.py measures: the servers ("targets") smtp-source sends into, and their start.

- **direct**: smtp-sink itself, the ceiling of the machine and the tools.
- **filterd** at production settings: log ``info`` (to a file), the seed chain (the embedded
  default configuration's header_checks rules), ``processes = N`` (``--processes``, default 2)
  — and the same with ``processes = 1`` (``filterd-p1``), which every filterd accepts. A
  filterd that refuses ``processes = N`` on an SMTP listener (before that feature exists) is
  noted and the benchmark goes on with ``filterd-p1`` as its production filterd.
- **filterd-warn**: ``filterd-p1`` with log ``warning``: what logging at ``info`` costs.
- **filterd-ref** (reference): log ``warning``, empty chain, one process.
- **Haraka 3** (smtp_forward): one process (for information), ``nodes=2``, and ``nodes=2`` with
  TCP_NODELAY on its sockets (bench/haraka/nodelay.js). Haraka logs at ``warn``
  (bench/haraka/config/log.ini) even though filterd logs at ``info``: the comparison can only
  understate filterd.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from filterd_bench.procs import Processes
from filterd_bench.servers import (
    FilterdRefused,
    FilterdSettings,
    HarakaUnavailable,
    Server,
    install_haraka,
    start_filterd,
    start_haraka,
)

PARTS = ("direct", "filterd", "filterd-warn", "filterd-ref", "haraka", "latency", "rss")


@dataclass(frozen=True)
class Target:
    key: str
    label: str  # column title
    part: str  # the --only part that runs it
    filterd: FilterdSettings | None = None
    haraka: tuple[int, bool] | None = None  # (smtp.ini nodes: 0 = one process, TCP_NODELAY)

    @property
    def is_haraka(self) -> bool:
        return self.haraka is not None


def production_settings(processes: int) -> FilterdSettings:
    return FilterdSettings("info", "seed", processes)


def all_targets(processes: int) -> list[Target]:
    """Every target, in column order; ``processes``: the production filterd's."""
    targets = [Target("direct", "direct", "direct")]
    if processes > 1:
        targets.append(
            Target("filterd", f"f-p{processes}", "filterd", production_settings(processes))
        )
    targets += [
        Target("filterd-p1", "f-p1", "filterd", production_settings(1)),
        Target("filterd-warn", "f-p1-warn", "filterd-warn", FilterdSettings("warning", "seed")),
        Target("filterd-ref", "f-ref", "filterd-ref", FilterdSettings("warning", "empty")),
        Target("haraka1", "H-1p", "haraka", haraka=(0, False)),
        Target("haraka2", "H-n2", "haraka", haraka=(2, False)),
        Target("haraka2nd", "H-n2-nd", "haraka", haraka=(2, True)),
    ]
    return targets


@dataclass
class Started:
    servers: dict[str, Server]  # key -> server, in column order
    haraka: str = ""  # Haraka's version, or why it did not run
    refused: str = ""  # filterd's words when it refused processes = N


def start_targets(
    targets: list[Target], procs: Processes, workdir: Path, sink: Server, notes: list[str]
) -> Started:
    """Start every target that can run; what could not is explained in ``notes`` (and in the
    returned ``haraka``/``refused``). Raises ``BenchError`` when a filterd that must run does
    not start."""
    started = Started({})
    harakas = [target for target in targets if target.is_haraka]
    for target in targets:
        if target.key == "direct":
            started.servers["direct"] = sink
        elif target.filterd is not None:
            try:
                server = start_filterd(
                    procs, workdir, sink.port, name=target.key, settings=target.filterd
                )
            except FilterdRefused as exc:
                if target.filterd.processes == 1:
                    raise
                started.refused = str(exc)
                notes.append(
                    f"{target.label} not run: this filterd refuses processes = "
                    f"{target.filterd.processes} on an SMTP listener ({exc}); f-p1 is the "
                    f"production filterd in the targets"
                )
                print(f"{target.label}: not run: refused by filterd check-config")
                continue
            print(
                f"{target.label} ({target.filterd.describe()}) on 127.0.0.1:{server.port} "
                f"(pid {server.pid})"
            )
            started.servers[target.key] = server
    if harakas:
        started.haraka = _start_harakas(harakas, procs, workdir, sink.port, started.servers)
    return started


def _start_harakas(
    harakas: list[Target], procs: Processes, workdir: Path, sink_port: int, into: dict[str, Server]
) -> str:
    try:
        binary, version = install_haraka()
    except HarakaUnavailable as exc:
        print(f"Haraka: not run: {exc}")
        return f"not run: {exc}"
    description = f"Haraka {version}"
    for target in harakas:
        assert target.haraka is not None
        nodes, nodelay = target.haraka
        try:
            server = start_haraka(procs, workdir, binary, sink_port, nodes=nodes, nodelay=nodelay)
        except HarakaUnavailable as exc:
            print(f"{target.label}: not run: {exc}")
            description += f"; {target.label} not run: {exc}"
            continue
        if nodes:
            time.sleep(2.0)  # the first worker greets; give the others time to listen too
        print(f"{target.label}: Haraka {version} on 127.0.0.1:{server.port} (pid {server.pid})")
        into[target.key] = server
    return description
