"""Installed as a user would, filterd runs: wheels built from the checkout, installed into a
fresh virtualenv, serve the embedded default configuration and deliver a message.

The commands are the ones docs/deploy.md gives, run offline: what they would fetch from PyPI
(setuptools, trio, pydantic, ...) comes from the wheelhouse `make install` prepares
(.venv/wheelhouse), with ``--no-index --find-links``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import smtplib
import subprocess
import sys
import venv
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest

from filterd.cli.plugins import BUILT_IN

ROOT = Path(__file__).resolve().parents[2]
WHEELHOUSE = ROOT / ".venv" / "wheelhouse"
TIMEOUT = 300.0
SOURCES = ("pyproject.toml", "README.md", "Makefile", "filterd", "plugins")
BUILD_OUTPUTS = ("build/", "*.egg-info/")  # what building leaves in a checkout: .gitignore'd

# The install commands of README.md and docs/deploy.md, run here as written.
INSTALL_FROM_CHECKOUT = "pip install '.[plugins]' ./plugins/*/"
BUILD_WHEELS = "pip wheel --wheel-dir dist '.[plugins]' ./plugins/*/"
INSTALL_PRODUCTION = "make install-prod"
INSTALL_WHEELS = "pip install --no-index --find-links dist 'filterd[plugins]'"
DOCUMENTED = {INSTALL_FROM_CHECKOUT, BUILD_WHEELS, INSTALL_WHEELS}


def offline_env(bin_dir: Path, *, find_links: Path | None = None) -> dict[str, str]:
    """``pip`` is ``bin_dir``'s; no pip configuration of the machine, no package index: what
    pip would fetch comes from ``find_links``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV"))
    }
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', os.defpath)}",
        PIP_CONFIG_FILE=os.devnull,
        PIP_NO_INDEX="1",
        PIP_NO_CACHE_DIR="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
    )
    if find_links is not None:
        env["PIP_FIND_LINKS"] = str(find_links)
    return env


def shell(
    command: str, cwd: Path, env: dict[str, str], *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    if check:
        assert done.returncode == 0, f"{command}:\n{done.stdout}\n{done.stderr}"
    return done


def fresh_venv(where: Path) -> Path:
    """A new virtualenv (with pip); its bin/."""
    venv.EnvBuilder(with_pip=True).create(where)
    return where / "bin"


def files_below(top: Path) -> set[Path]:
    return {path.relative_to(top) for path in top.rglob("*") if not path.is_dir()}


@dataclass
class Built:
    checkout: Path  # a copy of the checkout's sources, built in
    dist: Path  # the wheels: filterd's, its plugins', and their dependencies'
    left_behind: set[Path]  # files the build added to the checkout


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """``BUILD_WHEELS`` in a copy of the checkout (pip wheel with build isolation)."""
    if not (WHEELHOUSE / ".complete").exists():
        pytest.fail(f"no wheelhouse in {WHEELHOUSE}: run `make install`")
    checkout = tmp_path_factory.mktemp("packaging") / "filterd"
    checkout.mkdir()
    ignore = shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__")
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, checkout / name, ignore=ignore)
        else:
            shutil.copy2(source, checkout / name)
    before = files_below(checkout)
    env = offline_env(Path(sys.executable).parent, find_links=WHEELHOUSE)
    shell(BUILD_WHEELS, checkout, env)
    left_behind = {path for path in files_below(checkout) - before if path.parts[0] != "dist"}
    return Built(checkout, checkout / "dist", left_behind)


@dataclass
class Installed:
    bin: Path  # the fresh virtualenv's bin/
    core_alone: subprocess.CompletedProcess[str]  # `filterd check-config` before the plugins


