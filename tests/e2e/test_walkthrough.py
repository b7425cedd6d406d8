"""docs/deploy.md's walk-through of every mode, run from the document against a private Postfix.

Each test takes the commands and files of docs/deploy.md's walk-through steps (the blocks after a
``<!-- walkthrough: NAME -->`` comment) and runs them in the document's order, on a private
Postfix that starts with no filter wiring at all, so the document's commands are what wires it.
Only ports, paths and addresses are changed (tests/support/walkthrough.py says exactly how:
the directories of /etc, /var and /run it names move below a temporary directory per host,
/etc/postfix is the private Postfix's directory, every port is a free one and 192.0.2.N is
127.0.0.N). What cannot run here as on a server is done by the test the way the document means:
``filterd run`` and ``systemctl restart filterd`` start filterd with that file (this checkout's
filterd, not one installed by ``make install-prod``, which tests/integration/test_packaging.py
tests); ``systemctl enable --now spamd`` starts spamd with the OPTIONS the document writes to
/etc/default/spamd, as Debian's unit does (plus tests/support/spamd.py's own: local tests only,
a private port, pid file and Bayes path); ``apt-get`` lines must name packages that
deploy/install-system-packages.sh installs. Every ``filterd doctor`` of the document must find
nothing (the block fails otherwise), and each test then checks what the document promises the
swaks lines get: delivery, quarantine after the queue, a 5xx before it, no bounce ever.

Three things the document's blocks do not say are added by the tests, because a test machine
is not a server on the internet: the SPF entry of the policy service asks the test's own DNS
server (``resolver``), the policy test's client comes from an outside address through Postfix's
XCLIENT (``smtpd_authorized_xclient_hosts``, a setting of the test's Postfix only), and the
several-hosts test runs its Postfix, and the doctor that reads it, in a mount namespace where
the walk-through's /etc/hosts is /etc/hosts. On one machine every host's connection comes from
127.0.0.1, so the reinjection smtpd's network (192.0.2.0/29, that is 127.0.0.0/29 here) is
also checked against the document's own addresses.
"""

from __future__ import annotations

import contextlib
import ipaddress
import pwd
import re
import shlex
import shutil
import smtplib
import tomllib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from filterd.cli.doctor.spamd_probe import parse_spamd_options
from filterd.cli.main import main
from tests.support.dns_server import DnsServer
from tests.support.filterd_proc import FilterdFactory, FilterdProcess
from tests.support.postfix import (
    REPO_ROOT,
    PostfixFactory,
    PostfixInstance,
    free_port,
    make_base_dir,
    postfix_available,
    snippet_settings,
)
from tests.support.spamd import GTUBE, running_spamd, spamd_installed
from tests.support.walkthrough import (
    DEPLOY_MD,
    Adapter,
    Block,
    Event,
    Runner,
    apt_packages,
    packages_installed_by_the_repository,
    spamd_options,
    walkthrough_blocks,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not postfix_available(), reason="Postfix (master) is not installed"),
    pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed"),
    pytest.mark.timeout(240),
]

RECIPIENT = "postmaster@example.org"
SENDER = "you@example.net"  # swaks' --from in the document: a bounce would be delivered here
BASE_HOSTS = "127.0.0.1 localhost\n::1 localhost\n"

STEPS_RUN = {
    "configure",
    "start",
    "after-queue-smtp",
    "after-queue-lmtp",
    "check",
    "spamd",
    "spamassassin",
    "gtube",
    "before-queue",
    "milter",
    "policy",
    "pool-filterd",
    "pool-postfix",
    "pool-doctor",
    "chain-examples",
}
"""Every step name the tests below run (a marker in docs/deploy.md that none runs is an error)."""


def needs_spamd() -> None:
    if not spamd_installed():
        pytest.skip("spamd is not installed")
    try:
        pwd.getpwnam("debian-spamd")
    except KeyError:
        pytest.skip("no debian-spamd user (Debian's spamd package creates it)")


