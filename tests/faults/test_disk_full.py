"""A small tmpfs is full while a private Postfix sends through filterd (its after-queue content
filter): the Maildirs filterd delivers into are on it (each message gets 452 4.3.1, nothing, not
even a piece, is left in any Maildir), or filterd's own spool is (each message gets a 4xx). The
messages stay queued at the sender; once space is freed, every one is delivered exactly once.
Mounting needs root (CAP_SYS_ADMIN): the tests are skipped without it."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import smtplib
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.ledger import Ledger, message, message_ids
from tests.support.filterd_proc import FilterdFactory
from tests.support.nexthop import ScriptedNextHop, hop_in_thread
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


def test_spool_disk_full(
    postfix_factory: PostfixFactory, filterd_factory: FilterdFactory, small_disk: Path
) -> None:
    spool = small_disk / "spool"
    spool.mkdir()
    port = free_port()
    postfix = postfix_factory(content_filter="smtp", filter_port=port)
    filterd = filterd_factory(
        f"""
[[listen]]
address = "127.0.0.1:{port}"
hostname = "filterd.test"
[limits]
spool_memory = 16
spool_dir = "{spool}"
[delivery]
method = "relay"
next_hop = "127.0.0.1:{postfix.reinject_port}"
"""
    )
    filler = small_disk / "filler"
    fill(filler)
    ledger = Ledger(postfix, port, postfix.delivered_messages, MESSAGES, reinjected=True)
    ledger.inject()
    ledger.wait_until_attempted()
    snap = ledger.check_held()
    for line in snap.deferred:
        assert "said: 452 4.3.1 " in line, line
    filler.unlink()
    snap = ledger.wait_all_delivered()
    assert all(copies == 1 for copies in snap.at_sink.values()), snap.describe()
    assert list(spool.iterdir()) == [], "a spool file outlived its message"
    assert filterd.running()


def test_spool_write_error_answers_4xx_and_the_session_goes_on(
    filterd_factory: FilterdFactory, tmp_path: Path
) -> None:
    """Without a mount: the spool directory vanishes, so spooling fails (451 4.3.0), and the
    same session's next message, once it is back, is relayed. A spool write error used to
    escape the session and stop the whole filterd process."""
    spool = tmp_path / "spool"
    spool.mkdir()
    hop = ScriptedNextHop()
    with hop_in_thread(hop):
        port = free_port()
        filterd = filterd_factory(
            f"""
[[listen]]
address = "127.0.0.1:{port}"
[limits]
spool_memory = 16
spool_dir = "{spool}"
[delivery]
method = "relay"
next_hop = "127.0.0.1:{hop.port}"
"""
        )
        spool.rmdir()
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.ehlo("client.example")
            with pytest.raises(smtplib.SMTPDataError) as refused:
                client.sendmail("a@example.org", ["b@example.net"], message(1))
            assert (refused.value.smtp_code, refused.value.smtp_error[:5]) == (451, b"4.3.0")
            assert hop.messages == []
            spool.mkdir()
            assert client.sendmail("a@example.org", ["b@example.net"], message(2)) == {}
        assert [message_ids([m]) for m in hop.messages] == [Counter({"fault-2": 1})]
        assert "spool write error" in filterd.output_text()
        assert filterd.running()
