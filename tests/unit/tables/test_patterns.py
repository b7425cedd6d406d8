"""regexp: and pcre: lookup tables (filterd.sdk.tables.patterns): opening, errors that name the
table, file, line and fix, and what a lookup answers beyond the differential test."""

from __future__ import annotations

from pathlib import Path

import pytest

from filterd.sdk.tables import TableError, TableFailure, open_table

FLAVOURS = ["regexp", "pcre"]


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_first_match_substitution_and_no_case_folding(flavour: str, tmp_path: Path) -> None:
    path = tmp_path / "access"
    path.write_text(
        "/^(.*)-outgoing@(.*)$/ 550 Use ${1}@${2} instead\n"
        "/^Bob@/i OK exact case\n"
        "/^bob@/ OK any case\n"
        "if /@example\\.com$/\n"
        "!/^(alice|carol)@/ REJECT not listed\n"
        "endif\n"
    )
    table = open_table(f"proxy:{flavour}:{path}")
    assert table.fixed_string is False
    assert table.name == f"{flavour}:{path}"
    assert await table.lookup("list-outgoing@example.org") == "550 Use list@example.org instead"
    assert await table.lookup("Bob@x") == "OK exact case"
    assert await table.lookup("BOB@x") == "OK any case"  # the key is not folded
    assert await table.lookup("dave@example.com") == "REJECT not listed"
    assert await table.lookup("alice@example.com") is None
    assert await table.lookup("") is None


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_inline_rules(flavour: str) -> None:
    table = open_table(f"{flavour}:{{ {{/^a(.)/ got $1}}, {{ }}, {{ /,/ comma }} }}")
    assert await table.lookup("abc") == "got b"
    assert await table.lookup("x,y") == "comma"
    assert await table.lookup("xyz") is None


async def test_not_utf8_keys_are_not_found_and_values_fail(tmp_path: Path) -> None:
    path = tmp_path / "t"
    path.write_bytes(b"/^a/ v\xe9\n/^(b.*)/ [$1]\n")
    table = open_table(f"pcre:{path}")
    assert await table.lookup("b\udce9") is None  # the byte 0xe9, surrogate-escaped
    assert await table.lookup("bé") == "[bé]"
    with pytest.raises(TableFailure, match="not UTF-8"):
        await table.lookup("a")


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("/a/ OK\n/b OK\n", 2, 'no closing regexp delimiter "/"'),
        ("/a/ OK\n\n/(a)/ OK $2\n", 3, 'out of range replacement index "2"'),
        ("/a/\n", 1, "no replacement text"),
        ("if /a/\n/b/ OK\n", 1, "IF has no matching ENDIF"),
        ("/a/q OK\n", 1, 'unknown regexp option "q"'),
    ],
)
def test_malformed_files_name_file_line_and_fix(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = tmp_path / "bad"
    path.write_text(text)
    with pytest.raises(TableError) as info:
        open_table(f"regexp:{path}")
    error = info.value
    assert (error.table, error.file, error.line) == (f"regexp:{path}", str(path), line)
    assert message in error.message
    assert "regexp_table(5)" in error.hint
    assert str(error).startswith(f"table regexp:{path}: {path}:{line}: ")


def test_malformed_inline_rules_name_the_rule() -> None:
    with pytest.raises(TableError, match=r'rule 2: no closing regexp delimiter "/".*pcre_table'):
        open_table("pcre:{ {/a/ b}, {/c d} }")
    not_braced = r"""regexp map: no '\{' at start of text in "/a/".*regexp:\{"""
    with pytest.raises(TableError, match=not_braced):
        open_table("regexp:{ /a/ b }")


def test_unreadable_or_unnamed_file(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="cannot read the table: No such file") as info:
        open_table(f"pcre:{tmp_path}/missing")
    assert info.value.file == f"{tmp_path}/missing"
    with pytest.raises(TableError, match="no file name"):
        open_table("regexp:")
