"""The servers under test: smtp-sink (the final hop), filterd, and Haraka 3 (installed by npm).

Each one listens on 127.0.0.1 only, on a free port, with its configuration and log in the run's
temporary directory; configuration templates live in ``bench/filterd.toml`` (plus
``bench/filterd-header_checks.toml`` for the header_checks chain) and ``bench/haraka/``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from string import Template

from filterd_bench.procs import BenchError, Child, Processes, free_port, wait_for_smtp
from filterd_bench.source import DOMAIN

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO = BENCH_DIR.parent
FILTERD_TEMPLATE = BENCH_DIR / "filterd.toml"
HEADER_CHECKS_CHAIN = BENCH_DIR / "filterd-header_checks.toml"  # appended: the chain
HEADER_CHECKS_TABLE = BENCH_DIR / "header_checks.regexp"
HARAKA_TEMPLATES = BENCH_DIR / "haraka" / "config"
HARAKA_NODELAY = BENCH_DIR / "haraka" / "nodelay.js"
HARAKA_CACHE = BENCH_DIR / ".haraka"  # npm install target, kept between runs (not in git)
HARAKA_PACKAGE = "Haraka@3"
NPM_TIMEOUT = 600.0
SMTP_SINK = "/usr/sbin/smtp-sink"
START_TIMEOUT = 30.0


@dataclass
class Server:
    child: Child
    port: int

    @property
    def pid(self) -> int:
        """The server's process id, also its process group's id."""
        return self.child.pid


def start_sink(procs: Processes, workdir: Path) -> Server:
    """smtp-sink: accepts and discards everything; as root it must drop privileges (-u)."""
    port = free_port()
    argv = [SMTP_SINK, "-m", "1000", f"127.0.0.1:{port}", "1000"]
    if os.geteuid() == 0:
        argv[1:1] = ["-u", "nobody"]
    child = procs.start("smtp-sink", argv, log=workdir / "smtp-sink.log")
    wait_for_smtp(child, port, START_TIMEOUT)
    return Server(child, port)


def filterd_binary() -> Path:
    candidate = Path(sys.executable).parent / "filterd"
    if candidate.exists():
        return candidate
    found = shutil.which("filterd")
    if found is None:
        raise BenchError("no filterd executable next to this Python or on PATH (make install)")
    return Path(found)


def start_filterd(
    procs: Processes,
    workdir: Path,
    sink_port: int,
    *,
    name: str = "filterd",
    level: str,
    header_checks: bool = False,
) -> Server:
    """filterd relaying into the sink: with an empty chain, or with ``header_checks`` the
    header_checks plugin on bench/header_checks.regexp as its chain."""
    port = free_port()
    config = workdir / f"{name}.toml"
    text = FILTERD_TEMPLATE.read_text()
    if header_checks:
        text += "\n" + HEADER_CHECKS_CHAIN.read_text()
    values = {
        "port": port,
        "sink_port": sink_port,
        "log_level": level,
        "table": HEADER_CHECKS_TABLE,
    }
    config.write_text(Template(text).substitute(values))
    argv = [str(filterd_binary()), "run", "-c", str(config)]
    child = procs.start(name, argv, log=workdir / f"{name}.log")
    wait_for_smtp(child, port, START_TIMEOUT)
    return Server(child, port)


class HarakaUnavailable(Exception):
    """Haraka could not be installed or started; the benchmark goes on without it."""


def install_haraka() -> tuple[Path, str]:
    """``npm install Haraka@3`` into bench/.haraka/ unless it is there; the haraka binary and
    its version."""
    package_json = HARAKA_CACHE / "node_modules" / "Haraka" / "package.json"
    binary = HARAKA_CACHE / "node_modules" / ".bin" / "haraka"
    if not _haraka_version(package_json).startswith("3."):
        for tool in ("node", "npm"):
            if shutil.which(tool) is None:
                raise HarakaUnavailable(f"{tool} is not on PATH")
        HARAKA_CACHE.mkdir(exist_ok=True)
        print(f"installing {HARAKA_PACKAGE} into {HARAKA_CACHE} (npm) ...", flush=True)
        argv = ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"]
        argv += ["--prefix", str(HARAKA_CACHE), HARAKA_PACKAGE]
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=NPM_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            raise HarakaUnavailable(f"npm install took over {NPM_TIMEOUT:.0f} s") from None
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-10:])
            raise HarakaUnavailable(f"npm install failed (exit {done.returncode}):\n{tail}")
    version = _haraka_version(package_json)
    if not version.startswith("3.") or not binary.exists():
        raise HarakaUnavailable(f"no Haraka 3 in {HARAKA_CACHE} after npm install")
    return binary, version


def _haraka_version(package_json: Path) -> str:
    try:
        return str(json.loads(package_json.read_text()).get("version", ""))
    except (OSError, ValueError):
        return ""


def start_haraka(
    procs: Processes, workdir: Path, binary: Path, sink_port: int, *, nodes: int, nodelay: bool
) -> Server:
    """Haraka as a forwarding relay into the sink: ``haraka -i`` makes a skeleton, then our
    templates replace its configuration. ``nodes=0`` is one process; N > 0 is a cluster.
    ``nodelay`` preloads bench/haraka/nodelay.js (TCP_NODELAY on its outgoing connections)."""
    name = f"haraka-nodes{nodes}" + ("-nodelay" if nodelay else "")
    home = workdir / name
    port = free_port()
    done = subprocess.run(
        [str(binary), "-i", str(home)], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise HarakaUnavailable(f"haraka -i failed: {done.stdout}{done.stderr}".strip())
    values = {"port": port, "nodes": nodes, "sink_port": sink_port, "domain": DOMAIN}
    for template in sorted(HARAKA_TEMPLATES.iterdir()):
        text = Template(template.read_text()).substitute(values)
        (home / "config" / template.name).write_text(text)
    env = dict(os.environ, HARAKA=str(home))
    if nodelay:
        env["NODE_OPTIONS"] = f"{env.get('NODE_OPTIONS', '')} --require {HARAKA_NODELAY}".strip()
    child = procs.start(name, [str(binary), "-c", str(home)], log=workdir / f"{name}.log", env=env)
    try:
        wait_for_smtp(child, port, START_TIMEOUT)
    except BenchError as exc:
        procs.stop(child)
        raise HarakaUnavailable(str(exc)) from None
    return Server(child, port)
