"""Who ``filterd run`` runs as (``[run]``): started as root, it binds its sockets, then becomes
``[run] user`` for good, before it handles any mail.

The order (``filterd.runtime.supervisor``):

1. ``plan_privileges`` (before anything else): the user and group are looked up, and filterd
   refuses to go on as root without ``[run] user`` unless ``allow_root = true`` (or the
   environment variable ``FILTERD_ALLOW_ROOT=1``): a ``StartupError``, exit status 2.
2. ``acting_as`` (for ``check_before_serving``): the checks of directories and files run with
   the user's effective ids, so a directory filterd creates is the user's, and "cannot write"
   means the user cannot. The user must also be able to run filterd's Python: worker processes
   are started, and modules imported, after the switch.
3. The listening sockets are bound as root (ports below 1024 need it), the milter socket too;
   ``secure_socket`` gives each unix socket the user and group and ``[run] socket_mode``.
4. ``drop``: supplementary groups (the user's, as ``initgroups`` sets them), then real,
   effective and saved group id, then user id. Then it checks that root cannot be had back:
   every id is the user's, ``setuid(0)`` fails, no capability is left (``/proc/self/status``).
   Everything after (plugins starting, the control socket, the metrics endpoint, worker
   processes, every session) runs as the user.

Nothing to switch (not started as root, or already that user: systemd's ``User=``) leaves
``drop`` and ``acting_as`` doing nothing; ``socket_mode`` still applies.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from filterd.config.schema import RunConfig
from filterd.config.types import Endpoint
from filterd.maillog import MailLog
from filterd.runtime.startup import StartupError

__all__ = ["ALLOW_ROOT_ENV", "Privileges", "RunAs", "plan_privileges"]

log = MailLog("main")

ALLOW_ROOT_ENV = "FILTERD_ALLOW_ROOT"
"""``FILTERD_ALLOW_ROOT=1`` in the environment: as ``[run] allow_root = true`` (containers,
test suites, where root is the only user)."""
_YES = {"1", "true", "yes"}
_REFUSAL = (
    'refusing to run as root (set [run] user = "filterd": filterd binds its sockets as root, '
    "then becomes that user; or allow_root = true to run as root anyway)"
)


@dataclass(frozen=True)
class RunAs:
    """The user and groups filterd becomes."""

    user: str
    uid: int
    gid: int
    groups: tuple[int, ...]  # supplementary groups, ``gid`` among them

    def __str__(self) -> str:
        return f'"{self.user}" (uid {self.uid}, gid {self.gid})'


def plan_privileges(run: RunConfig, environ: Mapping[str, str] = os.environ) -> Privileges:
    """What ``drop`` will do, or a ``StartupError`` (unknown user or group, root refused,
    a switch only root could make)."""
    allow_root = run.allow_root or environ.get(ALLOW_ROOT_ENV, "").strip().lower() in _YES
    root = os.geteuid() == 0
    if run.user is None:
        if root and not allow_root:
            raise StartupError(_REFUSAL)
        return Privileges(None, run.socket_mode, as_root=root)
    target = _look_up(run.user, run.group)
    if target.uid == 0:
        if not allow_root:
            raise StartupError(
                f'refusing to run as root ([run] user = "{run.user}" is root: name an '
                "unprivileged user such as filterd, or set allow_root = true)"
            )
        return Privileges(None, run.socket_mode, as_root=root)
    if root:
        return Privileges(target, run.socket_mode)
    if os.geteuid() == target.uid and os.getegid() == target.gid:
        return Privileges(None, run.socket_mode)  # already that user (systemd's User=, say)
    raise StartupError(
        f"cannot become user {target} ([run] user): filterd runs as uid {os.geteuid()} "
        f"(gid {os.getegid()}) and only root can switch users (start it as root or as "
        f'"{run.user}", or remove [run] user and group)'
    )


def _look_up(user: str, group: str | None) -> RunAs:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise StartupError(
            f'no user "{user}" on this machine ([run] user): create it (adduser --system '
            f"--group --no-create-home {user}), or name an existing one"
        ) from None
    gid = entry.pw_gid
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise StartupError(
                f'no group "{group}" on this machine ([run] group): create it (addgroup '
                f"--system {group}), or remove group to use the user's own"
            ) from None
    groups = tuple(dict.fromkeys([gid, *os.getgrouplist(user, gid)]))
    return RunAs(user, entry.pw_uid, gid, groups)


class Privileges:
    """The switch ``plan_privileges`` planned (``target`` None: nothing to switch)."""

    def __init__(self, target: RunAs | None, socket_mode: int, *, as_root: bool = False) -> None:
        self.target = target
        self.socket_mode = socket_mode
        self.as_root = as_root  # stays root, as allowed
        self.dropped = False

    @contextlib.contextmanager
    def acting_as(self) -> Iterator[None]:
        """Run the block with the target's effective user, group and supplementary groups
        (root's again afterwards); files created meanwhile are the target's. Also checks that
        the target can run this Python (``StartupError`` otherwise)."""
        target = self.target
        if target is None:
            yield
            return
        saved_groups, saved_gid = os.getgroups(), os.getegid()
        os.setgroups(target.groups)
        os.setegid(target.gid)
        os.seteuid(target.uid)
        try:
            _runs_python(target)
            yield
        finally:
            os.seteuid(0)
            os.setegid(saved_gid)
            os.setgroups(saved_groups)

    def secure_socket(self, address: Endpoint) -> None:
        """A unix socket filterd listens on: ``socket_mode``, and the target's user and group
        (bound as root, it would be root's)."""
        if address.kind != "unix":
            return
        try:
            if self.target is not None and not self.dropped:
                os.chown(address.path, self.target.uid, self.target.gid)
            os.chmod(address.path, self.socket_mode)
        except OSError as exc:
            raise StartupError(
                f"cannot set the owner and mode of {address}: {exc.strerror or exc} (give "
                "this [[listen]] a path in a directory of its own)"
            ) from None

    def drop(self) -> None:
        """Become the target for good; a ``StartupError`` if that fails or could be undone."""
        target = self.target
        if target is None or self.dropped:
            return
        try:
            os.setgroups(target.groups)
            os.setresgid(target.gid, target.gid, target.gid)
            os.setresuid(target.uid, target.uid, target.uid)
        except OSError as exc:
            raise StartupError(
                f"cannot become user {target} ([run] user): {exc.strerror or exc} (start "
                "filterd as root, with CAP_SETUID and CAP_SETGID)"
            ) from None
        self.dropped = True
        problem = regained(target)
        if problem is not None:
            raise StartupError(f"after becoming user {target}: {problem}; not serving")

    def announce(self) -> None:
        """Log who filterd serves as, when it switched or stays root (after the ``listening
        on`` lines)."""
        if self.dropped:
            log.plain(f"running as user {self.target}")
        elif self.as_root:
            log.warning("running as root ([run] allow_root): every plugin runs as root")


def regained(target: RunAs) -> str | None:
    """What is left of root after the switch to ``target`` (None: nothing)."""
    if os.getresuid() != (target.uid,) * 3 or os.getresgid() != (target.gid,) * 3:
        return f"ids are {os.getresuid()}/{os.getresgid()}"
    if set(os.getgroups()) != set(target.groups):
        return f"supplementary groups are {os.getgroups()}"
    for name, back in (("setuid(0)", os.setuid), ("seteuid(0)", os.seteuid)):
        try:
            back(0)
        except PermissionError:
            continue
        return f"{name} succeeded"
    capabilities = _capabilities()
    if any(capabilities.values()):
        return f"capabilities left: {capabilities}"
    return None


def _capabilities() -> dict[str, int]:
    """The permitted, effective and ambient capability sets, from ``/proc/self/status``."""
    found: dict[str, int] = {}
    with contextlib.suppress(OSError), open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("CapPrm", "CapEff", "CapAmb"):
                found[key] = int(value.strip(), 16)
    return found


def _runs_python(target: RunAs) -> None:
    """With the target's effective ids: can it run this interpreter and read its modules (a
    Python under /root cannot be)? Worker processes start it after the switch."""
    needed = [
        (Path(sys.executable).resolve(), os.X_OK, "run"),
        (Path(os.__file__).resolve().parent, os.R_OK | os.X_OK, "read"),
        (Path(__file__).resolve().parents[1], os.R_OK | os.X_OK, "read"),
    ]
    for path, mode, verb in needed:
        if not os.access(path, mode, effective_ids=True):
            raise StartupError(
                f"user {target} cannot {verb} {path} ({os.strerror(errno.EACCES).lower()}): "
                "install filterd where that user can read it (a virtualenv under /opt, not "
                "under /root), or make it readable"
            )