@pytest.fixture(scope="module")
def installed(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """A fresh virtualenv: filterd alone from the wheels, then ``INSTALL_WHEELS``."""
    bin_dir = fresh_venv(tmp_path_factory.mktemp("wheels") / "venv")
    env = offline_env(bin_dir)
    shell(INSTALL_WHEELS.replace("'filterd[plugins]'", "filterd"), built.checkout, env)
    core_alone = shell("filterd check-config", built.checkout, env, check=False)
    shell(INSTALL_WHEELS, built.checkout, env)
    return Installed(bin_dir, core_alone)


def test_the_build_leaves_only_what_gitignore_names(built: Built) -> None:
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert set(BUILD_OUTPUTS) <= set(ignored)
    assert built.left_behind  # the check below looks at something
    for path in built.left_behind:
        assert any(part == "build" or part.endswith(".egg-info") for part in path.parts), path


def test_the_wheels_are_filterd_and_its_plugins(built: Built) -> None:
    names = {wheel.name.split("-")[0] for wheel in built.dist.glob("*.whl")}
    ours = {"filterd", *(dist.replace("-", "_") for dist in BUILT_IN.values())}
    assert ours <= names
    assert {"trio", "pydantic", "regex", "pyspf"} <= names  # from the wheelhouse


def test_the_core_alone_says_how_to_install_the_plugins(installed: Installed) -> None:
    done = installed.core_alone
    assert done.returncode == 2
    assert done.stdout == ""
    assert re.fullmatch(
        r"<embedded default>:\d+: chain\[0\]\.plugin: no plugin called 'header_checks' is "
        r"installed \(installed: none\) \(fix: header_checks is a built-in plugin "
        r"\(filterd-header-checks\): install filterd with its plugins: pip install "
        r"'\.\[plugins\]' \./plugins/\*/ in a source checkout, or pip install --no-index "
        r"--find-links DIR 'filterd\[plugins\]' from a directory of wheels \(docs/deploy\.md\)\)\n",
        done.stderr,
    ), done.stderr


def test_filterd_plugins_lists_the_built_in_plugins(installed: Installed, tmp_path: Path) -> None:
    out = shell("filterd plugins", tmp_path, offline_env(installed.bin)).stdout
    listed = re.findall(r"^(\w+)  \(", out, re.MULTILINE)
    assert listed == sorted(BUILT_IN)
    assert "UNUSABLE" not in out


@pytest.fixture
def serving(installed: Installed, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """``filterd run`` on the installed embedded default, on a free port: (port, workdir)."""
    (packaged,) = (installed.bin.parent / "lib").glob("python3*/site-packages/filterd")
    default = (packaged / "config" / "defaults.toml").read_text()
    assert 'address = "127.0.0.1:10025"' in default
    config = tmp_path / "filterd.toml"
    config.write_text(default.replace('"127.0.0.1:10025"', '"127.0.0.1:0"'))
    proc = subprocess.Popen(
        [installed.bin / "filterd", "run", "-c", config],
        cwd=tmp_path,
        env=offline_env(installed.bin),
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        match = re.search(r"listening on 127\.0\.0\.1:(\d+) \(smtp\)", first)
        assert match is not None, first + proc.stderr.read()
        yield int(match.group(1)), tmp_path
    finally:
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, rest


def test_filterd_run_delivers_a_message(serving: tuple[int, Path]) -> None:
    port, workdir = serving
    message = EmailMessage()
    message["From"] = "sender@example.com"
    message["To"] = "cactus@virtualdomain.tld"
    message["Subject"] = "installed from wheels"
    message["User-Agent"] = "test mailer 1.0"
    message.set_content("Hello from a fresh virtualenv.\n")
    with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
        refused = client.send_message(message)
    assert refused == {}
    (delivered,) = (workdir / "var" / "mail" / "virtualdomain.tld" / "cactus" / "new").iterdir()
    text = delivered.read_text()
    assert "Subject: installed from wheels\n" in text
    assert "Hello from a fresh virtualenv." in text
    assert "User-Agent:" not in text  # header_checks ran: the default rules IGNORE it


def test_the_checkout_installs_with_its_plugins(
    built: Built, tmp_path_factory: pytest.TempPathFactory
) -> None:
    bin_dir = fresh_venv(tmp_path_factory.mktemp("checkout") / "venv")
    env = offline_env(bin_dir, find_links=WHEELHOUSE)
    shell(INSTALL_FROM_CHECKOUT, built.checkout, env)
    out = shell("filterd plugins", built.checkout, env).stdout
    assert re.findall(r"^(\w+)  \(", out, re.MULTILINE) == sorted(BUILT_IN)
    shell("filterd check-config", built.checkout, env)


@pytest.mark.parametrize("doc", ["README.md", "docs/deploy.md"])
def test_the_documented_install_commands_are_the_tested_ones(doc: str) -> None:
    text = (ROOT / doc).read_text()
    commands = {
        command.strip()
        for command in re.findall(r"(?:^|`)[ \t]*(pip (?:install|wheel) [^`#\n]*)", text, re.M)
    }
    assert commands, f"{doc} shows no install command"
    assert commands <= DOCUMENTED, commands - DOCUMENTED


def test_the_production_install_puts_filterd_on_path_without_dev_tools_or_test_plugin(
    built: Built, tmp_path: Path
) -> None:
    """``make install-prod`` (docs/deploy.md) into a PREFIX and BINDIR of the test's own."""
    prefix, bindir = tmp_path / "opt" / "filterd", tmp_path / "bin"
    env = offline_env(Path(sys.executable).parent, find_links=WHEELHOUSE)
    done = shell(
        f"{INSTALL_PRODUCTION} PREFIX={prefix} BINDIR={bindir} PYTHON3={sys.executable}",
        built.checkout,
        env,
    )
    listed = re.findall(r"^(\w+)  \(", done.stdout, re.MULTILINE)
    assert listed == sorted(BUILT_IN)  # example_tagger, the test plugin, is not there
    on_path = {**offline_env(bindir), "PATH": f"{bindir}{os.pathsep}{os.defpath}"}
    assert shell("command -v filterd", tmp_path, on_path).stdout.strip() == str(bindir / "filterd")
    shell("filterd check-config", tmp_path, on_path)
    installed = {path.name for path in (prefix / "bin").iterdir()}
    assert "filterd" in installed
    assert not installed & {"pytest", "ruff", "mypy", "lint-imports", "hypothesis"}
    shell(f"{prefix}/bin/python -c 'import milter, Milter'", tmp_path, on_path)  # the milter door