class Walkthrough:
    """The walk-through on this machine: one private Postfix, a host (a root directory and its
    filterd) for each machine of the document, spamd when asked for."""

    def __init__(
        self,
        base: Path,
        postfix: PostfixInstance,
        filterd_factory: FilterdFactory,
        stack: contextlib.ExitStack,
        *,
        hosts_file: Path | None = None,
    ) -> None:
        self.base = base
        self.postfix = postfix
        self.filterd_factory = filterd_factory
        self.stack = stack
        self.hosts_file = hosts_file
        self.ports = {port: free_port() for port in (10025, 10026, 10029, 10040)}
        self.runners: dict[str, Runner] = {}
        self.filterd: dict[str, FilterdProcess] = {}
        self.blocks = walkthrough_blocks()

    def host(self, name: str = "postfix") -> Runner:
        """The runner of a host; "postfix" is the one Postfix runs on."""
        if name not in self.runners:
            on_postfix = name == "postfix"
            adapter = Adapter(
                self.base / "hosts" / name,
                self.ports,
                self.postfix.smtp_port,
                self.postfix.config_dir if on_postfix else None,
            )
            hosts_file = self.hosts_file if on_postfix else None
            self.runners[name] = Runner(adapter, hosts_file)
        return self.runners[name]

    def run(
        self,
        step: str,
        host: str = "postfix",
        *,
        replace: Mapping[str, str] | None = None,
        edit: Callable[[str], str] | None = None,
    ) -> list[Event]:
        """Run a step's blocks on a host and carry out what they asked for; return its swaks
        runs. ``edit`` changes a file block's content once it is written (what the module
        docstring lists, nothing else)."""
        runner = self.host(host)
        swaks: list[Event] = []
        for block in self.blocks[step]:
            events = runner.run(block, replace)
            if block.file_path is not None and edit is not None:
                path = runner.adapter.path(block.file_path)
                path.write_text(edit(path.read_text()))
            for event in events:
                if event.command == "swaks":
                    swaks.append(event)
                else:
                    self._carry_out(event, host, block)
        return swaks

    def _carry_out(self, event: Event, host: str, block: Block) -> None:
        where = f"docs/deploy.md:{block.line}"
        if event.command == "filterd":  # filterd run -c PATH
            assert event.args[:2] == ("run", "-c"), where
            self.start_filterd(host, Path(event.args[2]))
        elif event.command == "systemctl" and event.args == ("enable", "--now", "filterd"):
            self.start_filterd(host, self.unit_config(host, where))
        elif event.command == "systemctl" and event.args == ("restart", "filterd"):
            # as the unit says if this test installed it, else where section 2 puts the file
            unit = self.host(host).adapter.path("/etc/systemd/system/filterd.service")
            config = (
                self.unit_config(host, where)
                if unit.is_file()
                else self.host(host).adapter.path("/etc/filterd/filterd.toml")
            )
            self.start_filterd(host, config)
        elif event.command == "systemctl" and event.args == ("daemon-reload",):
            pass
        elif event.command == "adduser":
            assert event.args[-1] == "filterd", where  # the unit's User=
            assert "--system" in event.args, where
        elif event.command == "chgrp":
            assert event.args[0] == "filterd", where
        elif event.command == "systemctl" and event.args == ("enable", "--now", "spamd"):
            self.start_spamd(host)
        elif event.command == "apt-get":
            assert apt_packages([event]) <= packages_installed_by_the_repository(), where
        else:
            raise AssertionError(f"{where}: the test does not know how to run {event}")

    def unit_config(self, host: str, where: str) -> Path:
        """The configuration file the installed unit starts filterd with (its ``ExecStart``):
        the unit must be installed, and start the filterd of ``make install-prod``."""
        adapter = self.host(host).adapter
        unit = adapter.path("/etc/systemd/system/filterd.service")
        assert unit.is_file(), f"{where}: filterd.service is not installed"
        (start,) = [line for line in unit.read_text().splitlines() if line.startswith("ExecStart=")]
        argv = start.removeprefix("ExecStart=").split()
        assert argv[:2] == ["/opt/filterd/bin/filterd", "run"], f"{where}: {start}"
        assert argv[2] == "-c", f"{where}: {start}"
        return Path(argv[3])

    def start_filterd(self, host: str, config: Path) -> FilterdProcess:
        """(Re)start the host's filterd with the file ``config``, as ``filterd run -c``."""
        if host in self.filterd:
            assert self.filterd[host].stop(sweep=False) == 0, self.filterd[host].output_text()
        number = len(self.filterd_factory.processes)
        process = FilterdProcess(config.read_text(), self.base / f"filterd-{host}-{number}")
        process.config_path = config
        self.filterd_factory.processes.append(process)
        process.start()
        self.filterd[host] = process
        return process

    def start_spamd(self, host: str) -> None:
        options = spamd_options(self.host(host).adapter.path("/etc/default/spamd"))
        assert not {"-i", "--listen"} & set(options), "the test gives spamd a port of its own"
        children = parse_spamd_options(options).children
        spamd = self.stack.enter_context(running_spamd(children=children, extra_args=options))
        self.ports[783] = spamd.port

    def quarantined(self, host: str = "postfix") -> list[bytes]:
        root = self.host(host).adapter.path("/var/lib/filterd/quarantine")
        folders = [root / "new", root / "cur"]
        files = [path for folder in folders if folder.is_dir() for path in folder.iterdir()]
        return [path.read_bytes() for path in sorted(files, key=lambda p: p.stat().st_mtime_ns)]

    def wait_quarantined(self, count: int, host: str = "postfix") -> list[bytes]:
        """The host's quarantined messages once there are ``count``; the queue empty."""
        self.postfix.wait_for_empty_queue()  # filterd quarantined before it answered 250
        found = self.quarantined(host)
        assert len(found) == count, found
        return found

    def assert_no_bounce(self) -> None:
        self.postfix.wait_for_empty_queue()
        assert self.postfix.delivered_messages(SENDER) == [], "a bounce went to the sender"
        assert "status=bounced" not in self.postfix.log_text()


