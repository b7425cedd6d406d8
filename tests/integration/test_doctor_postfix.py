"""``filterd doctor`` against a private Postfix configuration (tests/support/postfix.py writes
it; ``postconf -c DIR`` reads it without starting Postfix).

The correct set-ups are the ones docs/deploy.md and deploy/postfix/ give, taken from those
files: the doctor has nothing to say about them. Then each wiring mistake is planted alone,
with ``postconf`` itself (``-e`` for main.cf, ``-P``/``-PX`` for ``-o`` overrides, ``-F`` for a
master.cf field) or in filterd.toml, and the doctor names exactly that mistake.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from filterd.cli.doctor import spamd_probe
from filterd.cli.main import main
from tests.support.postfix import (
    DEPLOY_DIR,
    REPO_ROOT,
    FilterProtocol,
    PostfixInstance,
    free_port,
    make_base_dir,
    render_snippet,
    snippet_settings,
)
from tests.support.spamd import running_spamd, spamd_installed

pytestmark = pytest.mark.skipif(
    shutil.which("postconf") is None and not Path("/usr/sbin/postconf").exists(),
    reason="Postfix (postconf) is not installed",
)

POSTCONF = shutil.which("postconf") or "/usr/sbin/postconf"
FILTER_PORT = 10025  # the snippets' port; nothing is started, so nothing binds it
FINDING = re.compile(r"^(error|warning) \[([a-z-]+)\]: ", re.MULTILINE)


# --- the documented set-ups -------------------------------------------------------------------


def deploy_md_toml() -> str:
    """The filterd.toml of docs/deploy.md's "Configure filterd" (listener and delivery)."""
    text = (REPO_ROOT / "docs" / "deploy.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, re.DOTALL)
    (block,) = [b for b in blocks if "[delivery]" in b and "[[listen]]" in b]
    return block


def readme_toml(protocol: str) -> str:
    """The [[listen]] table deploy/postfix/README.md gives for a policy listener."""
    text = (DEPLOY_DIR / "README.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, re.DOTALL)
    (block,) = [b for b in blocks if f'protocol = "{protocol}"' in b]
    return block


CHAIN = """
[[chain]]
plugin = "header_checks"
[chain.config]
rules = ['/^User-Agent: .*/ IGNORE']
"""
"""The embedded default's chain (one entry, the default 30 s timeout)."""


@dataclass
class Setup:
    """A Postfix configuration directory and a filterd.toml that go together."""

    config_dir: Path
    toml: str
    reinject_port: int
    edits: list[list[str]] = field(default_factory=list)

    def postconf(self, *args: str) -> None:
        subprocess.run(
            [POSTCONF, "-c", str(self.config_dir), *args],
            check=True,
            capture_output=True,
            timeout=30,
        )


def _instance_config(variant: str) -> tuple[Path, int, str]:
    """Build a private Postfix for ``variant`` (once per session): (its config dir, its
    reinjection port, filterd.toml)."""
    content_filter: FilterProtocol | None = None
    if variant in ("smtp", "lmtp"):
        content_filter = "smtp" if variant == "smtp" else "lmtp"
    snippet = {"milter": "main.cf.milter.snippet", "policy": "main.cf.policy.snippet"}.get(variant)
    instance = PostfixInstance(
        make_base_dir(),
        content_filter=content_filter,
        filter_port=FILTER_PORT,
        main_cf_extra=snippet_settings(snippet) if snippet else None,
    )
    instance.build()
    reinject = instance.reinject_port
    toml = deploy_md_toml().replace("10026", str(reinject))
    if variant == "lmtp":
        toml = toml.replace('protocol = "smtp"            #', 'protocol = "lmtp"            #')
    if variant == "proxy":
        reinject = free_port()
        snippet = render_snippet("master.cf.proxy.snippet", {10026: reinject})
        with (instance.config_dir / "master.cf").open("a") as master:
            master.write("\n" + snippet)
        toml = deploy_md_toml().replace("10026", str(reinject))
    if variant == "milter":
        endpoint = snippet_settings("main.cf.milter.snippet")["smtpd_milters"]
        toml = f'[[listen]]\naddress = "{endpoint.removeprefix("inet:")}"\nprotocol = "milter"\n'
    if variant == "policy":
        toml = readme_toml("policy")
    return instance.config_dir, reinject, toml + CHAIN


@pytest.fixture(scope="session")
def built() -> Iterator[dict[str, tuple[Path, int, str]]]:
    cache: dict[str, tuple[Path, int, str]] = {}
    yield cache
    for config_dir, _, _ in cache.values():
        shutil.rmtree(config_dir.parent, ignore_errors=True)


@pytest.fixture
def setup(built: dict[str, tuple[Path, int, str]], tmp_path: Path) -> Callable[[str], Setup]:
    def make(variant: str) -> Setup:
        if variant not in built:
            built[variant] = _instance_config(variant)
        config_dir, reinject, toml = built[variant]
        copy = tmp_path / "postfix"
        shutil.copytree(config_dir, copy)
        return Setup(copy, toml, reinject)

    return make


@pytest.fixture(autouse=True)
def no_default_spamd_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """spamd's children come from a running spamd only, not this machine's /etc/default."""
    monkeypatch.setattr(spamd_probe, "DEFAULT_FILES", ())


def run_doctor(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, list[str]]:
    toml = tmp_path / "filterd.toml"
    toml.write_text(setup.toml)
    status = main(["doctor", "-c", str(toml), "--postfix-config", str(setup.config_dir)])
    out, err = capsys.readouterr()
    assert err == "", err
    return status, out, [code for _, code in FINDING.findall(out)]


# --- no findings for what the documentation gives ---------------------------------------------


@pytest.mark.parametrize("variant", ["smtp", "lmtp", "proxy", "milter", "policy"])
def test_the_documented_setups_have_no_findings(
    variant: str,
    setup: Callable[[str], Setup],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, codes = run_doctor(setup(variant), tmp_path, capsys)
    assert codes == [], out
    assert status == 0
    assert out.rstrip().endswith("filterd doctor: no findings")
    assert "-> filterd listen[0]" in out  # the doctor did see the wiring it checked


# --- each mistake planted alone ---------------------------------------------------------------

REINJECT = "127.0.0.1:{reinject}/inet"
"""The reinjection smtpd's master.cf name (postconf -P/-F syntax)."""


@dataclass(frozen=True)
class Plant:
    variant: str
    postconf: tuple[tuple[str, ...], ...] = ()
    toml: Callable[[str], str] = lambda toml: toml
    expected: tuple[str, ...] = ()


def _replace(old: str, new: str) -> Callable[[str], str]:
    def edit(toml: str) -> str:
        assert old in toml, (old, toml)
        return toml.replace(old, new, 1)

    return edit


def _append(text: str) -> Callable[[str], str]:
    return lambda toml: toml + text


PLANTS = {
    "reinjection without -o content_filter= loops": Plant(
        "smtp", (("-PX", REINJECT + "/content_filter"),), expected=("filter-loop",)
    ),
    "reinjection with milters on": Plant(
        "smtp",
        (
            ("-e", "smtpd_milters = inet:127.0.0.1:8891"),
            ("-P", REINJECT + "/receive_override_options=no_header_body_checks"),
        ),
        expected=("reinjection-milters",),
    ),
    "reinjection with header_checks on": Plant(
        "lmtp",
        (
            ("-e", "header_checks = regexp:/etc/postfix/header_checks"),
            ("-P", REINJECT + "/receive_override_options=no_milters"),
        ),
        expected=("reinjection-header-checks",),
    ),
    "reinjection inherits no_address_mappings": Plant(
        "smtp",
        (
            ("-e", "virtual_alias_maps = inline:{ postmaster@example.org=root@example.org }"),
            ("-PX", REINJECT + "/receive_override_options"),
        ),
        expected=("reinjection-no-address-mappings",),
    ),
    "filter transport maxproc above max_connections": Plant(
        "smtp",
        toml=_replace(
            'hostname = "mx.example.org"', 'hostname = "mx.example.org"\nmax_connections = 5'
        ),
        expected=("too-many-connections",),
    ),
    "smtp_data_done_timeout below the chain's worst case": Plant(
        "smtp", (("-e", "smtp_data_done_timeout = 20s"),), expected=("transport-timeout",)
    ),
    "the transport's lmtp_data_done_timeout below the chain's worst case": Plant(
        "lmtp", (("-P", "scan/unix/lmtp_data_done_timeout=30s"),), expected=("transport-timeout",)
    ),
    "XFORWARD not authorized for filterd": Plant(
        "smtp",
        (("-PX", REINJECT + "/smtpd_authorized_xforward_hosts"),),
        expected=("xforward-not-authorized",),
    ),
    "XFORWARD not sent to filterd": Plant(
        "smtp",
        (("-PX", "scan/unix/smtp_send_xforward_command"),),
        expected=("xforward-not-sent",),
    ),
    "XFORWARD not taken by filterd": Plant(
        "smtp",
        toml=_replace('xforward_hosts = ["127.0.0.0/8"]', 'xforward_hosts = ["10.0.0.0/8"]'),
        expected=("xforward-not-allowed",),
    ),
    "reinjection maxproc below filterd's connections": Plant(
        "smtp",
        (("-F", REINJECT + "/process_limit=5"),),
        expected=("reinjection-capacity",),
    ),
    "content_filter names no transport": Plant(
        "smtp",
        (("-e", "content_filter = sacn:[127.0.0.1]:10025"),),
        expected=("unknown-transport", "unwired-listener"),
    ),
    "content_filter to the wrong port": Plant(
        "smtp",
        (("-e", "content_filter = scan:[127.0.0.1]:10024"),),
        expected=("wrong-address",),
    ),
    "lmtp transport to an smtp listener": Plant(
        "lmtp",
        toml=_replace('protocol = "lmtp"            #', 'protocol = "smtp"            #'),
        expected=("protocol-mismatch",),
    ),
    "filterd relays where no smtpd listens": Plant(
        "smtp",
        toml=lambda toml: re.sub(
            r'next_hop = "127\.0\.0\.1:\d+"', 'next_hop = "127.0.0.1:9"', toml
        ),
        expected=("no-reinjection",),
    ),
    "after-filter smtpd proxies to filterd again": Plant(
        "proxy",
        (("-P", REINJECT + "/smtpd_proxy_filter=127.0.0.1:10025"),),
        # the looping smtpd (maxproc 100) also adds to the connections to filterd
        expected=("proxy-loop", "too-many-connections"),
    ),
    "smtpd_proxy_timeout below the chain's worst case": Plant(
        "proxy", (("-P", "smtp/inet/smtpd_proxy_timeout=25s"),), expected=("proxy-timeout",)
    ),
    "policy timeout below filterd's": Plant(
        "policy", (("-e", "smtpd_policy_service_timeout = 60s"),), expected=("policy-timeout",)
    ),
    "policy client's own timeout below filterd's": Plant(
        "policy",
        (
            (
                "-e",
                "smtpd_recipient_restrictions = check_policy_service { inet:127.0.0.1:10040, "
                "timeout=30s }, permit_mynetworks, reject_unauth_destination",
            ),
        ),
        expected=("policy-timeout",),
    ),
    "policy max_idle above filterd's idle timeout": Plant(
        "policy", (("-e", "smtpd_policy_service_max_idle = 600s"),), expected=("policy-idle",)
    ),
    "milter_command_timeout below filterd's": Plant(
        "milter", (("-e", "milter_command_timeout = 20s"),), expected=("milter-timeout",)
    ),
    "the milter's own content_timeout below filterd's": Plant(
        "milter",
        (("-e", "smtpd_milters = { inet:127.0.0.1:10029, content_timeout=200s }"),),
        expected=("milter-timeout",),
    ),
    "a REJECT rule after the queue": Plant(
        "smtp",
        toml=_replace("/^User-Agent: .*/ IGNORE", "/^Subject: .*viagra/ REJECT"),
        expected=("after-queue-reject",),
    ),
    "on_error = reject after the queue": Plant(
        "lmtp",
        toml=_replace('plugin = "header_checks"', 'plugin = "header_checks"\non_error = "reject"'),
        expected=("after-queue-reject",),
    ),
    "SPF's default on_fail after the queue": Plant(
        "smtp", toml=_append('\n[[chain]]\nplugin = "spf"\n'), expected=("after-queue-reject",)
    ),
    "a spamassassin reject_score after the queue": Plant(
        "smtp",
        toml=_append('\n[[chain]]\nplugin = "spamassassin"\n[chain.config]\nreject_score = 12.0\n'),
        expected=("after-queue-reject",),
    ),
}


@pytest.mark.parametrize("plant", PLANTS.values(), ids=PLANTS.keys())
def test_each_planted_mistake_gives_its_finding(
    plant: Plant,
    setup: Callable[[str], Setup],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    prepared = setup(plant.variant)
    for args in plant.postconf:
        prepared.postconf(*(arg.replace("{reinject}", str(prepared.reinject_port)) for arg in args))
    prepared.toml = plant.toml(prepared.toml)
    status, out, codes = run_doctor(prepared, tmp_path, capsys)
    assert sorted(set(codes)) == sorted(plant.expected), out
    assert status == 1
    assert re.search(r"^  fix: \S", out, re.MULTILINE), out  # every finding says what to do


def test_a_fix_the_doctor_gives_is_one_postconf_runs(
    setup: Callable[[str], Setup], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The loop's fix is a postconf command line; running it leaves no finding."""
    prepared = setup("smtp")
    prepared.postconf("-PX", f"127.0.0.1:{prepared.reinject_port}/inet/content_filter")
    _, out, codes = run_doctor(prepared, tmp_path, capsys)
    assert codes == ["filter-loop"]
    (command,) = re.findall(r"^  fix: (postconf .*)$", out, re.MULTILINE)
    subprocess.run(command, shell=True, check=True, capture_output=True, timeout=30)
    status, out, codes = run_doctor(prepared, tmp_path, capsys)
    assert codes == [], out
    assert status == 0


def test_a_postfix_directory_without_main_cf_cannot_be_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = tmp_path / "filterd.toml"
    toml.write_text(deploy_md_toml())
    status = main(["doctor", "-c", str(toml), "--postfix-config", str(tmp_path / "nothing")])
    out, err = capsys.readouterr()
    assert status == 2
    assert out == ""
    assert "main.cf" in err
    assert "--postfix-config" in err


# --- spamd's children -------------------------------------------------------------------------


@pytest.mark.skipif(not spamd_installed(), reason="spamd is not installed")
@pytest.mark.timeout(120)
def test_spamd_children_fewer_than_the_chain_may_ask_for(
    setup: Callable[[str], Setup], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prepared = setup("smtp")
    base = prepared.toml
    with running_spamd(children=1) as spamd:
        host, port = spamd.address
        entry = f'\n[[chain]]\nplugin = "spamassassin"\n[chain.config]\naddress = "{host}:{port}"\n'
        prepared.toml = base + entry  # max_connections = 5 (the default) > 1 child
        status, out, codes = run_doctor(prepared, tmp_path, capsys)
        assert codes == ["spamd-children"], out
        assert f"the running spamd (pid {spamd.pid})" in out
        assert status == 1
        prepared.toml = base + entry + "max_connections = 1\n"
        status, out, codes = run_doctor(prepared, tmp_path, capsys)
        assert codes == [], out
        assert status == 0
    status, out, codes = run_doctor(prepared, tmp_path, capsys)
    assert codes == [], out  # no spamd listens there any more: it cannot tell
    assert f"cannot tell how many children the spamd at {host}:{port} runs" in out
