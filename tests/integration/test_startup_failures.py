"""``filterd run`` that cannot start says why in one line on stderr and exits with status 2.

Each case really fails: a port another socket listens on, a port below 1024 and a directory
owned by someone else for a process without capabilities (root's are dropped with setpriv,
in a network namespace of its own where ports below 1024 are privileged), a path through a
regular file, a next hop whose name cannot resolve (in a network namespace without a route, so
no query leaves the machine), TLS files that do not load.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import trustme

FILTERD = Path(sys.executable).with_name("filterd")
TIMEOUT = 60.0
ROOT = os.geteuid() == 0
NOBODY = 65534


def run_filterd(config: str, workdir: Path, prefix: Sequence[str] = ()) -> tuple[int, str]:
    """``filterd run -c`` with ``config``; its exit status and stderr (it must not start)."""
    path = workdir / "filterd.toml"
    path.write_text(config, encoding="utf-8")
    done = subprocess.run(
        [*prefix, str(FILTERD), "run", "-c", str(path)],
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    return done.returncode, done.stderr


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def own_network() -> list[str]:
    """A network namespace of its own: only a loopback that is down, ports < 1024 privileged."""
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is missing")
    return ["unshare", "--net"] if ROOT else ["unshare", "--map-root-user", "--net"]


def unprivileged() -> list[str]:
    """Root without capabilities: no low ports, no writing where the owner's bits forbid it."""
    if not ROOT:
        return []
    return ["setpriv", "--inh-caps=-all", "--bounding-set=-all"]


def not_ours(path: Path) -> Path:
    """A directory the unprivileged filterd above cannot write into."""
    path.mkdir()
    if ROOT:
        os.chown(path, NOBODY, NOBODY)
        path.chmod(0o755)
    else:
        path.chmod(0o555)
    return path


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_port_in_use(tmp_path: Path, busy_port: int) -> None:
    config = f'[[listen]]\naddress = "127.0.0.1:{busy_port}"\n[delivery]\nmethod = "maildir"\n'
    status, stderr = run_filterd(config, tmp_path)
    assert status == 2
    assert one_line(stderr) == (
        f"filterd: cannot listen on 127.0.0.1:{busy_port}: address already in use (another "
        "process listens there: stop it, or give this [[listen]] another port)"
    )


def test_milter_port_in_use(tmp_path: Path, busy_port: int) -> None:
    pytest.importorskip("milter")
    config = f'[[listen]]\naddress = "127.0.0.1:{busy_port}"\nprotocol = "milter"\n'
    status, stderr = run_filterd(config, tmp_path)
    assert status == 2
    assert one_line(stderr).startswith(
        f"filterd: cannot listen on 127.0.0.1:{busy_port}: address already in use"
    )


def test_low_port_without_permission(tmp_path: Path) -> None:
    config = '[[listen]]\naddress = "127.0.0.1:25"\nprotocol = "policy"\n'
    status, stderr = run_filterd(config, tmp_path, [*own_network(), *unprivileged()])
    assert status == 2
    assert one_line(stderr) == (
        "filterd: cannot listen on 127.0.0.1:25: permission denied (ports below 1024 need root "
        "or CAP_NET_BIND_SERVICE)"
    )


def test_unix_socket_in_a_missing_directory(tmp_path: Path) -> None:
    socket_path = tmp_path / "missing" / "filterd.sock"
    config = f'[[listen]]\naddress = "unix:{socket_path}"\nprotocol = "policy"\n'
    status, stderr = run_filterd(config, tmp_path)
    assert status == 2
    assert one_line(stderr) == (
        f"filterd: cannot listen on unix:{socket_path}: {socket_path.parent} is not a directory "
        "(create it first)"
    )


def test_maildir_root_below_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory\n")
    config = (
        '[[listen]]\naddress = "127.0.0.1:0"\n[delivery]\nmethod = "maildir"\nroot = "file/mail"\n'
    )
    status, stderr = run_filterd(config, tmp_path)
    assert status == 2
    line = one_line(stderr)
    assert line.startswith(
        f"filterd: cannot write to the Maildir root {tmp_path}/file/mail (delivery.root = "
        '"file/mail"): a part of its path is a file, not a directory (give a directory that '
        "user "
    )
    assert line.endswith(" can create and write to)")


