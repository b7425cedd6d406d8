"""tests/support/dns_server.py's ``DnsServer`` in a process of its own, for bench/policy_bench.py:
the authoritative loopback DNS server must not share the load generator's interpreter (and its
GIL), and its CPU time is then measured on its own.

    cd bench && python -m filterd_bench.dns_child ZONE.json TTL

ZONE.json is the ``DnsServer`` zone (MX values as two-element lists). The child prints
``port N`` once it serves, then answers commands read from stdin, one per line: ``count`` →
``count N`` (queries answered so far, by type: ``count N TXT=a MX=b ...``). End of stdin stops
it. ``DnsChild`` is the parent's side: the child runs in its own process group and is stopped
by that group's id.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from filterd_bench.procs import BenchError, stop_piped

HERE = Path(__file__).resolve()
REPO = HERE.parents[2]
READY_TIMEOUT = 20.0
ANSWER_TIMEOUT = 10.0


def _serve(zone_path: str, ttl: int) -> int:
    if str(REPO) not in sys.path:
        sys.path.append(str(REPO))
    from tests.support.dns_server import DnsServer

    zone = json.loads(Path(zone_path).read_text())
    with DnsServer(zone, ttl=ttl, negative_ttl=ttl) as server:
        print(f"port {server.port}", flush=True)
        for line in sys.stdin:
            if line.strip() == "count":
                queries = list(server.queries)
                types = Counter(qtype for _, qtype, _ in queries)
                detail = " ".join(f"{name}={n}" for name, n in sorted(types.items()))
                print(f"count {len(queries)} {detail}".rstrip(), flush=True)
    return 0


class DnsChild:
    """The parent's handle on a dns_child process."""

    def __init__(self, zone: dict[str, list[object]], workdir: Path, *, ttl: int) -> None:
        zone_path = workdir / "zone.json"
        zone_path.write_text(json.dumps(zone, indent=1))
        self.log = workdir / "dns-server.log"
        with self.log.open("wb") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "filterd_bench.dns_child", str(zone_path), str(ttl)],
                cwd=HERE.parents[1],  # bench/: filterd_bench is importable
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        self._buffer = b""
        try:
            line = self._read_line(READY_TIMEOUT)
        except BenchError:
            self.stop()
            raise
        if not line.startswith("port "):
            self.stop()
            raise BenchError(f"DNS server child said {line!r}; see {self.log}")
        self.port = int(line.split()[1])

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _read_line(self, timeout: float) -> str:
        assert self.popen.stdout is not None
        fd = self.popen.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise BenchError(f"no answer from the DNS server child within {timeout:.0f} s")
            chunk = os.read(fd, 4096)
            if not chunk:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise BenchError(f"the DNS server child exited; its log ends with:\n{tail}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def count(self) -> tuple[int, str]:
        """Queries answered so far, and the count by type (``"A=3 MX=1 TXT=2"``)."""
        assert self.popen.stdin is not None
        self.popen.stdin.write(b"count\n")
        self.popen.stdin.flush()
        words = self._read_line(ANSWER_TIMEOUT).split(maxsplit=2)
        return int(words[1]), words[2] if len(words) > 2 else ""

    def stop(self) -> None:
        stop_piped(self.popen, 5.0)  # end of stdin: the child stops its server and exits


if __name__ == "__main__":
    sys.exit(_serve(sys.argv[1], int(sys.argv[2])))
