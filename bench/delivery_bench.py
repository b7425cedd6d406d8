"""Maildir deliveries per second: filterd's SMTP door with ``[delivery] method = "maildir"``
against Postfix's smtpd + virtual(8), at 1 and 50 sessions, with the mailbox tables in SQLite
and in MariaDB (``make bench-delivery``).

    .venv/bin/python bench/delivery_bench.py [--count 1000] [--time-limit 60]
                                             [--kinds sqlite,mysql] [--json FILE]

One virtual-mail data set (tests/support/vmail.py: the domain, the benchmark's mailbox and a
thousand others; aliases) in a SQLite file and in a private MariaDB (tests/support/mariadb.py),
the same .cf files for both servers (mailbox domains, mailboxes, aliases; uid/gid ``static:``,
nobody's); MariaDB takes up to 1000 connections (its default, 151, is too few for 50 smtpd
processes with 3 tables each: Postfix answers 451 4.3.0 Temporary lookup failure). Per kind:

- **postfix**: a private Postfix (tests/support/postfix.py) receiving on 127.0.0.1, delivering
  with virtual(8) into its Maildir; the clock runs from smtp-source's start until the last
  file is in ``new/`` (Postfix answers 250 when the message is queued, not delivered);
- **filterd**: filterd (log ``info``, an empty chain) with the Maildir stage and the same
  tables; its 250 comes after the file is fsynced and linked, so the clock stops when
  smtp-source is done (the files are counted too);
- **filterd, no maps**: the stage without tables (every user has ``base/domain/user/``), as
  a reference for what the lookups cost.

The load: smtp-source (``bench/filterd_bench/source.py``), one recipient per message, 1 KiB
bodies, persistent sessions; 20 messages to warm each server up first. Each pass is bounded by
``--time-limit``; a filterd that refuses the configuration (``filterd check-config``) is
reported with its reason and the benchmark goes on without it. Every child runs in its own
process group and is stopped by its id at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from filterd_bench import benchinfo, repo_support
from filterd_bench.procs import BenchError, Processes, free_port, wait_for_smtp
from filterd_bench.servers import FilterdRefused, check_config, filterd_binary
from filterd_bench.source import DOMAIN, RECIPIENT, run_source

from tests.support.mariadb import running_mariadb
from tests.support.postfix import PostfixInstance, make_base_dir
from tests.support.vmail import (
    Kind,
    Tables,
    VirtualMail,
    filterd_delivery,
    load_mysql,
    load_sqlite,
    postfix_settings,
    write_tables,
)

SESSIONS = (1, 50)
SIZE = 1024
WARM_UP = 20
START_TIMEOUT = 30.0
MYSQL_CONNECTIONS = 1000
USER = RECIPIENT.partition("@")[0]
MAIL = VirtualMail(
    domains=[DOMAIN],
    mailboxes=[(RECIPIENT, f"{DOMAIN}/{USER}/", 1)]
    + [(f"user{i}@{DOMAIN}", f"{DOMAIN}/user{i}/", 1) for i in range(1000)],
    aliases=[(f"alias{i}@{DOMAIN}", f"user{i}@{DOMAIN}") for i in range(1000)],
)


def owner() -> tuple[int, int]:
    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def delivered(maildir: Path) -> int:
    try:
        return sum(1 for _ in (maildir / "new").iterdir())
    except FileNotFoundError:
        return 0


@contextlib.contextmanager
def databases(kinds: list[Kind], workdir: Path) -> Iterator[dict[Kind, Tables]]:
    with contextlib.ExitStack() as stack:
        tables: dict[Kind, Tables] = {}
        for kind in kinds:
            if kind == "sqlite":
                connection = load_sqlite(workdir / "vmail.sqlite", MAIL)
            else:
                server = stack.enter_context(running_mariadb())
                # 50 smtpd processes with 3 tables each exceed MariaDB's default 151
                # connections (451 4.3.0 Temporary lookup failure); proxy: would share them.
                server.execute(f"SET GLOBAL max_connections = {MYSQL_CONNECTIONS}")
                connection = load_mysql(server, MAIL)
            tables[kind] = write_tables(workdir / "cf", kind, connection)
        yield tables


def measure(port: int, maildir: Path, sessions: int, count: int, limit: float) -> dict[str, object]:
    """One pass: ``count`` messages over ``sessions``; the rate until all are in ``new/``."""
    before = delivered(maildir)
    started = time.monotonic()
    run = run_source(port, size=SIZE, sessions=sessions, count=count, timeout=limit)
    deadline = started + limit
    while delivered(maildir) - before < run.completed and time.monotonic() < deadline:
        time.sleep(0.01)
    seconds = time.monotonic() - started
    done = delivered(maildir) - before
    figures: dict[str, object] = {
        "messages": done,
        "seconds": round(seconds, 2),
        "per_second": round(done / seconds, 1),
    }
    if run.problem or done != count:
        figures["error"] = run.problem or f"{done} of {count} delivered in {limit:.0f} s"
    return figures


def bench_postfix(tables: Tables, workdir: Path, args: argparse.Namespace) -> dict[str, object]:
    instance = PostfixInstance(
        make_base_dir(), virtual_domains=[DOMAIN], main_cf_extra=postfix_settings(tables, owner())
    )
    try:
        instance.start()
        maildir = instance.mail_dir / DOMAIN / USER
        measure(instance.smtp_port, maildir, 1, WARM_UP, args.time_limit)
        return {
            f"c{n}": measure(instance.smtp_port, maildir, n, args.count, args.time_limit)
            for n in SESSIONS
        }
    finally:
        instance.stop()
        shutil.rmtree(instance.base_dir, ignore_errors=True)


def bench_filterd(
    name: str, tables: Tables | None, workdir: Path, args: argparse.Namespace
) -> dict[str, object]:
    base = workdir / f"{name}-mail"
    base.mkdir(mode=0o755)
    shutil.chown(base, *owner())
    port = free_port()
    config = workdir / f"{name}.toml"
    config.write_text(
        f'[log]\nlevel = "info"\n\n[[listen]]\naddress = "127.0.0.1:{port}"\n'
        "max_connections = 1000\n\n" + filterd_delivery(tables, base, owner(), domains=[DOMAIN])
    )
    try:
        check_config(config)
    except FilterdRefused as exc:
        return {"refused": str(exc)}
    procs = Processes()
    try:
        child = procs.start(
            name, [str(filterd_binary()), "run", "-c", str(config)], log=workdir / f"{name}.log"
        )
        wait_for_smtp(child, port, START_TIMEOUT)
        maildir = base / DOMAIN / USER
        measure(port, maildir, 1, WARM_UP, args.time_limit)
        return {f"c{n}": measure(port, maildir, n, args.count, args.time_limit) for n in SESSIONS}
    finally:
        procs.stop_all()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=1000, help="messages per pass (1000)")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per pass (60)")
    parser.add_argument("--kinds", default="sqlite,mysql", help="sqlite,mysql (both)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args()
    kinds: list[Kind] = []
    for kind in args.kinds.split(","):
        if kind not in ("sqlite", "mysql"):
            parser.error(f"--kinds: {kind!r} is not sqlite or mysql")
        kinds.append(kind)
    benchinfo.trap_signals()
    machine = benchinfo.machine_info()
    benchinfo.print_machine(machine)
    results: dict[str, dict[str, object]] = {}
    workdir = Path(tempfile.mkdtemp(prefix="filterd-delivery-bench-"))
    workdir.chmod(0o755)  # Postfix's daemons read the .cf files and the SQLite file
    try:
        results["filterd, no maps"] = bench_filterd("nomaps", None, workdir, args)
        _print("filterd, no maps", results["filterd, no maps"])
        with databases(kinds, workdir) as tables:
            for kind in kinds:
                name = f"postfix, {kind}"
                results[name] = bench_postfix(tables[kind], workdir, args)
                _print(name, results[name])
                name = f"filterd, {kind}"
                results[name] = bench_filterd(kind, tables[kind], workdir, args)
                _print(name, results[name])
    except KeyboardInterrupt:
        print("\ndelivery_bench: interrupted; every process started is stopped", file=sys.stderr)
        return 130
    finally:
        benchinfo.ignore_signals()
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=2) + "\n")
    return 0


def _print(name: str, row: dict[str, object]) -> None:
    if "refused" in row:
        print(f"{name:<18} refused by filterd check-config: {row['refused']}")
        return
    cells = []
    for key in (f"c{n}" for n in SESSIONS):
        cell = row[key]
        assert isinstance(cell, dict)
        text = f"{key} {cell['per_second']:>7.1f}/s ({cell['messages']} in {cell['seconds']} s)"
        if "error" in cell:
            text += f" [{cell['error']}]"
        cells.append(text)
    print(f"{name:<18} " + "   ".join(cells))
    sys.stdout.flush()


if __name__ == "__main__":
    assert repo_support.REPO  # tests.support importable
    try:
        sys.exit(main())
    except (BenchError, subprocess.CalledProcessError) as exc:
        print(f"delivery_bench: {exc}", file=sys.stderr)
        sys.exit(1)
