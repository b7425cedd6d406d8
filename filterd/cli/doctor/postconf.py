"""Postfix's configuration as ``postconf`` reports it: run the commands, parse their output.

Nothing here reads main.cf or master.cf itself: ``postconf`` knows their syntax, the defaults,
``$name`` expansion and master.cf's ``-o`` overrides, and prints one setting a line.

- ``postconf -n``: the parameters main.cf sets (``name = value``).
- ``postconf -x``: every parameter, defaults included, with ``$name`` expanded.
- ``postconf -M``: the master.cf entries, one a line (service, type, private, unpriv, chroot,
  wakeup, maxproc, command and its arguments).
- ``postconf -P -x``: each entry's ``-o`` overrides (``service/type/name = value``), expanded.

``-c DIR`` reads another instance's configuration directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "PostconfError",
    "PostfixConfig",
    "Service",
    "parse_master_entries",
    "parse_parameters",
    "parse_service_parameters",
    "read_postfix",
]

POSTCONF_TIMEOUT = 30.0
"""Seconds one postconf run may take."""

_POSTCONF_FALLBACK = "/usr/sbin/postconf"  # sbin is often not on a user's PATH
_MASTER_FIELDS = 8  # service type private unpriv chroot wakeup maxproc command(+ arguments)


class PostconfError(Exception):
    """postconf could not be run, or failed; the message says why and what to do."""


@dataclass(frozen=True)
class Service:
    """One master.cf entry (``postconf -M``) with its ``-o`` overrides (``postconf -P``)."""

    name: str
    type: str
    private: str = "-"
    unprivileged: str = "-"
    chroot: str = "-"
    wakeup: str = "-"
    process_limit: str = "-"
    command: str = ""
    overrides: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """``name/type``, as ``postconf -M``, ``-P`` and ``-F`` name the entry."""
        return f"{self.name}/{self.type}"


@dataclass(frozen=True)
class PostfixConfig:
    """What the doctor knows of one Postfix instance."""

    config_dir: str | None
    """``-c DIR`` as given, or None for the default instance."""
    explicit: Mapping[str, str]
    """``postconf -n``: the parameters main.cf sets."""
    parameters: Mapping[str, str]
    """``postconf -x``: every parameter's value, defaults included, ``$name`` expanded."""
    services: tuple[Service, ...]

    def value(self, name: str, service: Service | None = None) -> str:
        """``name``'s value for ``service`` (its ``-o`` override, else main.cf's or the
        default); for main.cf when ``service`` is None."""
        if service is not None and name in service.overrides:
            return service.overrides[name]
        return self.parameters.get(name, "")

    def source(self, name: str, service: Service | None = None) -> str:
        """Where ``value(name, service)`` comes from, for messages."""
        if service is not None and name in service.overrides:
            return f'master.cf "{service.key}" -o {name}'
        if name in self.explicit:
            return f"main.cf {name}"
        return f"{name} (Postfix's default)"

    def service(self, name: str, type_: str) -> Service | None:
        for service in self.services:
            if service.name == name and service.type == type_:
                return service
        return None

    def postconf(self, *args: str) -> str:
        """A postconf command line for a fix, with ``-c DIR`` when the doctor was given one."""
        words = ["postconf"]
        if self.config_dir is not None:
            words += ["-c", self.config_dir]
        return " ".join(words + list(args))

    @property
    def queue_directory(self) -> str:
        return self.parameters.get("queue_directory", "/var/spool/postfix")


def parse_parameters(text: str) -> dict[str, str]:
    """``name = value`` lines (``postconf -n``, ``postconf -x``) into a dict.

    postconf prints ``name =`` for an empty value; a line without ``=`` is not a setting and
    is skipped.
    """
    result: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        name = name.strip()
        if sep and name:
            result[name] = value.strip()
    return result


def parse_service_parameters(text: str) -> dict[tuple[str, str], dict[str, str]]:
    """``service/type/name = value`` lines (``postconf -P``) into ``{(service, type): {name:
    value}}``. A unix service's name may hold ``/``; type and parameter names never do."""
    result: dict[tuple[str, str], dict[str, str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        parts = key.strip().rsplit("/", 2)
        if not sep or len(parts) != 3 or not all(parts):
            continue
        service, type_, name = parts
        result.setdefault((service, type_), {})[name] = value.strip()
    return result


def parse_master_entries(text: str) -> list[Service]:
    """``postconf -M`` lines into ``Service``s (without overrides); the command is the
    program's name, the arguments after it are left out (``-P`` gives the ``-o`` ones)."""
    services = []
    for line in text.splitlines():
        fields = line.split(None, _MASTER_FIELDS - 1)
        if len(fields) < _MASTER_FIELDS or line.lstrip().startswith("#"):
            continue
        name, type_, private, unpriv, chroot, wakeup, limit, command = fields
        services.append(
            Service(
                name=name,
                type=type_,
                private=private,
                unprivileged=unpriv,
                chroot=chroot,
                wakeup=wakeup,
                process_limit=limit,
                command=command.split(None, 1)[0],
            )
        )
    return services


def postconf_program() -> str:
    """The postconf on PATH, else /usr/sbin/postconf; PostconfError if there is none."""
    found = shutil.which("postconf") or (
        _POSTCONF_FALLBACK if os.access(_POSTCONF_FALLBACK, os.X_OK) else None
    )
    if found is None:
        raise PostconfError(
            "postconf is not installed (Debian: apt-get install postfix); the doctor checks "
            "Postfix's configuration with it"
        )
    return found


def run_postconf(program: str, config_dir: str | None, args: Sequence[str]) -> str:
    """postconf's standard output; PostconfError with its message if it fails."""
    command = [program] + (["-c", config_dir] if config_dir is not None else []) + list(args)
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=POSTCONF_TIMEOUT,
            check=False,
            env={**os.environ, "LC_ALL": "C"},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PostconfError(f"cannot run {' '.join(command)}: {exc}") from None
    if done.returncode != 0:
        reason = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        hint = (
            " (give the directory of main.cf and master.cf with --postfix-config DIR)"
            if "main.cf" in reason[0]
            else ""
        )
        raise PostconfError(f"{' '.join(command)} failed: {reason[0]}{hint}")
    return done.stdout


def read_postfix(config_dir: str | Path | None = None) -> PostfixConfig:
    """Run postconf (``-c config_dir`` if given) and gather what it reports."""
    program = postconf_program()
    directory = None if config_dir is None else str(config_dir)
    explicit = parse_parameters(run_postconf(program, directory, ["-n"]))
    parameters = parse_parameters(run_postconf(program, directory, ["-x"]))
    overrides = parse_service_parameters(run_postconf(program, directory, ["-P", "-x"]))
    services = tuple(
        Service(
            name=entry.name,
            type=entry.type,
            private=entry.private,
            unprivileged=entry.unprivileged,
            chroot=entry.chroot,
            wakeup=entry.wakeup,
            process_limit=entry.process_limit,
            command=entry.command,
            overrides=overrides.get((entry.name, entry.type), {}),
        )
        for entry in parse_master_entries(run_postconf(program, directory, ["-M"]))
    )
    return PostfixConfig(directory, explicit, parameters, services)
