"""The spamassassin plugin: scan each message with spamd, tag it, quarantine or reject it.

One request per message (spamd's protocol), the message streamed from filterd's spool, at
most ``max_connections`` at a time. Whatever goes wrong with spamd (refused, reset, a
malformed answer, an error status such as ``79 Timeout``) raises ``SpamdError`` out of
``on_message``, and a spamd that does not answer runs into the chain entry's ``timeout``: both
follow the entry's ``on_error`` (tempfail by default). The plugin never turns a failed scan
into a pass.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterable, Iterator
from typing import Final

from filterd.sdk import (
    AddHeader,
    Continue,
    Edit,
    Finding,
    InsertHeader,
    Learns,
    MessageView,
    OnMessage,
    Plugin,
    Quarantine,
    Reject,
    RemoveHeader,
    Reply,
    Transaction,
    Verdict,
)
from filterd.sdk.spamd import (
    Command,
    MessageClass,
    SpamdClient,
    SpamdError,
    SpamdResponse,
    Tell,
)

from .config import SpamAssassinConfig, parse_address
from .headers import (
    RawField,
    edit_value,
    field_value,
    fold_value,
    is_own_header,
    rules_from_status,
    split_message,
    stars,
    status_value,
)
from .rewrite import Original, rewrite_edits

COMMANDS: Final = {
    "symbols": Command.SYMBOLS,
    "headers": Command.HEADERS,
    "process": Command.PROCESS,
}
_SPAM_HEADER: Final = re.compile(r"\S+\s*;\s*(\S+)\s*/\s*(\S+)")


def make_client(config: SpamAssassinConfig) -> SpamdClient:
    context = ssl.create_default_context(cafile=config.ca_file) if config.tls else None
    return SpamdClient(parse_address(config.address), config.max_connections, context)


class SpamAssassin(Plugin[SpamAssassinConfig], OnMessage, Learns):
    name = "spamassassin"
    Config = SpamAssassinConfig

    _client: SpamdClient | None = None

    async def learn(self, message: bytes, spam: bool) -> str:
        """``filterd learn``: TELL spamd (it must run with --allow-tell)."""
        tell = Tell.learn(MessageClass.SPAM if spam else MessageClass.HAM)
        response = await self.client.tell(message, len(message), tell, user=self.config.user)
        did = ", ".join(sorted(response.did_set)) or "nothing (already known)"
        return f"spamd learnt it as {'spam' if spam else 'ham'}: {did}"

    async def start(self) -> None:
        self._client = make_client(self.config)

    @property
    def client(self) -> SpamdClient:
        if self._client is None:
            raise RuntimeError("the spamassassin plugin was not started")
        return self._client

    async def on_message(self, t: Transaction, message: MessageView) -> Verdict:
        config = self.config
        size = message.size
        if size > config.max_size:
            self.env.log.info(
                "spamassassin: not scanned: message larger than max_size",
                size=size,
                max_size=config.max_size,
            )
            detail = f"not scanned: size {size} > max_size {config.max_size}"
            return Continue(findings=(Finding("spamassassin.skipped", detail),))

        head = bytearray()
        chunks: Iterable[bytes] = message.raw_chunks()
        if config.mode == "process":
            chunks = _tap(chunks, head, sum(len(h.raw) for h in message.headers) + 2)
        response = await self.client.check(chunks, size, COMMANDS[config.mode], config.user)
        status = response.spam
        if status is None:  # the codec never lets this through for scan commands
            raise SpamdError(f"spamd answered {config.mode} without a Spam header")
        score, required = _spam_strings(response)

        edits: tuple[Edit, ...] = ()
        tests: tuple[str, ...] = response.symbols
        findings: list[Finding] = []
        if config.mode == "symbols":
            if config.add_headers:
                edits = _symbols_edits(
                    message, status.is_spam, score, required, tests, status.score
                )
        elif config.mode == "headers":
            fields = _own_fields(response.body)
            tests = _tests_of(fields)
            if config.add_headers:
                edits = _copy_edits(message, fields)
        else:
            rewritten = split_message(response.body)
            tests = _tests_of(rewritten.fields)
            rewrite = rewrite_edits(_original(message, bytes(head)), rewritten)
            edits = rewrite.edits
            if not rewrite.exact:
                problems = "; ".join(rewrite.problems)
                self.env.log.warning(f"spamassassin: rewrite not byte-exact: {problems}")
                findings.append(Finding("spamassassin.rewrite_inexact", problems))

        kind = "spam" if status.is_spam else "ham"
        detail = f"{kind} score={score} required={required} tests={','.join(tests) or 'none'}"
        findings.insert(0, Finding("spamassassin", detail, status.score))
        return self._decide(status.score, score, edits, tuple(findings))

    def _decide(
        self, value: float, score: str, edits: tuple[Edit, ...], findings: tuple[Finding, ...]
    ) -> Verdict:
        config = self.config
        if config.reject_score is not None and value >= config.reject_score:
            return Reject(Reply(550, "5.7.1", config.reject_text), findings)
        if config.quarantine_score is not None and value >= config.quarantine_score:
            return Quarantine(f"{config.quarantine_reason} (score {score})", edits, findings)
        return Continue(edits, findings)


def _spam_strings(response: SpamdResponse) -> tuple[str, str]:
    """Score and threshold exactly as spamd printed them (``1000.0``, ``5.0``): the strings
    SpamAssassin's _SCORE_ and _REQD_ tags give too."""
    status = response.spam
    assert status is not None
    match = _SPAM_HEADER.fullmatch(response.header("Spam") or "")
    if match is not None:
        return match.group(1), match.group(2)
    return f"{status.score:.1f}", f"{status.threshold:.1f}"


