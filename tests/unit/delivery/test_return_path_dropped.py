"""The Maildir stage drops the Return-Path: fields a message arrives with, as Postfix's
cleanup(8) does (the delivery adds the one that counts; found by the virtual(8) differential
test, tests/e2e/test_virtual_differential.py)."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from filterd.delivery.maildir_files import without_return_path

MESSAGE = (
    b"Return-Path: <>\n"
    b"From: a@example.net\n"
    b"return-path : <old@example.net>\n"
    b"\tcontinued\n"
    b"Subject: hi\n"
    b"\n"
    b"Return-Path: <body@example.net>\n"
)
EXPECTED = b"From: a@example.net\nSubject: hi\n\nReturn-Path: <body@example.net>\n"


def test_header_fields_go_and_the_body_stays() -> None:
    assert b"".join(without_return_path([MESSAGE])) == EXPECTED


def test_a_message_without_a_body_or_a_last_line_end() -> None:
    assert b"".join(without_return_path([b"Subject: x\nReturn-Path: <a@b>"])) == b"Subject: x\n"
    assert b"".join(without_return_path([b"Subject: x"])) == b"Subject: x"


@given(st.lists(st.integers(0, len(MESSAGE)), max_size=6))
def test_chunking_does_not_matter(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(MESSAGE)]
    chunks = [MESSAGE[a:b] for a, b in pairwise(bounds)]
    assert b"".join(without_return_path(chunks)) == EXPECTED
