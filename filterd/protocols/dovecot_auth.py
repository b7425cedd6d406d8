"""Sans-I/O client side of Dovecot's authentication protocol (the ``auth-client`` socket), as
Postfix speaks it for ``smtpd_sasl_type = dovecot`` (``src/xsasl/xsasl_dovecot_server.c``).

One exchange, the way the shell drives it::

    client = DovecotAuthClient(pid=os.getpid())
    await stream.send_all(client.handshake())            # VERSION, CPID
    ready = <events until Ready>                         # the server's MECH lines, then DONE
    await stream.send_all(client.authenticate("PLAIN", initial_response=..., ...))
    <events until Challenge, Success or Failure>
    await stream.send_all(client.respond(base64_line))   # after each Challenge

Wire facts (Dovecot's doc/auth-protocol and "Auth Protocol" design page, Postfix's plug-in;
checked against Dovecot 2.3.19):

- Lines end in LF; fields are separated by TAB. Values use Dovecot's tab-escaping: ``\\001``
  followed by ``0`` (NUL), ``1`` (``\\001``), ``t`` (TAB), ``r`` (CR) or ``n`` (LF); any other
  character after ``\\001`` stands for itself. A line is expected to fit in 16384 bytes.
- Handshake: the client sends ``VERSION 1 0`` and ``CPID <pid>``; the server answers ``VERSION
  1 <minor>`` (another major version is another protocol), ``MECH <name> [<properties>]`` per
  mechanism (``private`` ones are not to be offered), ``SPID``, ``CUID``, ``COOKIE`` and
  ``DONE``. Unknown commands are ignored. The auth-master and auth-userdb sockets send
  ``VERSION`` and ``SPID`` with no ``MECH`` before it: Postfix takes an ``SPID`` before any
  ``MECH`` as "connected to the wrong socket", and so does this codec.
- ``AUTH <id> <mechanism> service=smtp [lip=] [rip=] [secured] [resp=<base64>]``; ``resp``
  must come last (the server ignores what follows it). The server answers ``CONT <id>
  <base64>`` (send the client's answer with ``CONT <id> <base64>``), ``OK <id> [user=...]`` or
  ``FAIL <id> [reason=...] [code=temp_fail | temp] [user=...]``. ``reason`` is meant for the
  SMTP client. An ``OK`` with ``nologin`` or ``proxy`` verified the password but grants no
  access: it is a failure. Replies naming another request id are ignored, as Postfix does.
- A mechanism the server did not announce makes Dovecot drop the connection ("BUG: ...
  requested unsupported authentication mechanism"): ``authenticate`` refuses to send one.
  Base64 that is not base64 could smuggle a TAB into the line: ``authenticate`` and ``respond``
  refuse it too (check with ``valid_base64`` first, and answer the client as Postfix does).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final

from filterd.protocols.smtp.common import (
    NEED_DATA,
    ConnectionClosed,
    LocalProtocolError,
    NeedData,
    RemoteProtocolError,
)

__all__ = [
    "MAJOR_VERSION",
    "MAX_LINE",
    "Challenge",
    "ConnectionClosed",
    "DovecotAuthClient",
    "DovecotEvent",
    "Failure",
    "NeedData",
    "Ready",
    "Success",
    "tab_escape",
    "tab_unescape",
    "valid_base64",
]

MAJOR_VERSION: Final = 1
MINOR_VERSION: Final = 0  # what Postfix announces; minor 3 would add channel-binding mechanisms
MAX_LINE: Final = 16384
"""The longest line accepted from the server (Dovecot's AUTH_CLIENT_MAX_LINE_LENGTH)."""

_BASE64_RE = re.compile(r"[A-Za-z0-9+/=]*")
_TEMPORARY_CODES = frozenset({"temp_fail"})


def valid_base64(text: str) -> bool:
    """Only base64 characters (Postfix's ``is_valid_base64``): safe to put on a line."""
    return _BASE64_RE.fullmatch(text) is not None


_ESCAPES = {"\x00": "\x010", "\x01": "\x011", "\t": "\x01t", "\r": "\x01r", "\n": "\x01n"}
_UNESCAPES = {"0": "\x00", "1": "\x01", "t": "\t", "r": "\r", "n": "\n"}
_TO_ESCAPE = re.compile("[\x00\x01\t\r\n]")


def tab_escape(value: str) -> str:
    """A value as one TAB-separated field (Dovecot's ``str_tabescape``)."""
    return _TO_ESCAPE.sub(lambda m: _ESCAPES[m.group()], value)


def tab_unescape(value: str) -> str:
    """A field as the value it escapes (Dovecot's ``str_tabunescape``)."""
    if "\x01" not in value:
        return value
    out: list[str] = []
    i = 0
    while i < len(value):
        char = value[i]
        if char == "\x01" and i + 1 < len(value):
            following = value[i + 1]
            out.append(_UNESCAPES.get(following, following))
            i += 2
        else:
            out.append(char)
            i += 1
    return "".join(out)


# --- events ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ready:
    """The handshake is done: the mechanisms the server offers (upper case, ``private`` ones
    left out)."""

    mechanisms: frozenset[str]


@dataclass(frozen=True, slots=True)
class Challenge:
    """``CONT``: base64 data for the SMTP client (a 334 reply); answer with ``respond``."""

    data: str


@dataclass(frozen=True, slots=True)
class Success:
    """``OK``: the credentials are good and the user may log in."""

    user: str


@dataclass(frozen=True, slots=True)
class Failure:
    """``FAIL`` (or an ``OK`` that grants no access). ``reason``: text meant for the SMTP
    client, if the server gave one; ``temporary``: a failure inside the auth service (its
    database is down, ...), not the client's credentials."""

    reason: str | None
    temporary: bool = False
    user: str | None = None


DovecotEvent = Ready | Challenge | Success | Failure | ConnectionClosed


class _State(enum.Enum):
    HANDSHAKE = "handshake"  # VERSION sent, waiting for DONE
    READY = "ready"  # no request in progress
    WAITING = "waiting"  # AUTH or CONT sent, waiting for CONT, OK or FAIL
    CHALLENGED = "challenged"  # CONT received: the client's answer is owed
    CLOSED = "closed"


class DovecotAuthClient:
    """One connection to Dovecot's auth-client socket, one request at a time."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._state = _State.HANDSHAKE
        self._buf = b""
        self._eof = False
        self._version_seen = False
        self._mech_seen = False
        self._mechanisms: set[str] = set()
        self._request_id = 0

    # ----------------------------------------------------------------- output
    def handshake(self) -> bytes:
        """The client's half of the handshake, sent first."""
        return f"VERSION\t{MAJOR_VERSION}\t{MINOR_VERSION}\nCPID\t{self._pid}\n".encode()

    def authenticate(
        self,
        mechanism: str,
        *,
        service: str = "smtp",
        local_ip: str | None = None,
        remote_ip: str | None = None,
        secured: bool = False,
        initial_response: str | None = None,
    ) -> bytes:
        """``AUTH``: start a request. ``initial_response`` is base64 as the SMTP client sent it
        (``""`` for RFC 4954's ``=``, an empty response)."""
        if self._state is not _State.READY:
            raise LocalProtocolError(f"AUTH in state {self._state.value}")
        mechanism = mechanism.upper()
        if mechanism not in self._mechanisms:
            raise LocalProtocolError(f"mechanism {mechanism} was not announced")
        if initial_response is not None and not valid_base64(initial_response):
            raise LocalProtocolError("the initial response is not base64")
        self._request_id += 1
        fields = ["AUTH", str(self._request_id), mechanism, f"service={tab_escape(service)}"]
        if local_ip:
            fields.append(f"lip={tab_escape(local_ip)}")
        if remote_ip:
            fields.append(f"rip={tab_escape(remote_ip)}")
        if secured:
            fields.append("secured")
        if initial_response is not None:
            fields.append(f"resp={initial_response}")  # last: the server ignores what follows
        self._state = _State.WAITING
        return ("\t".join(fields) + "\n").encode()

    def respond(self, data: str) -> bytes:
        """``CONT``: the SMTP client's answer to a ``Challenge`` (base64)."""
        if self._state is not _State.CHALLENGED:
            raise LocalProtocolError(f"CONT in state {self._state.value}")
        if not valid_base64(data):
            raise LocalProtocolError("the response is not base64")
        self._state = _State.WAITING
        return f"CONT\t{self._request_id}\t{data}\n".encode()

    # ------------------------------------------------------------------ input
    def receive_data(self, data: bytes) -> None:
        """Bytes from the server; ``b""`` means it closed the connection."""
        if data:
            if self._eof:
                raise LocalProtocolError("data received after EOF")
            self._buf += data
        else:
            self._eof = True

    def next_event(self) -> DovecotEvent | NeedData:
        """The next event, or ``NEED_DATA``. Raises ``RemoteProtocolError`` for a server that
        does not speak the protocol, or closes in the middle of it."""
        while True:
            if self._state is _State.CLOSED:
                return ConnectionClosed()
            line = self._take_line()
            if line is None:
                if not self._eof:
                    return NEED_DATA
                if self._state is _State.READY:
                    self._state = _State.CLOSED
                    return ConnectionClosed()
                doing, self._state = self._doing, _State.CLOSED
                raise RemoteProtocolError(f"the auth server closed the connection {doing}")
            event = self._line(line)
            if event is not None:
                return event

    @property
    def _doing(self) -> str:
        return {
            _State.HANDSHAKE: "during the handshake",
            _State.WAITING: "before answering",
            _State.CHALLENGED: "in the middle of a request",
        }.get(self._state, "")

    def _take_line(self) -> list[str] | None:
        end = self._buf.find(b"\n")
        if end < 0:
            if len(self._buf) > MAX_LINE:
                raise RemoteProtocolError(f"a line from the auth server is over {MAX_LINE} bytes")
            return None
        raw, self._buf = self._buf[:end], self._buf[end + 1 :]
        if len(raw) > MAX_LINE:
            raise RemoteProtocolError(f"a line from the auth server is over {MAX_LINE} bytes")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise RemoteProtocolError("a line from the auth server is not UTF-8") from None
        return text.split("\t")

    def _line(self, fields: list[str]) -> DovecotEvent | None:
        command = fields[0]
        if self._state is _State.HANDSHAKE:
            return self._handshake_line(command, fields[1:])
        if self._state not in (_State.WAITING, _State.CHALLENGED):
            return None  # nothing asked: ignore (unknown commands are to be ignored)
        if command not in ("OK", "CONT", "FAIL"):
            return None
        if len(fields) < 2 or fields[1] != str(self._request_id):
            return None  # a reply to another request (Postfix ignores those too)
        if self._state is _State.CHALLENGED:
            raise RemoteProtocolError(f"{command} from the auth server before our CONT")
        params = fields[2:]
        if command == "CONT":
            if not params or not valid_base64(params[0]):
                raise RemoteProtocolError("CONT from the auth server without base64 data")
            self._state = _State.CHALLENGED
            return Challenge(params[0])
        self._state = _State.READY
        options = _options(params)
        user = options.get("user")
        if command == "FAIL":
            code = options.get("code")
            temporary = "temp" in options or code in _TEMPORARY_CODES
            return Failure(options.get("reason"), temporary, user)
        if "nologin" in options or "proxy" in options:
            # Verified, but no access here ("OK Does Not Mean Access Granted").
            return Failure(options.get("reason"), False, user)
        if not user:
            # Postfix: "missing Dovecot server OK username field" (its fault, not the client's)
            return Failure("Authentication backend error", True, None)
        return Success(user)

    def _handshake_line(self, command: str, params: list[str]) -> DovecotEvent | None:
        if command == "VERSION":
            if len(params) < 2 or not params[0].isdigit():
                raise RemoteProtocolError("the auth server's VERSION line is malformed")
            if int(params[0]) != MAJOR_VERSION:
                raise RemoteProtocolError(
                    f"the auth server speaks protocol version {params[0]}, not {MAJOR_VERSION}"
                )
            self._version_seen = True
            return None
        if not self._version_seen:
            raise RemoteProtocolError(f"the auth server sent {command!r} before VERSION")
        if command == "MECH" and params:
            self._mech_seen = True
            properties = {p.lower() for p in params[1:]}
            if "private" not in properties:
                self._mechanisms.add(tab_unescape(params[0]).upper())
        elif command == "SPID" and not self._mech_seen:
            raise RemoteProtocolError(
                "not an auth-client socket (SPID before any MECH: auth-master or auth-userdb?)"
            )
        elif command == "DONE":
            self._state = _State.READY
            return Ready(frozenset(self._mechanisms))
        return None


def _options(params: list[str]) -> dict[str, str]:
    """``name=value`` and bare ``name`` parameters (the latter as ``""``), values unescaped."""
    options: dict[str, str] = {}
    for param in params:
        name, _, value = param.partition("=")
        options.setdefault(name, tab_unescape(value))
    return options
