"""``filterd quarantine list | show ID | release ID [--to ADDRESS] | delete ID | expire``.

The messages a Quarantine verdict kept (``[quarantine] root``): list them, look at one, hand
one to the configured delivery (not through the chain again), delete one, or remove those older
than ``max_age``. Every change is logged as the server logs (``[log]``), one line each.
"""

from __future__ import annotations

import argparse
import codecs
import json
from datetime import datetime
from typing import TYPE_CHECKING, TextIO

from filterd.config.load import load_config
from filterd.config.types import format_duration, parse_duration
from filterd.errors import ConfigError

if TYPE_CHECKING:
    from filterd.config.schema import Config
    from filterd.delivery.quarantine import HeldMessage, QuarantinedMessage, QuarantineStore
    from filterd.delivery.quarantine_file import StoredRecipient
    from filterd.model.reply import Reply

__all__ = ["run"]

EXIT_OK = 0
EXIT_FAILED = 1
"""The action failed: no such message, the next hop refused the release, ..."""
EXIT_USAGE = 2
"""A bad command line, a bad ID or a configuration error."""
EXIT_TEMPFAIL = 75
"""Try again later (sysexits' EX_TEMPFAIL): the next hop deferred, or another process holds
the message."""


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run ``filterd quarantine ACTION``; the exit status."""
    from filterd.delivery.quarantine import QuarantineError, QuarantineStore
    from filterd.maillog import setup_logging

    try:
        config = load_config(args.config, serving=False)
    except ConfigError as exc:
        print(exc, file=err)
        return EXIT_USAGE
    setup_logging(config.log.level, err)
    store = QuarantineStore(config.quarantine.root)
    try:
        match args.action:
            case "list":
                return _list(store, args.json, out)
            case "show":
                return _show(store, args.id, args.raw, out)
            case "release":
                return _release(store, config, args.id, args.rcpts, out, err)
            case "delete":
                return _delete(store, args.ids, out, err)
            case _:
                return _expire(store, config, args.max_age, out, err)
    except QuarantineError as exc:
        print(f"filterd quarantine: {exc}", file=err)
        return _status_of(exc)
    except OSError as exc:
        print(f"filterd quarantine: {exc.filename or store.root}: {exc.strerror or exc}", file=err)
        return EXIT_FAILED


def _status_of(exc: Exception) -> int:
    from filterd.delivery.quarantine import BadId, MessageBusy

    if isinstance(exc, BadId):
        return EXIT_USAGE
    return EXIT_TEMPFAIL if isinstance(exc, MessageBusy) else EXIT_FAILED


# ---------------------------------------------------------------------------------- list, show
def _list(store: QuarantineStore, as_json: bool, out: TextIO) -> int:
    messages = store.messages()
    if as_json:
        json.dump([_public(m) for m in messages], out, indent=2)
        out.write("\n")
        return EXIT_OK
    if not messages:
        out.write(f"The quarantine {store.root} is empty.\n")
        return EXIT_OK
    rows = [("ID", "TIME", "SIZE", "FROM", "TO", "REASON")]
    for message in messages:
        record = message.record
        rows.append(
            (
                message.id,
                _local_time(record.time),
                str(record.size),
                _sender(record.sender),
                _recipients(record.addresses),
                _printable(record.reason or "-"),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        cells[2] = row[2].rjust(widths[2])
        out.write("  ".join([*cells, row[-1]]).rstrip() + "\n")
    total = sum(m.record.size for m in messages)
    out.write(f"-- {len(messages)} message{'s' if len(messages) != 1 else ''}, {total} bytes\n")
    return EXIT_OK


def _show(store: QuarantineStore, ident: str, raw: bool, out: TextIO) -> int:
    with store.held(ident) as held:
        store.log_action(held.message, "shown" + (" raw" if raw else ""))
        if raw:
            out.flush()
            binary = out.buffer if hasattr(out, "buffer") else None
            for chunk in held.content_chunks():
                if binary is not None:
                    binary.write(chunk)
                else:
                    out.write(chunk.decode("utf-8", "surrogateescape"))
            if binary is not None:
                binary.flush()
            return EXIT_OK
        message = held.message
        record = message.record
        client = record.client
        lines = [
            ("id", message.id),
            ("queue_id", record.queue_id or "-"),
            ("time", _local_time(record.time)),
            ("from", _sender(record.sender)),
            ("to", ", ".join(f"<{a}>" for a in record.addresses) or "-"),
            ("reason", record.reason or "-"),
            ("plugin", record.plugin or "-"),
            ("size", str(record.size)),
            (
                "client",
                f"{client.describe()} helo=<{client.helo or ''}> proto={client.protocol}"
                if client is not None
                else "-",
            ),
            ("file", str(message.path)),
        ]
        if record.format == 0:
            lines.append(("note", "not written by filterd: no envelope recorded"))
        for key, value in lines:
            out.write(f"{key + ':':10}{_printable(value)}\n")
        out.write("\n")
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        pending = ""  # a CR that may be the first half of a CRLF split between chunks
        last = "\n"
        for chunk in held.content_chunks():
            text = pending + decoder.decode(chunk)
            pending = "\r" if text.endswith("\r") else ""
            text = text.removesuffix(pending).replace("\r\n", "\n")
            out.write(text)
            last = text[-1:] or last
        tail = pending + decoder.decode(b"", final=True)
        out.write(tail)
        if not (tail or last).endswith("\n"):
            out.write("\n")
    return EXIT_OK


# ------------------------------------------------------------------------------------ release
def _release(
    store: QuarantineStore,
    config: Config,
    ident: str,
    addresses: list[str] | None,
    out: TextIO,
    err: TextIO,
) -> int:
    from filterd.delivery.quarantine_file import StoredRecipient

    if config.delivery is None:
        print(
            f"filterd quarantine: release needs a [delivery] table in {config.source} "
            "(where released mail goes)",
            file=err,
        )
        return EXIT_USAGE
    given: list[StoredRecipient] = []
    for address in addresses or []:
        checked = _mail_address(address)
        if checked is None:
            print(f"filterd quarantine: --to {address!r} is not a mail address", file=err)
            return EXIT_USAGE
        given.append(StoredRecipient(checked))
    with store.held(ident) as held:
        message = held.message
        record = message.record
        if record.sender is None:
            print(
                f"filterd quarantine: {message.id} has no envelope recorded (filterd did not "
                "write it): it cannot be released; `show --raw` gives the message",
                file=err,
            )
            return EXIT_FAILED
        recipients = given or list(record.recipients)
        if not recipients:
            print(f"filterd quarantine: {message.id} has no recipients: give --to", file=err)
            return EXIT_USAGE
        answers = _deliver(held, config, recipients)
        delivered = [r for r, a in zip(recipients, answers, strict=True) if a.is_positive]
        failed = [(r, a) for r, a in zip(recipients, answers, strict=True) if not a.is_positive]
        to = ",".join(f"<{r.address}>" for r in recipients)
        for rcpt, answer in zip(recipients, answers, strict=True):
            stream = out if answer.is_positive else err
            print(f"{message.id}: to=<{_printable(rcpt.address)}>: {answer}", file=stream)
        if not failed:
            held.remove("released from quarantine", {"to": to})
            print(f"{message.id}: released", file=out)
            return EXIT_OK
        kept = ",".join(f"<{r.address}>" for r, _ in failed)
        if delivered and not given:
            held.keep_only([r for r, _ in failed])
            held.store.log_action(
                message,
                f"released from quarantine to {len(delivered)} of {len(recipients)} recipients",
                {"kept_for": kept},
                warning=True,
            )
        else:
            held.store.log_action(
                message, "release failed, kept in quarantine", {"to": to, "answer": failed[0][1]},
                warning=True,
            )  # fmt: skip
        print(f"{message.id}: kept in the quarantine for {kept}", file=err)
        return EXIT_TEMPFAIL if all(a.is_transient for _, a in failed) else EXIT_FAILED


def _deliver(held: HeldMessage, config: Config, recipients: list[StoredRecipient]) -> list[Reply]:
    """Hand the held message to the configured delivery: one answer per recipient."""
    import trio

    from filterd.delivery.release import release
    from filterd.model.spool import Spool
    from filterd.runtime.handlers import build_delivery

    with Spool(config.limits.spool_memory, config.limits.spool_dir) as spool:
        for chunk in held.content_chunks():
            spool.write(chunk)

        async def hand_on() -> list[Reply]:
            delivery = build_delivery(config)
            assert delivery is not None, "checked by the caller"
            try:
                return await release(held.message.record, recipients, spool, delivery)
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await delivery.aclose()

        return trio.run(hand_on)


def _mail_address(text: str) -> str | None:
    """``text`` (``a@b`` or ``<a@b>``) if it is a mailbox RCPT TO can carry, else None."""
    from filterd.model import replies
    from filterd.protocols.smtp.commands import CommandSyntaxError, validate_mailbox

    address = text.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1]
    if not address or any(c in address for c in "<>"):
        return None
    try:
        validate_mailbox(address, replies.SYNTAX, smtputf8=True)
    except CommandSyntaxError:
        return None
    return address


# ------------------------------------------------------------------------------ delete, expire
def _delete(store: QuarantineStore, idents: list[str], out: TextIO, err: TextIO) -> int:
    from filterd.delivery.quarantine import QuarantineError

    status = EXIT_OK
    for ident in idents:
        try:
            message = store.delete(ident)
        except QuarantineError as exc:
            print(f"filterd quarantine: {exc}", file=err)
            status = status or _status_of(exc)
            continue
        print(f"{message.id}: deleted", file=out)
    return status


def _expire(
    store: QuarantineStore, config: Config, given: str | None, out: TextIO, err: TextIO
) -> int:
    if given is not None:
        try:
            max_age = parse_duration(given)
        except ValueError as exc:
            print(f"filterd quarantine: --max-age {given!r}: {exc}", file=err)
            return EXIT_USAGE
    elif config.quarantine.max_age is not None:
        max_age = config.quarantine.max_age
    else:
        print(
            f"filterd quarantine: no max_age in the [quarantine] table of {config.source}: "
            'set one (e.g. max_age = "30d") or give --max-age',
            file=err,
        )
        return EXIT_USAGE
    if max_age <= 0:
        print("filterd quarantine: --max-age must be more than zero", file=err)
        return EXIT_USAGE
    expired = store.expire(max_age)
    for message in expired:
        print(f"{message.id}: expired", file=out)
    print(f"{len(expired)} expired (older than {format_duration(max_age)})", file=out)
    return EXIT_OK


# ------------------------------------------------------------------------------------ helpers
def _public(message: QuarantinedMessage) -> dict[str, object]:
    """A message as ``list --json`` shows it."""
    record = message.record
    client = record.client
    return {
        "id": message.id,
        "queue_id": record.queue_id or None,
        "time": record.time.isoformat(timespec="seconds") if record.time else None,
        "size": record.size,
        "from": record.sender,
        "to": record.addresses,
        "reason": record.reason or None,
        "plugin": record.plugin,
        "client": None
        if client is None
        else {
            "address": client.address,
            "name": client.name,
            "helo": client.helo,
            "protocol": client.protocol,
        },
        "file": str(message.path),
    }


def _local_time(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment is not None else "-"


def _sender(sender: str | None) -> str:
    return "-" if sender is None else _printable(f"<{sender}>")


def _recipients(addresses: list[str]) -> str:
    if not addresses:
        return "-"
    shown = _printable(f"<{addresses[0]}>")
    return shown if len(addresses) == 1 else f"{shown} +{len(addresses) - 1}"


def _printable(text: str) -> str:
    from filterd.maillog import sanitize

    return sanitize(text.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
