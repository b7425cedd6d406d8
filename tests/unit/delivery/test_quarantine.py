"""The quarantine store: its file format (and the earlier one), IDs, locking, expiry, rewriting."""

from __future__ import annotations

import io
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from filterd.delivery.quarantine import (
    BadId,
    MessageBusy,
    NoSuchMessage,
    QuarantineStore,
    message_id,
)
from filterd.delivery.quarantine_file import (
    QuarantineRecord,
    StoredRecipient,
    encode_record,
    read_record,
)
from filterd.model import replies
from filterd.model.envelope import Client, Recipient, Session, Transaction, Xforwarded
from filterd.model.reply import Reply
from filterd.model.spool import Spool

MESSAGE = b"Subject: hi\r\n\r\nbody\r\n"
OK = Reply(250, "2.1.5", "Ok")


def transaction(sender: str = "alice@example.com", *rcpts: str) -> Transaction:
    peer = Client(address="192.0.2.7", port=4242, name="mx.example", helo="helo.example",
                  protocol="ESMTP")  # fmt: skip
    t = Transaction(
        queue_id="3F2A1B0C9D",
        session=Session(id="s", listener="l", peer=peer),
        sender=sender,
        mail_params=("BODY=8BITMIME", "SIZE=100"),
    )
    for address in rcpts or ("bob@example.org",):
        t.recipients.append(Recipient(address, ("NOTIFY=NEVER",), reply=OK))
    t.recipients.append(Recipient("refused@example.org", reply=Reply(550, "5.1.1", "no")))
    return t


async def store(root: Path, t: Transaction, content: bytes = MESSAGE) -> Reply:
    with Spool(1024) as spool:
        spool.write(content)
        return await QuarantineStore(root).store(t, spool, "spam\r\n score  12", "spamassassin")


def record_of(data: bytes, mtime: float = 0.0) -> QuarantineRecord:
    return read_record(io.BytesIO(data), len(data), mtime)


def test_the_record_round_trips_the_envelope_byte_for_byte() -> None:
    sender = "j\udcf6rg@example.com"  # an 8-bit address as the SMTP door keeps it
    t = transaction(sender, "bob@example.org", "carol@example.org")
    t.xforward = Xforwarded({"ADDR": "198.51.100.1", "NAME": "[UNAVAILABLE]"})
    now = datetime(2024, 6, 10, 12, 0, 0, tzinfo=UTC)
    head = encode_record(t, "a reason", "header_checks", len(MESSAGE), now)
    assert head.isascii() is False  # Return-Path carries the 8-bit sender as it came
    assert head.count(b"\r\n") == 2
    record = record_of(head + MESSAGE)
    assert record.format == 2
    assert (record.offset, record.size) == (len(head), len(MESSAGE))
    assert record.sender == sender
    assert record.queue_id == "3F2A1B0C9D"
    assert record.time == now
    assert record.mail_params == ("BODY=8BITMIME", "SIZE=100")
    assert record.recipients == (
        StoredRecipient("bob@example.org", ("NOTIFY=NEVER",)),
        StoredRecipient("carol@example.org", ("NOTIFY=NEVER",)),
    )  # the refused one is not a recipient of the message
    assert (record.reason, record.plugin) == ("a reason", "header_checks")
    assert record.xforward == {"ADDR": "198.51.100.1", "NAME": "[UNAVAILABLE]"}
    assert record.client == Client("198.51.100.1", None, "unknown", None, "ESMTP")


def test_the_earlier_format_is_read() -> None:
    old = (
        b"Return-Path: <alice@example.com>\r\n"
        b"X-Filterd-Quarantine: held for review\r\n"
        b"X-Filterd-Envelope: queue_id=0123456789; from=<alice@example.com>; "
        b"to=<bob@example.org>, <carol@example.org>\r\n"
    )
    record = record_of(old + MESSAGE, mtime=1_000_000_000.0)
    assert record.format == 1
    assert (record.offset, record.size) == (len(old), len(MESSAGE))
    assert (record.queue_id, record.sender) == ("0123456789", "alice@example.com")
    assert record.addresses == ["bob@example.org", "carol@example.org"]
    assert record.reason == "held for review"
    assert record.time == datetime.fromtimestamp(1_000_000_000, UTC)  # the file's time


@pytest.mark.parametrize(
    "data",
    [
        MESSAGE,
        b"",
        b"Return-Path: <a@b>\r\nX-Filterd-Quarantine-Meta: {not json\r\n" + MESSAGE,
        b'Return-Path: <a@b>\r\nX-Filterd-Quarantine-Meta: {"v": 3, "from": "a@b"}\r\n',
        b"Return-Path: <a@b>\r\nX-Filterd-Quarantine: r\r\nSubject: no envelope line\r\n",
        b"Return-Path: <a@b>\r\n" + b"X" * 100,
    ],
)
def test_other_files_are_described_as_unknown(data: bytes) -> None:
    record = record_of(data)
    assert (record.format, record.offset, record.size, record.sender) == (0, 0, len(data), None)


