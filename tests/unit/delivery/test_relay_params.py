"""Which MAIL parameters the relay passes on: those of extensions the next hop announced, and
never AUTH= (the client authenticated to us, not we to the next hop)."""

from __future__ import annotations

from types import MappingProxyType

from filterd.delivery.relay import _mail_params
from filterd.protocols.smtp.client import Capabilities

PARAMS = ("SIZE=100", "BODY=8BITMIME", "AUTH=<>", "auth=alice+40example.org", "RET=HDRS")


def caps(*keywords: str) -> Capabilities:
    return Capabilities(MappingProxyType({k: () for k in keywords}))


def test_auth_is_never_passed_on() -> None:
    everything = caps("SIZE", "8BITMIME", "DSN", "AUTH", "SMTPUTF8")
    assert _mail_params(PARAMS, everything) == ["SIZE=100", "BODY=8BITMIME", "RET=HDRS"]


def test_only_announced_extensions() -> None:
    assert _mail_params(PARAMS, caps("SIZE")) == ["SIZE=100"]