@pytest.fixture
def walkthrough(
    postfix_factory: PostfixFactory, filterd_factory: FilterdFactory
) -> Iterator[Callable[..., Walkthrough]]:
    """Makes the walk-through's machine: a private Postfix with nothing of filterd in it."""
    with contextlib.ExitStack() as stack:

        def make(
            *, main_cf_extra: Mapping[str, str] | None = None, hosts: bool = False
        ) -> Walkthrough:
            base = make_base_dir()  # the factory removes it, or keeps it when the test fails
            hosts_file = None
            if hosts:
                hosts_file = base / "hosts" / "postfix" / "etc" / "hosts"
                hosts_file.parent.mkdir(parents=True)
                hosts_file.write_text(BASE_HOSTS)
            postfix = PostfixInstance(
                base,
                main_cf_extra=main_cf_extra,
                filter_wiring=False,
                hosts_file=hosts_file,
            )
            postfix_factory.instances.append(postfix)
            postfix.start()
            return Walkthrough(base, postfix, filterd_factory, stack, hosts_file=hosts_file)

        yield make


def body_of(message: bytes) -> bytes:
    return message.replace(b"\r\n", b"\n").split(b"\n\n", 1)[1]


def head_of(message: bytes) -> bytes:
    return message.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0] + b"\n"


