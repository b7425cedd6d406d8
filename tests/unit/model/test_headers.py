"""The header section parser: whole fields at a time, the rest line by line, one result."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from filterd.model.headers import Header, _parse_lines, parse_header_section

MESSAGE = (
    b"Received: from a (b [192.0.2.1])\r\n\tby c (filterd) with ESMTP id X;\r\n\tdate\r\n"
    b"From: <a@example.org>\r\n"
    b"Subject : spaced\r\n"
    b"\r\n"
    b"body\r\n"
)

LINES = st.sampled_from(
    [
        b"From: <a@example.org>\r\n",
        b"Subject : spaced name\r\n",
        b"X-Empty:\r\n",
        b"\tfolded\r\n",
        b" folded by a space\r\n",
        b"  \r\n",
        b"\r\n",
        b"\n",
        b"no colon here\r\n",
        b"Bare: lf\n",
        b"Cr: inside\r value\r\n",
        b": no name\r\n",
        b"From: unterminated",
        b"\tunterminated continuation",
        b"body line\r\n",
    ]
)


def test_a_message_with_folding_and_a_spaced_name() -> None:
    section = parse_header_section(MESSAGE, complete=True)
    assert [h.name for h in section.headers] == ["Received", "From", "Subject"]
    assert section.headers[0].raw.count(b"\r\n") == 3
    assert section.separator == b"\r\n"
    assert MESSAGE[section.body_offset :] == b"body\r\n"
    assert section.render() == MESSAGE[: section.body_offset]


@given(st.lists(LINES, max_size=12), st.booleans())
def test_whole_fields_parse_as_the_line_loop_parses_them(
    lines: list[bytes], complete: bool
) -> None:
    head = b"".join(lines)
    assert parse_header_section(head, complete) == _parse_lines(head, complete, [], 0)


def test_a_field_at_the_end_of_an_incomplete_head_is_body() -> None:
    """A head cut at the read limit: its last field may go on, so it is not a header."""
    head = b"From: a\r\nTo: b\r\n"
    assert parse_header_section(head, complete=False).headers == (Header("From", b"From: a\r\n"),)
    assert parse_header_section(head, complete=True).headers[-1] == Header("To", b"To: b\r\n")
