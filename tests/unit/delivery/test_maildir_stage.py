"""The Maildir stage as virtual(8): one file per recipient, named as maildir.c names it, LF line
ends, its own header lines; loops, quota, size limit, filing rules, extension folders, owners."""

from __future__ import annotations

import os
import pwd
import re
from pathlib import Path

import pytest

from filterd.config.schema import FilingRule, MaildirDelivery
from filterd.delivery.mailboxes import Mailbox
from filterd.delivery.maildir import Maildir
from filterd.delivery.maildir_files import HOSTNAME, lf_line_ends
from filterd.model.envelope import Client, Recipient, Session, Transaction
from filterd.model.findings import MESSAGE_FINDINGS, Finding
from filterd.model.replies import RCPT_OK
from filterd.model.reply import Reply
from filterd.model.spool import Spool

MESSAGE = b"Subject: s\r\nX-Spam-Flag: YES\r\n\r\nbody\r\n"
NEW_NAME = re.compile(rf"\d+\.V[0-9a-f]+I[0-9a-f]+M\d+\.{re.escape(HOSTNAME)}")


def transaction(*recipients: str, sender: str = "a@b.example", utf8: bool = False) -> Transaction:
    session = Session("S", "test", Client("192.0.2.1", 25, "peer.example", "helo.example"))
    t = Transaction("ABCDEF0123", session, sender, ("SMTPUTF8",) if utf8 else ())
    t.recipients += [Recipient(address, reply=RCPT_OK) for address in recipients]
    return t


def spool(text: bytes) -> Spool:
    held = Spool(1 << 20)
    held.write(text)
    return held


async def deliver(
    config: MaildirDelivery, t: Transaction, text: bytes = MESSAGE, maildir: Maildir | None = None
) -> list[Reply]:
    stage = maildir or Maildir(config)
    transaction_ = stage.open()
    for rcpt in t.recipients:
        assert (await transaction_.rcpt(t, rcpt)).code == 250
    with spool(text) as content:
        return await transaction_.data(t, content)


def files(directory: Path) -> list[Path]:
    return sorted(directory.iterdir()) if directory.is_dir() else []


async def test_one_file_per_recipient_named_as_maildir_c_names_it(tmp_path: Path) -> None:
    config = MaildirDelivery(mailbox_base=tmp_path)
    t = transaction("Cactus@Example.org", "other@example.org", sender="x y@b.example")
    results = await deliver(config, t)
    assert [r.code for r in results] == [250, 250]
    (first,) = files(tmp_path / "example.org" / "cactus" / "new")
    (second,) = files(tmp_path / "example.org" / "other" / "new")
    for path, result in ((first, results[0]), (second, results[1])):
        assert NEW_NAME.fullmatch(path.name), path.name
        assert str(result) == f"250 2.0.0 Ok: delivered to maildir as {path.name}"
        assert files(path.parent.parent / "tmp") == []
        assert (path.parent.parent / "cur").is_dir()
    assert first.read_bytes() == (
        b'Return-Path: <"x y"@b.example>\nX-Original-To: Cactus@Example.org\n'
        b"Delivered-To: Cactus@Example.org\nSubject: s\nX-Spam-Flag: YES\n\nbody\n"
    )
    assert second.read_bytes().startswith(b'Return-Path: <"x y"@b.example>\nX-Original-To: other@')
    assert first.stat().st_ino != second.stat().st_ino  # not one file linked twice


def test_crlf_becomes_lf_across_chunk_boundaries() -> None:
    chunks = [b"a\r", b"\nb\r\n", b"c\rd\r", b"\r\n", b"\r"]
    assert b"".join(lf_line_ends(chunks)) == b"a\nb\nc\rd\r\n\r"


async def test_a_message_already_delivered_to_the_recipient_is_a_loop(tmp_path: Path) -> None:
    config = MaildirDelivery(mailbox_base=tmp_path)
    looped = b"Delivered-To: cactus@example.org\r\nSubject: s\r\n\r\nbody\r\n"
    results = await deliver(config, transaction("Cactus@Example.org", "other@example.org"), looped)
    assert str(results[0]) == "554 5.4.6 mail forwarding loop for Cactus@Example.org"
    assert results[1].code == 250
    assert files(tmp_path / "example.org" / "cactus" / "new") == []


