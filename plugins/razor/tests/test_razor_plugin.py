"""The razor plugin through filterd's chain runner.

Razor's servers are on the internet, so the positive path runs a stand-in ``razor-check``
that the test puts first on PATH (it records its input and exits as told); the real
``razor-check`` is run too, offline, where it must fail and the failure must follow on_error.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
from filterd_razor import Razor

from filterd.sdk import AddHeader, ConfigError, Continue, Quarantine, Reject, TempFail
from filterd.testing import run_plugin, validate_config

MESSAGE = (
    b"From: Alice <alice@example.net>\r\n"
    b"To: bob@example.org\r\n"
    b"Subject: razor test\r\n"
    b"\r\n"
    b"Some ordinary words in an ordinary body.\r\n"
)
STANDIN = """\
#!/bin/sh
# A stand-in for razor-check: records its arguments and input, then exits as the test says.
printf '%s\\n' "$@" > "$RAZOR_STANDIN_DIR/args"
echo $$ > "$RAZOR_STANDIN_DIR/pid"
cat > "$RAZOR_STANDIN_DIR/input"
if [ -n "$RAZOR_STANDIN_SLEEP" ]; then
    sleep "$RAZOR_STANDIN_SLEEP" &
    echo $! > "$RAZOR_STANDIN_DIR/child"
    wait
fi
[ -n "$RAZOR_STANDIN_STDERR" ] && echo "$RAZOR_STANDIN_STDERR" >&2
exit "${RAZOR_STANDIN_EXIT:-1}"
"""


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake razor-check first on PATH; returns the directory where it leaves its records."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "razor-check"
    script.write_text(STANDIN)
    script.chmod(0o755)
    records = tmp_path / "records"
    records.mkdir()
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("RAZOR_STANDIN_DIR", str(records))
    return records


def gone(pid: int) -> bool:
    """The process no longer runs (reaped, or a zombie waiting for its parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


def all_gone(pids: list[int], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not all(gone(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


async def test_listed_is_tagged(standin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAZOR_STANDIN_EXIT", "0")
    config = {"home": "/var/lib/razor", "args": ["-logfile=/dev/null"]}
    result = await run_plugin(Razor, config, message=MESSAGE)
    assert isinstance(result.final, Continue)
    assert result.edits == [AddHeader("X-Razor", "listed")]
    assert [(f.name, f.detail) for f in result.findings] == [("razor", "listed")]
    assert result.message.startswith(b"X-Razor: listed\r\nReceived: ")
    # razor-check got the message as filterd relays it (trace header first), on stdin.
    assert (standin / "input").read_bytes() == result.message.split(b"\r\n", 1)[1]
    assert (standin / "args").read_text().split() == ["-home=/var/lib/razor", "-logfile=/dev/null"]


async def test_not_listed_passes_untagged(standin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAZOR_STANDIN_EXIT", "1")
    result = await run_plugin(Razor, {"action_when_listed": "reject"}, message=MESSAGE)
    assert result.reply is None
    assert result.decided_at is None
    assert result.edits == []
    assert [(f.name, f.detail) for f in result.findings] == [("razor", "not listed")]
    assert b"X-Razor" not in result.message


async def test_listed_with_reject(standin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAZOR_STANDIN_EXIT", "0")
    config = {"action_when_listed": "reject", "reject_text": "Listed by Razor, go away"}
    result = await run_plugin(Razor, config, message=MESSAGE)
    assert isinstance(result.final, Reject)
    assert str(result.final.reply) == "550 5.7.1 Listed by Razor, go away"


async def test_listed_with_quarantine(standin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAZOR_STANDIN_EXIT", "0")
    result = await run_plugin(Razor, {"action_when_listed": "quarantine"}, message=MESSAGE)
    assert result.final == Quarantine(
        "listed by Razor", (AddHeader("X-Razor", "listed"),), tuple(result.findings)
    )


@pytest.mark.parametrize("status", ["2", "3", "127"])
async def test_error_exit_follows_on_error(
    standin: Path, monkeypatch: pytest.MonkeyPatch, status: str
) -> None:
    monkeypatch.setenv("RAZOR_STANDIN_EXIT", status)
    monkeypatch.setenv("RAZOR_STANDIN_STDERR", "nextserver: Bootstrap discovery failed.")
    result = await run_plugin(Razor, {"action_when_listed": "reject"}, message=MESSAGE)
    assert isinstance(result.final, TempFail)
    assert str(result.final.reply).startswith("451 4.3.0 ")
    assert result.results[-1].error == (
        f"RazorError: razor-check exited with {status}: nextserver: Bootstrap discovery failed."
    )
    continued = await run_plugin(Razor, {}, message=MESSAGE, on_error="continue")
    assert continued.reply is None
    assert continued.findings == []  # no "not listed" made up from an error


async def test_timeout_kills_razor_check_and_its_children(
    standin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAZOR_STANDIN_SLEEP", "30")
    started = time.monotonic()
    result = await run_plugin(Razor, {}, message=MESSAGE, plugin_timeout=0.5)
    assert time.monotonic() - started < 3
    assert isinstance(result.final, TempFail)
    assert str(result.final.reply).startswith("451 4.4.5 ")
    pids = [int((standin / name).read_text()) for name in ("pid", "child")]
    assert all_gone(pids)


async def test_large_message_is_not_checked(standin: Path) -> None:
    result = await run_plugin(Razor, {"max_size": 100}, message=MESSAGE)
    assert result.reply is None
    assert [f.name for f in result.findings] == ["razor.skipped"]
    assert not (standin / "input").exists()


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="not an executable on PATH"):
        validate_config(Razor, {"command": "no-such-razor-check"})
    with pytest.raises(ConfigError, match="max_parallel"):
        validate_config(Razor, {"max_parallel": 0})
    with pytest.raises(ConfigError, match="header name"):
        validate_config(Razor, {"tag_header": "X-Razor:"})
    with pytest.raises(ConfigError, match="action_when_listed"):
        validate_config(Razor, {"action_when_listed": "discard"})


def _razor_servers_reachable() -> bool:
    try:
        socket.getaddrinfo("discovery.razor.cloudmark.com", 2703)
    except OSError:
        return False
    return True


@pytest.mark.skipif(
    not Path("/usr/bin/razor-check").exists(), reason="razor-check is not installed"
)
async def test_real_razor_check_offline_follows_on_error(tmp_path: Path) -> None:
    if _razor_servers_reachable():
        pytest.skip("Razor's discovery server resolves: razor-check would really ask it")
    home = tmp_path / "razor"
    home.mkdir()
    config = {"command": "/usr/bin/razor-check", "home": str(home), "args": ["-logfile=/dev/null"]}
    result = await run_plugin(Razor, config, message=MESSAGE)
    assert isinstance(result.final, TempFail)
    assert result.reply is not None
    assert (result.reply.code, result.reply.status) == (451, "4.3.0")
    error = result.results[-1].error or ""
    assert error.startswith("RazorError: /usr/bin/razor-check exited with 2")
    assert "Bootstrap discovery failed" in error
