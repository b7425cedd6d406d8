"""The command line: check-config, run, --version and their exit statuses."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import types
from pathlib import Path

import pytest

from filterd import __version__
from filterd.cli.main import main
from filterd.config.load import load_config, parse_config
from filterd.config.schema import Config

BAD = '[[listen]]\naddress = "127.0.0.1:10025"\n\n[limits]\ncommand_timeout = "thirty"\n'


@pytest.fixture
def bad_config(tmp_path: Path) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(BAD + '[delivery]\nmethod = "maildir"\n', encoding="utf-8")
    return path


def test_check_config_prints_the_effective_configuration(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check-config"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert tomllib.loads(out)["listen"][0]["address"] == "127.0.0.1:10025"
    again = parse_config(out, source="<embedded default>")
    # equal but for the TOML text each was read from (the printed one reads differently)
    assert again.model_copy(update={"text": ""}) == load_config(None).model_copy(
        update={"text": ""}
    )


def test_check_config_with_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "filterd.toml"
    path.write_text(
        '[[listen]]\naddress = "[::1]:2525"\n[delivery]\nmethod = "relay"\n'
        'next_hop = "127.0.0.1:10026"\n',
        encoding="utf-8",
    )
    assert main(["check-config", "-c", str(path)]) == 0
    out, _ = capsys.readouterr()
    assert out.startswith(f'# filterd: effective configuration, from "{path}"\n')
    assert 'next_hop = "127.0.0.1:10026"' in out
    assert 'connect_timeout = "30s"' in out


def test_check_config_with_a_bad_file(bad_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--config", str(bad_config)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(
        f'{bad_config}:5: limits.command_timeout: expected a duration such as "30s", got "thirty"'
    )


def test_run_with_a_bad_file_exits_2(bad_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "-c", str(bad_config)]) == 2
    assert f"{bad_config}:5: " in capsys.readouterr().err


def test_run_hands_the_config_to_the_supervisor(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Config] = []

    def fake_main(config: Config, **_reload: object) -> int:
        seen.append(config)
        return 3

    supervisor = types.ModuleType("filterd.runtime.supervisor")
    supervisor.main = fake_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "filterd.runtime.supervisor", supervisor)
    assert main(["run"]) == 3
    assert seen == [load_config(None)]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"filterd {__version__}\n"


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["frobnicate"]) == 2
    assert "usage: filterd" in capsys.readouterr().err


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "filterd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_module_check_config_ok() -> None:
    result = run_module("check-config")
    assert result.returncode == 0, result.stderr
    assert tomllib.loads(result.stdout)["delivery"]["method"] == "maildir"


def test_module_check_config_bad_file_has_no_traceback(bad_config: Path) -> None:
    for command in ("check-config", "run"):
        result = run_module(command, "-c", str(bad_config))
        assert result.returncode == 2
        assert result.stdout == ""
        assert result.stderr.startswith(f"{bad_config}:5: limits.command_timeout: ")
        assert "Traceback" not in result.stderr


def test_output_into_a_closed_pipe_is_not_a_traceback() -> None:
    """`filterd plugins | head -1`: the reader has gone; filterd stops without a traceback."""
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads: every write fails with EPIPE
    try:
        writer = subprocess.run(
            [sys.executable, "-m", "filterd", "plugins"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            check=False,
        )
    finally:
        os.close(write_end)
    assert b"Traceback" not in writer.stderr
    assert writer.returncode == 1
