"""A private MariaDB for the mysql: table tests and the benchmark.

``running_mariadb()`` initialises a data directory in a fresh temporary directory
(``mariadb-install-db --no-defaults``), starts ``mariadbd --no-defaults`` in its own process
group on a private UNIX socket and a free loopback port, creates the database ``filterd`` and
a user ``filterd`` (password ``secret``) allowed from 127.0.0.1 and the socket, and yields once
it answers. On exit it stops the server by PID (SIGTERM, then SIGKILL) and removes the
directory. The Debian package's own service is never started::

    with running_mariadb() as db:
        db.execute("CREATE TABLE t (k TEXT)")
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.dbservers import free_port, stop, tail, wait_until

MARIADBD = "/usr/sbin/mariadbd"
INSTALL_DB = "/usr/bin/mariadb-install-db"
USER = "filterd"
PASSWORD = "secret"
DATABASE = "filterd"


def mariadb_installed() -> bool:
    return Path(MARIADBD).exists() and Path(INSTALL_DB).exists()


@dataclass
class MariaDB:
    process: subprocess.Popen[bytes]
    workdir: Path
    port: int

    @property
    def socket(self) -> Path:
        return self.workdir / "mysqld.sock"

    @property
    def pid(self) -> int:
        return self.process.pid

    def connect(self, *, root: bool = False, database: str | None = DATABASE) -> Any:
        import pymysql

        return pymysql.connect(
            unix_socket=str(self.socket),
            user="root" if root else USER,
            password="" if root else PASSWORD,
            database=database,
            autocommit=True,
            charset="utf8mb4",
        )

    def execute(self, *statements: str, params: list[tuple[object, ...]] | None = None) -> None:
        """Run statements as root in the test database; with ``params`` the one statement
        runs once per tuple (executemany)."""
        conn = self.connect(root=True)
        try:
            with conn.cursor() as cursor:
                if params is not None:
                    cursor.executemany(statements[0], params)
                else:
                    for statement in statements:
                        cursor.execute(statement)
        finally:
            conn.close()

    def stop(self) -> None:
        stop(self.process)


@contextlib.contextmanager
def running_mariadb() -> Iterator[MariaDB]:
    if not mariadb_installed():
        raise RuntimeError(f"{MARIADBD} is not installed (deploy/install-system-packages.sh)")
    workdir = Path(tempfile.mkdtemp(prefix="filterd-mariadb-"))
    process: subprocess.Popen[bytes] | None = None
    log = workdir / "mariadb.log"
    try:
        data = workdir / "data"
        user = ["--user=root"] if os.geteuid() == 0 else []
        with log.open("ab") as out:
            subprocess.run(
                [INSTALL_DB, "--no-defaults", f"--datadir={data}", *user, "--skip-test-db",
                 "--auth-root-authentication-method=normal", "--skip-name-resolve"],
                stdout=out, stderr=out, check=True, timeout=120,
            )  # fmt: skip
        port = free_port()
        args = [MARIADBD, "--no-defaults", f"--datadir={data}", f"--socket={workdir}/mysqld.sock",
                f"--port={port}", "--bind-address=127.0.0.1", f"--pid-file={workdir}/mysqld.pid",
                "--skip-name-resolve", "--skip-log-bin", "--innodb-buffer-pool-size=16M",
                f"--log-error={log}", *user]  # fmt: skip
        with log.open("ab") as out:
            process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )
        server = MariaDB(process, workdir, port)
        wait_until(process, lambda: _answers(server), "mariadbd", log)
        _bootstrap(server)
        yield server
    except BaseException:
        if process is not None:
            print(tail(log))
        raise
    finally:
        if process is not None:
            stop(process)
        shutil.rmtree(workdir, ignore_errors=True)


def _bootstrap(server: MariaDB) -> None:
    conn = server.connect(root=True, database=None)
    try:
        with conn.cursor() as cursor:
            for statement in (
                f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4",
                f"CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'",
                f"CREATE USER '{USER}'@'localhost' IDENTIFIED BY '{PASSWORD}'",
                f"GRANT ALL ON {DATABASE}.* TO '{USER}'@'127.0.0.1'",
                f"GRANT ALL ON {DATABASE}.* TO '{USER}'@'localhost'",
            ):
                cursor.execute(statement)
    finally:
        conn.close()


def _answers(server: MariaDB) -> bool:
    if not server.socket.exists():
        return False
    try:
        server.connect(root=True, database=None).close()
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDB]:
    with running_mariadb() as server:
        yield server
