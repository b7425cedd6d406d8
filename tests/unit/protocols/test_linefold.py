"""Long lines of text filterd sends broken as Postfix's smtp(8) breaks them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from filterd.protocols.smtp.linefold import LineFolder


def fold(data: bytes, limit: int, cuts: list[int] | None = None) -> bytes:
    folder = LineFolder(limit)
    pieces, last = [], 0
    for cut in sorted(cuts or []):
        pieces.append(folder.feed(data[last:cut]))
        last = cut
    pieces.append(folder.feed(data[last:]))
    return b"".join(pieces) + folder.finish()


def test_a_long_line_goes_on_in_lines_that_start_with_a_space() -> None:
    assert fold(b"x" * 12 + b"\r\nshort\n", 5) == b"xxxxx\r\n xxxx\r\n xxx\r\nshort\n"
    assert fold(b"abcd\r\n", 4) == b"abcd\r\n"  # the line end does not count


def test_the_default_limit_is_what_a_listener_takes_with_crlf() -> None:
    line = b"y" * 2500 + b"\r\n"
    out = fold(line, 998)
    assert all(len(each) <= 1000 for each in out.split(b"\n"))
    assert out.replace(b"\r\n ", b"") == line


text = st.binary(max_size=300).map(lambda b: b.replace(b" ", b"_"))


@given(text, st.integers(min_value=2, max_value=20), st.lists(st.integers(0, 300), max_size=5))
def test_lines_fit_nothing_is_lost_and_chunking_does_not_matter(
    data: bytes, limit: int, cuts: list[int]
) -> None:
    whole = fold(data, limit)
    assert fold(data, limit, [min(cut, len(data)) for cut in cuts]) == whole
    assert whole.replace(b"\r\n ", b"") == data
    for line in whole.split(b"\n"):
        assert len(line.removesuffix(b"\r")) <= limit + line.count(b"\r")