def test_unwritable_maildir_root(tmp_path: Path) -> None:
    mail = not_ours(tmp_path / "mail")
    config = (
        '[[listen]]\naddress = "127.0.0.1:0"\n'
        f'[delivery]\nmethod = "maildir"\nroot = "{mail}"\n'
        f'[quarantine]\nroot = "{tmp_path / "quarantine"}"\n'
    )
    status, stderr = run_filterd(config, tmp_path, unprivileged())
    assert status == 2
    assert one_line(stderr).startswith(
        f"filterd: cannot write to the Maildir root {mail} (delivery.root): permission denied "
        "(give a directory that user "
    )


def test_unwritable_quarantine(tmp_path: Path) -> None:
    held = not_ours(tmp_path / "held")
    config = (
        '[[listen]]\naddress = "127.0.0.1:0"\n'
        '[delivery]\nmethod = "relay"\nnext_hop = "127.0.0.1:1"\n'
        f'[quarantine]\nroot = "{held}/quarantine"\n'
    )
    status, stderr = run_filterd(config, tmp_path, unprivileged())
    assert status == 2
    assert one_line(stderr).startswith(
        f"filterd: cannot write to the quarantine {held}/quarantine (quarantine.root): "
        "permission denied ("
    )


def test_unwritable_spool_directory(tmp_path: Path) -> None:
    spool = not_ours(tmp_path / "spool")
    config = (
        '[[listen]]\naddress = "127.0.0.1:0"\nprotocol = "lmtp"\n'
        '[delivery]\nmethod = "relay"\nnext_hop = "127.0.0.1:1"\n'
        f'[quarantine]\nroot = "{tmp_path / "quarantine"}"\n'
        f'[limits]\nspool_dir = "{spool}"\n'
    )
    status, stderr = run_filterd(config, tmp_path, unprivileged())
    assert status == 2
    assert one_line(stderr).startswith(
        f"filterd: cannot write to the spool directory {spool} (limits.spool_dir): "
        "permission denied ("
    )


def test_next_hop_that_does_not_resolve(tmp_path: Path) -> None:
    config = (
        '[[listen]]\naddress = "127.0.0.1:0"\n'
        '[delivery]\nmethod = "relay"\nnext_hop = "next-hop.invalid:10026"\n'
    )
    status, stderr = run_filterd(config, tmp_path, own_network())
    assert status == 2
    line = one_line(stderr)
    assert line.startswith(
        'filterd: cannot resolve the next hop "next-hop.invalid" (delivery.next_hop): '
    )
    # Without a network (unshare --net) glibc says EAI_AGAIN; with one, the name is unknown.
    assert line.endswith(
        (
            "(give its IP address, or a name this machine resolves: /etc/hosts or DNS)",
            "(After=network-online.target), or give the next hop's IP address)",
        )
    )


def test_a_certificate_and_key_that_do_not_match(tmp_path: Path) -> None:
    authority = trustme.CA()
    one, other = authority.issue_cert("one.test"), authority.issue_cert("other.test")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    one.cert_chain_pems[0].write_to_path(str(cert))
    other.private_key_pem.write_to_path(str(key))
    config = (
        f'[[listen]]\naddress = "127.0.0.1:0"\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
        '[delivery]\nmethod = "relay"\nnext_hop = "127.0.0.1:1"\n'
        f'[quarantine]\nroot = "{tmp_path / "quarantine"}"\n'
    )
    status, stderr = run_filterd(config, tmp_path)
    assert status == 2
    assert one_line(stderr) == (
        f"filterd: cannot load the TLS certificate {cert} and key {key} (listen[0].tls_cert, "
        "listen[0].tls_key): not usable PEM (KEY_VALUES_MISMATCH) (give a PEM certificate "
        "chain and the PEM private key that goes with it)"
    )


