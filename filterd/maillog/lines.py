"""The text of the lines that say what happened to a message, as Postfix words them, so that
log tools written for Postfix (pflogsumm, grep habits) read filterd's log alike:

- smtpd's ``client=host[addr]`` when a transaction begins (``client_line``);
- smtpd's ``reject: STEP from host[addr]: reply; from=<> to=<> proto= helo=<>`` for an
  answered step, and ``discard:``/``hold:`` in the same form (``smtpd_line``);
- qmgr's ``from=<sender>, size=N, nrcpt=N`` when a message is handed on (``envelope_line``);
- the delivery agent's ``to=<rcpt>, relay=host[addr]:port, delay=S, delays=a/b/c/d,
  dsn=X.Y.Z, status=sent (reply)`` per recipient (``timing``, ``delivery_line``).

Peer-supplied text is escaped (``sanitize``), each peer-supplied part on its own (filterd's own
text needs no escaping): nothing a client or next hop sends starts a line of its own.
"""

from __future__ import annotations

from typing import Protocol

_ESCAPES = {i: f"\\x{i:02x}" for i in [*range(0x20), 0x7F]}


def sanitize(text: object) -> str:
    """Make peer-controlled text safe for one log line (no CR/LF/controls)."""
    line = str(text)
    # Printable text (the usual case) has none of the characters escaped: no translate.
    return line if line.isprintable() else line.translate(_ESCAPES)


class Peer(Protocol):
    """What ``smtpd_line`` says about the SMTP client (``filterd.model.envelope.Client``)."""

    @property
    def protocol(self) -> str: ...

    @property
    def helo(self) -> str | None: ...

    def describe(self) -> str: ...


class Answer(Protocol):
    """An SMTP reply (``filterd.model.reply.Reply``): its code, enhanced status code and text
    (``str()``: ``250 2.0.0 Ok``)."""

    @property
    def code(self) -> int: ...

    @property
    def status(self) -> str: ...


def smtpd_line(
    what: str,
    step: str,
    peer: Peer,
    answer: object,
    *,
    sender: str | None,
    rcpt: str | None = None,
) -> str:
    """Postfix smtpd's line for an answered step, peer-supplied text escaped, e.g.
    ``reject: RCPT from host[addr]: 550 5.7.1 text; from=<a@b> to=<c@d> proto=ESMTP helo=<h>``.
    ``what``: ``reject``, ``discard``, ``hold`` (or another word for what was answered);
    ``answer``: the reply, or the reason of a discard or hold; ``sender`` None (no MAIL yet)
    leaves ``from=<>`` out, ``rcpt`` None leaves ``to=<>`` out."""
    mail = f" from=<{sender}>" if sender is not None else ""
    to = f" to=<{rcpt}>" if rcpt is not None else ""
    return sanitize(
        f"{what}: {step} from {peer.describe()}: {answer};{mail}{to}"
        f" proto={peer.protocol} helo=<{peer.helo or ''}>"
    )


def client_line(
    client: str, orig_queue_id: str | None = None, orig_client: str | None = None
) -> str:
    """smtpd's first line of a transaction: ``client=host[addr]``, and what XFORWARD said of
    the message's origin: ``, orig_queue_id=ID, orig_client=host[addr]`` (Postfix's queue id
    for this message: the key from Postfix's log to filterd's)."""
    line = f"client={sanitize(client)}"
    if orig_queue_id:
        line += f", orig_queue_id={sanitize(orig_queue_id)}"
    if orig_client:
        line += f", orig_client={sanitize(orig_client)}"
    return line


def envelope_line(sender: str, size: int, nrcpt: int) -> str:
    """qmgr's line for a message handed on: ``from=<sender>, size=N, nrcpt=N``."""
    return f"from=<{sanitize(sender)}>, size={size}, nrcpt={nrcpt}"


def format_delay(seconds: float) -> str:
    """A duration as Postfix's log writes it (``format_tv`` with two significant digits and
    ``delay_logging_resolution_limit = 2``): to 10 ms below a second (``0``, ``0.01``,
    ``0.46``), to 100 ms below 10 s (``1.2``), in whole seconds from there (``12``); rounded
    half up, trailing zeros dropped."""
    if seconds < 0.005:
        return "0"  # the common case: a local delivery step
    whole, usec = divmod(round(seconds * 1_000_000), 1_000_000)
    if whole == 0:
        hundredths = (usec + 5_000) // 10_000  # 1..100
        return "1" if hundredths == 100 else f"0.{hundredths:02d}".rstrip("0")
    if whole < 10:
        tenths = (usec + 50_000) // 100_000  # 0..10
        return str(whole + 1) if tenths == 10 else f"{whole}.{tenths}" if tenths else str(whole)
    return str(whole + 1) if usec >= 500_000 else str(whole)


_NO_DELAY = "delay=0, delays=0/0/0/0"


def timing(arrival: float, handoff: float, done: float, setup: float = 0.0) -> str:
    """Postfix's ``delay=S, delays=a/b/c/d`` for one delivery, from monotonic times:
    ``arrival`` (the transaction began: MAIL), ``handoff`` (the message went to the delivery
    agent), ``done`` (its answer came), and ``setup``: seconds spent opening the next hop's
    connection (0 for a connection reused, or no network). ``a`` is the time before the
    delivery (the client sending, the chain checking) less ``setup``; ``b``, time in a queue
    manager, is 0: filterd has none; ``c`` is ``setup``; ``d`` the transmission."""
    if done - arrival < 0.005:
        return _NO_DELAY  # every part rounds to 0
    before = max(0.0, handoff - arrival - setup)
    return (
        f"delay={format_delay(done - arrival)}, delays={format_delay(before)}/0/"
        f"{format_delay(setup)}/{format_delay(done - handoff)}"
    )


def dsn(answer: Answer) -> str:
    """The reply's enhanced status code, or its class's (``4.0.0``) when it has none."""
    return answer.status or f"{answer.code // 100}.0.0"


def status(answer: Answer) -> str:
    """``sent`` (2xx), ``deferred`` (4xx: the client keeps the message) or ``bounced`` (5xx)."""
    code = answer.code
    return "sent" if code < 400 else "deferred" if code < 500 else "bounced"


def delivery_line(
    rcpt: str,
    relay: str,
    timing: str,
    answer: Answer,
    *,
    said: str | None = None,
    conn_use: int = 0,
) -> str:
    """The delivery agent's line for one recipient, e.g. ``to=<b@example.org>,
    relay=mx[192.0.2.7]:25, delay=0.21, delays=0.2/0/0/0.01, dsn=2.0.0, status=sent (250
    2.0.0 Ok)``. ``relay``: the next hop's name as ``nexthop.relay_name`` makes it, escaped
    already, or a word of filterd's own (``maildir``); ``timing``: ``Timing.text()`` (the
    same for every recipient of a delivery);
    ``said``: the command the next hop refused, for Postfix's ``(host X said: 550 ... (in
    reply to RCPT TO command))``; ``conn_use``: the how-manieth transaction on a reused
    connection (``conn_use=2``...; 0 or 1 leave it out)."""
    reuse = f", conn_use={conn_use}" if conn_use > 1 else ""
    reply = sanitize(answer)  # the next hop's text
    detail = f"host {relay} said: {reply} (in reply to {said})" if said is not None else reply
    return (
        f"to=<{sanitize(rcpt)}>, relay={relay}{reuse}, {timing}, dsn={dsn(answer)}, "
        f"status={status(answer)} ({detail})"
    )
