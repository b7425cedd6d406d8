"""Reporting spam to Pyzor servers (``pyzor report``), for ``filterd learn`` and tests."""

from __future__ import annotations

import os

import trio

from filterd.sdk.process import run

from .plugin import PyzorError, ServerAnswer, failures, parse_answers, pyzor_argv


async def report(
    message: bytes | str | os.PathLike[str],
    *,
    command: str = "pyzor",
    homedir: str | os.PathLike[str] | None = None,
    servers_file: str | os.PathLike[str] | None = None,
    server_timeout: int = 5,
) -> tuple[ServerAnswer, ...]:
    """Report ``message`` (its bytes, or the path of a message file) as spam to the servers
    of ``homedir``/``servers_file`` (the plugin's settings of the same names). Returns each
    server's answer; raises ``PyzorError`` unless every server answered 200. Takes no
    timeout of its own beyond pyzor's ``server_timeout``: wrap it in ``trio.fail_after``
    (cancelling kills the pyzor process)."""
    data = message if isinstance(message, bytes) else await trio.Path(message).read_bytes()
    argv = pyzor_argv(command, homedir, servers_file, server_timeout, "report")
    completed = await run(argv, data)
    answers = parse_answers(completed.stdout)
    failed = failures(answers)
    if failed:
        raise PyzorError("; ".join(failed))
    if completed.returncode != 0 or not answers:
        raise PyzorError(f"report failed: {completed.describe(command)}")
    return answers
