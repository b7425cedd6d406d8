"""The harness: the real config validation, registry checks and chain runner, on a message and
an envelope, with every stage's results, the edits, the message as it would be handed on and
the log lines. ``filterd scan`` is built on it."""

from __future__ import annotations

import logging
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import trio
from pydantic import ValidationError

from filterd.chain.build import THREADS_PER_PLUGIN, build_chain
from filterd.chain.inline import run_now
from filterd.chain.outcome import Outcome, PluginResult
from filterd.chain.registry import check_plugin_class, plugin_name, stages_of
from filterd.chain.runner import ChainRunner, Entry
from filterd.config.load import nested_config_error
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
from filterd.model.verdict import CONTINUE, Continue, Verdict, is_refusal
from filterd.sdk.plugin import Plugin, PluginConfig, PluginEnv

P = TypeVar("P", bound=Plugin[Any])
C = TypeVar("C", bound=PluginConfig)

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

    def decision(self, stage: str) -> Verdict:
        """The verdict that decided ``stage`` for the chain: the first that was not
        ``Continue`` (or a non-final ``Accept``), else a bare ``Continue()``. The edits and
        findings that accumulated are in ``edits`` and ``findings``; what each plugin
        returned, with its own edits, is ``returned``."""
        outcome = self.outcomes.get(stage)
        return outcome.verdict if outcome is not None else CONTINUE

    def returned(self, stage: str, label: str | None = None, *, rcpt: str | None = None) -> Verdict:
        """What the plugin returned at ``stage``, edits and findings included: the plugin
        labelled ``label`` (needed when several ran there). ``on_rcpt`` runs once per recipient:
        ``rcpt`` picks one (default: the last). A plugin that was not called there is a
        LookupError; one that raised or timed out an AssertionError with its error."""
        results = self.rcpt_outcomes[rcpt].results if rcpt is not None else self.results
        calls = [r for r in results if r.stage == stage and label in (None, r.label)]
        labels = sorted({r.label for r in calls})
        if len(labels) > 1:
            raise LookupError(f"several plugins ran at {stage} ({', '.join(labels)}): name one")
        if not calls:
            ran = ", ".join(f"{r.label} at {r.stage}" for r in results) or "none"
            who = label or "no plugin"
            raise LookupError(f"{who} was not called at {stage} (calls: {ran})")
        call = calls[-1]
        if call.error is not None:
            raise AssertionError(f"{call.label} returned nothing at {stage}: {call.error}")
        return call.verdict

    @property
    def reply(self) -> Reply | None:
        """The refusal the client would get, if any."""
        return self.final.reply if is_refusal(self.final) else None


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
    """Run one plugin class with ``config`` on a message, as a ``[[chain]]`` entry with this
    ``timeout`` and ``on_error`` would. A bad ``config`` raises ConfigError, as at start-up."""
    instance = make_plugin(plugin, config)
    source = _settings_source(plugin)
    try:
        entry_config = ChainEntryConfig.model_validate(
            {"plugin": instance.name, "timeout": plugin_timeout, "on_error": on_error}
        )
    except ValidationError as exc:
        raise nested_config_error(exc, ChainEntryConfig, (), source) from None
    entry = Entry(
        entry_config,
        instance,
        trio.CapacityLimiter(entry_config.concurrency),
        frozenset(stages_of(plugin)),
    )
    return await _scan(ChainRunner([entry]), load_message(message), mail_from, list(rcpts),
                       client_ip, client_name, helo)  # fmt: skip


def validate_config(plugin: type[Plugin[C]], config: Mapping[str, object]) -> C:
    """``config`` validated by the plugin's ``Config`` model, as filterd validates a ``[[chain]]``
    entry's ``config`` table: a ConfigError naming each bad key and its fix, as the CLI shows
    it (``<settings of Razor>: config.max_parallel: must be at least 1, got 0 (fix: ...)``)."""
    try:
        return cast(C, plugin.Config.model_validate(dict(config)))
    except ValidationError as exc:
        raise nested_config_error(
            exc, plugin.Config, ("config",), _settings_source(plugin)
        ) from None


def make_plugin(plugin: type[P], config: Mapping[str, object] | None = None) -> P:
    """An instance of ``plugin`` as filterd makes one: its class checked (PluginError), its
    ``config`` validated (ConfigError) and a ``PluginEnv`` of its own. Not started: call
    ``await instance.start()`` (and ``stop()``) around what the test does with it."""
    name = plugin_name(plugin)
    cls = check_plugin_class(name, plugin)
    settings = validate_config(cls, config or {})
    return plugin(
        settings, PluginEnv(name, MailLog(name), trio.CapacityLimiter(THREADS_PER_PLUGIN))
    )


def _settings_source(plugin: type[Plugin[Any]]) -> str:
    return f"<settings of {plugin.__qualname__}>"


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
        if await _stage(
            result, "on_connect", await _ask(chain, "on_connect", chain.connect(session))
        ):
            return
        if await _stage(result, "on_helo", await _ask(chain, "on_helo", chain.helo(session, helo))):
            return
        if await _stage(
            result, "on_mail_from", await _ask(chain, "on_mail_from", chain.mail_from(t))
        ):
            return
        for address in rcpts:
            rcpt = Recipient(address)
            outcome = await _ask(chain, "on_rcpt", chain.rcpt(t, rcpt))
            result.rcpt_outcomes[address] = outcome
            result.outcomes["on_rcpt"] = outcome
            result.results.extend(outcome.results)
            refusal = outcome.verdict
            if is_refusal(refusal):
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
            await _stage(
                result, "on_message", await _ask(chain, "on_message", chain.message(t, view))
            )
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


async def _ask(chain: ChainRunner, stage: str, call: Coroutine[Any, Any, Outcome]) -> Outcome:
    """The chain's outcome at ``stage``, run as the milter door runs it: an ``@inline`` stage
    without a task switch, so a plugin that breaks that promise fails here too."""
    if chain.runs_inline(stage):
        return run_now(call)
    return await call


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
    return is_refusal(verdict)


@contextmanager
def _captured_log(lines: list[str]) -> Iterator[None]:
    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage()
            if record.exc_info:  # a plugin's traceback: part of the line it explains
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            lines.append(text)

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
