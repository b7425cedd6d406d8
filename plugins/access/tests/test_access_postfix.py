"""The access plugin against Postfix's own smtpd: the same hash: access tables, with every
action that shows in the SMTP reply, under check_client_access, check_helo_access,
check_sender_access and check_recipient_access (two recipient tables, in order). Each probe
(client name and address, HELO, sender, recipient) goes to a private Postfix (the client set
with XCLIENT) and to filterd's SMTP door with the plugin (the client set with XFORWARD); the
RCPT replies must be the same: code, enhanced status code and text (for a 250 the code only:
the texts of a plain success differ and are not the plugin's). After a 421 or 521 both close
the connection.

Both run with smtpd_delay_reject's default (yes): every refusal comes at RCPT TO.
Accepted differences: none among these probes. (The policy door is not compared here: there
Postfix prefixes the text itself, see the plugin's README.)
"""

from __future__ import annotations

import smtplib
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.filterd_proc import FilterdFactory
from tests.support.postfix import (
    PostfixInstance,
    free_port,
    make_base_dir,
    postfix_available,
    running,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CLIENT = {
    "192.0.2.1": "OK",
    "192.0.2.2": "REJECT",
    "192.0.2.3": "REJECT 5.7.9 custom client text",
    "192.0.2.4": "DEFER",
    "192.0.2.5": "DEFER_IF_PERMIT client maybe later",
    "192.0.2.6": "DEFER_IF_REJECT client unsure",
    "192.0.2.7": "421 4.7.0 client go away",
    "192.0.2.8": "550 5.1.1 client dsn",
    "192.0.2.9": "hash:/nonexistent/table",
    "192.0.2.10": "permit",
    "192.0.2.11": "reject_no_such_restriction",
    "192.0.2.12": "1234567890",
    "192.0.2.13": "defer_if_permit",
    "192.0.2.14": "450 client busy",
    "192.0.2.15": "DUNNO",
    "bad.example": "REJECT by name",
}
HELO = {
    "bad.helo": "REJECT helo text",
    "defer.helo": "DEFER_IF_PERMIT helo later",
    "dunno.helo": "DUNNO",
    "parent.helo": "DEFER 4.4.0 helo parent",
}
SENDER = {
    "rej@example.com": "REJECT 5.1.1 sender nope",
    "rcptdsn@example.com": "550 5.1.2 sender system",
    "defer@example.com": "DEFER",
    "dip@example.com": "DEFER_IF_PERMIT sender dip",
    "dir@example.com": "DEFER_IF_REJECT sender dir",
    "<>": "451 4.3.2 no bounces now",
    "ok@example.com": "OK",
    "bye@example.com": "521 5.7.1 sender bye",
    "spam.example": "REJECT domain",
}
RECIPIENT = {
    "rej@example.org": "REJECT",
    "text@example.org": "REJECT recipient text",
    "dsn@example.org": "REJECT 5.1.7 sender type",
    "num@example.org": "452 4.2.2 full",
    "defer@example.org": "DEFER recipient later",
    "dip@example.org": "DEFER_IF_PERMIT rcpt dip",
    "dir@example.org": "DEFER_IF_REJECT rcpt dir",
    "dir2@example.org": "DEFER_IF_REJECT first table",
    "ok@example.org": "OK",
    "dunno@example.org": "DUNNO",
    "bye@example.org": "421 rcpt bye",
}
RECIPIENT2 = {
    "dir2@example.org": "REJECT second table",
    "dunno@example.org": "REJECT second table",  # DUNNO ends the first table's search only
    "ok@example.org": "REJECT never reached",
    "plain@example.org": "DUNNO",
}

Probe = tuple[str, str, str, str, str]  # client name, address, helo, sender, recipient
BASE: Probe = ("unknown", "192.0.2.200", "client.example", "plain@example.com", "plain@example.org")


def _probes() -> list[Probe]:
    name, address, helo, sender, rcpt = BASE
    probes: list[Probe] = [BASE]
    probes += [(name, key, helo, sender, rcpt) for key in CLIENT if key[0].isdigit()]
    probes += [
        ("bad.example", address, helo, sender, rcpt),
        ("x.bad.example", address, helo, sender, rcpt),
    ]
    probes += [(name, address, key, sender, rcpt) for key in HELO]
    probes += [(name, address, "a.parent.helo", sender, rcpt)]
    probes += [
        (name, address, helo, "" if key == "<>" else key, rcpt)
        for key in SENDER
        if "@" in key or key == "<>"
    ]
    probes += [(name, address, helo, "joe@mx.spam.example", rcpt)]
    probes += [(name, address, helo, sender, key) for key in RECIPIENT]
    # the rules between lists and actions
    probes += [
        (name, "192.0.2.5", helo, sender, "rej@example.org"),  # DEFER_IF_PERMIT, then reject
        (name, "192.0.2.5", helo, sender, "ok@example.org"),  # DEFER_IF_PERMIT, then OK
        (name, "192.0.2.5", "defer.helo", sender, rcpt),  # the first DEFER_IF_PERMIT wins
        (name, "192.0.2.6", helo, sender, "rej@example.org"),  # DEFER_IF_REJECT ends with its list
        (name, address, helo, "dir@example.com", "text@example.org"),
        (name, address, helo, "dip@example.com", "num@example.org"),
        (name, "192.0.2.1", helo, sender, "rej@example.org"),  # a client OK ends its list only
        (name, "192.0.2.1", "bad.helo", sender, rcpt),
        (name, address, helo, "ok@example.com", "defer@example.org"),
        (name, "192.0.2.13", helo, sender, "dsn@example.org"),
        (name, address, helo, "dip@example.com", "dip@example.org"),
    ]
    return probes


@dataclass
class Reply:
    code: int
    text: str
    closed: bool  # the server closed the connection after it

    def comparable(self) -> tuple[int, str, bool]:
        return (self.code, self.text if self.code >= 400 else "", self.closed)


def _closed(client: smtplib.SMTP) -> bool:
    try:
        client.noop()
    except smtplib.SMTPServerDisconnected:
        return True
    return False


def _ask_postfix(port: int, probe: Probe) -> Reply:
    name, address, helo, sender, rcpt = probe
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("probe.example")
        xname = "[UNAVAILABLE]" if name == "unknown" else name
        code, text = client.docmd("XCLIENT", f"NAME={xname} ADDR={address}")
        assert code == 220, text
        client.ehlo(helo)
        return _transaction(client, sender, rcpt)


def _ask_filterd(port: int, probe: Probe) -> Reply:
    name, address, helo, sender, rcpt = probe
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo(helo)
        xname = "[UNAVAILABLE]" if name == "unknown" else name
        code, text = client.docmd("XFORWARD", f"NAME={xname} ADDR={address} HELO={helo}")
        assert code == 250, text
        return _transaction(client, sender, rcpt)


def _transaction(client: smtplib.SMTP, sender: str, rcpt: str) -> Reply:
    code, text = client.docmd(f"MAIL FROM:<{sender}>")
    assert code == 250, text  # smtpd_delay_reject: nothing is refused before RCPT
    code, text = client.docmd(f"RCPT TO:<{rcpt}>")
    return Reply(code, text.decode(), _closed(client))


def _hash(path: Path, entries: dict[str, str], config_dir: Path) -> str:
    path.write_text("".join(f"{key} {value}\n" for key, value in entries.items()))
    subprocess.run(
        ["postmap", "-c", str(config_dir), f"hash:{path}"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return f"hash:{path}"


@dataclass
class Servers:
    postfix: PostfixInstance
    filterd_port: int


@pytest.fixture(scope="module")
def tables() -> tuple[Path, dict[str, str]]:
    base = make_base_dir()
    directory = base / "tables"
    directory.mkdir(mode=0o755)
    (directory / "main.cf").write_text("compatibility_level = 3.6\n")
    names = {
        "client": _hash(directory / "client", CLIENT, directory),
        "helo": _hash(directory / "helo", HELO, directory),
        "sender": _hash(directory / "sender", SENDER, directory),
        "recipient": _hash(directory / "recipient", RECIPIENT, directory),
        "recipient2": _hash(directory / "recipient2", RECIPIENT2, directory),
    }
    return base, names


def test_replies_as_postfix_smtpd(
    tables: tuple[Path, dict[str, str]], filterd_factory: FilterdFactory
) -> None:
    if not postfix_available():
        pytest.fail("Postfix is required (deploy/install-system-packages.sh installs it)")
    base, names = tables
    instance = PostfixInstance(
        base,
        filter_wiring=False,
        main_cf_extra={
            "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
            "smtpd_client_restrictions": f"check_client_access {names['client']}",
            "smtpd_helo_restrictions": f"check_helo_access {names['helo']}",
            "smtpd_sender_restrictions": f"check_sender_access {names['sender']}",
            "smtpd_recipient_restrictions": f"check_recipient_access {names['recipient']}, "
            f"check_recipient_access {names['recipient2']}",
            "smtpd_relay_restrictions": "reject_unauth_destination",
            "smtpd_reject_unlisted_recipient": "no",
            "smtpd_hard_error_limit": "100000",
            "smtpd_soft_error_limit": "100000",
            "smtpd_junk_command_limit": "100000",
        },
    )
    port = free_port()
    client, helo, sender = names["client"], names["helo"], names["sender"]
    recipients = f'"{names["recipient"]}", "{names["recipient2"]}"'
    filterd_factory(
        f"""
[[listen]]
address = "127.0.0.1:{port}"
protocol = "smtp"
xforward_hosts = ["127.0.0.0/8"]
[limits]
max_errors = 100000
[delivery]
method = "maildir"
[[chain]]
plugin = "access"
[chain.config]
client = ["{client}"]
helo = ["{helo}"]
sender = ["{sender}"]
recipient = [{recipients}]
"""
    )
    probes = _probes()
    with running(instance):
        theirs = [_ask_postfix(instance.smtp_port, probe) for probe in probes]
    ours = [_ask_filterd(port, probe) for probe in probes]
    differences = [
        (probe, t, o)
        for probe, t, o in zip(probes, theirs, ours, strict=True)
        if t.comparable() != o.comparable()
    ]
    assert differences == []
    kinds = {reply.code for reply in theirs}
    assert {250, 421, 450, 451, 452, 521, 550, 554} <= kinds  # the probes reach every kind
    assert sum(reply.closed for reply in theirs) == 3  # the 421s and the 521