async def test_over_quota_bounces_552_5_2_2_or_defers_452_4_2_2(tmp_path: Path) -> None:
    config = MaildirDelivery(mailbox_base=tmp_path, mailbox_quota=200)
    t = transaction("u@example.org")
    assert (await deliver(config, t))[0].code == 250  # about 120 bytes
    (over,) = await deliver(config, transaction("u@example.org"))
    text = "maildir delivery failed: error writing message: Disk quota exceeded"
    assert str(over) == f"552 5.2.2 {text}"
    deferring = MaildirDelivery(mailbox_base=tmp_path, mailbox_quota=200, over_quota="defer")
    (later,) = await deliver(deferring, transaction("u@example.org"))
    assert str(later) == f"452 4.2.2 {text}"
    box = tmp_path / "example.org" / "u"
    assert len(files(box / "new")) == 1
    assert files(box / "tmp") == []
    (other,) = await deliver(config, transaction("v@example.org"))  # per mailbox
    assert other.code == 250


async def test_quota_counts_cur_and_folders(tmp_path: Path) -> None:
    box = tmp_path / "example.org" / "u"
    for sub in ("cur", ".Junk/new"):
        (box / sub).mkdir(parents=True)
    (box / "cur" / "old").write_bytes(b"x" * 100)
    (box / ".Junk" / "new" / "spam").write_bytes(b"x" * 100)
    config = MaildirDelivery(mailbox_base=tmp_path, mailbox_quota=300)
    (reply,) = await deliver(config, transaction("u@example.org"))
    assert reply.status == "5.2.2"


async def test_mailbox_limit_is_file_too_large(tmp_path: Path) -> None:
    config = MaildirDelivery(mailbox_base=tmp_path, mailbox_limit=100)
    big = b"Subject: big\r\n\r\n" + b"x" * 200 + b"\r\n"
    (reply,) = await deliver(config, transaction("u@example.org"), big)
    assert str(reply) == "552 5.2.2 maildir delivery failed: error writing message: File too large"
    assert files(tmp_path / "example.org" / "u" / "tmp") == []
    (small,) = await deliver(config, transaction("u@example.org"), b"Subject: s\r\n\r\nx\r\n")
    assert small.code == 250


JUNK_BY_HEADER = FilingRule(header="x-spam-flag:  yes ", folder=".Junk")
JUNK_BY_SCORE = FilingRule(finding="spamassassin", score=5.0, folder=".Junk")


@pytest.mark.parametrize(
    ("rule", "text", "findings", "folder"),
    [
        (JUNK_BY_HEADER, MESSAGE, (), ".Junk"),
        (JUNK_BY_HEADER, b"Subject: s\r\nX-Spam-Flag: NO\r\n\r\nb\r\n", (), None),
        (FilingRule(header="X-Spam-Flag", folder=".Flagged"), MESSAGE, (), ".Flagged"),
        (JUNK_BY_HEADER, b"Subject: s\r\n\r\nX-Spam-Flag: YES\r\n", (), None),  # body, not header
        (JUNK_BY_SCORE, MESSAGE, (Finding("spamassassin", "spam", 5.0),), ".Junk"),
        (JUNK_BY_SCORE, MESSAGE, (Finding("spamassassin", "ham", 4.9),), None),
        (JUNK_BY_SCORE, MESSAGE, (Finding("razor", "", 9.0),), None),
        (FilingRule(finding="razor", folder=".Razor"), MESSAGE, (Finding("razor"),), ".Razor"),
    ],
)
async def test_filing_rules(
    tmp_path: Path,
    rule: FilingRule,
    text: bytes,
    findings: tuple[Finding, ...],
    folder: str | None,
) -> None:
    config = MaildirDelivery(mailbox_base=tmp_path, filing=(rule,))
    t = transaction("u@example.org")
    t.notes.set(MESSAGE_FINDINGS, findings)
    (reply,) = await deliver(config, t, text)
    assert reply.code == 250
    box = tmp_path / "example.org" / "u"
    target = box if folder is None else box / folder
    assert len(files(target / "new")) == 1
    if folder is not None:
        assert files(box / "new") == []
        assert (target / "tmp").is_dir()
        assert (target / "cur").is_dir()
        assert (target / "maildirfolder").is_file()


