"""A private PostgreSQL for the pgsql: table tests and the benchmark.

``running_postgresql()`` runs Debian's ``initdb`` and ``postgres`` (/usr/lib/postgresql/*/bin)
in a fresh temporary directory, as an unprivileged user when the tests run as root (PostgreSQL
refuses root: ``nobody`` via setpriv, the directory owned by it), listening on a free loopback
port and a UNIX socket in that directory; it creates the role ``filterd`` (password ``secret``,
md5/scram over TCP, trust over the socket) and the database ``filterd``, and yields once it
answers. On exit it stops the server by PID (SIGTERM, then SIGKILL) and removes the directory::

    with running_postgresql() as pg:
        pg.execute("CREATE TABLE t (k text)")
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.dbservers import free_port, stop, tail, wait_until

USER = "filterd"
PASSWORD = "secret"
DATABASE = "filterd"
_UNPRIVILEGED = "nobody"


def postgresql_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return Path(found[-1]).parent if found else None


@dataclass
class PostgreSQL:
    process: subprocess.Popen[bytes]
    workdir: Path
    port: int

    @property
    def socket_dir(self) -> Path:
        return self.workdir

    @property
    def pid(self) -> int:
        return self.process.pid

    def connect(self, *, superuser: bool = False) -> Any:
        import psycopg

        return psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user=_UNPRIVILEGED if superuser and os.geteuid() == 0 else USER,
            dbname=DATABASE if not superuser else "postgres",
            autocommit=True,
        )

    def execute(self, *statements: str, params: Sequence[tuple[object, ...]] | None = None) -> None:
        """Run statements as the table owner ``filterd``; with ``params`` the one statement
        runs once per tuple."""
        with self.connect() as conn, conn.cursor() as cursor:
            if params is not None:
                cursor.executemany(statements[0], params)  # type: ignore[arg-type]
            else:
                for statement in statements:
                    cursor.execute(statement)  # type: ignore[arg-type]

    def stop(self) -> None:
        stop(self.process)


def _as_user(args: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return args
    return ["setpriv", f"--reuid={_UNPRIVILEGED}", f"--regid={_group()}", "--clear-groups", *args]


def _group() -> int:
    return pwd.getpwnam(_UNPRIVILEGED).pw_gid


@contextlib.contextmanager
def running_postgresql() -> Iterator[PostgreSQL]:
    bindir = postgresql_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed (deploy/install-system-packages.sh)")
    workdir = Path(tempfile.mkdtemp(prefix="filterd-pgsql-"))
    log = workdir / "postgres.log"
    process: subprocess.Popen[bytes] | None = None
    try:
        if os.geteuid() == 0:
            os.chown(workdir, pwd.getpwnam(_UNPRIVILEGED).pw_uid, _group())
        data = workdir / "data"
        (workdir / "pw").write_text(PASSWORD + "\n")
        os.chmod(workdir / "pw", 0o644)
        superuser = _UNPRIVILEGED if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        init = [str(bindir / "initdb"), "-D", str(data), "-U", superuser, "-E", "UTF8",
                "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256", "-N"]  # fmt: skip
        with log.open("ab") as out:
            subprocess.run(_as_user(init), stdout=out, stderr=out, check=True, timeout=120)
        if os.geteuid() == 0:
            os.chown(log, pwd.getpwnam(_UNPRIVILEGED).pw_uid, _group())
        port = free_port()
        args = [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1",
                "-k", str(workdir), "-c", "fsync=off", "-c", "max_connections=200",
                "-c", "shared_buffers=16MB"]  # fmt: skip
        with log.open("ab") as out:
            process = subprocess.Popen(
                _as_user(args),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        server = PostgreSQL(process, workdir, port)
        wait_until(process, lambda: _answers(server), "postgres", log)
        with server.connect(superuser=True) as conn:
            conn.execute(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")  # type: ignore[arg-type]
            conn.execute(f"CREATE DATABASE {DATABASE} OWNER {USER}")  # type: ignore[arg-type]
        yield server
    except BaseException:
        print(tail(log))
        raise
    finally:
        if process is not None:
            stop(process)
        shutil.rmtree(workdir, ignore_errors=True)


def _answers(server: PostgreSQL) -> bool:
    try:
        import psycopg

        psycopg.connect(
            host=str(server.socket_dir),
            port=server.port,
            user=_UNPRIVILEGED if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name,
            dbname="postgres",
            connect_timeout=2,
        ).close()
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def postgresql() -> Iterator[PostgreSQL]:
    with running_postgresql() as server:
        yield server
