"""The pieces of bench/greylist_bench.py: the greylisting requests, postgrey 1.37 and filterd's
policy door with the greylist plugin (SQLite or Redis state), and the answers' tags.

Request ``i`` comes from a client of a network of its own (``10.A.B.7``, one /24 per request),
so each request is a triplet of its own and no client is ever auto-whitelisted (one pass per
client); the sender's local part has no digit (postgrey and filterd turn digits into ``#``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from string import Template

from filterd_bench.policy_support import Request, rcpt_request_text, start_policy_door
from filterd_bench.procs import Processes, process_stats
from filterd_bench.repo_support import REPO  # noqa: F401 (puts tests.support on sys.path)
from filterd_bench.servers import Server
from tests.support.postfwd import postfwd_available, postfwd_server
from tests.support.postgrey import POSTGREY, postgrey_installed, running_postgrey
from tests.support.redis import REDIS_SERVER, RedisInstance, redis_installed
from tests.support.redis import running_redis as running_redis

HOSTNAME = "mx.bench-grey.example"
MAX_REQUESTS = 65_536  # one /24 of 10.0.0.0/8 per request

# The tags of the answers (``classify``): postgrey's and filterd's spellings are the same.
GREYLISTED = "greylisted"  # action=DEFER_IF_PERMIT 4.2.0 Greylisted, see ...
PASSED = "passed"  # action=PREPEND X-Greylist: delayed N seconds ... (the first pass)
KNOWN = "known"  # action=DUNNO (a triplet that passed before)

GENERATOR = "bench/greylist_bench.py"
GREYLIST_CHAIN = Template(
    """
[[chain]]
plugin = "greylist"
timeout = "30s"
[chain.config]
delay = "${delay}s"
hostname = "$hostname"
whitelist_clients = []
whitelist_recipients = []
state = $state
"""
)


def make_request(index: int, serial: int) -> Request:
    """A protocol_state=RCPT request as Postfix 3.7 sends it, the triplet of ``index``, with an
    ``instance`` of its own (``serial``). ``expected`` is set by the pass (``with_expected``)."""
    if not 0 <= index < MAX_REQUESTS:
        raise ValueError(f"at most {MAX_REQUESTS} triplets, got index {index}")
    name = f"mail-{index:05x}.sender.example"
    text = rcpt_request_text(
        client_address=f"10.{index >> 8}.{index & 255}.7",
        client_name=name,
        client_port=40000 + serial % 20000,
        helo_name=name,
        sender=f"news@{name}",
        recipient="postmaster@bench-grey.example",
        instance=f"{os.getpid():x}.{serial:08x}.grey.0",
        size=2048,
    )
    return Request(text, "")


def requests(count: int, expected: str, serial_base: int) -> list[Request]:
    """Triplets 0 .. count-1, each expecting ``expected``, ``instance`` values from
    ``serial_base`` on (each pass its own: one message per request)."""
    return [Request(make_request(i, serial_base + i).text, expected) for i in range(count)]


def classify(answer: bytes) -> str:
    if answer.startswith(b"action=DEFER_IF_PERMIT 4.2.0 Greylisted"):
        return GREYLISTED
    if answer.startswith(b"action=PREPEND X-Greylist: delayed"):
        return PASSED
    if answer.startswith(b"action=DUNNO") or answer == b"action=dunno":
        return KNOWN
    return answer[:120].decode("utf-8", "replace")


# ------------------------------------------------------------------------ filterd


def start_filterd_greylist(
    procs: Processes,
    workdir: Path,
    *,
    name: str,
    state: str,
    delay: int,
    processes: int,
) -> Server:
    """filterd's policy door with the greylist plugin, ``state`` its TOML ``state`` value."""
    chain = greylist_chain(state, delay)
    return start_policy_door(
        procs,
        workdir,
        chain,
        name=name,
        generator=GENERATOR,
        plugin="greylist",
        processes=processes,
    )


def greylist_chain(state: str, delay: int) -> str:
    """The greylist plugin's [[chain]] table: ``state`` its TOML ``state`` value."""
    return GREYLIST_CHAIN.substitute(delay=delay, hostname=HOSTNAME, state=state)


def sqlite_state(path: Path) -> str:
    return f'{{ backend = "sqlite", path = "{path}" }}'


def redis_state(redis: RedisInstance, prefix: str) -> str:
    return f'{{ backend = "redis", url = "{redis.url}", prefix = "{prefix}" }}'


# ------------------------------------------------------------------------ rules

