"""Pieces shared by the SMTP server and client codecs: the need-data marker and protocol errors."""

from __future__ import annotations

from dataclasses import dataclass

from filterd.model.reply import Reply


@dataclass(frozen=True, slots=True)
class NeedData:
    """Returned by a codec when it needs more bytes before it can produce an event."""


NEED_DATA = NeedData()


class ProtocolError(Exception):
    """A violation of SMTP that ends the conversation."""

    def __init__(self, message: str, reply: Reply | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol. ``reply`` is what to tell it, if anything."""


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol (or the codec's state) does not allow."""
