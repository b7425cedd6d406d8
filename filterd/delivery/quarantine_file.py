"""One quarantined message as a file: what it records about itself, how that is written and read.

A quarantine file is a Maildir message (a mail reader can open the quarantine) whose first two
lines are filterd's record of it, the message itself follows, byte for byte as it would have
been handed on:

```
Return-Path: <sender@example.com>
X-Filterd-Quarantine-Meta: {"v": 2, "queue_id": "3F2A1B0C9D", "time": "...", "from": ...}
<the message>
```

The JSON (ASCII, one line) holds the envelope (sender, MAIL parameters, recipients with their
RCPT parameters), the client (as XFORWARD named it), the reason, the plugin that decided, the
time and the message's size. Exactly two lines belong to filterd, so nothing in the message can
pass itself off as part of the record. Files of the earlier format (``X-Filterd-Quarantine:
reason`` and ``X-Filterd-Envelope: queue_id=...; from=<...>; to=<...>`` after the
``Return-Path:``) are read too; any other file is listed with what is known (its size, time).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import BinaryIO, Literal

from filterd.model.envelope import Client, Session, Transaction, Xforwarded

__all__ = [
    "LINE_LIMIT",
    "QuarantineRecord",
    "StoredRecipient",
    "encode_record",
    "encode_record_again",
    "read_record",
]

LINE_LIMIT = 1 << 20
"""The longest record line read (a record of some thousand recipients fits)."""

_RETURN_PATH = b"Return-Path: "
_META = b"X-Filterd-Quarantine-Meta: "
_V1_REASON = b"X-Filterd-Quarantine: "
_V1_ENVELOPE = b"X-Filterd-Envelope: "
_V1_FIELDS = re.compile(r"^queue_id=(?P<id>[^;]*); from=<(?P<from>.*?)>; to=(?P<to>.*)$")

Format = Literal[2, 1, 0]
"""2: this module's record; 1: the earlier headers; 0: not a file filterd wrote."""


@dataclass(frozen=True, slots=True)
class StoredRecipient:
    address: str
    params: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class QuarantineRecord:
    """What a quarantine file says about its message. ``sender`` is None when the file does
    not say (format 0): such a message cannot be released."""

    format: Format
    offset: int  # where the message starts in the file
    size: int  # the message's bytes (the file less the record)
    time: datetime | None  # when it was quarantined (None: the record does not say)
    queue_id: str = ""
    sender: str | None = None
    mail_params: tuple[str, ...] = ()
    recipients: tuple[StoredRecipient, ...] = ()
    reason: str = ""
    plugin: str | None = None
    client: Client | None = None
    xforward: dict[str, str] | None = field(default=None)

    @property
    def addresses(self) -> list[str]:
        return [r.address for r in self.recipients]


def encode_record(
    t: Transaction,
    reason: str,
    plugin: str | None,
    size: int,
    now: datetime,
    recipients: list[StoredRecipient] | None = None,
) -> bytes:
    """The two record lines for ``t``'s message of ``size`` bytes (``recipients``: instead of
    ``t``'s accepted ones, when a partial release leaves some)."""
    client = t.client
    rcpts = recipients if recipients is not None else [
        StoredRecipient(r.address, r.params) for r in t.accepted
    ]  # fmt: skip
    meta: dict[str, object] = {
        "v": 2,
        "queue_id": t.queue_id,
        "time": now.astimezone(UTC).isoformat(timespec="seconds"),
        "from": t.sender,
        "mail_params": list(t.mail_params),
        "recipients": [{"address": r.address, "params": list(r.params)} for r in rcpts],
        "reason": reason,
        "plugin": plugin,
        "size": size,
        "client": {
            "address": client.address,
            "port": client.port,
            "name": client.name,
            "helo": client.helo,
            "protocol": client.protocol,
        },
        "xforward": dict(t.xforward.attributes) if t.xforward is not None else None,
    }
    text = json.dumps(meta, ensure_ascii=True)  # lone surrogates (8-bit bytes) as \udcxx
    return _RETURN_PATH + _envelope_bytes(f"<{t.sender}>\r\n") + _META + text.encode() + b"\r\n"


