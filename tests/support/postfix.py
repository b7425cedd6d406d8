"""A private, loopback-only Postfix instance for end-to-end tests.

`PostfixInstance` builds a complete Postfix configuration in a fresh directory, starts
`master -c DIR -d` in the foreground (its own session and process group) and stops it by
PID. It never touches the system instance in /etc/postfix, and every listener sits on a
free ephemeral port of 127.0.0.1 chosen at run time.

Layout of the instance directory (mode 0755, so the unprivileged Postfix daemons and the
delivery user can reach it):

    config/    main.cf, master.cf, dynamicmaps.cf(.d)
    queue/     queue_directory (created by `post-install create-missing`)
    data/      data_directory
    mail/      virtual_mailbox_base: one Maildir for all recipients, mail/maildir/new/...
    maillog    Postfix's log (maillog_file + the postlog service: no /dev/log needed)
    master.out stdout/stderr of the master process
    etc-postfix/  with `sendmail_for_all`: /etc/postfix as master's mount namespace shows it

Final delivery is Postfix's own virtual(8) agent into one Maildir, so a test reads the
delivered bytes exactly as Postfix wrote them (LF line endings, Return-Path: and
Delivered-To: prepended; the latter tells which recipient a copy was for). Domains not
listed in `virtual_domains` go to the error(8) transport: nothing ever leaves the machine.

The filter wiring comes from the deploy snippets in deploy/postfix/, with the ports
replaced: 10025 -> the filter port the test gives, 10026 -> a free reinjection port.

Settings that keep the instance fast (see `_main_cf`): `in_flow_delay = 0s` (otherwise
sendmail/pickup throttles to one message per second), `queue_run_delay`,
`minimal_backoff_time` and `maximal_backoff_time` of 1-2 s (deferred mail is retried
quickly; `flush()` forces it), `smtpd_error_sleep_time = 0s` (rejections do not sleep),
`smtpd_peername_lookup = no`, `smtp_dns_support_level = disabled`, `inet_protocols =
ipv4`, `inet_interfaces = 127.0.0.1`, an empty `mydestination` and no aliases.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DIR = REPO_ROOT / "deploy" / "postfix"

MASTER = Path("/usr/lib/postfix/sbin/master")
POST_INSTALL = Path("/usr/lib/postfix/sbin/post-install")
SENDMAIL = Path("/usr/sbin/sendmail")
POSTQUEUE = Path("/usr/sbin/postqueue")
SMTP_SOURCE = Path("/usr/sbin/smtp-source")
SYSTEM_CONFIG_DIR = Path("/etc/postfix")

MYHOSTNAME = "mx.postfix.test"
"""The instance's myhostname (also myorigin); deliberately unlike filterd's test hostname."""

DEFAULT_TIMEOUT = 30.0
"""Upper bound for every wait in this module, in seconds."""

FilterProtocol = Literal["smtp", "lmtp"]

# Minimal master.cf (master(5)): the services a queue needs, nothing chrooted.
_MASTER_CF_BASE = """\
# service  type  private unpriv  chroot  wakeup  maxproc command + args
{smtp_listen} inet  n       -       n       -       -       smtpd
pickup     unix  n       -       n       60      1       pickup
cleanup    unix  n       -       n       -       0       cleanup
qmgr       unix  n       -       n       300     1       qmgr
rewrite    unix  -       -       n       -       -       trivial-rewrite
bounce     unix  -       -       n       -       0       bounce
defer      unix  -       -       n       -       0       bounce
trace      unix  -       -       n       -       0       bounce
verify     unix  -       -       n       -       1       verify
flush      unix  n       -       n       1000?   0       flush
proxymap   unix  -       -       n       -       -       proxymap
proxywrite unix  -       -       n       -       1       proxymap
smtp       unix  -       -       n       -       -       smtp
relay      unix  -       -       n       -       -       smtp
showq      unix  n       -       n       -       -       showq
error      unix  -       -       n       -       -       error
retry      unix  -       -       n       -       -       error
discard    unix  -       -       n       -       -       discard
local      unix  -       n       n       -       -       local
virtual    unix  -       n       n       -       -       virtual
lmtp       unix  -       -       n       -       -       lmtp
anvil      unix  -       -       n       -       1       anvil
scache     unix  -       -       n       -       1       scache
postlog    unix-dgram n  -       n       -       1       postlogd
"""


def postfix_available() -> bool:
    """True if the Postfix master daemon is installed (else e2e tests skip)."""
    return MASTER.is_file()


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (the kernel's ephemeral choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Wait until a TCP connect to host:port succeeds; TimeoutError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"nothing accepts connections on {host}:{port}") from None
            time.sleep(0.05)


def render_snippet(name: str, ports: Mapping[int, int]) -> str:
    """The text of deploy/postfix/<name> with well-known ports replaced (10025 -> x...)."""
    text = (DEPLOY_DIR / name).read_text()
    pattern = "|".join(str(port) for port in ports)
    return re.sub(rf"(?<![0-9])({pattern})(?![0-9])", lambda m: str(ports[int(m[1])]), text)


def snippet_settings(name: str, ports: Mapping[int, int] | None = None) -> dict[str, str]:
    """The ``name = value`` lines of the main.cf snippet deploy/postfix/<name>, with
    well-known ports replaced as `render_snippet` does (none without ``ports``)."""
    text = render_snippet(name, ports) if ports else (DEPLOY_DIR / name).read_text()
    return dict(re.findall(r"^([a-z_]+) = (.*)$", text, re.MULTILINE))


def policy_main_cf(port: int) -> dict[str, str]:
    """The policy snippet's settings (check_policy_service), with 10040 -> ``port``."""
    return snippet_settings("main.cf.policy.snippet", {10040: port})


