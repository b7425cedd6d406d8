"""RFC 3461 xtext: encoding, strict decoding, round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from filterd.model.xtext import (
    is_xtext,
    xtext_decode,
    xtext_decode_bytes,
    xtext_encode,
    xtext_encode_bytes,
)

XTEXT = st.from_regex(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})*", fullmatch=True)


@pytest.mark.parametrize(
    ("plain", "encoded"),
    [
        ("", ""),
        ("client.example.net", "client.example.net"),
        ("a+b=c", "a+2Bb+3Dc"),
        ("two words", "two+20words"),
        ("tab\there", "tab+09here"),
        ("del\x7f", "del+7F"),
        ("é", "+C3+A9"),
        ("rfc822;bob@example.org", "rfc822;bob@example.org"),
        ("!~", "!~"),
    ],
)
def test_encode_and_decode_known_values(plain: str, encoded: str) -> None:
    assert xtext_encode(plain) == encoded
    assert xtext_decode(encoded) == plain


def test_hexchars_that_need_no_escaping_still_decode() -> None:
    assert xtext_decode("+41+42C") == "ABC"


def test_bytes_functions_keep_any_octet() -> None:
    assert xtext_encode_bytes(b"\x00\xff+") == "+00+FF+2B"
    assert xtext_decode_bytes("+E9t+E9") == b"\xe9t\xe9"


def test_non_utf8_octets_decode_with_surrogateescape_and_reencode_identically() -> None:
    decoded = xtext_decode("caf+E9")
    assert decoded == "caf\udce9"
    assert xtext_encode(decoded) == "caf+E9"


@pytest.mark.parametrize(
    "bad",
    [
        "+",  # lone plus
        "+2",  # one hex digit
        "+2b",  # lower-case hex: RFC 3461 says upper case
        "+G0",
        "a=b",  # "=" must be encoded
        "two words",  # SP
        "tab\t",  # control
        "new\r\nline",
        "nul\x00",
        "del\x7f",
        "é",  # non-ASCII
    ],
)
def test_malformed_xtext_raises_value_error(bad: str) -> None:
    assert not is_xtext(bad)
    with pytest.raises(ValueError, match="malformed xtext"):
        xtext_decode(bad)
    with pytest.raises(ValueError, match="malformed xtext"):
        xtext_decode_bytes(bad)


def test_unencodable_text_raises_value_error() -> None:
    with pytest.raises(ValueError):  # a lone surrogate outside surrogateescape's range
        xtext_encode("\ud800")


@given(st.text())
def test_text_round_trips(value: str) -> None:
    encoded = xtext_encode(value)
    assert is_xtext(encoded)
    assert xtext_decode(encoded) == value


@given(st.binary())
def test_bytes_round_trip(value: bytes) -> None:
    encoded = xtext_encode_bytes(value)
    assert is_xtext(encoded)
    assert encoded.isascii()
    assert xtext_decode_bytes(encoded) == value


@given(XTEXT)
def test_any_wellformed_xtext_decodes_and_reencodes_canonically(text: str) -> None:
    octets = xtext_decode_bytes(text)
    assert xtext_decode_bytes(xtext_encode_bytes(octets)) == octets
    assert len(xtext_encode_bytes(octets)) <= len(text)  # never longer than the input


@given(st.text())
def test_decode_of_any_text_gives_text_or_value_error(text: str) -> None:
    try:
        result = xtext_decode(text)
    except ValueError:
        assert not is_xtext(text)
    else:
        assert is_xtext(text)
        assert isinstance(result, str)