def encode_record_again(record: QuarantineRecord, recipients: list[StoredRecipient]) -> bytes:
    """``record``'s lines with only ``recipients`` left (after a partial release)."""
    client = record.client or Client()
    t = Transaction(
        queue_id=record.queue_id,
        session=Session(id="quarantine", listener="quarantine", peer=client),
        sender=record.sender or "",
        mail_params=record.mail_params,
        xforward=Xforwarded(dict(record.xforward)) if record.xforward is not None else None,
    )
    now = record.time or datetime.now(UTC)
    return encode_record(t, record.reason, record.plugin, record.size, now, recipients)


def read_record(file: BinaryIO, file_size: int, mtime: float) -> QuarantineRecord:
    """The record at the start of an open quarantine file (positioned at 0)."""
    first = file.readline(LINE_LIMIT)
    second = file.readline(LINE_LIMIT) if first.startswith(_RETURN_PATH) else b""
    fallback_time = datetime.fromtimestamp(mtime, UTC)
    if second.startswith(_META) and second.endswith(b"\n"):
        offset = len(first) + len(second)
        try:
            return _from_meta(json.loads(second[len(_META) :]), offset, file_size, fallback_time)
        except (ValueError, TypeError, AttributeError):
            pass  # damaged: shown as a file filterd did not write
    elif second.startswith(_V1_REASON) and second.endswith(b"\n"):
        third = file.readline(LINE_LIMIT)
        fields = _V1_FIELDS.match(_text(third.removeprefix(_V1_ENVELOPE)).rstrip("\r\n"))
        if third.startswith(_V1_ENVELOPE) and third.endswith(b"\n") and fields is not None:
            offset = len(first) + len(second) + len(third)
            rcpts = [a for a in fields["to"].strip().removeprefix("<").removesuffix(">")
                     .split(">, <") if a]  # fmt: skip
            return QuarantineRecord(
                format=1,
                offset=offset,
                size=file_size - offset,
                time=fallback_time,
                queue_id=fields["id"],
                sender=fields["from"],
                recipients=tuple(StoredRecipient(a) for a in rcpts),
                reason=_text(second[len(_V1_REASON) :]).strip(),
            )
    return QuarantineRecord(format=0, offset=0, size=file_size, time=fallback_time)


def _from_meta(meta: object, offset: int, file_size: int, fallback: datetime) -> QuarantineRecord:
    """A version 2 record; ValueError if ``meta`` is not one."""
    if not isinstance(meta, dict) or meta.get("v") != 2 or not isinstance(meta.get("from"), str):
        raise ValueError("not a version 2 record")
    client = meta.get("client")
    xforward = meta.get("xforward")
    plugin = meta.get("plugin")
    return QuarantineRecord(
        format=2,
        offset=offset,
        size=file_size - offset,
        time=_time(meta.get("time")) or fallback,
        queue_id=str(meta.get("queue_id") or ""),
        sender=meta["from"],
        mail_params=_strings(meta.get("mail_params", [])),
        recipients=tuple(_recipient(r) for r in _items(meta.get("recipients"))),
        reason=str(meta.get("reason") or ""),
        plugin=str(plugin) if plugin is not None else None,
        client=_client(client) if isinstance(client, dict) else None,
        xforward={str(k): str(v) for k, v in xforward.items()}
        if isinstance(xforward, dict)
        else None,
    )


def _recipient(data: object) -> StoredRecipient:
    if not isinstance(data, dict) or not isinstance(data.get("address"), str):
        raise ValueError("a recipient without an address")
    return StoredRecipient(data["address"], _strings(data.get("params", [])))


def _client(data: dict[str, object]) -> Client:
    port = data.get("port")
    helo = data.get("helo")
    return Client(
        address=str(data.get("address") or "unknown"),
        port=port if isinstance(port, int) else None,
        name=str(data.get("name") or "unknown"),
        helo=str(helo) if helo is not None else None,
        protocol=str(data.get("protocol") or "SMTP"),
    )


def _items(value: object) -> list[object]:
    if not isinstance(value, list):
        raise ValueError("expected a list")
    return value


def _strings(value: object) -> tuple[str, ...]:
    return tuple(str(item) for item in _items(value))


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _envelope_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")
