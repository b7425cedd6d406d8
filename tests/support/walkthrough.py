"""docs/deploy.md's walk-through, taken from the document and run on this machine.

A walk-through step is every fenced block that follows a ``<!-- walkthrough: NAME -->`` comment
in docs/deploy.md (several blocks may share a name; they run in the document's order). A block
is either commands (``sh``) or a file: a block whose first line is ``# /absolute/path`` is that
file's whole content (``/etc/filterd/filterd.toml``, ``/etc/default/spamd``).

What is changed before a block runs (``Adapter``), and nothing else:

- **Paths**: the directories the document names (``/etc/filterd``, ``/etc/systemd/system``,
  ``/var/lib/filterd``, ``/var/spool/filterd``, ``/run/filterd``, ``/etc/default/spamd``,
  ``/etc/hosts``) are the
  same paths below a temporary directory standing for that host's ``/``; ``/etc/postfix`` is
  the private Postfix's configuration directory. The commands run in a copy of the checkout's
  ``deploy/`` directory, adapted the same way, so ``cat deploy/postfix/...`` reads the adapted
  snippets.
- **Ports**: each well-known port of the document (10025, 10026, 10029, 10040, spamd's 783)
  becomes a free one; port 25 (``127.0.0.1:25``, and master.cf's ``smtp`` service) is the
  private Postfix's inbound smtpd.
- **Addresses**: the documentation network 192.0.2.0/24 becomes 127.0.0.0/24, same last
  octet, so every host of the walk-through is an address of this machine's loopback.

Commands run with bash (``set -euo pipefail``) and ``MAIL_CONFIG`` naming the private Postfix,
so ``postconf`` and ``postfix`` act on it; ``filterd`` is this checkout's. A few commands cannot
run here as they would on a server, and are recorded instead (``Event``) for the test to carry
out when the block is done: ``filterd run`` (the test starts filterd and stops it at the end),
``systemctl`` (the test starts spamd the way Debian's unit does, or (re)starts filterd as the
installed unit's ``ExecStart`` says), ``adduser`` and ``chgrp`` (the service user: the test
runs filterd as root, allowed by ``FILTERD_ALLOW_ROOT``; ``install`` drops its ``-o``/``-g``) and
``apt-get`` (the packages are installed already: the test checks they are the ones
deploy/install-system-packages.sh installs). ``swaks`` runs, and its exit status and output are
recorded, so that a refusal the document promises does not stop the block.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.postfix import REPO_ROOT, with_hosts_file

DEPLOY_MD = REPO_ROOT / "docs" / "deploy.md"
STEP_TIMEOUT = 120.0

DOC_PORTS = (783, 10025, 10026, 10029, 10040)
"""The ports the document names (besides 25): each must be mapped before a block uses it."""

HOST_PATHS = (
    "/etc/filterd",
    "/etc/systemd/system",
    "/etc/default/spamd",
    "/etc/hosts",
    "/var/lib/filterd",
    "/var/spool/filterd",
    "/run/filterd",
)
"""The paths of a host that a block may name; they move below the host's temporary root."""

SYSTEM_DIRECTORIES = ("/etc/systemd/system",)
"""Those that exist on every Debian host before the walk-through begins."""

_MARKER = re.compile(r"^(?P<indent>[ \t]*)<!-- walkthrough: (?P<name>[a-z0-9-]+) -->$")
_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[a-z]*)$")
_FILE_HEADER = re.compile(r"^# (/\S+)$")
_DOC_NETWORK = re.compile(r"(?<![\d.])192\.0\.2\.(\d{1,3})(?![\d])")

# Runs before every block: commands that cannot run here record what they were asked to do.
_PROLOGUE = r"""set -euo pipefail
_event() { printf '%s\n' "$*" >> "$WALKTHROUGH_EVENTS"; }
apt-get() { _event apt-get "$@"; }
adduser() { _event adduser "$@"; }
chgrp() { _event chgrp "$@"; }
install() {  # without -o/-g: the user filterd does not exist here (the test runs as root)
    local args=()
    while [ $# -gt 0 ]; do
        case "$1" in -o|-g) shift 2;; *) args+=("$1"); shift;; esac
    done
    command install "${args[@]}"
}
systemctl() { _event systemctl "$@"; }
filterd() { if [ "${1-}" = run ]; then _event filterd "$@"; else command filterd "$@"; fi; }
swaks() {
    local n
    n=$(wc -l < "$WALKTHROUGH_EVENTS")
    if command swaks "$@" > "$WALKTHROUGH_EVENTS.$n" 2>&1
    then _event swaks 0 "$n"
    else _event swaks "$?" "$n"
    fi
}
"""


