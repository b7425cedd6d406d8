"""The Received: trace header a relay adds (RFC 5321 §4.4), Postfix-shaped."""

from __future__ import annotations

import re
from datetime import datetime
from email.utils import format_datetime

from filterd.model.envelope import Transaction

_UNSAFE = re.compile(r"[\x00-\x20\x7f()\[\];]")
_UNSAFE_ADDRESS = re.compile(r"[\x00-\x20\x7f<>;]")
_UNSAFE_HELO = re.compile(r"[\x00-\x20\x7f();]")  # brackets stay: "[192.0.2.1]" literals


def _safe(text: str) -> str:
    """Peer-supplied names (HELO, XFORWARD values) may hold anything: never let them shape the
    header (no CR/LF, spaces, comments or brackets)."""
    return _UNSAFE.sub("_", text)[:255] or "unknown"


_last_date: tuple[datetime, str] | None = None  # the date of the last header, by second


def _date(now: datetime) -> str:
    """RFC 5322 date of ``now``, made once a second (``format_datetime`` is slow)."""
    global _last_date
    second = now.replace(microsecond=0)
    last = _last_date
    if last is not None and last[0] == second and last[0].tzinfo is second.tzinfo:
        return last[1]
    text = format_datetime(second)
    _last_date = (second, text)
    return text


def received_header(t: Transaction, hostname: str, protocol: str, now: datetime) -> bytes:
    client = t.client
    helo = _UNSAFE_HELO.sub("_", client.helo or "")[:255] or _safe(client.address)
    source = f"{helo} ({_safe(client.name)} [{_safe(client.address)}])"
    single = len(t.accepted) == 1
    lines = [
        f"Received: from {source}",
        f"\tby {hostname} (filterd) with {protocol} id {t.queue_id}",
    ]
    if single:
        rcpt = _UNSAFE_ADDRESS.sub("_", t.accepted[0].address)
        lines.append(f"\tfor <{rcpt}>; {_date(now)}")
    else:
        lines[-1] += ";"
        lines.append(f"\t{_date(now)}")
    text = "\r\n".join(lines) + "\r\n"
    return text.encode("utf-8", "surrogateescape")
