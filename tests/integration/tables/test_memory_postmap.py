"""``texthash:``, ``inline:``, ``static:``, ``fail:``, ``unionmap:`` and ``pipemap:`` answer as
``postmap -q`` does, on generated data and on the source format's corner cases."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from filterd.sdk.tables import TableError, TableFailure, TableSettings, open_table
from tests.integration.tables.file_data import (
    lookup_all,
    postmap_answers,
    query_keys,
    source_entries,
    source_text,
    write_cold,
)
from tests.support.postmap import Postmap

# A source file with what postmap(1) input may hold: comments (also inside a logical line),
# blank lines, continuation lines, quoted keys (kept with their quotes), a backslash in a
# key, duplicates (the first wins), a key without value and unbalanced quotes (both ignored),
# a "key:" line, non-UTF-8 text (ignored), UTF-8 keys folded as Unicode, CR line ends.
CORNER_CASES = (
    b"Foo bar\n"
    b"# a comment\n"
    b"   \n"
    b"foo duplicate\n"
    b'"a b" quoted value  \n'
    b"key\n"
    b"  continued\n"
    b"# a comment inside a logical line\n"
    b"\n"
    b"\tand more\n"
    b"novalue\n"
    b"\\ x y\n"
    b'bad" z\n'
    b"k:  v\n"
    b"latin1\xff value\n"
    b"Stra\xc3\x9fe utf8\n"
    b"\xc3\x84B umlaut\n"
    b"crlf value\r\n"
    b"tab\t\tvalue\twith\ttabs\n"
    b"last 1"
)
CORNER_KEYS = [
    "foo", "FOO", "Foo", '"a b"', "a b", '"A B"', "key", "novalue", "\\ x", " x", 'bad"', "k:",
    "k", "latin1\udcff", "strasse", "STRASSE", "straße", "äb", "ÄB", "crlf", "tab", "last",
    "latin1", "x",
]  # fmt: skip


def _agree(postmap: Postmap, table: str, keys: list[str], **settings: bool) -> None:
    expected = postmap.query_many(keys, table)
    got = lookup_all(open_table(table, TableSettings(**settings)), keys)
    assert got == expected
    assert expected, "the data set finds nothing: the test would prove nothing"


def test_texthash_generated(postmap: Postmap, tmp_path: Path) -> None:
    entries = source_entries()
    path = tmp_path / "access"
    write_cold(path, source_text(entries))
    keys = query_keys(entries)
    assert len(keys) > 3000
    _agree(postmap, f"texthash:{path}", keys)


def test_texthash_corner_cases(
    postmap: Postmap, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "corner"
    write_cold(path, CORNER_CASES)
    keys = [k for k in CORNER_KEYS if "\udcff" not in k]  # query_many sends text
    with caplog.at_level(logging.WARNING, logger="filterd.tables"):
        _agree(postmap, f"texthash:{path}", keys)
    warnings = "\n".join(r.getMessage() for r in caplog.records)
    for line, text in [(4, "duplicate"), (11, "key whitespace value"), (13, "unbalanced")]:
        assert f"{path}, line {line}: " in warnings, warnings
        assert text in warnings, warnings
    assert "line 15: non-UTF-8 input" in warnings


def test_texthash_without_folding(postmap: Postmap, tmp_path: Path) -> None:
    """``postmap -f``: keys neither folded when read nor when looked up."""
    path = tmp_path / "corner"
    write_cold(path, CORNER_CASES)
    table = f"texthash:{path}"
    keys = [k for k in CORNER_KEYS if "\udcff" not in k]
    expected = postmap_answers(postmap, keys, table, fold=False)
    got = lookup_all(open_table(table, TableSettings(fold_case=False)), keys)
    assert got == expected
    assert "Foo" in got
    assert "FOO" not in got


def test_texthash_missing_file(postmap: Postmap, tmp_path: Path) -> None:
    table = f"texthash:{tmp_path / 'nonexistent'}"
    status, _, err = postmap.query("x", table)
    assert status == 1
    assert "No such file or directory" in err
    with pytest.raises(TableError, match=r"open database .*nonexistent: No such file or directory"):
        open_table(table)


INLINE = [
    "inline:{a=1, b=2 ,c=3}",
    "inline:{ {k2 = v w}, { k3=x=y }, K4=Upper }",
    'inline:{ {"q r"=z}, {"s,t" = 1}, plain=2 }',
    "inline:{a=1,a=2}",
    "inline:{ {a = { nested } }, b={c} }",
    "inline:{e=}",
    "inline:{\\x=backslash, a\\b=y}",
]
INLINE_KEYS = ["a", "A", "b", "c", "k2", "k3", "K4", "k4", '"q r"', "q r", '"s,t"', "plain", "e",
               "\\x", "a\\b", " x", "x", "d"]  # fmt: skip


@pytest.mark.parametrize("table", INLINE)
def test_inline(postmap: Postmap, table: str) -> None:
    for fold in (True, False):
        expected = postmap_answers(postmap, INLINE_KEYS, table, fold=fold)
        assert expected
        assert lookup_all(open_table(table, TableSettings(fold_case=fold)), INLINE_KEYS) == expected


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("inline:{}", "bad syntax"),
        ("inline:{ }", "empty table"),
        ("inline:{a}", "missing '=' after attribute name"),
        ("inline:{ {b c = d} }", "missing '=' after attribute name"),
        ('inline:{"a=1}', "unbalanced"),
        ("inline:{ {a=1 }", "bad syntax"),
        ("inline:a=1", "bad syntax"),
        ("inline:{a=1, b = 2}", "missing '=' after attribute name"),
        ("inline:{\\ x=1}", "missing '=' after attribute name"),
    ],
)
def test_inline_errors(postmap: Postmap, table: str, message: str) -> None:
    status, _, err = postmap.query("a", table)
    assert status == 1
    assert "fatal" in err, err
    with pytest.raises(TableError, match=message) as raised:
        open_table(table)
    assert raised.value.table == table
    assert "inline:{ key=value" in str(raised.value)


@pytest.mark.parametrize("table", ["static:a b", "static:{ a b }", "static:Upper", "static:{x}"])
def test_static(postmap: Postmap, table: str) -> None:
    keys = ["any", "Other", "x y"]
    _agree(postmap, table, keys)


def test_static_errors() -> None:
    for table in ["static:{a", "static:{a}b"]:
        with pytest.raises(TableError, match=r"bad static:name syntax|unbalanced braces"):
            open_table(table)


def test_fail_is_a_failure_never_not_found(postmap: Postmap) -> None:
    status, out, err = postmap.query("x", "fail:x")
    assert (status, out) == (1, "")
    assert "table fail:x: query error: Application error" in err
    table = open_table("fail:x")
    with pytest.raises(TableFailure) as raised:
        lookup_all(table, ["x"])
    assert str(raised.value) == "table fail:x: query error: Application error"


@pytest.mark.parametrize(
    "table",
    [
        "unionmap:{static:a, static:b, inline:{y=1}}",
        "unionmap:{inline:{x=1, z=2}, inline:{x=3, y=4}}",
        "unionmap:{inline:{x=}, inline:{x=3}}",
        "unionmap:{inline:{x=3}, inline:{x=}}",
        "pipemap:{inline:{x=Y, z=Q}, inline:{y=2, q=}}",
        "pipemap:{inline:{x=y}, inline:{y=z}, inline:{z=done}}",
        "pipemap:{static:a}",
    ],
)
def test_composites(postmap: Postmap, table: str) -> None:
    keys = ["x", "X", "y", "z", "w"]
    expected = postmap.query_many(keys, table)
    assert lookup_all(open_table(table), keys) == expected


def test_composites_over_texthash(postmap: Postmap, tmp_path: Path) -> None:
    entries = source_entries(300)
    first, second = tmp_path / "first", tmp_path / "second"
    write_cold(first, source_text(entries[::2]))
    write_cold(second, source_text(entries[1::3] + [(v, "piped") for _, v in entries]))
    keys = query_keys(entries)
    for kind in ("unionmap", "pipemap"):
        _agree(postmap, f"{kind}:{{texthash:{first}, texthash:{second}}}", keys)


def test_composite_failures(postmap: Postmap) -> None:
    table = "unionmap:{static:a, fail:x}"
    assert postmap.query("x", table)[0] == 1
    with pytest.raises(TableFailure, match="Application error"):
        lookup_all(open_table(table), ["x"])
    for bad in ["unionmap:{}", "pipemap:{static}", "unionmap:{static:a, nosuch:x}"]:
        assert postmap.query("x", bad)[0] == 1
        with pytest.raises(TableError) as raised:
            open_table(bad)
        assert raised.value.table == bad