def _tap(chunks: Iterable[bytes], head: bytearray, want: int) -> Iterator[bytes]:
    """Pass the chunks on, keeping a copy of the first ``want`` bytes in ``head``."""
    for chunk in chunks:
        if len(head) < want:
            head += chunk[: want - len(head)]
        yield chunk


def _placed(message: MessageView, new: list[tuple[str, str]]) -> list[Edit]:
    """SpamAssassin's headers go at the top, or right after a leading Return-Path."""
    headers = message.headers
    if headers and headers[0].name.lower() == "return-path":
        return [InsertHeader(1 + i, name, value) for i, (name, value) in enumerate(new)]
    return [AddHeader(name, value) for name, value in reversed(new)]  # later ones go above


def _removals(message: MessageView) -> list[Edit]:
    """SpamAssassin drops a message's own X-Spam-* headers (forged verdicts), not X-Spam-Prev-*."""
    names: dict[str, str] = {}
    for header in message.headers:
        if is_own_header(header.name):
            names.setdefault(header.name.lower(), header.name)
    return [RemoveHeader(name) for name in names.values()]


def _symbols_edits(
    message: MessageView,
    is_spam: bool,
    score: str,
    required: str,
    tests: tuple[str, ...],
    value: float,
) -> tuple[Edit, ...]:
    new: list[tuple[str, str]] = []
    if is_spam:
        new.append(("X-Spam-Flag", "YES"))
    status = status_value(is_spam, score, required, tests)
    new += [
        ("X-Spam-Score", score),
        ("X-Spam-Level", stars(value)),
        ("X-Spam-Status", fold_value("X-Spam-Status", status)),
    ]
    return (*_removals(message), *_placed(message, new))


def _own_fields(section: bytes) -> tuple[RawField, ...]:
    """The X-Spam-* headers spamd added, from a HEADERS answer."""
    return tuple(f for f in split_message(section).fields if is_own_header(f.name))


def _copy_edits(message: MessageView, fields: tuple[RawField, ...]) -> tuple[Edit, ...]:
    new = [(f.name, edit_value(f)[0]) for f in fields]
    return (*_removals(message), *_placed(message, new))


def _tests_of(fields: Iterable[RawField]) -> tuple[str, ...]:
    for f in fields:
        if f.name.lower() == "x-spam-status":
            return rules_from_status(field_value(f))
    return ()


def _original(message: MessageView, head: bytes) -> Original:
    fields = tuple(RawField(h.name, h.raw) for h in message.headers)
    section = b"".join(f.raw for f in fields)
    if not head.startswith(section):  # pragma: no cover - MessageView parses what it holds
        raise RuntimeError("the message's header section changed while it was being scanned")
    rest = head[len(section) :]
    separator = b"\r\n" if rest.startswith(b"\r\n") else b"\n" if rest.startswith(b"\n") else b""
    return Original(fields, separator, message.body_chunks())