@dataclass(frozen=True)
class Block:
    """One fenced block of the document under a walk-through marker."""

    name: str
    lang: str
    text: str
    line: int  # of the opening fence, for messages

    @property
    def file_path(self) -> str | None:
        """The absolute path a file block stands for, or None for commands."""
        first = self.text.split("\n", 1)[0]
        match = _FILE_HEADER.match(first)
        return match.group(1) if match else None


def walkthrough_blocks(text: str | None = None) -> dict[str, list[Block]]:
    """Every marked block of docs/deploy.md (or of ``text``), by step name, in order."""
    lines = (DEPLOY_MD.read_text() if text is None else text).splitlines()
    steps: dict[str, list[Block]] = {}
    index = 0
    while index < len(lines):
        marker = _MARKER.match(lines[index])
        index += 1
        if marker is None:
            continue
        while index < len(lines) and not lines[index].strip():
            index += 1
        fence = _FENCE.match(lines[index]) if index < len(lines) else None
        if fence is None:
            raise ValueError(f"docs/deploy.md:{index}: a walkthrough marker without a block")
        indent = fence["indent"]
        start = index
        body: list[str] = []
        index += 1
        while lines[index].strip() != "```":
            body.append(lines[index].removeprefix(indent))
            index += 1
        index += 1
        block = Block(marker["name"], fence["lang"], "\n".join(body) + "\n", start + 1)
        steps.setdefault(block.name, []).append(block)
    return steps


