"""How many children a spamd runs (``--max-children``, ``-m``; 5 by default), read where it can
be read: the command line of a running spamd that listens where filterd's spamassassin entry
connects, else the ``OPTIONS`` of /etc/default/spamd (Debian's spamd package; older ones used
/etc/default/spamassassin).

spamd's options (spamd(1)): ``-i``/``--listen [ssl:]ADDR`` (repeatable; ``host``, ``host:port``,
``[v6]:port``, ``*:port``, or a socket path), ``-p``/``--port PORT`` (783 by default),
``--socketpath PATH``; with no ``--listen``, spamd listens on 127.0.0.1 (and ::1).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SpamdChildren", "find_spamd_children", "parse_spamd_options"]

DEFAULT_CHILDREN = 5
DEFAULT_PORT = 783
DEFAULT_FILES = (Path("/etc/default/spamd"), Path("/etc/default/spamassassin"))
_WILDCARD = frozenset({"*", "0.0.0.0", "::", ""})


@dataclass(frozen=True)
class SpamdOptions:
    children: int
    tcp: tuple[tuple[str, int], ...]  # (host, port); host "*" = every address
    unix: tuple[str, ...]


@dataclass(frozen=True)
class SpamdChildren:
    children: int
    source: str  # "the running spamd (pid 123)", "/etc/default/spamd"


_LONG = {
    "--max-children": "children",
    "--listen": "listen",
    "--port": "port",
    "--socketpath": "unix",
}
_SHORT = {"-m": "children", "-i": "listen", "-p": "port"}


def _options(args: Sequence[str]) -> Iterator[tuple[str, str]]:
    """(kind, value) of the options the doctor needs: ``-mN``, ``-m N``, ``--max-children=N``
    and ``--max-children N`` alike; a bare ``-i``/``--listen`` means every address."""
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        kind = _LONG.get(arg) or _SHORT.get(arg)
        if kind is not None:
            following = args[index] if index < len(args) else None
            if following is None or (kind == "listen" and following.startswith("-")):
                if kind == "listen":
                    yield kind, "*"
                continue
            index += 1
            yield kind, following
        elif arg.startswith("--") and "=" in arg:
            name, _, value = arg.partition("=")
            if name in _LONG:
                yield _LONG[name], value
        elif arg[:2] in _SHORT and len(arg) > 2 and not arg.startswith("--"):
            yield _SHORT[arg[:2]], arg[2:]


def parse_spamd_options(args: Sequence[str]) -> SpamdOptions:
    """spamd's children and listening places from its arguments (after the program)."""
    children = DEFAULT_CHILDREN
    listens: list[str] = []
    port = DEFAULT_PORT
    unix: list[str] = []
    for kind, value in _options(args):
        if kind == "children" and value.isdigit():
            children = int(value)
        elif kind == "listen":
            listens.append(value)
        elif kind == "port" and value.isdigit():
            port = int(value)
        elif kind == "unix":
            unix.append(value)
    tcp: list[tuple[str, int]] = []
    for listen in listens or ["127.0.0.1", "::1"]:
        listen = listen.removeprefix("ssl:")
        if listen.startswith("/"):
            unix.append(listen)
        elif listen.startswith("["):
            host, _, rest = listen[1:].partition("]")
            tcp.append((host, int(rest[1:]) if rest[1:].isdigit() else port))
        elif listen.count(":") == 1:
            host, _, port_text = listen.partition(":")
            tcp.append((host or "*", int(port_text) if port_text.isdigit() else port))
        else:
            tcp.append((listen, port))
    return SpamdOptions(children, tuple(tcp), tuple(unix))


def _listens_at(options: SpamdOptions, target: tuple[str, int] | str) -> bool:
    if isinstance(target, str):
        return target in options.unix
    host, port = target
    loopback = {"127.0.0.1", "::1", "localhost"}
    return any(
        p == port and (h in _WILDCARD or h == host or (h in loopback and host in loopback))
        for h, p in options.tcp
    )


def _running_spamds(proc: Path) -> Iterator[tuple[int, list[str]]]:
    """(pid, arguments after the program) of every running spamd master."""
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        argv = [arg for arg in argv if arg]
        if len(argv) == 1 and " " in argv[0]:  # a process title spamd set itself
            argv = argv[0].split()
        if argv and Path(argv[0]).name.startswith("perl"):  # perl -T -w /usr/sbin/spamd ...
            script = next((i for i, arg in enumerate(argv) if i and arg[:1] != "-"), len(argv))
            argv = argv[script:]
        if argv and Path(argv[0]).name == "spamd" and argv[1:2] != ["child"]:
            yield int(entry.name), argv[1:]


def _default_file_options(path: Path) -> list[str] | None:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        name, sep, value = line.strip().partition("=")
        if sep and name.strip() == "OPTIONS":
            try:
                words = shlex.split(value)
            except ValueError:
                return None
            return shlex.split(words[0]) if len(words) == 1 else words
    return []


def find_spamd_children(
    target: tuple[str, int] | str,
    *,
    proc: Path = Path("/proc"),
    default_files: Sequence[Path] | None = None,
) -> SpamdChildren | None:
    """The children of the spamd at ``target`` ((host, port) or a socket path), or None when
    it cannot be told (spamd runs elsewhere, or no configuration to read)."""
    for pid, args in _running_spamds(proc):
        options = parse_spamd_options(args)
        if _listens_at(options, target):
            return SpamdChildren(options.children, f"the running spamd (pid {pid})")
    for path in DEFAULT_FILES if default_files is None else default_files:
        written = _default_file_options(path)
        if written is None:
            continue
        options = parse_spamd_options(written)
        if _listens_at(options, target):
            return SpamdChildren(options.children, f"OPTIONS in {path}")
    return None
