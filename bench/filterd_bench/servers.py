"""The servers under test: smtp-sink (the final hop), filterd, and Haraka 3 (installed by npm).

Each one listens on 127.0.0.1 only, on a free port, with its configuration and log in the run's
temporary directory; configuration templates live in ``bench/filterd.toml`` (its chain from
``filterd_bench.chains``) and ``bench/haraka/``. A filterd configuration is first checked with
``filterd check-config``: a setting this filterd refuses (``processes = 2`` on an SMTP listener
before that exists) raises ``FilterdRefused`` with filterd's own words, and the benchmark goes on
without that variant.
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

from filterd_bench.chains import ChainName, chain_toml
from filterd_bench.procs import BenchError, Child, Processes, free_port, wait_for_smtp
from filterd_bench.source import DOMAIN

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO = BENCH_DIR.parent
FILTERD_TEMPLATE = BENCH_DIR / "filterd.toml"  # $port $sink_port $log_level $processes $chain
HARAKA_TEMPLATES = BENCH_DIR / "haraka" / "config"
HARAKA_NODELAY = BENCH_DIR / "haraka" / "nodelay.js"
HARAKA_CACHE = BENCH_DIR / ".haraka"  # npm install target, kept between runs (not in git)
HARAKA_PACKAGE = "Haraka@3"
NPM_TIMEOUT = 600.0
SMTP_SINK = "/usr/sbin/smtp-sink"
START_TIMEOUT = 30.0
CHECK_TIMEOUT = 60.0


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


@dataclass(frozen=True)
class FilterdSettings:
    """What distinguishes the benchmark's filterd variants."""

    level: str  # [log] level: "info" (production) or "warning"
    chain: ChainName  # "seed": the embedded default's chain; "empty": none
    processes: int = 1  # the SMTP listener's processes

    def describe(self) -> str:
        chain = "seed chain" if self.chain == "seed" else "empty chain"
        return f"log {self.level}, {chain}, processes = {self.processes}"


class FilterdRefused(BenchError):
    """``filterd check-config`` refused the configuration (the message is filterd's)."""


def filterd_config(port: int, sink_port: int, settings: FilterdSettings) -> str:
    values = {
        "port": port,
        "sink_port": sink_port,
        "log_level": settings.level,
        "processes": settings.processes,
        "chain": chain_toml(settings.chain),
    }
    return Template(FILTERD_TEMPLATE.read_text()).substitute(values)


def check_config(config: Path) -> None:
    """``filterd check-config -c CONFIG``; ``FilterdRefused`` with its message if it fails."""
    argv = [str(filterd_binary()), "check-config", "-c", str(config)]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=CHECK_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"filterd check-config took over {CHECK_TIMEOUT:.0f} s") from None
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        raise FilterdRefused(" / ".join(lines[-3:]) or f"exit status {done.returncode}")


def start_filterd(
    procs: Processes,
    workdir: Path,
    sink_port: int,
    *,
    name: str = "filterd",
    settings: FilterdSettings,
) -> Server:
    """filterd relaying into the next hop at ``sink_port`` with ``settings``; its log (stderr)
    goes to a file in ``workdir``."""
    port = free_port()
    config = workdir / f"{name}.toml"
    config.write_text(filterd_config(port, sink_port, settings))
    check_config(config)
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
