"""``[run]``: who filterd becomes, what it refuses, and the switch's parts, in this process (the
whole ``filterd run`` as another user is in tests/integration/test_privileges.py). The suite
runs as root; the refusal depends on it."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import socket
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from filterd.config.load import parse_config
from filterd.config.schema import RunConfig
from filterd.config.types import Endpoint
from filterd.errors import ConfigError
from filterd.runtime import privileges
from filterd.runtime.privileges import ALLOW_ROOT_ENV, Privileges, RunAs, plan_privileges, regained
from filterd.runtime.startup import StartupError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the suite runs as root (make test)")

NOBODY = pwd.getpwnam("nobody")
REFUSAL = (
    'refusing to run as root (set [run] user = "filterd": filterd binds its sockets as root, '
    "then becomes that user; or allow_root = true to run as root anyway)"
)


def plan(environ: dict[str, str] | None = None, **run: object) -> Privileges:
    return plan_privileges(RunConfig.model_validate(run), environ or {})


def test_root_without_a_user_is_refused_with_the_fix() -> None:
    with pytest.raises(StartupError) as refused:
        plan()
    assert str(refused.value) == REFUSAL


@pytest.mark.parametrize("value", ["1", "true", "yes", "YES"])
def test_root_when_told_by_the_environment(value: str) -> None:
    allowed = plan({ALLOW_ROOT_ENV: value})
    assert allowed.target is None
    assert allowed.as_root


@pytest.mark.parametrize("value", ["", "0", "no", "false"])
def test_an_environment_that_does_not_say_yes(value: str) -> None:
    with pytest.raises(StartupError):
        plan({ALLOW_ROOT_ENV: value})


def test_root_when_told_by_the_configuration() -> None:
    assert plan(allow_root=True).as_root


def test_a_user_that_is_root_is_refused_too() -> None:
    with pytest.raises(StartupError) as refused:
        plan(user="root")
    assert str(refused.value) == (
        'refusing to run as root ([run] user = "root" is root: name an unprivileged user such '
        "as filterd, or set allow_root = true)"
    )
    assert plan(user="root", allow_root=True).target is None


def test_the_user_with_its_login_group_and_supplementary_groups() -> None:
    target = plan(user="nobody").target
    assert target == RunAs(
        "nobody",
        NOBODY.pw_uid,
        NOBODY.pw_gid,
        tuple(dict.fromkeys([NOBODY.pw_gid, *os.getgrouplist("nobody", NOBODY.pw_gid)])),
    )
    assert str(target) == f'"nobody" (uid {NOBODY.pw_uid}, gid {NOBODY.pw_gid})'


def test_another_group() -> None:
    daemon = grp.getgrnam("daemon").gr_gid
    target = plan(user="nobody", group="daemon").target
    assert target is not None
    assert target.gid == daemon
    assert target.groups[0] == daemon


def test_an_unknown_user_or_group() -> None:
    with pytest.raises(StartupError) as unknown:
        plan(user="no-such-user")
    assert str(unknown.value) == (
        'no user "no-such-user" on this machine ([run] user): create it (adduser --system '
        "--group --no-create-home no-such-user), or name an existing one"
    )
    with pytest.raises(StartupError) as unknown:
        plan(user="nobody", group="no-such-group")
    assert str(unknown.value) == (
        'no group "no-such-group" on this machine ([run] group): create it (addgroup --system '
        "no-such-group), or remove group to use the user's own"
    )


def test_a_group_needs_a_user() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config('[run]\ngroup = "filterd"\n', source="f.toml", serving=False)
    assert "group is set but user is not" in str(error.value)


@pytest.mark.parametrize("mode", ['"0660"', '"660"', '"0666"', '"0600"'])
def test_socket_modes(mode: str) -> None:
    config = parse_config(f"[run]\nsocket_mode = {mode}\n", source="f.toml", serving=False)
    assert config.run.socket_mode == int(mode.strip('"'), 8)


@pytest.mark.parametrize("mode", ["660", '"0o660"', '"rw-rw----"', '"01660"', '"0968"'])
def test_socket_modes_that_are_not(mode: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(f"[run]\nsocket_mode = {mode}\n", source="f.toml", serving=False)
    assert 'expected a file mode in octal such as "0660"' in str(error.value)


def test_root_could_regain_root() -> None:
    """The check made after the switch can fail: here nothing was dropped."""
    groups = tuple(os.getgroups())
    assert regained(RunAs("root", 0, 0, groups)) == "setuid(0) succeeded"


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory anyone can write to (pytest's are below a directory only root can enter)."""
    path = Path(tempfile.mkdtemp(prefix="filterd-test-"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_acting_as_the_user_and_back(
    tmp_path: Path, shared: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[int] = []
    monkeypatch.setattr(privileges, "_runs_python", lambda _: checked.append(os.geteuid()))
    planned = plan(user="nobody")
    groups = os.getgroups()
    with planned.acting_as():
        assert (os.geteuid(), os.getegid()) == (NOBODY.pw_uid, NOBODY.pw_gid)
        assert os.getuid() == 0  # only effective: root again afterwards
        (shared / "made").write_text("")
        with pytest.raises(PermissionError):
            (tmp_path / "not-here").write_text("")  # pytest's directory is root's, 0700
    assert (os.geteuid(), os.getegid(), os.getgroups()) == (0, 0, groups)
    assert checked == [NOBODY.pw_uid]
    made = (shared / "made").stat()
    assert (made.st_uid, made.st_gid) == (NOBODY.pw_uid, NOBODY.pw_gid)


def test_acting_as_a_user_who_cannot_run_this_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hidden = tmp_path / "root-only"
    hidden.mkdir(mode=0o700)
    python = hidden / "python3"
    python.write_text("")
    python.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(python))
    with pytest.raises(StartupError) as refused, plan(user="nobody").acting_as():
        pass
    assert str(refused.value) == (
        f'user "nobody" (uid {NOBODY.pw_uid}, gid {NOBODY.pw_gid}) cannot run {python} '
        "(permission denied): install filterd where that user can read it (a virtualenv "
        "under /opt, not under /root), or make it readable"
    )
    assert os.geteuid() == 0


def test_nothing_to_switch_acts_as_itself() -> None:
    with plan(allow_root=True).acting_as():
        assert os.geteuid() == 0


def test_a_socket_gets_the_user_group_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "policy.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
        plan(user="nobody", socket_mode="0666").secure_socket(Endpoint("unix", path=str(path)))
        found = path.stat()
    assert (found.st_uid, found.st_gid) == (NOBODY.pw_uid, NOBODY.pw_gid)
    assert stat.S_IMODE(found.st_mode) == 0o666


def test_a_socket_when_nothing_is_switched_only_gets_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "policy.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
        plan(allow_root=True).secure_socket(Endpoint("unix", path=str(path)))
        found = path.stat()
    assert (found.st_uid, stat.S_IMODE(found.st_mode)) == (0, 0o660)
    plan(allow_root=True).secure_socket(Endpoint("tcp", host="127.0.0.1", port=25))  # no-op
