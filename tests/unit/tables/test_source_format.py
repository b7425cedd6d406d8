"""The reader of Postfix's table source text: logical lines, ``key value`` splitting, brace
lists and ``inline:{...}``; properties checked on generated input (hypothesis)."""

from __future__ import annotations

import string

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from filterd.sdk.tables import TableError, TableSettings, open_table
from filterd.sdk.tables.memory import parse_source
from filterd.sdk.tables.source import (
    SPACE,
    SourceError,
    extract_braced,
    fold_key,
    logical_lines,
    split_key_value,
    split_quoted_name_value,
    tokenize_braced,
)

WORD = st.text(string.ascii_letters + string.digits + "@.+-_:[]/", min_size=1, max_size=12)
VALUE = st.lists(WORD, min_size=1, max_size=4).map(" ".join)


@st.composite
def source_files(draw: st.DrawFn) -> tuple[str, list[tuple[str, str]]]:
    """A source text with comments, blank lines and continuation lines, and its entries."""
    entries = draw(st.lists(st.tuples(WORD, VALUE), max_size=12))
    lines: list[str] = []
    for key, value in entries:
        if draw(st.booleans()):
            lines.append(draw(st.sampled_from(["# comment", "", "   ", "\t", "  # indented"])))
        words = value.split(" ")
        cut = draw(st.integers(1, len(words)))
        lines.append(draw(st.sampled_from([" ", "\t", "  "])).join([key, " ".join(words[:cut])]))
        if cut < len(words):  # the rest on continuation lines, a comment between
            if draw(st.booleans()):
                lines.append("#inside")
            lines.append(" " + " ".join(words[cut:]))
    ending = draw(st.sampled_from(["\n", ""]))
    return "\n".join(lines) + ending, entries


@given(source_files())
def test_source_round_trip(case: tuple[str, list[tuple[str, str]]]) -> None:
    text, entries = case
    expected: dict[str, str] = {}
    for key, value in entries:
        expected.setdefault(fold_key(key), value)  # the first entry of a key wins
    assert parse_source("texthash:t", "t", text, fold=True) == expected


@given(st.text(max_size=200))
def test_any_text_reads_without_crashing(text: str) -> None:
    for line in logical_lines(text):
        assert "\n" not in line.text
        assert line.first <= line.last
        try:
            key, value = split_key_value(line.text)
        except SourceError:
            continue
        assert key
        assert value
        assert value == value.strip(SPACE)  # C isspace(), not Unicode white space


def test_logical_lines_as_postfix_joins_them() -> None:
    text = "a 1\n# c\n\n b\n\tc\nd 2\n  \ne\n"
    assert [(x.text, x.first, x.last) for x in logical_lines(text)] == [
        ("a 1 b\tc", 1, 5),
        ("d 2", 6, 6),
        ("e", 8, 8),
    ]
    assert [x.text for x in logical_lines("a\0b c\nd e")] == ["a", "d e"]


@pytest.mark.parametrize(
    ("line", "key", "value"),
    [
        ("key value", "key", "value"),
        ('"a b" c d ', '"a b"', "c d"),
        ("a\\ b c", "a\\ b", "c"),
        ("k:\tv", "k:", "v"),
    ],
)
def test_split_key_value(line: str, key: str, value: str) -> None:
    assert split_key_value(line) == (key, value)


@pytest.mark.parametrize("line", ["novalue", 'bad" z', "key   ", '"open quote'])
def test_split_key_value_rejects(line: str) -> None:
    with pytest.raises(SourceError):
        split_key_value(line)


ELEMENT = st.text(string.ascii_letters + string.digits + "@.=:/", min_size=1, max_size=10)
SPACED = st.lists(ELEMENT, min_size=1, max_size=3).map(" , ".join)


@given(st.lists(st.one_of(ELEMENT, SPACED.map(lambda s: "{ " + s + " }")), max_size=6))
def test_brace_list_tokens(elements: list[str]) -> None:
    text = " " + ", ".join(elements) + " "
    assert tokenize_braced(text) == elements
    for element in elements:
        if element.startswith("{"):
            assert extract_braced(element) == element[2:-2]


@given(st.text(max_size=60))
def test_brace_parsing_never_crashes(text: str) -> None:
    for token in tokenize_braced(text):
        assert token
        try:
            extract_braced(token)
        except SourceError:
            pass
        try:
            split_quoted_name_value(token)
        except SourceError:
            pass


INLINE_KEY = st.text(string.ascii_letters + string.digits + "@.+-", min_size=1, max_size=10)
INLINE_VALUE = st.text(string.ascii_letters + string.digits + "@.+- =", max_size=12).map(str.strip)


@given(st.lists(st.tuples(INLINE_KEY, INLINE_VALUE), min_size=1, max_size=8), st.booleans())
def test_inline_tables(pairs: list[tuple[str, str]], fold: bool) -> None:
    spec = "inline:{ " + ", ".join(f"{{ {k} = {v} }}" for k, v in pairs) + " }"
    table = open_table(spec, TableSettings(fold_case=fold))
    expected: dict[str, str] = {}
    for key, value in pairs:
        expected[fold_key(key) if fold else key] = value  # the last one wins

    async def lookups() -> dict[str, str | None]:
        return {key: await table.lookup(key) for key, _ in pairs}

    for key, found in trio.run(lookups).items():
        assert found == expected[fold_key(key) if fold else key]


def test_inline_bare_elements_and_quotes() -> None:
    table = open_table('inline:{a=1, {"q r" = x y}, A=2}')

    async def lookups() -> list[str | None]:
        return [await table.lookup(k) for k in ("a", '"q r"', "q r", "b")]

    assert trio.run(lookups) == ["2", "x y", None, None]
    with pytest.raises(TableError, match="unbalanced"):
        open_table('inline:{"a=1}')