# One rule list, in postfwd's syntax and as filterd rules: the first two never match a bench
# request, the third does (DUNNO). postfwd-rate puts a rate() rule before them, on every
# request (each client a rate entry of its own, never over the limit).
POSTFWD_RULES = """\
id=R1; sender=~@bulk\\.example\\.net$; action=REJECT bulk mail refused
id=R2; client_address=192.0.2.0/24; action=OK
id=R3; recipient_domain==bench-grey.example; client_address=10.0.0.0/8; action=DUNNO
"""
POSTFWD_RATE_RULE = (
    "id=RATE; client_address=10.0.0.0/8; "
    "action=rate(client_address/1000/3600/450 4.7.1 too many messages)\n"
)
FILTERD_RULES = """
[[chain]]
plugin = "rules"
timeout = "30s"

[[chain.config.rules]]
id = "R1"
sender = "=~ @bulk\\\\.example\\\\.net$"
action = "REJECT bulk mail refused"

[[chain.config.rules]]
id = "R2"
client_address = "192.0.2.0/24"
action = "OK"

[[chain.config.rules]]
id = "R3"
recipient_domain = "== bench-grey.example"
client_address = "10.0.0.0/8"
action = "DUNNO"
"""


# filterd-rules-rate: the same rate() rule before them, the ratelimit package's rule action
# counting in SQLite (the rules' default state store).
FILTERD_RATE_RULE = Template(
    """
[chain.config.actions.rate]
state = { backend = "sqlite", path = "$path" }

[[chain.config.rules]]
id = "RATE"
client_address = "10.0.0.0/8"
action = "rate(client_address/1000/3600/450 4.7.1 too many messages)"
"""
)


def rules_chain(rates: Path | None) -> str:
    """The rules plugin's [[chain]] with the three rules above (``rates``: the rate() rule
    before them, its counters in that SQLite file)."""
    rules = FILTERD_RULES
    if rates is not None:
        first = rules.index("\n[[chain.config.rules]]")
        rate_rule = FILTERD_RATE_RULE.substitute(path=rates)
        rules = rules[:first] + rate_rule + rules[first:]
    return rules


def start_filterd_rules(
    procs: Processes, workdir: Path, *, name: str, processes: int, rate: bool = False
) -> Server:
    """filterd's policy door with the rules plugin and the three rules above (``rate``: the
    rate() rule before them, its counters in a SQLite file in ``workdir``)."""
    rates = workdir / f"{name}-rates.sqlite" if rate else None
    return start_policy_door(
        procs,
        workdir,
        rules_chain(rates),
        name=name,
        generator=GENERATOR,
        plugin="rules",
        processes=processes,
    )


@contextlib.contextmanager
def postfwd(workdir: Path, *, rate: bool) -> Iterator[tuple[int, list[int]]]:
    """postfwd 1.35 (postfwd2, logging off: ``--perfmon``) with the rules above: its port and
    the process groups of its processes (it daemonizes; stopped by its pid file's pid)."""
    before = {pid for pid, _fields in process_stats()}
    rules = (POSTFWD_RATE_RULE if rate else "") + POSTFWD_RULES
    with postfwd_server(workdir, rules, extra_args=["--perfmon"]) as port:
        groups = sorted(
            {
                int(fields[2])
                for pid, fields in process_stats()
                if pid not in before and _postfwd(pid)
            }
        )
        yield port, groups


def _postfwd(pid: int) -> bool:
    try:
        return "postfwd" in Path(f"/proc/{pid}/cmdline").read_bytes().decode("latin-1")
    except OSError:
        return False


# ------------------------------------------------------------------------ postgrey


@contextlib.contextmanager
def postgrey(workdir: Path, delay: int) -> Iterator[tuple[int, int]]:
    """A fresh postgrey 1.37 (empty database, empty whitelists, the same delay and host name
    as filterd): its (port, pid). Stopped by its pid on the way out, also on failure."""
    clients = workdir / "postgrey-whitelist-clients"
    recipients = workdir / "postgrey-whitelist-recipients"
    clients.write_text("")
    recipients.write_text("")
    with running_postgrey(
        delay=delay,
        whitelist_clients=[clients],
        whitelist_recipients=[recipients],
        hostname=HOSTNAME,
    ) as server:
        yield server.port, server.process.pid


def postgrey_version() -> str:
    done = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "postgrey"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return done.stdout.strip() or "unknown"


def redis_version() -> str:
    done = subprocess.run(
        [REDIS_SERVER, "--version"], capture_output=True, text=True, timeout=10, check=False
    )
    return done.stdout.strip() or "unknown"


__all__ = [
    "GREYLISTED",
    "KNOWN",
    "PASSED",
    "POSTGREY",
    "classify",
    "greylist_chain",
    "postfwd",
    "postfwd_available",
    "postgrey",
    "postgrey_installed",
    "postgrey_version",
    "redis_installed",
    "redis_state",
    "redis_version",
    "requests",
    "rules_chain",
    "running_redis",
    "sqlite_state",
    "start_filterd_greylist",
    "start_filterd_rules",
]
