"""The pyzor plugin: digest each message and look it up on Pyzor servers, with the ``pyzor``
command-line client (Debian's ``pyzor`` package; the Python library lives in the system
Python, not in filterd's virtualenv).

``pyzor check`` prints one line per server, ``<host>:<port>\\t(<code>, '<text>')\\t<count>\\t
<whitelist count>`` (the counts only with code 200), and exits 0 when the message is listed
(count > report threshold and not whitelisted) and 1 otherwise: not listed, whitelisted, *or
failed* (``(504, 'Reading response timed-out.')``, or a Python traceback and no line at all).
So the plugin reads the lines: any server that did not answer 200, no answer at all, or an
exit status that disagrees with the lines raises ``PyzorError``, and a check that does not
finish in time is cancelled by the chain entry's ``timeout`` (the child is killed): both follow
the entry's ``on_error`` (tempfail by default). An error is never taken for "not listed".
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from filterd.sdk import (
    AddHeader,
    Continue,
    Field,
    Finding,
    Learns,
    MessageView,
    OnMessage,
    Transaction,
    Verdict,
    field_validator,
)
from filterd.sdk.listing import ListingConfig, ListingPlugin, program_on_path, when_listed
from filterd.sdk.process import Completed, last_lines, run

_LINE: Final = re.compile(r"(\S+)\t\((\d+), (['\"])(.*)\3\)(?:\t(\d+)\t(\d+))?")


class PyzorError(Exception):
    """pyzor could not tell whether the message is listed."""


@dataclass(frozen=True, slots=True)
class ServerAnswer:
    server: str
    code: int
    text: str
    count: int | None
    whitelist_count: int | None


@dataclass(frozen=True, slots=True)
class CheckResult:
    listed: bool
    count: int  # the highest report count any server gave
    whitelist_count: int
    answers: tuple[ServerAnswer, ...]


class PyzorConfig(ListingConfig):
    command: str = Field(
        default="pyzor", description="The pyzor program (a name looked up on PATH, or a path)."
    )
    homedir: str | None = Field(
        default=None,
        description="pyzor's home (--homedir=): its config and servers file; default "
        "~/.pyzor of the user filterd runs as (pyzor creates it, and fails if it cannot).",
    )
    servers_file: str | None = Field(
        default=None,
        description='Servers file (--servers-file=), one "host:port" a line; default '
        "<homedir>/servers, and public.pyzor.org:24441 when that is missing or empty.",
    )
    server_timeout: int = Field(
        default=5,
        ge=1,
        description="pyzor's own wait for a server's UDP answer (-t), in seconds; keep it "
        "below the chain entry's timeout so that a dead server reads as an error.",
    )
    report_threshold: int = Field(
        default=0, ge=0, description="Listed when reported more than this many times (-r)."
    )
    whitelist_threshold: int = Field(
        default=0, ge=0, description="Not listed when whitelisted more than this many times (-w)."
    )
    tag_header: str = Field(
        default="X-Pyzor",
        description='Header added to listed mail: "Reported N times, whitelisted M times." '
        "(SpamAssassin's _PYZOR_ tag says welcomelisted).",
    )
    reject_text: str = Field(
        default="Message content rejected (listed by Pyzor)",
        description="Text of the 550 5.7.1 reply when action_when_listed is reject.",
    )
    quarantine_reason: str = Field(default="listed by Pyzor", description="Quarantine reason.")

    @field_validator("command")
    @classmethod
    def _command_exists(cls, command: str) -> str:
        return program_on_path(command, "pyzor")


def pyzor_argv(
    command: str,
    homedir: str | os.PathLike[str] | None,
    servers_file: str | os.PathLike[str] | None,
    server_timeout: int,
    *extra: str,
) -> list[str]:
    argv = [command]
    if homedir is not None:
        argv.append(f"--homedir={os.fspath(homedir)}")
    if servers_file is not None:
        argv.append(f"--servers-file={os.fspath(servers_file)}")
    return [*argv, "-t", str(server_timeout), *extra]


def parse_answers(output: bytes) -> tuple[ServerAnswer, ...]:
    """The per-server lines of ``pyzor check``/``report``/``ping`` (other lines ignored)."""
    answers = []
    for line in output.decode("utf-8", "replace").splitlines():
        match = _LINE.fullmatch(line.strip("\r"))
        if match is None:
            continue
        server, code, _, text, count, whitelist = match.groups()
        answers.append(
            ServerAnswer(
                server,
                int(code),
                text,
                int(count) if count is not None else None,
                int(whitelist) if whitelist is not None else None,
            )
        )
    return tuple(answers)


def failures(answers: Sequence[ServerAnswer]) -> list[str]:
    return [f"{a.server} answered {a.code} {a.text}" for a in answers if a.code != 200]


def check_result(
    completed: Completed, command: str, report_threshold: int = 0, whitelist_threshold: int = 0
) -> CheckResult:
    """Interpret ``pyzor check`` like the pyzor client does, but refuse to guess: an error of
    any server, no answer at all, or an exit status that disagrees raises ``PyzorError``."""
    answers = parse_answers(completed.stdout)
    if not answers:
        raise PyzorError(f"no answer from any server: {completed.describe(command)}")
    failed = failures(answers)
    if failed:
        raise PyzorError("; ".join(failed))
    if any(a.count is None or a.whitelist_count is None for a in answers):
        raise PyzorError(f"pyzor check printed no counts: {last_lines(completed.stdout)}")
    whitelisted = any((a.whitelist_count or 0) > whitelist_threshold for a in answers)
    hit = any((a.count or 0) > report_threshold for a in answers)
    listed = hit and not whitelisted
    if completed.returncode not in (0, 1) or (completed.returncode == 0) != listed:
        raise PyzorError(f"exit status and answers disagree: {completed.describe(command)}")
    return CheckResult(
        listed,
        max(a.count or 0 for a in answers),
        max(a.whitelist_count or 0 for a in answers),
        answers,
    )


class Pyzor(ListingPlugin[PyzorConfig], OnMessage, Learns):
    name = "pyzor"
    Config = PyzorConfig

    async def learn(self, message: bytes, spam: bool) -> str:
        """``filterd learn --spam``: report to the Pyzor servers (``pyzor report``); ham is
        left alone (Pyzor has no per-site ham learning)."""
        if not spam:
            return "pyzor: nothing to do for ham"
        from .report import report  # report.py builds on this module

        c = self.config
        answers = await report(
            message,
            command=c.command,
            homedir=c.homedir,
            servers_file=c.servers_file,
            server_timeout=c.server_timeout,
        )
        return f"pyzor reported it as spam to {len(answers)} server(s)"

    def argv(self) -> list[str]:
        config = self.config
        thresholds = ("-r", str(config.report_threshold), "-w", str(config.whitelist_threshold))
        return pyzor_argv(
            config.command,
            config.homedir,
            config.servers_file,
            config.server_timeout,
            *thresholds,
            "check",
        )

    async def on_message(self, t: Transaction, message: MessageView) -> Verdict:
        skipped = self.skip_if_too_large(message)
        if skipped is not None:
            return skipped
        config = self.config
        data = b"".join(message.raw_chunks())
        async with self.limiter:
            completed = await run(self.argv(), data)
        result = check_result(
            completed, config.command, config.report_threshold, config.whitelist_threshold
        )
        counts = f"count={result.count} whitelisted={result.whitelist_count}"
        if not result.listed:
            return Continue(findings=(Finding("pyzor", f"not listed {counts}"),))
        findings = (Finding("pyzor", f"listed {counts}", float(result.count)),)
        tag = AddHeader(
            config.tag_header,
            f"Reported {result.count} times, whitelisted {result.whitelist_count} times.",
        )
        return when_listed(config, tag, findings)
