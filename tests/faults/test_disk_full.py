"""filterd delivers into Maildirs on a small tmpfs that is full, while a private Postfix sends
through it (its after-queue content filter): each message gets 452 4.3.1 and stays queued at the
sender, nothing (not even a piece) is left in any Maildir; once space is freed, every message is
delivered exactly once. Mounting needs root (CAP_SYS_ADMIN): the test is skipped without it."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.ledger import Ledger
from tests.support.filterd_proc import FilterdFactory
from tests.support.postfix import PostfixFactory, free_port, postfix_available

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not postfix_available(), reason="Postfix (master) is not installed"),
    pytest.mark.timeout(240),
]

MESSAGES = 8


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 1 MiB tmpfs of its own, unmounted afterwards (also on failure)."""
    where = Path(tempfile.mkdtemp(prefix="filterd-tmpfs-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if mounted.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], capture_output=True, timeout=30, check=False)
        with contextlib.suppress(OSError):
            where.rmdir()


def fill(path: Path) -> None:
    """Write ``path`` until the file system it is on has no byte left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        block = b"\0" * 4096
        while True:
            try:
                os.write(fd, block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return
    finally:
        os.close(fd)


def maildir_files(base: Path, sub: str) -> list[Path]:
    return [p for p in base.glob(f"*/*/{sub}/*") if p.is_file()]


def test_maildir_disk_full(
    postfix_factory: PostfixFactory, filterd_factory: FilterdFactory, small_disk: Path
) -> None:
    mail = small_disk / "mail"
    mail.mkdir()
    port = free_port()
    postfix = postfix_factory(content_filter="smtp", filter_port=port)
    filterd = filterd_factory(
        f"""
[[listen]]
address = "127.0.0.1:{port}"
hostname = "filterd.test"
[delivery]
method = "maildir"
mailbox_base = "{mail}"
"""
    )

    def delivered() -> list[bytes]:
        return [p.read_bytes() for sub in ("new", "cur") for p in maildir_files(mail, sub)]

    # One message first, so that its Maildir exists; then the disk is full.
    first = Ledger(postfix, port, delivered, 1, first=100)
    first.inject()
    first.wait_all_delivered()
    filler = small_disk / "filler"
    fill(filler)

    ledger = Ledger(postfix, port, delivered, MESSAGES)
    ledger.inject()
    ledger.wait_until_attempted()
    snap = ledger.check_held()
    for line in snap.deferred:
        assert re.search(r"said: 45[12] 4\.3\.\d", line), line
    assert maildir_files(mail, "tmp") == [], "a failed delivery left its file in tmp/"
    assert len(maildir_files(mail, "new")) == 1, "only the message sent before the disk filled"

    filler.unlink()
    snap = ledger.wait_all_delivered()
    assert all(copies == 1 for copies in snap.at_sink.values()), snap.describe()
    assert maildir_files(mail, "tmp") == []
    assert filterd.running()
