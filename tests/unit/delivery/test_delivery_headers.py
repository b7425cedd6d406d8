"""The lines a final delivery adds (mail_copy.c's order and form, quote_822_local quoting) and
local(8)'s Delivered-To loop check."""

from __future__ import annotations

import pytest

from filterd.delivery.delivery_headers import (
    delivery_header,
    forwarding_loop,
    has_delivered_to,
    quote_local,
    unquote_local,
)
from filterd.model.headers import parse_header_section


@pytest.mark.parametrize(
    ("address", "quoted"),
    [
        ("user@example.org", "user@example.org"),
        ("first.last+tag@example.org", "first.last+tag@example.org"),
        ("a b@example.org", '"a b"@example.org'),
        ('a"b@example.org', '"a\\"b"@example.org'),
        ("a\\b@example.org", '"a\\\\b"@example.org'),
        (".lead@example.org", '".lead"@example.org'),
        ("trail.@example.org", '"trail."@example.org'),
        ("two..dots@example.org", '"two..dots"@example.org'),
        ("a(b)@example.org", '"a(b)"@example.org'),
        ("a@b@example.org", '"a@b"@example.org'),  # the last @ starts the domain
        ("ünï@example.org", "ünï@example.org"),  # 8-bit clean: UTF-8 is left alone
        ("@r1,@r2:a b@example.org", '@r1,@r2:"a b"@example.org'),  # source route kept
        ("local", "local"),
        ("", '""'),
    ],
)
def test_local_parts_are_quoted_as_quote_822_local(address: str, quoted: str) -> None:
    assert quote_local(address) == quoted


@pytest.mark.parametrize(
    ("address", "unquoted"),
    [
        ("user@example.org", "user@example.org"),
        ('"john doe"@example.org', "john doe@example.org"),
        ('"a\\"b"@example.org', 'a"b@example.org'),
        ('"a@b"@example.org', "a@b@example.org"),  # the last unquoted @ starts the domain
        ('"first".last@example.org', "first.last@example.org"),
        ('@r1,@r2:"a b"@example.org', "@r1,@r2:a b@example.org"),
        ('"local"', "local"),
        ("", ""),
    ],
)
def test_envelope_addresses_are_unquoted_as_unquote_822_local(address: str, unquoted: str) -> None:
    assert unquote_local(address) == unquoted


def test_a_quoted_envelope_address_is_quoted_once() -> None:
    header = delivery_header('"john doe"@example.com', '"a b"@example.org', '"a b"@example.org')
    assert header == (
        b'Return-Path: <"john doe"@example.com>\n'
        b'X-Original-To: "a b"@example.org\n'
        b'Delivered-To: "a b"@example.org\n'
    )
    assert has_delivered_to(headers(b'Delivered-To: "A B"@example.org\n\n'), '"a b"@example.org')


def test_return_path_x_original_to_delivered_to_in_this_order_lf_ended() -> None:
    header = delivery_header("a b@example.com", "Cactus@Example.ORG", "cactus@example.org")
    assert header == (
        b'Return-Path: <"a b"@example.com>\n'
        b"X-Original-To: Cactus@Example.ORG\n"
        b"Delivered-To: cactus@example.org\n"
    )


def test_null_sender_and_no_original_recipient() -> None:
    assert delivery_header("", "", "u@example.org") == (
        b"Return-Path: <>\nDelivered-To: u@example.org\n"
    )


def test_utf8_addresses_are_written_as_utf8() -> None:
    header = delivery_header("ñ@example.com", "ünï@example.org", "ünï@example.org")
    assert "Delivered-To: ünï@example.org\n".encode() in header


def headers(text: bytes) -> list[object]:
    return list(parse_header_section(text, complete=True).headers)


def test_a_delivered_to_for_the_recipient_is_a_loop_whatever_the_case() -> None:
    section = parse_header_section(
        b"Received: x\r\nDelivered-To:   Cactus@VirtualDomain.TLD \r\nSubject: s\r\n\r\nbody\r\n",
        complete=True,
    ).headers
    assert has_delivered_to(section, "cactus@virtualdomain.tld")
    assert not has_delivered_to(section, "other@virtualdomain.tld")
    quoted = parse_header_section(b'Delivered-To: "a b"@x.example\n\n', complete=True).headers
    assert has_delivered_to(quoted, "a b@x.example")


def test_a_delivered_to_in_the_body_is_not_a_loop() -> None:
    section = parse_header_section(
        b"Subject: s\r\n\r\nDelivered-To: u@example.org\r\n", complete=True
    ).headers
    assert not has_delivered_to(section, "u@example.org")


def test_the_loop_reply_is_local8s() -> None:
    reply = forwarding_loop("u@example.org")
    assert str(reply) == "554 5.4.6 mail forwarding loop for u@example.org"
