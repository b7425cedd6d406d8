"""Maildir delivery: fsync'd, linked into new/, paths safe, disk full is a 4xx."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from filterd.delivery.maildir import BAD_MAILBOX
from filterd.model import replies
from tests.integration.test_relay import connect, running, send_message


def config(root: Path) -> str:
    return f"""
[[listen]]
address = "127.0.0.1:0"
hostname = "filterd.test"
[limits]
shutdown_grace = "1s"
[delivery]
method = "maildir"
root = "{root}"
"""


async def test_one_file_per_recipient_in_new_nothing_left_in_tmp(tmp_path: Path) -> None:
    root = tmp_path / "mail"
    async with running(config(root)) as port:
        client = await connect(port)
        answers = await send_message(
            client, ["Cactus@VirtualDomain.TLD", "other@example.org"], b"Subject: s\r\n\r\nb\r\n"
        )
    assert answers[-1].startswith("250 2.0.0 Ok: delivered to maildir as ")
    first = list((root / "virtualdomain.tld" / "cactus" / "new").iterdir())
    second = list((root / "example.org" / "other" / "new").iterdir())
    assert len(first) == len(second) == 1
    content, other = first[0].read_bytes(), second[0].read_bytes()
    # virtual(8): one file per recipient, its own delivery lines on top, LF line ends
    assert content.startswith(
        b"Return-Path: <alice@example.com>\nX-Original-To: Cactus@VirtualDomain.TLD\n"
        b"Delivered-To: Cactus@VirtualDomain.TLD\nReceived: from client.example"
    )
    assert other.startswith(
        b"Return-Path: <alice@example.com>\nX-Original-To: other@example.org\n"
        b"Delivered-To: other@example.org\nReceived: from client.example"
    )
    assert content.split(b"\n", 3)[3] == other.split(b"\n", 3)[3]
    assert content.endswith(b"Subject: s\n\nb\n")
    assert list((root / "virtualdomain.tld" / "cactus" / "tmp").iterdir()) == []
    assert (root / "example.org" / "other" / "cur").is_dir()


@pytest.mark.parametrize(
    "address", ["../../etc@example.org", ".hidden@example.org", "a@example.org/../x", "a@.."]
)
async def test_addresses_that_would_escape_the_root_are_refused(
    tmp_path: Path, address: str
) -> None:
    root = tmp_path / "mail"
    async with running(config(root)) as port:
        client = await connect(port)
        await client.send_lines("MAIL FROM:<a@b.example>", f"RCPT TO:<{address}>")
        await client.code()
        reply = await client.code()
    assert reply[:3] in ("550", "501"), reply
    if reply.startswith("550"):
        assert reply == str(BAD_MAILBOX)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


@pytest.fixture
def tiny_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB tmpfs, so a bigger message really fills the disk."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


async def test_disk_full_is_452_and_nothing_is_delivered(tiny_filesystem: Path) -> None:
    async with running(config(tiny_filesystem)) as port:
        client = await connect(port)
        body = b"Subject: big\r\n\r\n" + (b"z" * 998 + b"\r\n") * 600
        answers = await send_message(client, ["big@example.org"], body)
        assert answers[-1] == str(replies.INSUFFICIENT_STORAGE)
        # The disk is free again after the failed attempt: a small message goes through.
        answers = await send_message(client, ["big@example.org"], b"Subject: small\r\n\r\nx\r\n")
        assert answers[-1].startswith("250")
    box = tiny_filesystem / "example.org" / "big"
    assert len(list((box / "new").iterdir())) == 1
    assert list((box / "tmp").iterdir()) == []
    await trio.lowlevel.checkpoint()