def test_a_ca_file_that_is_no_pem(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate\n")
    config = (
        '[[listen]]\naddress = "127.0.0.1:0"\n'
        '[delivery]\nmethod = "relay"\nnext_hop = "127.0.0.1:1"\nstarttls = "required"\n'
        f'tls_ca_file = "{bundle}"\n[quarantine]\nroot = "{tmp_path / "quarantine"}"\n'
    )
    status, stderr = run_filterd(config, tmp_path)
    assert status == 2
    assert one_line(stderr).startswith(
        f"filterd: cannot load the CA file {bundle} (delivery.tls_ca_file): not usable PEM ("
    )


@contextlib.contextmanager
def serving(config: str, workdir: Path) -> Iterator[str]:
    """``filterd run`` that starts: its first line (``listening on ...``); SIGTERM at the end."""
    (workdir / "filterd.toml").write_text(config)
    proc = subprocess.Popen(
        [str(FILTERD), "run", "-c", "filterd.toml"],
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        yield first
        _answered(first)  # so that its signal handler is in place
    finally:
        proc.terminate()
        proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0


POLICY_REQUEST = (
    b"request=smtpd_access_policy\nprotocol_state=RCPT\nsender=a@example.com\n"
    b"recipient=b@example.org\nclient_address=192.0.2.1\n\n"
)


def _answered(first_line: str) -> None:
    """Wait for an answer from the listener that ``first_line`` (``listening on H:P (P)``) names."""
    match = re.search(r"listening on 127\.0\.0\.1:(\d+) \((\w+)\)", first_line)
    assert match is not None, first_line
    with socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=TIMEOUT) as sock:
        if match.group(2) == "policy":
            sock.sendall(POLICY_REQUEST)
        assert sock.recv(1024)


def test_the_checks_create_missing_directories(tmp_path: Path) -> None:
    config = (
        '[[listen]]\naddress = "127.0.0.1:0"\n'
        '[delivery]\nmethod = "maildir"\nroot = "new/mail"\n'
        '[quarantine]\nroot = "new/quarantine"\n[limits]\nspool_dir = "new/spool"\n'
    )
    with serving(config, tmp_path) as first:
        assert "listening on 127.0.0.1:" in first, first
        for name in ("mail", "quarantine", "spool"):
            assert (tmp_path / "new" / name).is_dir()
            assert list((tmp_path / "new" / name).iterdir()) == []  # the probe file is gone
        for private in ("mail", "quarantine", "spool"):  # they hold other people's mail
            assert (tmp_path / "new" / private).stat().st_mode & 0o077 == 0


def test_a_policy_service_needs_no_delivery_nor_quarantine(tmp_path: Path) -> None:
    config = '[[listen]]\naddress = "127.0.0.1:0"\nprotocol = "policy"\n'
    with serving(config, tmp_path) as first:
        assert "(policy)" in first, first
    assert list(tmp_path.iterdir()) == [tmp_path / "filterd.toml"]  # no var/quarantine


def test_the_default_quarantine_is_not_needed_to_start(tmp_path: Path) -> None:
    """Without a [quarantine] table the default (./var/quarantine) is used only if a plugin
    quarantines; an unwritable working directory (systemd starts services in /) must not stop
    a relay from starting. Here ./var is a regular file, so ./var/quarantine cannot exist."""
    (tmp_path / "var").write_text("not a directory")
    config = (
        '[[listen]]\naddress = "127.0.0.1:0"\n'
        '[delivery]\nmethod = "relay"\nnext_hop = "127.0.0.1:10026"\n'
    )
    with serving(config, tmp_path) as first:
        assert "listening on 127.0.0.1:" in first, first


def test_a_unix_milter_socket_another_process_listens_on(tmp_path: Path) -> None:
    """libmilter removes a unix socket before it binds: it would take the path over from a
    running filterd. The start-up check refuses instead."""
    path = tmp_path / "milter.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(str(path))
        other.listen(1)
        status, stderr = run_filterd(
            f'[[listen]]\naddress = "unix:{path}"\nprotocol = "milter"\n', tmp_path
        )
    assert status == 2
    assert one_line(stderr) == (
        f"filterd: cannot listen on unix:{path}: another process listens on this socket (stop "
        "it, or give this [[listen]] another path)"
    )


def test_a_next_hop_name_that_does_not_resolve_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    """EAI_AGAIN (no DNS server reachable, as early at boot) says what to do about it."""
    from filterd.config.types import parse_endpoint
    from filterd.runtime import startup

    def no_dns_yet(*args: object, **kwargs: object) -> object:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(startup.socket, "getaddrinfo", no_dns_yet)
    with pytest.raises(startup.StartupError, match=r"After=network-online\.target"):
        startup.resolvable_next_hop(parse_endpoint("mx.example.net:25"))
