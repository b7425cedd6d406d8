"""The harness: the real config validation, registry checks and chain runner, on a message and
an envelope, with every stage's results, the edits, the message as it would be handed on and
the log lines. ``filterd scan`` is built on it."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

from filterd.chain.build import build_chain
from filterd.chain.outcome import Outcome, PluginResult
from filterd.chain.registry import check_plugin_class, stages_of
from filterd.chain.runner import ChainRunner, Entry
from filterd.config.schema import ChainEntryConfig, Config
from filterd.maillog import MailLog, queue_id_var
from filterd.model.editing import apply_content_edits, apply_envelope_edits
from filterd.model.edits import ENVELOPE_EDITS, Edit
from filterd.model.envelope import Client, Recipient, Session, Transaction, new_queue_id
from filterd.model.findings import Finding
from filterd.model.message import MessageView
from filterd.model.reply import Reply
from filterd.model.spool import Spool
from filterd.model.trace import received_header
from filterd.model.verdict import CONTINUE, Continue, Reject, TempFail, Verdict
from filterd.sdk.plugin import Plugin, PluginEnv

STAGE_ORDER = ("on_connect", "on_helo", "on_mail_from", "on_rcpt", "on_message")


@dataclass
class ScanResult:
    """What the chain did with one message."""

    results: list[PluginResult] = field(default_factory=list)  # every plugin call, in order
    outcomes: dict[str, Outcome] = field(default_factory=dict)  # per stage (on_rcpt: last)
    rcpt_outcomes: dict[str, Outcome] = field(default_factory=dict)  # per recipient
    edits: list[Edit] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    final: Verdict = CONTINUE  # what decided the message (Continue if nothing did)
    decided_at: str | None = None
    message: bytes = b""  # as it would be handed on (edits applied)
    sender: str = ""
    recipients: list[str] = field(default_factory=list)  # after envelope edits
    log: list[str] = field(default_factory=list)

    def verdict(self, stage: str) -> Verdict:
        outcome = self.outcomes.get(stage)
        return outcome.verdict if outcome is not None else CONTINUE

    @property
    def reply(self) -> Reply | None:
        """The refusal the client would get, if any."""
        return self.final.reply if isinstance(self.final, Reject | TempFail) else None


def load_message(source: str | Path | bytes) -> bytes:
    """Message bytes with CRLF line ends (files on disk usually have LF)."""
    raw = source if isinstance(source, bytes) else Path(source).read_bytes()
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


async def run_plugin(
    plugin: type[Plugin[Any]],
    config: Mapping[str, object] | None = None,
    *,
    message: str | Path | bytes,
    mail_from: str = "sender@example.com",
    rcpts: Sequence[str] = ("rcpt@example.org",),
    client_ip: str = "192.0.2.1",
    client_name: str = "unknown",
    helo: str = "client.example",
    plugin_timeout: float = 30.0,
    on_error: str = "tempfail",
) -> ScanResult:
    """Run one plugin class with ``config`` (validated by its Config model) on a message."""
    cls = check_plugin_class(plugin.name, plugin)
    entry_config = ChainEntryConfig.model_validate(
        {
            "plugin": plugin.name,
            "timeout": plugin_timeout,
            "on_error": on_error,
            "config": dict(config or {}),
        }
    )
    settings = cls.Config.model_validate(entry_config.config)
    env = PluginEnv(plugin.name, MailLog(plugin.name), trio.CapacityLimiter(4))
    entry = Entry(
        entry_config, cls(settings, env), trio.CapacityLimiter(10), frozenset(stages_of(cls))
    )
    return await _scan(ChainRunner([entry]), load_message(message), mail_from, list(rcpts),
                       client_ip, client_name, helo)  # fmt: skip


async def run_chain(
    config: Config,
    *,
    message: str | Path | bytes,
    mail_from: str = "sender@example.com",
    rcpts: Sequence[str] = ("rcpt@example.org",),
    client_ip: str = "192.0.2.1",
    client_name: str = "unknown",
    helo: str = "client.example",
) -> ScanResult:
    """Run the configuration's whole ``[[chain]]`` on a message (``filterd scan``)."""
    return await _scan(build_chain(config), load_message(message), mail_from, list(rcpts),
                       client_ip, client_name, helo)  # fmt: skip


async def _scan(
    chain: ChainRunner,
    raw: bytes,
    mail_from: str,
    rcpts: list[str],
    client_ip: str,
    client_name: str,
    helo: str,
) -> ScanResult:
    result = ScanResult(sender=mail_from)
    with _captured_log(result.log):
        await chain.start()
        try:
            await _stages(chain, raw, mail_from, rcpts, client_ip, client_name, helo, result)
        finally:
            await chain.stop()
    return result


async def _stages(
    chain: ChainRunner,
    raw: bytes,
    mail_from: str,
    rcpts: list[str],
    client_ip: str,
    client_name: str,
    helo: str,
    result: ScanResult,
) -> None:
    peer = Client(address=client_ip, name=client_name, helo=helo, protocol="ESMTP")
    session = Session(id="scan", listener="scan", peer=peer)
    t = Transaction(queue_id=new_queue_id(), session=session, sender=mail_from)
    queue_id_var.set(t.queue_id)
    try:
        if await _stage(result, "on_connect", await chain.connect(session)):
            return
        if await _stage(result, "on_helo", await chain.helo(session, helo)):
            return
        if await _stage(result, "on_mail_from", await chain.mail_from(t)):
            return
        for address in rcpts:
            rcpt = Recipient(address)
            outcome = await chain.rcpt(t, rcpt)
            result.rcpt_outcomes[address] = outcome
            result.outcomes["on_rcpt"] = outcome
            result.results.extend(outcome.results)
            refusal = outcome.verdict
            if isinstance(refusal, Reject | TempFail):
                rcpt.reply = refusal.reply
            else:
                rcpt.reply = Reply(250, "2.1.5", "Ok")
                result.edits.extend(outcome.edits)
                result.findings.extend(outcome.findings)
            t.recipients.append(rcpt)
        if not t.accepted:
            result.final = result.outcomes["on_rcpt"].verdict if rcpts else CONTINUE
            result.decided_at = "on_rcpt"
            return
        with Spool(1024 * 1024) as spool:
            spool.write(raw)
            t.size = len(raw)
            spool.prefix = received_header(t, "filterd.scan", "ESMTP", datetime.now(UTC))
            view = MessageView(spool)
            await _stage(result, "on_message", await chain.message(t, view))
            apply_content_edits(view, result.edits)
            result.message = b"".join(spool.chunks())
        if any(isinstance(e, ENVELOPE_EDITS) for e in result.edits):
            edited = apply_envelope_edits(t, result.edits)
            result.sender = edited.sender
            result.recipients = [r.address for r in edited.recipients]
        else:
            result.recipients = [r.address for r in t.accepted]
    finally:
        queue_id_var.set("NOQUEUE")
        await chain.close(session)


async def _stage(result: ScanResult, stage: str, outcome: Outcome) -> bool:
    """Record a stage's outcome; True when it ends the message (a refusal)."""
    result.outcomes[stage] = outcome
    result.results.extend(outcome.results)
    result.edits.extend(outcome.edits)
    result.findings.extend(outcome.findings)
    verdict = outcome.verdict
    if not isinstance(verdict, Continue) and result.decided_at is None:
        result.final = verdict
        result.decided_at = stage
    return isinstance(verdict, Reject | TempFail)


@contextmanager
def _captured_log(lines: list[str]) -> Iterator[None]:
    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = _Collect(level=logging.DEBUG)
    logger = logging.getLogger("filterd")
    previous = logger.level
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
