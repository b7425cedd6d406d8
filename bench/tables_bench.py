"""sqlite:, mysql: and pgsql: lookup tables: lookups per second and p99 latency, cold and cached,
at 1 and 50 concurrent lookups, with ``postmap -q -`` over the same keys as the reference.

    .venv/bin/python bench/tables_bench.py [--lookups 2000] [--time-limit 30]
                                           [--kinds sqlite,mysql,pgsql] [--json FILE]

One generated virtual-mail data set (tests/support/sqldata.py: domains, mailboxes, aliases) in
a SQLite file, a private MariaDB and a private PostgreSQL (tests/support/mariadb.py and
postgresql.py: loopback, temporary directories, stopped by PID at the end, also on failure).
The table is the mailbox query (``SELECT maildir FROM mailbox WHERE username='%s' AND
active = 1``) over TCP for the servers; the keys are the data set's lookup keys (hits, misses,
case variants, extensions...) repeated in order up to ``--lookups``.

Per kind:

- ``postmap``: ``postmap -q - KIND:file.cf`` over the keys: one Postfix process, one lookup at a
  time; rate = keys / wall time of the process (start-up included; it is small against the
  lookups);
- ``cold cN``: filterd's table with the default settings (no cache; ``max_concurrency`` 8:
  at most 8 lookups in worker threads at once, the others wait), N lookups in flight;
- ``cached cN``: the same with ``cache_ttl``/``negative_cache_ttl`` 300 s, after one pass over
  the keys that fills the cache (not counted): what a busy door sees for repeated keys.

Rate = lookups / wall time of the pass; p99 = the nearest-rank 99th percentile of the
lookups' own times (trio's clock; at c50 it includes waiting for a thread). Each pass stops
at ``--time-limit`` seconds (the figures then count the lookups done).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import trio
from filterd_bench import benchinfo, repo_support
from filterd_bench.latency import percentile

from filterd.sdk.tables import TableSettings, open_table
from tests.support.mariadb import PASSWORD, USER, running_mariadb
from tests.support.postgresql import running_postgresql
from tests.support.postmap import make_postmap
from tests.support.sqldata import CF_VARIANTS, SCHEMA, MailData, generate

QUERY = CF_VARIANTS["mailbox"]
CONCURRENCY = (1, 50)


def _rows(data: MailData) -> dict[str, list[tuple[object, ...]]]:
    return {
        "domains": list(data.domains),
        "mailbox": list(data.mailboxes),
        "alias": list(data.aliases),
    }


@contextlib.contextmanager
def _databases(kinds: list[str], workdir: Path, data: MailData) -> Iterator[dict[str, str]]:
    """{kind: connection settings of its .cf}, the servers running while inside."""
    with contextlib.ExitStack() as stack:
        cfs: dict[str, str] = {}
        rows = _rows(data)
        if "sqlite" in kinds:
            path = workdir / "mail.sqlite"
            conn = sqlite3.connect(path)
            for statement in SCHEMA:
                conn.execute(statement)
            for table, values in rows.items():
                conn.executemany(
                    f"INSERT INTO {table} VALUES ({','.join('?' * len(values[0]))})", values
                )
            conn.commit()
            conn.close()
            cfs["sqlite"] = f"dbpath = {path}\n"
        if "mysql" in kinds:
            maria = stack.enter_context(running_mariadb())
            maria.execute(*SCHEMA)
            for table, values in rows.items():
                marks = ",".join(["%s"] * len(values[0]))
                maria.execute(f"INSERT INTO {table} VALUES ({marks})", params=values)
            cfs["mysql"] = (
                f"hosts = inet:127.0.0.1:{maria.port}\nuser = {USER}\n"
                f"password = {PASSWORD}\ndbname = filterd\n"
            )
        if "pgsql" in kinds:
            pg = stack.enter_context(running_postgresql())
            pg.execute(*SCHEMA)
            for table, values in rows.items():
                marks = ",".join(["%s"] * len(values[0]))
                pg.execute(f"INSERT INTO {table} VALUES ({marks})", params=values)
            cfs["pgsql"] = (
                f"hosts = 127.0.0.1:{pg.port}\nuser = {USER}\n"
                f"password = {PASSWORD}\ndbname = filterd\n"
            )
        yield cfs


def _postmap_rate(spec: str, keys: list[str], workdir: Path, limit: float) -> dict[str, float]:
    postmap = make_postmap(workdir / "postmap-conf")
    started = time.monotonic()
    proc = postmap.run(
        "-q", "-", spec, stdin="".join(k + "\n" for k in keys).encode(), timeout=limit * 4
    )
    wall = time.monotonic() - started
    if proc.returncode not in (0, 1):
        raise RuntimeError(proc.stderr.decode(errors="replace"))
    return {
        "lookups": len(keys),
        "seconds": round(wall, 3),
        "per_second": round(len(keys) / wall, 1),
    }


async def _pass(
    spec: str, keys: list[str], concurrency: int, cached: bool, limit: float
) -> dict[str, float]:
    ttl = 300.0 if cached else 0.0
    table = open_table(spec, TableSettings(cache_ttl=ttl, negative_cache_ttl=ttl))
    times: list[float] = []
    try:
        if cached:
            for key in keys:
                await table.lookup(key)
        pending = iter(keys)
        deadline = trio.current_time() + limit

        async def worker() -> None:
            for key in pending:
                if trio.current_time() > deadline:
                    return
                start = trio.current_time()
                await table.lookup(key)
                times.append(trio.current_time() - start)

        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)
        wall = trio.current_time() - started
    finally:
        await table.aclose()
    return {
        "lookups": len(times),
        "seconds": round(wall, 3),
        "per_second": round(len(times) / wall, 1),
        "p99_ms": round(percentile(times, 99) * 1000, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--time-limit", type=float, default=30.0)
    parser.add_argument("--kinds", default="sqlite,mysql,pgsql")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    benchinfo.trap_signals()
    machine = benchinfo.machine_info()
    benchinfo.print_machine(machine)
    data = generate()
    keys = [data.keys[i % len(data.keys)] for i in range(args.lookups)]
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="filterd-tables-bench-") as tmp:
        workdir = Path(tmp)
        with _databases(kinds, workdir, data) as cfs:
            for kind in kinds:
                cf = workdir / f"{kind}.cf"
                cf.write_text(cfs[kind] + QUERY)
                spec = f"{kind}:{cf}"
                row: dict[str, dict[str, float]] = {
                    "postmap": _postmap_rate(spec, keys, workdir, args.time_limit)
                }
                for cached in (False, True):
                    for concurrency in CONCURRENCY:
                        name = f"{'cached' if cached else 'cold'} c{concurrency}"
                        row[name] = trio.run(
                            _pass, spec, keys, concurrency, cached, args.time_limit
                        )
                results[kind] = row
                _print(kind, row)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=2) + "\n")
    return 0


def _print(kind: str, row: dict[str, dict[str, float]]) -> None:
    print(f"{kind}:")
    for name, figures in row.items():
        p99 = f", p99 {figures['p99_ms']:.2f} ms" if "p99_ms" in figures else ""
        print(
            f"  {name:<11} {figures['per_second']:>9.0f} lookups/s "
            f"({figures['lookups']:.0f} in {figures['seconds']:.2f} s){p99}"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    assert repo_support.REPO  # tests.support importable
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as exc:
        print(f"tables_bench: {exc}", file=sys.stderr)
        sys.exit(1)