def assert_section_4(walk: Walkthrough, check: list[Event], host: str = "postfix") -> bytes:
    """Section 4 after the queue (and before it, with the proxy): the plain message delivered
    through filterd, the executable attachment quarantined with a 250, nothing bounced.
    Returns the delivered copy."""
    plain, attachment = check
    assert plain.status == 0, plain.output
    assert attachment.status == 0, attachment.output  # the client got 250 for it
    (delivered,) = walk.postfix.wait_for_delivered(1, RECIPIENT)
    assert b"(filterd)" in head_of(delivered)  # filterd's Received: header
    (kept,) = walk.wait_quarantined(1, host)
    assert b'filename="invoice.exe"' in kept
    assert walk.postfix.delivered_messages(RECIPIENT) == [delivered]
    walk.assert_no_bounce()
    return delivered


# --- after the queue -------------------------------------------------------------------------


def test_after_queue_smtp_then_spamassassin(walkthrough: Callable[..., Walkthrough]) -> None:
    """Sections 2, 3 (SMTP) and 4, then SpamAssassin added: GTUBE is quarantined, not
    rejected, and the rest of the mail carries spamd's verdict."""
    needs_spamd()
    walk = walkthrough()
    walk.run("configure")
    walk.run("start")
    walk.run("after-queue-smtp")
    assert_section_4(walk, walk.run("check"))
    log = walk.postfix.log_text()
    assert re.search(rf"relay=127\.0\.0\.1\[127\.0\.0\.1\]:{walk.ports[10025]},.*status=sent", log)

    walk.run("spamd")
    walk.run("spamassassin")
    (gtube,) = walk.run("gtube")
    assert gtube.status == 0, gtube.output  # accepted: after the queue it cannot be refused
    walk.postfix.wait_for_empty_queue()
    spam = walk.quarantined()[1]
    assert GTUBE.encode() in body_of(spam)
    assert b"X-Spam-Flag: YES" in head_of(spam)
    plain, attachment = walk.run("check")
    assert (plain.status, attachment.status) == (0, 0)
    delivered = walk.postfix.wait_for_delivered(2, RECIPIENT)
    assert b"X-Spam-Status: No" in head_of(delivered[-1])
    assert len(walk.wait_quarantined(3)) == 3
    assert GTUBE.encode() not in b"".join(walk.postfix.delivered_messages())
    walk.assert_no_bounce()


def test_after_queue_lmtp(walkthrough: Callable[..., Walkthrough]) -> None:
    """Section 3's LMTP variant: Postfix's lmtp(8) client hands the mail to filterd."""
    walk = walkthrough()
    walk.run("configure")
    walk.run("start")
    walk.run("after-queue-lmtp")
    assert 'protocol = "lmtp"' in walk.filterd["postfix"].config_path.read_text()
    assert_section_4(walk, walk.run("check"))
    port = walk.ports[10025]
    assert re.search(
        rf"postfix/lmtp\[\d+\]: \w+: to=<{RECIPIENT}>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:{port},"
        r".*status=sent",
        walk.postfix.log_text(),
    )


# --- before the queue ------------------------------------------------------------------------


def test_before_queue_proxy_rejects_to_the_client(walkthrough: Callable[..., Walkthrough]) -> None:
    """The proxy: GTUBE is refused to the client itself, nothing is queued or bounced for it."""
    needs_spamd()
    walk = walkthrough()
    walk.run("configure")
    walk.run("start")
    walk.run("spamd")
    walk.run("before-queue")
    assert_section_4(walk, walk.run("check"))
    (gtube,) = walk.run("gtube")
    assert gtube.status != 0
    assert "550 5.7.1 Message content rejected as spam" in gtube.output, gtube.output
    walk.postfix.wait_for_log(r"proxy-reject: END-OF-MESSAGE: 550 5\.7\.1 Message content")
    assert GTUBE.encode() not in b"".join(walk.postfix.delivered_messages())
    assert len(walk.quarantined()) == 1  # only the attachment
    walk.assert_no_bounce()


