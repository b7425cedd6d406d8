"""Pieces shared by every codec (SMTP server and client, policy, spamd): the need-data and
connection-closed events, the protocol errors, and how much to read from a socket at a time."""

from __future__ import annotations

from dataclasses import dataclass

from filterd.model.reply import Reply

RECEIVE_SIZE = 65536
"""How many bytes the code driving a codec asks its socket for per read."""


@dataclass(frozen=True, slots=True)
class NeedData:
    """Returned by a codec when it needs more bytes before it can produce an event."""


NEED_DATA = NeedData()


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed the connection where the protocol allows it: between two SMTP commands
    or policy requests, after the reply to QUIT (or a 421), after spamd's response."""


class ProtocolError(Exception):
    """A violation of SMTP that ends the conversation."""

    def __init__(self, message: str, reply: Reply | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol. ``reply`` is what to tell it, if anything."""


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol (or the codec's state) does not allow."""
