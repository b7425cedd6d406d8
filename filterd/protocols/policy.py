"""Sans-I/O codec for the Postfix policy delegation protocol (SMTPD_POLICY_README).

Postfix (``check_policy_service``) writes a request as ``name=value`` lines, each ended by LF,
and ends it with an empty line; the server answers one ``action=...`` line plus an empty line.
The connection is reused for request after request (Postfix SMTPD_POLICY_README).

Wire rules this codec enforces:

- **LF ends a line.** Postfix writes LF only (``attr_print_plain``). One CR right before the LF
  is dropped, so a request typed by hand (telnet, ``nc -C``) still parses; Postfix never sends
  one, and its own reader (``attr_scan_plain``) keeps CRs, so what we *send* is LF only.
- **Names** are lower-case letters, digits and ``_`` (every Postfix name is ``[a-z_]``; digits
  are let through for names a future Postfix may add). **Values** may be empty and may hold
  any byte but NUL and LF; non-UTF-8 bytes survive as surrogates (``surrogateescape``).
- A line without ``=``, a NUL, or a bad name is a ``RemoteProtocolError``. Unknown attributes
  are kept (the mapping ignores what it does not know). A repeated attribute: the first one
  wins, as in Postfix's own ``attr_scan_plain`` hash tables.
- ``request=smtpd_access_policy`` is mandatory; a request without it (an empty line on its
  own, too) is a ``RemoteProtocolError``.
- Limits (``PolicyLimits``): line length, attributes per request and request size, checked as
  bytes arrive, so a peer never makes us buffer more than ``max_request_size``. Scanning is
  O(n): the search for the next LF resumes where it stopped.
- A request that has arrived whole and is plain (no CR, no NUL, good names, within the limits:
  what Postfix sends) is parsed in one pass; anything else goes line by line, with the same
  results and the same errors.
- EOF between requests is ``ConnectionClosed``; EOF inside a request is a
  ``RemoteProtocolError``.

Like the SMTP codec, it pauses: after a ``PolicyRequest`` it produces nothing more until
``send`` has answered it, so answers can never get out of order. After a
``RemoteProtocolError`` the codec is dead and raises it again; per SMTPD_POLICY_README the shell
answers nothing and closes (Postfix retries, then applies its ``default_action``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from filterd.protocols.smtp.common import (
    NEED_DATA,
    ConnectionClosed,
    LocalProtocolError,
    NeedData,
    RemoteProtocolError,
)

__all__ = [
    "NEED_DATA",
    "REQUEST_TYPE",
    "ConnectionClosed",
    "LocalProtocolError",
    "NeedData",
    "PolicyEvent",
    "PolicyLimits",
    "PolicyRequest",
    "PolicyServer",
    "RemoteProtocolError",
]

REQUEST_TYPE = "smtpd_access_policy"
"""The one request type Postfix sends (``request=`` attribute)."""

_NAME = re.compile(rb"[a-z0-9_]+")
_PREVIEW = 40

# The fast path (PolicyServer._take_whole_request): what is left of a plain request once every
# byte but "=", LF, CR and NUL is deleted is "=\n" once per line.
_NOT_SEPARATORS = bytes(b for b in range(256) if b not in b"=\n\r\x00")

_DUNNO = b"action=DUNNO\n\n"
_NAME_BYTES = b"abcdefghijklmnopqrstuvwxyz0123456789_"
_known_names: set[str] = set()
"""Attribute names seen valid (``[a-z0-9_]+``), so that a request's names are checked by a
set lookup each; bounded, so a peer sending ever new names cannot make it grow forever."""
_MAX_KNOWN_NAMES = 1024


def _learn_names(attrs: Mapping[str, str]) -> bool:
    """Whether every name of ``attrs`` is valid; the valid ones are remembered."""
    names = "".join(attrs)
    if "" in attrs or not names.isascii() or names.encode().translate(None, _NAME_BYTES):
        return False
    if len(_known_names) < _MAX_KNOWN_NAMES:
        _known_names.update(attrs)
    return True


@dataclass(frozen=True, slots=True)
class PolicyLimits:
    """What one peer may make us buffer. Postfix sends ~30 attributes, well under 2 KB."""

    max_line: int = 16_384  # one name=value line, LF included
    max_attributes: int = 256  # lines in one request
    max_request_size: int = 65_536  # one request, every line and the empty line included


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """One complete request: its attributes (read-only, in arrival order)."""

    attributes: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def get(self, name: str, default: str = "") -> str:
        return self.attributes.get(name, default)


PolicyEvent = PolicyRequest | ConnectionClosed


def _preview(raw: bytes) -> str:
    text = raw[:_PREVIEW].decode("ascii", "backslashreplace")
    return repr(text + ("..." if len(raw) > _PREVIEW else ""))


class PolicyServer:
    """The server side of one policy connection.

    ``receive_data(bytes)`` (``b""`` = EOF), ``next_event()`` → ``NEED_DATA`` |
    ``PolicyRequest`` | ``ConnectionClosed``, ``send(action) -> bytes``.
    """

    def __init__(self, limits: PolicyLimits | None = None) -> None:
        self.limits = limits or PolicyLimits()
        self._alternating = b"=\n" * self.limits.max_attributes  # see _take_whole_request
        self._buf = bytearray()
        self._start = 0  # _buf[:_start] is consumed (dropped in bulk, not line by line)
        self._scanned = 0  # _buf[_start:_scanned] is known to hold no LF
        self._eof = False
        self._owed = False  # a PolicyRequest waits for send()
        self._error: RemoteProtocolError | None = None
        self._attrs: dict[str, str] = {}
        self._lines = 0  # attribute lines of the request being read
        self._size = 0  # bytes of the request being read, complete lines only
        self.requests = 0  # requests produced so far

    # ------------------------------------------------------------------ input
    def receive_data(self, data: bytes) -> None:
        """Feed bytes from Postfix; ``b""`` means it closed its side."""
        if data:
            if self._eof:
                raise LocalProtocolError("data received after EOF")
            self._buf += data
        else:
            self._eof = True

    @property
    def in_request(self) -> bool:
        """True while part of a request has arrived but not all of it (the shell runs the
        request deadline, not the idle timeout, while this holds)."""
        return len(self._buf) > self._start or self._lines > 0

    def next_event(self) -> PolicyEvent | NeedData:
        if self._error is not None:
            raise self._error
        if self._owed:
            raise LocalProtocolError("the previous request has not been answered")
        try:
            return self._next_event()
        except RemoteProtocolError as exc:
            self._error = exc
            raise

    def _next_event(self) -> PolicyEvent | NeedData:
        if self._lines == 0:  # between requests
            if len(self._buf) > self._start:
                whole = self._take_whole_request()
                if whole is not None:
                    return whole
            elif not self._eof:  # nothing of the next one yet
                return NEED_DATA
        while True:
            line = self._take_line()
            if line is None:
                if not self._eof:
                    return NEED_DATA
                if self.in_request:
                    raise RemoteProtocolError("connection closed in the middle of a request")
                return ConnectionClosed()
            if not line:
                return self._finish()
            self._add(line)

    def _take_whole_request(self) -> PolicyRequest | None:
        """The fast path: a complete, plain request at the start of the buffer, parsed at once
        by a few passes of C code over the whole block (a call per line, or a regular
        expression, costs more than the rest of a request's handling); None when there is
        none or it is anything but plain — the line-by-line path then decides, errors
        included, so both paths always give the same result.

        Plain: each line holds exactly one ``=`` (a value with an ``=`` in it goes line by
        line), no CR or NUL, every name already seen valid (``_known_name``), none repeated,
        within the limits."""
        buf = self._buf
        start = self._start
        end = buf.find(b"\n\n", start)
        if end <= start:  # none yet, or an empty line first
            return None
        limits = self.limits
        block = buf[start : end + 1]  # the attribute lines, each with its LF
        if len(block) + 1 > limits.max_request_size:
            return None
        # The separators in order must be "=\n" once per line (and no CR or NUL among them).
        separators = block.translate(None, _NOT_SEPARATORS)
        if not self._alternating.startswith(separators):  # (longer: too many attributes)
            return None
        if len(block) >= limits.max_line and max(map(len, block.split(b"\n"))) >= limits.max_line:
            return None
        pieces = iter(block.decode("utf-8", "surrogateescape").replace("=", "\n").split("\n"))
        # (the empty piece after the last LF is left over)
        attrs = dict(zip(pieces, pieces, strict=False))
        if len(attrs) != len(separators) >> 1:  # a repeated attribute
            return None
        if not attrs.keys() <= _known_names and not _learn_names(attrs):
            return None
        self._start = end + 2
        if self._start * 2 > len(buf):
            del buf[: self._start]
            self._start = 0
        self._scanned = self._start
        self._attrs = attrs
        return self._finish()

    def _take_line(self) -> bytes | None:
        """One line without its LF (and without one CR before it), or None for "need more"."""
        limits = self.limits
        start = self._start
        nl = self._buf.find(b"\n", max(start, self._scanned))
        if nl < 0:
            pending = len(self._buf) - start
            self._scanned = len(self._buf)
            self._check_size(pending)
            if pending > limits.max_line:
                raise RemoteProtocolError(f"attribute line longer than {limits.max_line} bytes")
            return None
        length = nl + 1 - start
        if length > limits.max_line:
            raise RemoteProtocolError(f"attribute line longer than {limits.max_line} bytes")
        self._check_size(length)
        line = bytes(self._buf[start:nl])
        self._start = nl + 1
        if self._start * 2 > len(self._buf):  # compact: amortised O(1) per byte
            del self._buf[: self._start]
            self._start = 0
        self._scanned = self._start
        self._size += length
        return line[:-1] if line.endswith(b"\r") else line

    def _check_size(self, pending: int) -> None:
        limit = self.limits.max_request_size
        if self._size + pending > limit:
            raise RemoteProtocolError(f"request larger than {limit} bytes")

    def _add(self, line: bytes) -> None:
        self._lines += 1
        if self._lines > self.limits.max_attributes:
            raise RemoteProtocolError(
                f"more than {self.limits.max_attributes} attributes in one request"
            )
        if b"\x00" in line:
            raise RemoteProtocolError(f"NUL byte in attribute line {_preview(line)}")
        name, eq, value = line.partition(b"=")
        if not eq:
            raise RemoteProtocolError(f"attribute line without '=': {_preview(line)}")
        if not _NAME.fullmatch(name):
            raise RemoteProtocolError(f"bad attribute name {_preview(name)}")
        self._attrs.setdefault(name.decode("ascii"), value.decode("utf-8", "surrogateescape"))

    def _finish(self) -> PolicyRequest:
        attrs, self._attrs = self._attrs, {}
        self._lines = 0
        self._size = 0
        kind = attrs.get("request")
        if kind is None:
            raise RemoteProtocolError("request without a request= attribute")
        if kind != REQUEST_TYPE:
            raw = kind.encode("utf-8", "surrogateescape")
            raise RemoteProtocolError(f"unknown request type {_preview(raw)}")
        self._owed = True
        self.requests += 1
        return PolicyRequest(MappingProxyType(attrs))

    # ----------------------------------------------------------------- output
    def send(self, action: str) -> bytes:
        """The answer to the request just produced: ``action=<action>\\n\\n``.

        ``action`` is one line (any access(5) right-hand side); a CR, LF or NUL in it would
        end the answer early or smuggle text into the next one, so it is refused.
        """
        if not self._owed:
            raise LocalProtocolError("no request to answer")
        if action == "DUNNO":  # the common answer
            self._owed = False
            return _DUNNO
        if not action:
            raise LocalProtocolError("empty action")
        if "\r" in action or "\n" in action or "\x00" in action:
            raise LocalProtocolError(f"action contains CR, LF or NUL: {action!r}")
        self._owed = False
        line = f"action={action}\n\n"
        try:
            return line.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a lone surrogate that no input byte stands for
            return line.encode("utf-8", "replace")