def test_milter_rejects_to_the_client(walkthrough: Callable[..., Walkthrough]) -> None:
    """The milter: the executable attachment is refused at end of message."""
    pytest.importorskip("Milter", reason="pymilter (the milter extra) is not installed")
    walk = walkthrough()
    walk.run("milter")
    plain, attachment = walk.run("check")
    assert plain.status == 0, plain.output
    assert attachment.status != 0
    assert "550 5.7.1 executable attachments are not accepted" in attachment.output
    (delivered,) = walk.postfix.wait_for_delivered(1, RECIPIENT)
    assert b"invoice.exe" not in delivered
    walk.postfix.wait_for_log(r"milter-reject: END-OF-MESSAGE from \S+: 5\.7\.1 executable")
    walk.assert_no_bounce()


SPF_ZONE = {"example.com": [{"TXT": "v=spf1 ip4:192.0.2.0/24 -all"}]}


def _from_outside(port: int, address: str) -> tuple[int, bytes]:
    """An SMTP session as if from ``address`` (XCLIENT): alice@example.com to the
    postmaster; returns the RCPT reply, and sends the message when it is accepted."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.example.net")
        assert client.docmd("XCLIENT", f"ADDR={address}")[0] == 220
        client.ehlo("mail.example.com")
        assert client.mail("alice@example.com")[0] == 250
        code, text = client.rcpt(RECIPIENT)
        if code == 250:
            assert client.data(b"Subject: from outside\r\n\r\nhello\r\n")[0] == 250
        return code, text


def test_policy_service_refuses_spf_fail_at_rcpt(walkthrough: Callable[..., Walkthrough]) -> None:
    """The policy service with SPF: a client the sender's record fails gets 550 5.7.23 at RCPT;
    one it passes, and loopback (section 4's checks), get through."""
    walk = walkthrough(main_cf_extra={"smtpd_authorized_xclient_hosts": "127.0.0.0/8"})
    with DnsServer(SPF_ZONE) as dns:
        resolver = f'resolver = {{ nameservers = ["{dns.address}"] }}\n'

        def ask_the_test_dns(text: str) -> str:
            assert '\nplugin = "spf"\n[chain.config]\n' in text
            return text.replace("[chain.config]\n", "[chain.config]\n" + resolver, 1)

        walk.run("policy", edit=ask_the_test_dns)
        plain, attachment = walk.run("check")
        assert (plain.status, attachment.status) == (0, 0)  # loopback: SPF skips it
        walk.postfix.wait_for_delivered(2, RECIPIENT)
        code, text = _from_outside(walk.postfix.smtp_port, "203.0.113.9")
        assert code == 550, text
        assert text.startswith(b"5.7.23 "), text
        assert _from_outside(walk.postfix.smtp_port, "192.0.2.25")[0] == 250
    messages = walk.postfix.wait_for_delivered(3, RECIPIENT)
    assert b"Subject: from outside" in messages[-1]
    walk.postfix.wait_for_log(r"NOQUEUE: reject: RCPT from \S+: 550 5\.7\.23 <postmaster@")
    walk.assert_no_bounce()


# --- several filterd hosts -------------------------------------------------------------------


def test_several_filterd_hosts_share_and_fail_over(
    walkthrough: Callable[..., Walkthrough],
) -> None:
    """Two filterd hosts behind one Postfix: mail goes to both, each hands it back to Postfix's
    reinjection smtpd, and with one host down the other takes all of it."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    walk = walkthrough(hosts=True)
    walk.run("pool-filterd", host="a")
    walk.run("pool-filterd", host="b", replace={"ADDR=192.0.2.2": "ADDR=192.0.2.3"})
    walk.run("pool-postfix")
    installed = walk.host("postfix").adapter.path("/etc/filterd/filterd.toml")
    installed.parent.mkdir(parents=True)
    for host in ("a", "b"):  # "copy a filterd host's /etc/filterd/filterd.toml"
        shutil.copy(walk.host(host).adapter.path("/etc/filterd/filterd.toml"), installed)
        walk.run("pool-doctor")

    plain, attachment = walk.run("check")
    assert (plain.status, attachment.status) == (0, 0)
    walk.postfix.wait_for_delivered(1, RECIPIENT)
    walk.postfix.wait_for_empty_queue()
    assert len(walk.quarantined("a")) + len(walk.quarantined("b")) == 1

    port = walk.ports[10025]
    since = walk.postfix.log_offset()
    for number in range(16):  # one at a time: no connection is cached, each picks anew
        walk.postfix.send_smtp(b"Subject: spread\r\n\r\nbody\r\n", SENDER, [RECIPIENT])
        walk.postfix.wait_for_delivered(2 + number, RECIPIENT)
    relayed = rf"relay=filterd-pool\[(127\.0\.0\.[23])\]:{port},.*status=sent"
    relays = re.findall(relayed, walk.postfix.log_text()[since:])
    assert len(relays) == 16
    assert set(relays) == {"127.0.0.2", "127.0.0.3"}, relays  # each host got some

    assert walk.filterd["b"].stop() == 0
    since = walk.postfix.log_offset()
    for _ in range(4):
        walk.postfix.send_smtp(b"Subject: fail-over\r\n\r\nbody\r\n", SENDER, [RECIPIENT])
    walk.postfix.wait_for_delivered(21, RECIPIENT)
    log = walk.postfix.log_text()[since:]
    assert re.findall(relayed, log) == ["127.0.0.2"] * 4
    assert "status=deferred" not in log
    walk.assert_no_bounce()


def test_the_reinjection_network_holds_exactly_the_documents_hosts() -> None:
    """What one machine cannot show (every connection comes from 127.0.0.1 here): the network
    the reinjection smtpd trusts holds both filterd hosts of the document, and is no wider."""
    (block,) = walkthrough_blocks()["pool-postfix"]
    networks = set(
        re.findall(r"/inet/(?:mynetworks|smtpd_authorized_xforward_hosts)=(\S+?)'", block.text)
    )
    (network,) = {ipaddress.ip_network(value) for value in networks}
    assert {ipaddress.ip_address(a) for a in ("192.0.2.2", "192.0.2.3")} <= set(network)
    assert network.num_addresses <= 8


# --- what the document says beside the steps -------------------------------------------------


def test_every_walkthrough_step_of_the_document_is_run() -> None:
    assert set(walkthrough_blocks()) == STEPS_RUN


def test_the_configuration_shown_is_deploy_filterd_toml() -> None:
    shown = walkthrough_blocks()["configure"][0].text
    assert "install -m 0644 deploy/filterd.toml /etc/filterd/filterd.toml" in shown
    text = (REPO_ROOT / "deploy" / "filterd.toml").read_text()
    assert f"```toml\n{text}```\n" in DEPLOY_MD.read_text()


def test_the_chain_examples_load_after_the_configuration(tmp_path: Path) -> None:
    """The plugin blocks of "Plugins", each appended to deploy/filterd.toml, are valid."""
    base = (REPO_ROOT / "deploy" / "filterd.toml").read_text()
    for number, block in enumerate(walkthrough_blocks()["chain-examples"]):
        config = tmp_path / f"example{number}.toml"
        config.write_text(base.replace("/var/", f"{tmp_path}/var/") + "\n" + block.text)
        assert main(["check-config", "-c", str(config)]) == 0, block.text
        for entry in tomllib.loads(block.text)["chain"]:  # after the queue: no reject action
            assert "reject" not in (entry.get("on_error"), *entry["config"].values()), entry


def _postconf_settings(block: Block) -> dict[str, str]:
    """The ``name = value`` arguments of a block's ``postconf -e`` commands."""
    settings: dict[str, str] = {}
    for command in block.text.replace("\\\n", " ").splitlines():
        words = shlex.split(command, comments=True)
        if words[:2] == ["postconf", "-e"]:
            for word in words[2:]:
                name, _, value = word.partition("=")
                settings[name.strip()] = value.strip()
    return settings


@pytest.mark.parametrize(
    ("step", "snippet"),
    [
        ("after-queue-smtp", "main.cf.snippet"),
        ("after-queue-lmtp", "main.cf.lmtp.snippet"),
        ("milter", "main.cf.milter.snippet"),
        ("policy", "main.cf.policy.snippet"),
    ],
)
def test_the_documents_postconf_sets_the_snippets_settings(step: str, snippet: str) -> None:
    expected = snippet_settings(snippet)
    (block,) = [b for b in walkthrough_blocks()[step] if b.lang == "sh"]
    assert _postconf_settings(block) == expected


def test_the_documents_packages_are_the_ones_the_repository_installs() -> None:
    events = [
        Event("apt-get", tuple(shlex.split(line)[1:]))
        for blocks in walkthrough_blocks().values()
        for block in blocks
        for line in block.text.splitlines()
        if line.startswith("apt-get ")
    ]
    assert apt_packages(events) == {"spamd"}
    assert apt_packages(events) <= packages_installed_by_the_repository()


# --- the adaptation itself -------------------------------------------------------------------


def test_the_adapter_changes_ports_paths_and_addresses_and_nothing_else(tmp_path: Path) -> None:
    postfix_dir = tmp_path / "postfix"
    adapter = Adapter(tmp_path / "host", {10025: 40001, 10026: 40002}, 40025, postfix_dir)
    document = (
        "postconf -e 'content_filter = scan:[192.0.2.2]:10025'\n"
        "cat deploy/postfix/master.cf.smtp.snippet >> /etc/postfix/master.cf\n"
        "postconf -MX smtp/inet\n"
        "smtp      inet  n       -       n       -       20      smtpd\n"
        'root = "/var/lib/filterd/quarantine"  # 10 parallel sessions, RFC 2033, /etc/passwd\n'
        "swaks --server 127.0.0.1:25 --to postmaster@example.org\n"
    )
    assert adapter.text(document) == (
        "postconf -e 'content_filter = scan:[127.0.0.2]:40001'\n"
        f"cat deploy/postfix/master.cf.smtp.snippet >> {postfix_dir}/master.cf\n"
        "postconf -MX 127.0.0.1:40025/inet\n"
        "127.0.0.1:40025      inet  n       -       n       -       20      smtpd\n"
        f'root = "{tmp_path}/host/var/lib/filterd/quarantine"'
        "  # 10 parallel sessions, RFC 2033, /etc/passwd\n"
        "swaks --server 127.0.0.1:40025 --to postmaster@example.org\n"
    )
    with pytest.raises(ValueError, match="port 783"):
        adapter.text('address = "127.0.0.1:783"')
    assert adapter.text('address = "127.0.0.1:783"', strict=False) == 'address = "127.0.0.1:783"'
    with pytest.raises(ValueError, match="/etc/passwd"):
        adapter.path("/etc/passwd")


def test_blocks_are_found_under_their_markers_also_in_a_list() -> None:
    text = (
        "<!-- walkthrough: one -->\n\n```sh\necho a\n```\n\n```sh\nnot marked\n```\n"
        "- item\n\n  <!-- walkthrough: one -->\n  ```toml\n  # /etc/filterd/filterd.toml\n"
        "  [[listen]]\n  ```\n"
    )
    first, second = walkthrough_blocks(text)["one"]
    assert (first.lang, first.text, first.file_path) == ("sh", "echo a\n", None)
    assert second.lang == "toml"
    assert second.text == "# /etc/filterd/filterd.toml\n[[listen]]\n"
    assert second.file_path == "/etc/filterd/filterd.toml"
    with pytest.raises(ValueError, match="without a block"):
        walkthrough_blocks("<!-- walkthrough: lost -->\ntext\n")