@dataclass
class Adapter:
    """How one host of the walk-through becomes this machine (see the module docstring)."""

    root: Path
    ports: dict[int, int]
    smtp_port: int
    postfix_config: Path | None = None

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for directory in SYSTEM_DIRECTORIES:  # there on any Debian host
            (self.root / directory.lstrip("/")).mkdir(parents=True, exist_ok=True)

    def path(self, absolute: str) -> Path:
        """Where a path the document names is on this machine."""
        if self.postfix_config is not None and absolute.startswith("/etc/postfix"):
            return self.postfix_config / absolute.removeprefix("/etc/postfix").lstrip("/")
        if not absolute.startswith(HOST_PATHS):
            raise ValueError(f"the walk-through's tests do not adapt the path {absolute}")
        return self.root / absolute.lstrip("/")

    def text(self, text: str, *, strict: bool = True) -> str:
        """``text`` with the document's paths, addresses and ports made this machine's;
        ``strict``: a port of the document that is not mapped yet is an error (else it stays)."""
        prefixes = [*HOST_PATHS, "/etc/postfix"] if self.postfix_config else [*HOST_PATHS]
        paths = "|".join(re.escape(prefix) for prefix in prefixes)
        text = re.sub(rf"(?<![\w./-])({paths})(?![\w.-])", lambda m: str(self.path(m[1])), text)
        text = _DOC_NETWORK.sub(lambda m: f"127.0.0.{m[1]}", text)
        text = re.sub(r"(?<=:)25(?!\d)", str(self.smtp_port), text)
        text = re.sub(r"\bsmtp/inet\b", f"127.0.0.1:{self.smtp_port}/inet", text)
        text = re.sub(r"^smtp(?=\s+inet\s)", f"127.0.0.1:{self.smtp_port}", text, flags=re.M)

        def port(match: re.Match[str]) -> str:
            number = int(match[1])
            if number in self.ports:
                return str(self.ports[number])
            if strict:
                raise ValueError(f"port {number} of the walk-through is not mapped yet")
            return match[0]

        numbers = "|".join(str(number) for number in DOC_PORTS)
        return re.sub(rf"(?<![\d.])({numbers})(?!\d)", port, text)

    def checkout(self) -> Path:
        """A copy of the checkout's deploy/ directory, adapted: where commands run."""
        checkout = self.root / "checkout"
        shutil.rmtree(checkout, ignore_errors=True)
        for source in sorted((REPO_ROOT / "deploy").rglob("*")):
            if not source.is_file():
                continue
            target = checkout / source.relative_to(REPO_ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(self.text(source.read_text(), strict=False))
        return checkout


@dataclass(frozen=True)
class Event:
    """A command the block asked for that the test carries out (``filterd run``,
    ``systemctl``, ``apt-get``), or a swaks run with its exit status and output."""

    command: str
    args: tuple[str, ...]
    status: int = 0
    output: str = ""


@dataclass
class Runner:
    """Runs blocks for one host; ``events`` collects what every block asked for."""

    adapter: Adapter
    hosts_file: Path | None = None  # run in a mount namespace with this file as /etc/hosts
    events: list[Event] = field(default_factory=list)

    def run(self, block: Block, replace: Mapping[str, str] | None = None) -> list[Event]:
        """Run one block (after the ``replace`` edits the document asks for, then adapted);
        return the events it recorded. AssertionError, with its output, if it fails."""
        text = block.text
        for old, new in (replace or {}).items():
            assert old in text, f"docs/deploy.md:{block.line}: no {old!r} to replace"
            text = text.replace(old, new)
        text = self.adapter.text(text)
        if block.file_path is not None:
            target = self.adapter.path(block.file_path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            return []
        return self._commands(block, text)

    def _commands(self, block: Block, text: str) -> list[Event]:
        steps = self.adapter.root / "steps"
        steps.mkdir(exist_ok=True)
        number = len(list(steps.glob("*.sh")))
        script = steps / f"{number:02d}-{block.name}.sh"
        script.write_text(_PROLOGUE + text)
        events_file = steps / f"{number:02d}-{block.name}.events"
        events_file.write_text("")
        command: list[str] = ["bash", str(script)]
        if self.hosts_file is not None:
            command = [*with_hosts_file(self.hosts_file), *command]
        env = {
            "PATH": f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.adapter.root),
            "LANG": "C.UTF-8",
            "WALKTHROUGH_EVENTS": str(events_file),
        }
        if self.adapter.postfix_config is not None:
            env["MAIL_CONFIG"] = str(self.adapter.postfix_config)
        result = subprocess.run(
            command,
            cwd=self.adapter.checkout(),
            env=env,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT,
        )
        assert result.returncode == 0, (
            f"docs/deploy.md:{block.line} ({block.name}) failed with {result.returncode}:\n"
            f"{text}\n--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
        )
        events = [_event(line, events_file) for line in events_file.read_text().splitlines()]
        self.events.extend(events)
        return events


def _event(line: str, events_file: Path) -> Event:
    command, *args = line.split()
    if command != "swaks":
        return Event(command, tuple(args))
    status, number = int(args[0]), args[1]
    output = Path(f"{events_file}.{number}").read_text(errors="replace")
    return Event("swaks", (), status, output)


def spamd_options(default_file: Path) -> list[str]:
    """spamd's arguments from an /etc/default/spamd, as Debian's unit passes ``$OPTIONS``."""
    for line in default_file.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == "OPTIONS":
            (words,) = shlex.split(value)
            return shlex.split(words)
    raise ValueError(f"{default_file} sets no OPTIONS")


def packages_installed_by_the_repository() -> set[str]:
    """The Debian packages deploy/install-system-packages.sh installs (its PKGS line)."""
    text = (REPO_ROOT / "deploy" / "install-system-packages.sh").read_text()
    match = re.search(r'^PKGS="([^"]*)"', text, re.MULTILINE)
    assert match is not None, "deploy/install-system-packages.sh has no PKGS line"
    return set(match[1].split())


def apt_packages(events: Sequence[Event]) -> set[str]:
    """The packages the blocks' ``apt-get install`` lines name."""
    names: set[str] = set()
    for event in events:
        if event.command == "apt-get" and event.args[:1] == ("install",):
            names.update(arg for arg in event.args[1:] if not arg.startswith("-"))
    return names
