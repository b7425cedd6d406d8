"""RFC 3461 §4 xtext: the encoding of DSN ``ENVID``/``ORCPT`` and XFORWARD values.

::

    xtext   = *( xchar / hexchar )
    xchar   = any ASCII CHAR between "!" (33) and "~" (126) inclusive, except "+" and "="
    hexchar = ASCII "+" immediately followed by two upper case hexadecimal digits

Text is turned into octets with UTF-8 and ``surrogateescape``, so any octet string survives a
decode/encode round trip (a value is re-emitted exactly as received, Postfix XFORWARD_README).
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "is_xtext",
    "xtext_decode",
    "xtext_decode_bytes",
    "xtext_encode",
    "xtext_encode_bytes",
]

_XTEXT_RE: Final = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})*")
_XCHARS_RE: Final = re.compile(r"[!-*,-<>-~]*")
_HEXCHAR_RE: Final = re.compile(rb"\+([0-9A-F]{2})")
# One entry per octet: itself when it is an xchar, else "+XX".
_ENCODED: Final[tuple[str, ...]] = tuple(
    chr(octet) if 33 <= octet <= 126 and octet not in b"+=" else f"+{octet:02X}"
    for octet in range(256)
)


def xtext_encode_bytes(data: bytes) -> str:
    """Encode octets: "+", "=", and octets outside 33..126 become ``+XX`` (RFC 3461 §4)."""
    return "".join([_ENCODED[octet] for octet in data])


def xtext_encode(value: str) -> str:
    """Encode text (as UTF-8, ``surrogateescape``). Raises ``ValueError`` for unencodable text."""
    if _XCHARS_RE.fullmatch(value):
        return value  # nothing to encode (the usual case: names, addresses, ids)
    return xtext_encode_bytes(value.encode("utf-8", "surrogateescape"))


def is_xtext(text: str) -> bool:
    """True when ``text`` is well-formed xtext: xchars and ``+XX`` with upper-case hex only."""
    return _XTEXT_RE.fullmatch(text) is not None


def xtext_decode_bytes(text: str) -> bytes:
    """Decode xtext to octets. Raises ``ValueError`` unless ``text`` is well-formed xtext
    (no SP, controls, non-ASCII, "=", lone "+", or lower-case hex: RFC 3461 §4 is strict)."""
    if not is_xtext(text):
        raise ValueError(f"malformed xtext: {text!r}")
    return _HEXCHAR_RE.sub(_unhex, text.encode("ascii"))


def xtext_decode(text: str) -> str:
    """Decode xtext to text (UTF-8, ``surrogateescape``); ``ValueError`` when malformed."""
    return xtext_decode_bytes(text).decode("utf-8", "surrogateescape")


def _unhex(match: re.Match[bytes]) -> bytes:
    return bytes((int(match.group(1), 16),))
