"""Other people's mail is private: Maildir and quarantine files are created 0600 and the
directories filterd creates for them 0700, spool files 0600; even with a umask that lets
everything through (``umask 0``), so the modes are filterd's, not the umask's."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from filterd.config.schema import MaildirDelivery
from filterd.delivery.maildir import Maildir
from filterd.delivery.quarantine import QuarantineStore
from filterd.model.envelope import Client, Recipient, Session, Transaction
from filterd.model.replies import RCPT_OK
from filterd.model.spool import Spool


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def transaction(*recipients: str) -> Transaction:
    session = Session("S", "test", Client("192.0.2.1", 25, "peer.example", "helo.example"))
    t = Transaction("ABCDEF0123", session, "a@b.example")
    t.recipients += [Recipient(address, reply=RCPT_OK) for address in recipients]
    return t


def spool(text: bytes, *, memory: int = 1 << 20, directory: Path | None = None) -> Spool:
    held = Spool(memory, directory)
    held.write(text)
    return held


def directories_below(top: Path) -> list[Path]:
    return [top, *(path for path in top.rglob("*") if path.is_dir())]


async def test_maildir_files_0600_in_directories_0700(tmp_path: Path) -> None:
    root = tmp_path / "var" / "mail"
    delivery = Maildir(MaildirDelivery(root=root))
    with spool(b"Subject: s\r\n\r\nbody\r\n") as content:
        replies = await delivery.open().data(
            transaction("cactus@example.org", "other@example.net"), content
        )
    assert [reply.code for reply in replies] == [250, 250]
    created = directories_below(tmp_path / "var")
    assert len(created) == 1 + 1 + 2 * (1 + 1 + 3)  # var, mail, 2 x (domain, user, tmp/new/cur)
    assert {path: mode(path) for path in created} == {path: 0o700 for path in created}
    files = [path for path in root.rglob("*") if path.is_file()]
    assert len(files) == 2
    assert {path: mode(path) for path in files} == {path: 0o600 for path in files}


async def test_existing_directories_are_left_as_they_are(tmp_path: Path) -> None:
    root = tmp_path / "mail"
    root.mkdir(mode=0o750)
    delivery = Maildir(MaildirDelivery(root=root))
    with spool(b"Subject: s\r\n\r\nbody\r\n") as content:
        await delivery.open().data(transaction("cactus@example.org"), content)
    assert mode(root) == 0o750
    assert mode(root / "example.org" / "cactus" / "new") == 0o700


async def test_quarantined_files_0600_in_directories_0700(tmp_path: Path) -> None:
    root = tmp_path / "quarantine"
    with spool(b"Subject: s\r\n\r\nbody\r\n") as content:
        reply = await QuarantineStore(root).store(transaction("a@example.org"), content, "test")
    assert reply.code == 250
    created = directories_below(root)
    assert {path: mode(path) for path in created} == {path: 0o700 for path in created}
    (held,) = (root / "new").iterdir()
    assert mode(held) == 0o600


def test_a_spooled_message_on_disk_is_0600(tmp_path: Path) -> None:
    with spool(b"x" * 100, memory=10, directory=tmp_path) as content:
        assert content.on_disk
        # Linux's temporary files have no name (O_TMPFILE): found by their descriptor.
        (fd,) = open_below(tmp_path)
        assert stat.S_IMODE(os.stat(fd).st_mode) == 0o600


def open_below(directory: Path) -> list[int]:
    """This process's descriptors of files in ``directory``."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:  # listdir's own descriptor, closed by now
            continue
        if target.startswith(f"{directory}/"):
            found.append(int(name))
    return found
