"""spamd's children from its command line or /etc/default/spamd (spamd_probe.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from filterd.cli.doctor.spamd_probe import find_spamd_children, parse_spamd_options


@pytest.mark.parametrize(
    ("args", "children"),
    [
        ([], 5),
        (["--max-children", "3"], 3),
        (["--max-children=7"], 7),
        (["-m", "2"], 2),
        (["-m9"], 9),
        (["-d", "--create-prefs", "-m", "12", "--helper-home-dir"], 12),
    ],
)
def test_children(args: list[str], children: int) -> None:
    assert parse_spamd_options(args).children == children


def test_listening_places() -> None:
    assert parse_spamd_options([]).tcp == (("127.0.0.1", 783), ("::1", 783))
    options = parse_spamd_options(
        ["-i", "127.0.0.1:1783", "--listen=ssl:[::1]:1784", "-p", "999", "-i", "/run/s.sock"]
    )
    assert options.tcp == (("127.0.0.1", 1783), ("::1", 1784))
    assert options.unix == ("/run/s.sock",)
    assert parse_spamd_options(["-i", "-m", "3"]).tcp == (("*", 783),)
    assert parse_spamd_options(["--port", "1000", "--listen", "0.0.0.0"]).tcp == (
        ("0.0.0.0", 1000),
    )


def _proc(root: Path, pid: int, argv: list[str]) -> None:
    (root / str(pid)).mkdir()
    (root / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")


def test_a_running_spamd_and_its_children(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    _proc(
        proc, 10, ["/usr/bin/perl", "-T -w", "/usr/sbin/spamd", "-i", "127.0.0.1:1783", "-m", "1"]
    )
    _proc(proc, 11, ["spamd child"])
    _proc(proc, 12, ["/usr/sbin/spamd --create-prefs --max-children 8 -d"])  # a process title
    _proc(proc, 13, ["/usr/bin/vim", "spamd"])
    found = find_spamd_children(("127.0.0.1", 1783), proc=proc, default_files=[])
    assert found is not None
    assert (found.children, found.source) == (1, "the running spamd (pid 10)")
    found = find_spamd_children(("localhost", 783), proc=proc, default_files=[])
    assert found is not None
    assert found.children == 8
    assert find_spamd_children(("127.0.0.1", 9999), proc=proc, default_files=[]) is None
    assert find_spamd_children("/run/spamd.sock", proc=proc, default_files=[]) is None


def test_etc_default_spamd(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    default = tmp_path / "spamd"
    default.write_text('# spamd\nOPTIONS="--create-prefs --max-children 3 --helper-home-dir"\n')
    found = find_spamd_children(("127.0.0.1", 783), proc=proc, default_files=[default])
    assert found is not None
    assert (found.children, found.source) == (3, f"OPTIONS in {default}")
    assert find_spamd_children(("127.0.0.1", 1783), proc=proc, default_files=[default]) is None
