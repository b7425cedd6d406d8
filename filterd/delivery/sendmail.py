"""Reinjection through sendmail(1): the next stage of the pipe(8) door by default.

``sendmail -G -i -f SENDER -- RECIPIENT...`` (the command from ``[pipe] sendmail``, the
envelope added here), the message on its standard input with LF line ends, as a local
program hands mail to Postfix. Postfix's sendmail exits 0 once postdrop has the message in
the maildrop queue: only then is the message acknowledged. Any other end (an exit status, a
signal, no end within ``[pipe] sendmail_timeout``, a command that cannot start) is a 451: the
pipe(8) door exits 75 and Postfix tries again later.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence

import trio

from filterd.config.schema import PipeConfig
from filterd.maillog import MailLog
from filterd.maillog.lines import delivery_line, timing
from filterd.model import replies
from filterd.model.envelope import Recipient, Transaction
from filterd.model.reply import Reply
from filterd.model.spool import Spool

__all__ = ["Sendmail", "SendmailTransaction", "to_lf"]

log = MailLog("sendmail")

OUTPUT_LIMIT = 4096
"""Bytes of the command's output kept for the log and the reply."""


class Sendmail:
    """The ``Delivery`` that reinjects through the sendmail command."""

    def __init__(self, config: PipeConfig) -> None:
        self.command = tuple(config.sendmail)
        self.timeout = config.sendmail_timeout

    def open(self) -> SendmailTransaction:
        return SendmailTransaction(self)

    async def aclose(self) -> None:
        return None


class SendmailTransaction:
    """One message: the envelope is collected, the command runs at ``data``."""

    def __init__(self, sendmail: Sendmail) -> None:
        self.sendmail = sendmail

    async def mail(self, t: Transaction) -> Reply:
        return replies.SENDER_OK

    async def rcpt(self, t: Transaction, rcpt: Recipient) -> Reply:
        return replies.RCPT_OK

    async def data(self, t: Transaction, spool: Spool) -> list[Reply]:
        recipients = [r.address for r in t.accepted]
        argv = [*self.sendmail.command, "-f", t.sender, "--", *recipients]
        started = time.monotonic()
        reply = await _run(argv, spool, self.sendmail.timeout)
        spent = timing(t.arrived, started, time.monotonic())
        for rcpt in recipients:
            log.line(delivery_line(rcpt, "sendmail", spent, reply))
        return [reply] * len(recipients)

    async def abort(self) -> None:
        return None


async def _run(argv: Sequence[str], spool: Spool, limit: float) -> Reply:
    """Run the command with the message on its input; its answer as a reply."""
    output = bytearray()
    try:
        process = await trio.lowlevel.open_process(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        log.warning(f"cannot run {argv[0]}: {exc.strerror or exc}")
        return Reply(451, "4.3.0", f"Error: cannot run {argv[0]}: {exc.strerror or exc}")
    with trio.move_on_after(limit) as scope:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_feed, process, spool)
                nursery.start_soon(_collect, process, output)
                await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()
    said = " ".join(bytes(output[:OUTPUT_LIMIT]).decode("utf-8", "replace").split())
    command = argv[0]
    if scope.cancelled_caught:
        log.warning(f"{command} took longer than {limit:g}s: killed")
        return Reply(451, "4.4.2", f"Error: {command} timed out, try again later")
    status = process.returncode
    assert status is not None, "waited for above"
    if status == 0:
        return Reply(250, "2.0.0", f"Ok: queued by {command}")
    what = f"killed by signal {-status}" if status < 0 else f"exit status {status}"
    log.warning(f"{command} failed: {what}", output=said or "(none)")
    detail = f": {said}" if said else ""
    return Reply(451, "4.3.0", f"Error: {command} failed ({what}){detail}")


async def _feed(process: trio.Process, spool: Spool) -> None:
    """The message, LF line ends, into the command; a command that stops reading early is
    judged by its exit status."""
    stdin = process.stdin
    assert stdin is not None
    try:
        carry = b""
        for chunk in spool.chunks():
            data, carry = to_lf(carry + chunk)
            await stdin.send_all(data)
        if carry:
            await stdin.send_all(carry)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await stdin.aclose()


async def _collect(process: trio.Process, output: bytearray) -> None:
    stdout = process.stdout
    assert stdout is not None
    while data := await stdout.receive_some(65536):
        if len(output) < OUTPUT_LIMIT:
            output += data


def to_lf(data: bytes) -> tuple[bytes, bytes]:
    """``data`` with CRLF made LF, and a trailing CR held back (the next chunk may begin with
    its LF): (converted, held)."""
    held = b"\r" if data.endswith(b"\r") else b""
    if held:
        data = data[:-1]
    return data.replace(b"\r\n", b"\n"), held