def milter_main_cf(port: int) -> dict[str, str]:
    """The milter snippet's settings (smtpd_milters), with 10029 -> ``port``."""
    settings = snippet_settings("main.cf.milter.snippet", {10029: port})
    assert settings["smtpd_milters"] == f"inet:127.0.0.1:{port}", settings
    return settings


def override_master_option(master_text: str, name: str, value: str) -> str:
    """Replace the value of every `-o name=...` line in a master.cf text (must exist)."""
    pattern = re.compile(rf"^(\s+-o {re.escape(name)}=).*$", re.MULTILINE)
    new_text, count = pattern.subn(lambda m: m.group(1) + value, master_text)
    if count == 0:
        raise ValueError(f"no '-o {name}=' line to override")
    return new_text


class PostfixInstance:
    """One private Postfix: configure with the constructor, then `start()` / `stop()`."""

    def __init__(
        self,
        base_dir: Path,
        *,
        content_filter: FilterProtocol | None = None,
        filter_port: int | None = None,
        virtual_domains: Sequence[str] = ("example.org", "example.net"),
        reinject_options: Mapping[str, str] | None = None,
        main_cf_extra: Mapping[str, str] | None = None,
        smtpd_options: Mapping[str, str] | None = None,
        filter_wiring: bool = True,
        hosts_file: Path | None = None,
        sendmail_for_all: bool = False,
    ) -> None:
        """Prepare (not start) an instance in the empty directory `base_dir`.

        content_filter: None = no filter in main.cf (the master.cf snippet is still
        installed, so the reinjection smtpd exists); "smtp"/"lmtp" = install the
        matching deploy snippets with 10025 replaced by `filter_port`.
        reinject_options: `-o` overrides for the reinjection smtpd (name -> value).
        main_cf_extra: extra main.cf parameters (may be referenced by `$name`).
        smtpd_options: `-o` options for the inbound smtpd only (e.g. smtpd_proxy_filter).
        filter_wiring: False = no snippet at all, only the base services (the test wires the
        filter itself, as tests/e2e/test_walkthrough.py does with docs/deploy.md's commands).
        hosts_file: run master (and so every daemon) in a mount namespace of its own where
        this file is /etc/hosts (needs root and unshare).
        sendmail_for_all: run master in a mount namespace of its own where /etc/postfix is
        `etc_postfix_dir`, whose main.cf names this instance's configuration directory in
        alternate_config_directories: only then does the set-gid postdrop, and so
        sendmail(1), accept that directory (MAIL_CONFIG) from a user other than root, such
        as the commands of a pipe(8) transport (needs root and unshare).
        """
        if content_filter is not None and filter_port is None:
            raise ValueError("a content filter needs a filter_port")
        self.base_dir = base_dir
        self.config_dir = base_dir / "config"
        self.queue_dir = base_dir / "queue"
        self.data_dir = base_dir / "data"
        self.mail_dir = base_dir / "mail"
        self.log_path = base_dir / "maillog"
        self.master_out_path = base_dir / "master.out"
        self.content_filter = content_filter
        self.filter_port = filter_port if filter_port is not None else free_port()
        self.smtp_port = free_port()
        self.reinject_port = free_port()
        self.virtual_domains = tuple(virtual_domains)
        self.reinject_options = dict(reinject_options or {})
        self.main_cf_extra = dict(main_cf_extra or {})
        self.smtpd_options = dict(smtpd_options or {})
        self.filter_wiring = filter_wiring
        self.hosts_file = hosts_file
        self.sendmail_for_all = sendmail_for_all
        self.etc_postfix_dir = base_dir / "etc-postfix"
        self._master: subprocess.Popen[bytes] | None = None
        self._master_out: int | None = None
        self._built = False

    # -- configuration -------------------------------------------------------------------

    def _delivery_user(self) -> tuple[int, int]:
        """uid/gid that virtual(8) delivers as: nobody, else the postfix user."""
        for name in ("nobody", "postfix"):
            with contextlib.suppress(KeyError):
                entry = pwd.getpwnam(name)
                return entry.pw_uid, entry.pw_gid
        raise RuntimeError("no unprivileged user to deliver mail as")

    def _main_cf(self) -> str:
        uid, gid = self._delivery_user()
        params: dict[str, str] = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": MYHOSTNAME,
            "mydomain": MYHOSTNAME.partition(".")[2],
            "myorigin": "$myhostname",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "smtpd_peername_lookup": "no",
            "smtp_dns_support_level": "disabled",
            "smtpd_error_sleep_time": "0s",
            # Header rewriting/completion only for local submissions (sendmail), never
            # for SMTP clients: SMTP-injected mail keeps its header block as sent.
            "local_header_rewrite_clients": "",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "local_transport": "error:5.1.1 no local delivery in this test instance",
            "default_transport": "error:5.1.2 no outbound mail from this test instance",
            "relay_transport": "error:5.1.2 no outbound mail from this test instance",
            "virtual_transport": "virtual",
            "virtual_mailbox_domains": " ".join(self.virtual_domains),
            "virtual_mailbox_base": str(self.mail_dir),
            # virtual(8) refuses regexp substitutions ($1) in this map, so all recipients
            # share one Maildir; the Delivered-To: header that virtual(8) prepends tells
            # whom each message was for.
            "virtual_mailbox_maps": "static:maildir/",
            "virtual_uid_maps": f"static:{uid}",
            "virtual_gid_maps": f"static:{gid}",
            "maillog_file": str(self.log_path),
            "maillog_file_prefixes": str(self.base_dir),
            "in_flow_delay": "0s",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "biff": "no",
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
        }
        params.update(self.main_cf_extra)
        lines = ["# Generated by tests/support/postfix.py: a private Postfix for tests."]
        lines += [f"{name} = {value}" for name, value in params.items()]
        text = "\n".join(lines) + "\n"
        if self.content_filter is not None:
            name = "main.cf.snippet" if self.content_filter == "smtp" else "main.cf.lmtp.snippet"
            ports = {10025: self.filter_port, 10026: self.reinject_port}
            text += "\n" + render_snippet(name, ports)
        return text

    def _master_cf(self) -> str:
        name = (
            "master.cf.lmtp.snippet" if self.content_filter == "lmtp" else "master.cf.smtp.snippet"
        )
        snippet = render_snippet(name, {10025: self.filter_port, 10026: self.reinject_port})
        for option, value in self.reinject_options.items():
            snippet = override_master_option(snippet, option, value)
        base = _MASTER_CF_BASE.format(smtp_listen=f"127.0.0.1:{self.smtp_port}")
        inbound = "".join(f"  -o {name}={value}\n" for name, value in self.smtpd_options.items())
        first, _, rest = base.partition("smtpd\n")
        return first + "smtpd\n" + inbound + rest + ("\n" + snippet if self.filter_wiring else "")

    def build(self) -> None:
        """Write the configuration and create the queue tree (`post-install create-missing`)."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir.chmod(0o755)
        self.config_dir.mkdir(mode=0o755)
        (self.config_dir / "main.cf").write_text(self._main_cf())
        (self.config_dir / "master.cf").write_text(self._master_cf())
        shutil.copy(SYSTEM_CONFIG_DIR / "dynamicmaps.cf", self.config_dir / "dynamicmaps.cf")
        maps_d = SYSTEM_CONFIG_DIR / "dynamicmaps.cf.d"
        if maps_d.is_dir():
            shutil.copytree(maps_d, self.config_dir / "dynamicmaps.cf.d")
        # Postfix re-reads a config file whose mtime is not yet in the past (it may still
        # be changing), sleeping 300 ms per try: backdate them to skip that wait.
        self._backdate_config()
        uid, gid = self._delivery_user()
        self.mail_dir.mkdir(mode=0o755)
        os.chown(self.mail_dir, uid, gid)
        subprocess.run(
            [
                "sh",
                str(POST_INSTALL),
                f"config_directory={self.config_dir}",
                f"meta_directory={SYSTEM_CONFIG_DIR}",
                "create-missing",
            ],
            env=self._env(),
            check=True,
            capture_output=True,
            timeout=DEFAULT_TIMEOUT,
        )
        if self.sendmail_for_all:
            self._build_etc_postfix()
        check = subprocess.run(
            ["postconf", "-c", str(self.config_dir), "-n"],
            capture_output=True,
            text=True,
            timeout=DEFAULT_TIMEOUT,
        )
        if "warning" in check.stderr:
            raise RuntimeError(f"postconf warns about the generated main.cf:\n{check.stderr}")
        self._built = True

    def _build_etc_postfix(self) -> None:
        """What master's mount namespace shows as /etc/postfix: the system's files (the
        meta_directory: dynamicmaps.cf, postfix-files...) and a main.cf that blesses this
        instance's configuration directory (mail_conf.c reads /etc/postfix/main.cf for that
        when a set-gid program gets a MAIL_CONFIG from an untrusted user)."""
        shutil.copytree(SYSTEM_CONFIG_DIR, self.etc_postfix_dir, symlinks=True)
        self.etc_postfix_dir.chmod(0o755)
        (self.etc_postfix_dir / "main.cf").write_text(
            "# Generated by tests/support/postfix.py: seen as /etc/postfix/main.cf by the\n"
            "# private instance only (its own mount namespace).\n"
            f"alternate_config_directories = {self.config_dir}\n"
        )
        (self.etc_postfix_dir / "main.cf").chmod(0o644)

    def _backdate_config(self) -> None:
        past = time.time() - 10
        for path in self.config_dir.rglob("*"):
            os.utime(path, (past, past))

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["MAIL_CONFIG"] = str(self.config_dir)
        return env

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Start `master -c DIR -d` and wait until the inbound smtpd accepts connections."""
        if not self._built:
            self.build()
        self._master_out = os.open(self.master_out_path, os.O_WRONLY | os.O_CREAT, 0o644)
        # A session of its own: master is a process group leader, so its shutdown
        # (kill(-pid)) reaches exactly its children and the SIGKILL fallback can too.
        command = [str(MASTER), "-c", str(self.config_dir), "-d"]
        binds: list[tuple[Path, Path]] = []
        if self.hosts_file is not None:
            binds.append((self.hosts_file, Path("/etc/hosts")))
        if self.sendmail_for_all:
            binds.append((self.etc_postfix_dir, SYSTEM_CONFIG_DIR))
        if binds:  # unshare and sh exec: the Popen pid is still master's
            command = [*with_bind_mounts(binds), *command]
        self._master = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._master_out,
            stderr=self._master_out,
            env=self._env(),
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._master.poll() is not None:
                raise RuntimeError(
                    f"postfix master exited with {self._master.returncode}:\n{self.diagnostics()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.smtp_port), timeout=1.0):
                    break
            except OSError:
                if time.monotonic() >= deadline:
                    self.stop()
                    raise TimeoutError(f"postfix did not start:\n{self.diagnostics()}") from None
                time.sleep(0.05)
        self.wait_for_log(r"daemon started", timeout=max(1.0, deadline - time.monotonic()))

    @property
    def master_pid(self) -> int | None:
        """PID of the running master process, or None."""
        return self._master.pid if self._master is not None else None

    def processes(self) -> list[int]:
        """PIDs of all live processes of this instance (MAIL_CONFIG or argv naming its dir)."""
        config = str(self.config_dir).encode()
        env_marker = b"MAIL_CONFIG=" + config + b"\0"
        found: list[int] = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environ = (entry / "environ").read_bytes()
                cmdline = (entry / "cmdline").read_bytes()
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[-1].split()[0] == "Z":
                continue  # a zombie is already dead, only not reaped yet
            if env_marker in environ or config in cmdline.split(b"\0"):
                found.append(int(entry.name))
        return found

    def stop(self, timeout: float = 10.0) -> None:
        """Stop master by PID (SIGTERM, wait, SIGKILL) and make sure no child survives."""
        master = self._master
        if master is not None and master.poll() is None:
            master.send_signal(signal.SIGTERM)
            try:
                master.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(master.pid, signal.SIGKILL)
                master.wait(timeout=timeout)
        if master is not None:
            # Children get SIGTERM from master; give them a moment, then SIGKILL stragglers.
            deadline = time.monotonic() + timeout
            while self.processes() and time.monotonic() < deadline:
                time.sleep(0.05)
            for pid in self.processes():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self._master_out is not None:
            os.close(self._master_out)
            self._master_out = None
        self._master = None

    def reload(self) -> None:
        """`postfix reload` equivalent: SIGHUP to master (re-reads main.cf and master.cf)."""
        if self._master is None:
            raise RuntimeError("not running")
        self._master.send_signal(signal.SIGHUP)

    def __enter__(self) -> PostfixInstance:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- logs ----------------------------------------------------------------------------

    def log_text(self) -> str:
        """The whole Postfix log so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_offset(self) -> int:
        """Current length of the log; pass as `since` to wait for later lines only."""
        return len(self.log_text())

    def wait_for_log(
        self, pattern: str, timeout: float = DEFAULT_TIMEOUT, since: int = 0
    ) -> re.Match[str]:
        """Wait until a log line (after offset `since`) matches `pattern`; return the match."""
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.log_text(), since)
            if match is not None:
                return match
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"no log line matched {pattern!r} in {timeout}s\n{self.diagnostics()}"
                )
            time.sleep(0.05)

    def diagnostics(self, lines: int = 60) -> str:
        """Tail of the log and of master's own output, for failure messages."""
        log_tail = "\n".join(self.log_text().splitlines()[-lines:])
        try:
            out = self.master_out_path.read_text(errors="replace")
        except FileNotFoundError:
            out = ""
        return f"--- maillog (tail) ---\n{log_tail}\n--- master output ---\n{out}"

    # -- injection -----------------------------------------------------------------------

    def sendmail(
        self, message: bytes, sender: str, recipients: Sequence[str], timeout: float = 10.0
    ) -> None:
        """Submit through this instance's sendmail(1)/postdrop (`-i`: a lone "." is data)."""
        subprocess.run(
            [str(SENDMAIL), "-C", str(self.config_dir), "-i", "-f", sender, "--", *recipients],
            input=message,
            env=self._env(),
            check=True,
            capture_output=True,
            timeout=timeout,
        )

    def send_smtp(
        self,
        message: bytes,
        sender: str,
        recipients: Sequence[str],
        *,
        helo: str | None = None,
        port: int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> dict[str, tuple[int, bytes]]:
        """Submit over SMTP to the inbound smtpd (or `port`); returns smtplib's refusals.

        Line endings become CRLF first: smtplib sends bytes as they are, and would add a
        CRLF of its own (an extra empty line) after a message that ends in a bare LF.
        """
        with smtplib.SMTP(
            "127.0.0.1", port or self.smtp_port, local_hostname=helo, timeout=timeout
        ) as client:
            return client.sendmail(sender, list(recipients), to_crlf(message))

    def smtp_source(
        self,
        count: int,
        sender: str,
        recipient: str,
        *,
        sessions: int = 1,
        size: int = 1000,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """Inject `count` generated messages over SMTP with smtp-source(1)."""
        subprocess.run(
            [
                str(SMTP_SOURCE),
                "-m",
                str(count),
                "-s",
                str(sessions),
                "-l",
                str(size),
                "-f",
                sender,
                "-t",
                recipient,
                f"127.0.0.1:{self.smtp_port}",
            ],
            check=True,
            capture_output=True,
            timeout=timeout,
        )

    # -- queue ---------------------------------------------------------------------------

    def queue_json(self) -> list[dict[str, Any]]:
        """`postqueue -j`: one dict per queued message (queue_name, queue_id, recipients...)."""
        result = subprocess.run(
            [str(POSTQUEUE), "-c", str(self.config_dir), "-j"],
            env=self._env(),
            check=True,
            capture_output=True,
            text=True,
            timeout=DEFAULT_TIMEOUT,
        )
        return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]

    def flush(self) -> None:
        """`postqueue -f`: retry deferred mail now."""
        subprocess.run(
            [str(POSTQUEUE), "-c", str(self.config_dir), "-f"],
            env=self._env(),
            check=True,
            capture_output=True,
            timeout=DEFAULT_TIMEOUT,
        )

    def wait_for_empty_queue(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until `postqueue -j` lists nothing."""
        deadline = time.monotonic() + timeout
        while self.queue_json():
            if time.monotonic() >= deadline:
                raise TimeoutError(f"queue not empty after {timeout}s:\n{self.diagnostics()}")
            time.sleep(0.1)

    # -- delivered mail ------------------------------------------------------------------

    def _maildir_files(self) -> list[Path]:
        files: list[Path] = []
        for sub in ("new", "cur"):
            folder = self.mail_dir / "maildir" / sub
            if folder.is_dir():
                files.extend(p for p in folder.iterdir() if p.is_file())
        return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))

    def delivered_messages(self, recipient: str | None = None) -> list[bytes]:
        """Raw bytes of each delivered message (for one recipient, or all), oldest first."""
        messages = [path.read_bytes() for path in self._maildir_files()]
        if recipient is None:
            return messages
        return [m for m in messages if delivered_to(m) == recipient.lower()]

    def wait_for_delivered(
        self, count: int, recipient: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> list[bytes]:
        """Wait until at least `count` messages were delivered (to `recipient`, or at all)."""
        deadline = time.monotonic() + timeout
        while True:
            messages = self.delivered_messages(recipient)
            if len(messages) >= count:
                return messages
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{len(messages)} of {count} messages delivered to {recipient or 'anyone'}"
                    f" after {timeout}s\n{self.diagnostics()}"
                )
            time.sleep(0.05)


def with_hosts_file(hosts_file: Path) -> list[str]:
    """A command prefix: a mount namespace of its own, with `hosts_file` as /etc/hosts."""
    return with_bind_mounts([(hosts_file, Path("/etc/hosts"))])


def with_bind_mounts(binds: Sequence[tuple[Path, Path]]) -> list[str]:
    """A command prefix: a mount namespace of its own (changes stay in it: unshare makes its
    mounts private), with each (source, target) of `binds` bind-mounted over its target."""
    script = (
        'while [ "$1" != -- ]; do mount --bind "$1" "$2" || exit 1; shift 2; done; shift; exec "$@"'
    )
    paths = [str(path) for bind in binds for path in bind]
    return ["unshare", "--mount", "--", "sh", "-c", script, "sh", *paths, "--"]


def to_crlf(message: bytes) -> bytes:
    """`message` with every line ending (LF or CRLF) as CRLF, ending in one."""
    text = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return text if text.endswith(b"\r\n") else text + b"\r\n"


_DELIVERED_TO = re.compile(rb"^Delivered-To: *([^\r\n]*)\r?$", re.MULTILINE | re.IGNORECASE)


def delivered_to(message: bytes) -> str | None:
    """The recipient that virtual(8) delivered `message` to (its first Delivered-To:)."""
    header_end = message.find(b"\n\n")
    match = _DELIVERED_TO.search(message, 0, header_end if header_end >= 0 else len(message))
    return match.group(1).decode().strip().lower() if match else None


def make_base_dir() -> Path:
    """A fresh instance directory under the system temp dir.

    Not pytest's tmp_path: that sits below a 0700 directory which the unprivileged
    Postfix daemons and the delivery user cannot traverse.
    """
    return Path(tempfile.mkdtemp(prefix="filterd-postfix-"))


@contextlib.contextmanager
def running(instance: PostfixInstance, *, keep_dir: bool = False) -> Iterator[PostfixInstance]:
    """Start `instance`; on exit (also on error) stop it and remove its directory."""
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()
        if not keep_dir:
            shutil.rmtree(instance.base_dir, ignore_errors=True)


class PostfixFactory:
    """Creates started instances for one test and stops them all in `close()`.

    The pytest fixture `postfix_factory` (tests/e2e/conftest.py) wraps this.
    """

    def __init__(self) -> None:
        self.instances: list[PostfixInstance] = []

    def __call__(
        self,
        *,
        content_filter: FilterProtocol | None = None,
        filter_port: int | None = None,
        virtual_domains: Sequence[str] = ("example.org", "example.net"),
        reinject_options: Mapping[str, str] | None = None,
        main_cf_extra: Mapping[str, str] | None = None,
        smtpd_options: Mapping[str, str] | None = None,
    ) -> PostfixInstance:
        """Build and start an instance in a fresh directory (see `PostfixInstance`)."""
        instance = PostfixInstance(
            make_base_dir(),
            content_filter=content_filter,
            filter_port=filter_port,
            virtual_domains=virtual_domains,
            reinject_options=reinject_options,
            main_cf_extra=main_cf_extra,
            smtpd_options=smtpd_options,
        )
        self.instances.append(instance)
        instance.start()
        return instance

    def close(self, *, keep_dirs: bool = False) -> None:
        """Stop every instance; remove their directories unless `keep_dirs`."""
        for instance in self.instances:
            instance.stop()
            if not keep_dirs:
                shutil.rmtree(instance.base_dir, ignore_errors=True)
        self.instances.clear()
