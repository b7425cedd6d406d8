"""deploy/systemd/filterd.service: ``systemd-analyze verify`` finds nothing wrong with it, and
``systemd-analyze security`` gives the exposure docs/deploy.md states (OK or better). Both run
offline, on a copy whose ExecStart= is this checkout's filterd (verify checks that the command
exists); no systemd needs to be running."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "filterd.service"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
INSTALLED = "/opt/filterd/bin/filterd"  # where the unit expects filterd (docs/deploy.md)
TIMEOUT = 120.0
GOOD_ENOUGH = ("PERFECT", "SAFE", "OK")  # systemd-analyze security's levels, best first


def settings(text: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of the unit, by key (a key may repeat), comments left out."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith(("#", ";", "[")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        found.setdefault(key.strip(), []).append(value.strip())
    return found


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    """A copy of the unit that starts this checkout's filterd."""
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing (deploy/install-system-packages.sh installs it)")
    text = UNIT.read_text()
    assert f"ExecStart={INSTALLED} run" in text
    filterd = Path(sys.executable).with_name("filterd")
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(f"ExecStart={INSTALLED} ", f"ExecStart={filterd} "))
    return copy


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def test_systemd_analyze_verify_finds_nothing(unit: Path) -> None:
    done = analyze("verify", str(unit))
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_verify_would_say_so(unit: Path) -> None:
    """The check above can fail: a misspelt setting is reported."""
    unit.write_text(unit.read_text().replace("NoNewPrivileges=", "NoNewPrivilege="))
    done = analyze("verify", str(unit))
    assert "Unknown key 'NoNewPrivilege' in section [Service]" in done.stderr


def test_the_exposure_docs_deploy_states(unit: Path) -> None:
    done = analyze("security", "--offline=true", str(unit))
    assert done.returncode == 0, done.stderr
    found = re.search(r"Overall exposure level for filterd\.service: (\d+\.\d) (\w+)", done.stdout)
    assert found is not None, done.stdout
    score, level = found.groups()
    assert level in GOOD_ENOUGH, done.stdout
    stated = f"`systemd-analyze security` exposure: **{score} {level}**"
    assert stated in DEPLOY_DOC.read_text(), f"docs/deploy.md should say: {stated}"


def test_what_the_unit_promises() -> None:
    unit = settings(UNIT.read_text())
    assert unit["Type"] == ["notify"]  # filterd sends READY=1 (filterd.runtime.sd_notify)
    assert unit["NotifyAccess"] == ["main"]  # only the main process notifies
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["WatchdogSec"] == ["30s"]
    assert unit["User"] == unit["Group"] == ["filterd"]
    assert unit["ProtectSystem"] == ["strict"]
    assert unit["ReadWritePaths"]
    assert unit["NoNewPrivileges"] == unit["PrivateTmp"] == ["yes"]
    assert unit["CapabilityBoundingSet"] == unit["AmbientCapabilities"] == [""]
    assert unit["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert unit["SystemCallFilter"][0] == "@system-service"
    # filterd stops its workers itself, within shutdown_grace (30 s) + its plugins' 5 s.
    assert unit["KillMode"] == ["mixed"]
    assert unit["TimeoutStopSec"] == ["60s"]