async def test_the_first_matching_rule_wins(tmp_path: Path) -> None:
    rules = (FilingRule(header="Subject", folder=".First"), JUNK_BY_HEADER)
    config = MaildirDelivery(mailbox_base=tmp_path, filing=rules)
    await deliver(config, transaction("u@example.org"))
    assert len(files(tmp_path / "example.org" / "u" / ".First" / "new")) == 1
    assert not (tmp_path / "example.org" / "u" / ".Junk").exists()


async def test_extension_goes_to_its_folder_only_when_that_exists(tmp_path: Path) -> None:
    config = MaildirDelivery(mailbox_base=tmp_path, recipient_delimiter="+", extension_folders=True)
    box = tmp_path / "example.org" / "u"
    await deliver(config, transaction("u+lists@example.org"))
    assert len(files(box / "new")) == 1
    assert not (box / ".lists").exists()
    (box / ".lists").mkdir()
    await deliver(config, transaction("u+lists@example.org"))
    assert len(files(box / ".lists" / "new")) == 1
    (box / ".bad..name").mkdir()
    await deliver(config, transaction("u+bad..name@example.org"))  # no such folder name
    assert len(files(box / "new")) == 2
    assert not (box / ".bad..name" / "new").exists()


async def test_utf8_local_part_is_delivered_with_smtputf8(tmp_path: Path) -> None:
    (reply,) = await deliver(
        MaildirDelivery(mailbox_base=tmp_path), transaction("ünï@example.org", utf8=True)
    )
    assert reply.code == 250
    (path,) = files(tmp_path / "example.org" / "%C3%BCn%C3%AF" / "new")
    assert "Delivered-To: ünï@example.org\n".encode() in path.read_bytes()


class FixedOwner:
    """A resolver as the maps one will be: a mailbox with a uid and gid."""

    def __init__(self, base: Path, uid: int, gid: int) -> None:
        self.base, self.uid, self.gid = base, uid, gid

    async def resolve(self, address: str, *, smtputf8: bool) -> list[Mailbox] | Reply:
        return [Mailbox(address, self.base / "vhosts" / address, None, self.uid, self.gid)]

    async def aclose(self) -> None:
        return None


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
async def test_files_and_created_directories_belong_to_the_mapped_owner(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    config = MaildirDelivery(mailbox_base=tmp_path, filing=(JUNK_BY_HEADER,))
    stage = Maildir(config, FixedOwner(tmp_path, nobody.pw_uid, nobody.pw_gid))
    (reply,) = await deliver(config, transaction("u@example.org"), maildir=stage)
    assert reply.code == 250
    box = tmp_path / "vhosts" / "u@example.org"
    (path,) = files(box / ".Junk" / "new")
    created = [box, box / ".Junk", *(box / ".Junk" / sub for sub in ("tmp", "new", "cur")), path]
    for item in [*created, box / ".Junk" / "maildirfolder"]:
        assert (item.stat().st_uid, item.stat().st_gid) == (nobody.pw_uid, nobody.pw_gid), item
    assert tmp_path.stat().st_uid == 0  # the base is not the user's


async def test_a_uid_below_minimum_uid_defers_as_a_configuration_error(tmp_path: Path) -> None:
    config = MaildirDelivery(mailbox_base=tmp_path, minimum_uid=1000)
    stage = Maildir(config, FixedOwner(tmp_path, 999, 999))
    (reply,) = await deliver(config, transaction("u@example.org"), maildir=stage)
    assert str(reply) == "451 4.3.5 mail system configuration error"
    assert not (tmp_path / "vhosts").exists()
