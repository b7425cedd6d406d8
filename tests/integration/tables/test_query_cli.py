"""``filterd query`` prints and exits as ``postmap -q`` on the same tables: one key, ``-``
(keys from stdin), several keys (answered as ``-``), ``-f``, not found, a failing table, a
missing file."""

from __future__ import annotations

import io
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from filterd.cli.main import main
from tests.integration.tables.file_data import write_cold
from tests.support.postmap import Postmap

SOURCE = "Foo@Example.com\tOK\nbar@example.com 550 5.7.1 no\n.example.org REJECT\nÄrger ja\n"
CIDR = "192.0.2.0/24 cidr-net\n2001:db8::/32 cidr-v6\n"
STDIN_KEYS = "foo@example.com\nFOO@EXAMPLE.COM\nnone\n.example.org\närger\n"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def filterd_query(*args: str, stdin: str = "") -> Result:
    """``filterd query ARGS`` in this process (a new interpreter per query would make the
    test slow; test_query_command_runs checks the installed command once)."""
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin.encode()))
    sys.stdout, sys.stderr = out, err
    try:
        status = main(["query", *args])
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
    return Result(status, out.getvalue(), err.getvalue())


def postmap_query(postmap: Postmap, *args: str, stdin: str = "") -> tuple[int, str, str]:
    proc = postmap.run(*args, stdin=stdin.encode())
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


@pytest.fixture(scope="module")
def tables(postmap: Postmap, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("query")
    source = write_cold(directory / "access", SOURCE)
    cidr = write_cold(directory / "clients.cidr", CIDR)
    for kind in ("lmdb", "cdb"):
        postmap.build(f"{kind}:{source}")
    return {
        "texthash": f"texthash:{source}",
        "lmdb": f"lmdb:{source}",
        "cdb": f"cdb:{source}",
        "cidr": f"cidr:{cidr}",
        "inline": "inline:{ foo@example.com=inline, {x = y z} }",
        "unionmap": f"unionmap:{{texthash:{source}, inline:{{foo@example.com=2}}}}",
    }


CASES = [
    ["foo@example.com"],
    ["FOO@EXAMPLE.COM"],
    ["Ärger"],
    ["nothing@example.com"],
    ["192.0.2.9"],
    ["2001:DB8::1"],
    ["-f", "foo@example.com"],
    ["-f", "Foo@Example.com"],
]


@pytest.mark.parametrize("kind", ["texthash", "lmdb", "cdb", "cidr", "inline", "unionmap"])
def test_query_like_postmap(postmap: Postmap, tables: dict[str, str], kind: str) -> None:
    table = tables[kind]
    found = 0
    for case in CASES:
        *options, key = case
        status, out, err = postmap_query(postmap, *options, "-q", key, table)
        proc = filterd_query(*options, table, key)
        assert (proc.returncode, proc.stdout, proc.stderr) == (status, out, ""), (case, err)
        found += status == 0
    # keys from stdin, and several keys answered the same way
    status, out, _ = postmap_query(postmap, "-q", "-", table, stdin=STDIN_KEYS)
    proc = filterd_query(table, "-", stdin=STDIN_KEYS)
    assert (proc.returncode, proc.stdout) == (status, out)
    proc = filterd_query(table, *STDIN_KEYS.split())
    assert (proc.returncode, proc.stdout) == (status, out)
    assert found, "no key found: the comparison would prove little"


def test_query_not_found_from_stdin(postmap: Postmap, tables: dict[str, str]) -> None:
    stdin = "none\nnothing\n"
    assert postmap_query(postmap, "-q", "-", tables["lmdb"], stdin=stdin)[:2] == (1, "")
    proc = filterd_query(tables["lmdb"], "-", stdin=stdin)
    assert (proc.returncode, proc.stdout) == (1, "")


def test_query_failure(postmap: Postmap) -> None:
    status, out, err = postmap_query(postmap, "-q", "x", "fail:x")
    proc = filterd_query("fail:x", "x")
    assert (proc.returncode, proc.stdout) == (status, out) == (1, "")
    assert proc.stderr == err.replace("postmap: fatal:", "filterd: fatal:")
    assert proc.stderr == "filterd: fatal: table fail:x: query error: Application error\n"


def test_query_missing_file(postmap: Postmap, tmp_path: Path) -> None:
    table = f"lmdb:{tmp_path / 'nonexistent'}"
    status, out, err = postmap_query(postmap, "-q", "x", table)
    proc = filterd_query(table, "x")
    assert (proc.returncode, proc.stdout) == (status, out) == (1, "")
    reason = err.split("fatal: ", 1)[1].strip()  # open database ...: No such file or directory
    assert proc.stderr.startswith(f"filterd: fatal: table {table}: {reason}")


def test_query_unknown_type() -> None:
    proc = filterd_query("nosuch:x", "key")
    assert proc.returncode == 1
    assert proc.stderr.startswith('filterd: fatal: table nosuch:x: unsupported table type "nosuch"')


def test_query_command_runs(postmap: Postmap, tables: dict[str, str]) -> None:
    """The installed command, with its own stdin and stdout."""
    table = tables["lmdb"]
    for args, stdin in [(["FOO@example.com"], ""), (["nothing"], ""), (["-"], STDIN_KEYS)]:
        status, out, _ = postmap_query(postmap, "-q", *args, table, stdin=stdin)
        proc = subprocess.run(
            [sys.executable, "-m", "filterd", "query", table, *args],
            input=stdin.encode(),
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert (proc.returncode, proc.stdout.decode()) == (status, out), proc.stderr