async def test_a_message_cannot_pass_itself_off_as_the_record(tmp_path: Path) -> None:
    fake = (
        b'X-Filterd-Quarantine-Meta: {"v": 2, "from": "evil@example.com", '
        b'"recipients": [{"address": "victim@example.org"}]}\r\n' + MESSAGE
    )
    assert await store(tmp_path, transaction(), fake) == Reply(
        250, "2.0.0", "Ok: queued as 3F2A1B0C9D"
    )
    (message,) = QuarantineStore(tmp_path).messages()
    assert message.record.sender == "alice@example.com"
    assert message.record.addresses == ["bob@example.org"]
    with QuarantineStore(tmp_path).held(message.id) as held:
        assert b"".join(held.content_chunks()) == fake


async def test_stored_messages_are_listed_found_and_held(tmp_path: Path) -> None:
    await store(tmp_path, transaction())
    (path,) = (tmp_path / "new").iterdir()
    quarantine = QuarantineStore(tmp_path)
    (message,) = quarantine.messages()
    assert message.id == message_id(path.name) == path.name.split(",")[0]
    assert message.path == path
    assert message.record.reason == "spam score 12"  # one line
    assert message.record.plugin == "spamassassin"
    assert message.record.size == len(MESSAGE)
    assert quarantine.find(message.id) == message
    with quarantine.held(message.id) as held:
        assert b"".join(held.content_chunks()) == MESSAGE
        with pytest.raises(MessageBusy), quarantine.held(message.id):
            pass
        assert quarantine.expire(0.0, datetime.now(UTC) + timedelta(days=1)) == []  # skipped
    assert quarantine.messages() == [message]  # the lock took nothing away
    os.rename(path, tmp_path / "cur" / f"{path.name}:2,S")  # a mail reader has seen it
    assert quarantine.find(message.id).path == tmp_path / "cur" / f"{path.name}:2,S"


async def test_ids_never_reach_outside_the_quarantine(tmp_path: Path) -> None:
    root = tmp_path / "q"
    await store(root, transaction())
    (outside := tmp_path / "outside").write_bytes(MESSAGE)
    (root / "new" / "outside").symlink_to(outside)
    quarantine = QuarantineStore(root)
    assert len(quarantine.messages()) == 1  # the symlink is not a message
    for bad in ("", ".", "..", "../outside", str(outside), "new/outside", "a\x00b", "a b", "x:2,S"):
        with pytest.raises(BadId):
            quarantine.find(bad)
        with pytest.raises(BadId):
            quarantine.delete(bad)
    for unknown in ("outside", "new", "tmp", "x" * 255):
        with pytest.raises(NoSuchMessage):
            quarantine.delete(unknown)
    with pytest.raises(BadId):
        quarantine.find("x" * 256)
    assert outside.read_bytes() == MESSAGE
    assert len(quarantine.messages()) == 1


def test_an_absent_quarantine_is_empty(tmp_path: Path) -> None:
    quarantine = QuarantineStore(tmp_path / "never-made")
    assert quarantine.messages() == []
    assert quarantine.expire(1.0) == []
    with pytest.raises(NoSuchMessage):
        quarantine.find("1718000000.M1P2Q3.host")


def plant(root: Path, name: str, when: datetime) -> None:
    """A quarantine file whose record says it was quarantined at ``when``."""
    (root / "new").mkdir(parents=True, exist_ok=True)
    head = encode_record(transaction(), "r", None, len(MESSAGE), when)
    (root / "new" / name).write_bytes(head + MESSAGE)


def test_expire_removes_only_what_is_older_than_max_age(tmp_path: Path) -> None:
    now = datetime(2024, 6, 10, 12, 0, 0, tzinfo=UTC)
    plant(tmp_path, "1.M1P1Q1.host,S=9", now - timedelta(hours=2))
    plant(tmp_path, "2.M1P1Q1.host,S=9", now - timedelta(hours=1))
    plant(tmp_path, "3.M1P1Q1.host,S=9", now)
    quarantine = QuarantineStore(tmp_path)
    assert [m.id for m in quarantine.messages()] == [
        "1.M1P1Q1.host",
        "2.M1P1Q1.host",
        "3.M1P1Q1.host",
    ]  # oldest first
    (expired,) = quarantine.expire(3600.0, now)  # exactly max_age old: kept
    assert expired.id == "1.M1P1Q1.host"
    assert [m.id for m in quarantine.expire(1.0, now)] == ["2.M1P1Q1.host"]
    assert [m.id for m in quarantine.messages()] == ["3.M1P1Q1.host"]


async def test_a_partial_release_rewrites_the_recipients_only(tmp_path: Path) -> None:
    await store(tmp_path, transaction("alice@example.com", "bob@example.org", "carol@example.org"))
    quarantine = QuarantineStore(tmp_path)
    (before,) = quarantine.messages()
    with quarantine.held(before.id) as held:
        held.keep_only([StoredRecipient("carol@example.org", ("NOTIFY=NEVER",))])
    (after,) = quarantine.messages()
    assert after.id == before.id
    assert after.record.recipients == (StoredRecipient("carol@example.org", ("NOTIFY=NEVER",)),)
    unchanged = ("sender", "time", "queue_id", "reason", "plugin", "mail_params", "client", "size")
    assert [getattr(after.record, k) for k in unchanged] == [
        getattr(before.record, k) for k in unchanged
    ]
    with quarantine.held(after.id) as held:
        assert b"".join(held.content_chunks()) == MESSAGE
    assert list((tmp_path / "tmp").iterdir()) == []


async def test_an_unwritable_quarantine_is_a_4xx(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    assert await store(tmp_path / "file", transaction()) == replies.QUEUE_WRITE
