"""Every input the fuzzers (tests/fuzz/, fuzz/) found to crash or mislead a codec or parser,
kept as a plain test: the input, and the answer the codec gives now."""

from __future__ import annotations

import pytest

from filterd.model import replies
from filterd.protocols.smtp import events as ev
from filterd.sdk.patterns import Flavour, RuleError, parse_table
from filterd.sdk.tables import TableError
from filterd.sdk.tables.names import TableName
from filterd.sdk.tables.sql_config import parse_sql_config
from tests.fuzz.test_smtp_server_fuzz import drive, make

HEAD = [b"EHLO a\r\n", b"MAIL FROM:<>\r\nRCPT TO:<a@b.c>\r\nDATA\r\n"]


@pytest.mark.parametrize("size", ["\u00b2", "\u0661\u0662", "\uff11"])
def test_size_in_non_ascii_digits_is_a_syntax_error(size: str) -> None:
    """``SIZE=²``: str.isdigit() took it for a number and int() raised ValueError, which the
    session turned into 451 "internal error" and a dropped connection (hypothesis)."""
    events, _ = drive(
        make(False, "reject"), [b"EHLO a\r\n", f"MAIL FROM:<> SIZE={size}\r\n".encode()], [True]
    )
    assert events[1] == ev.BadCommand(replies.SYNTAX)


@pytest.mark.parametrize(
    ("content", "expected"),
    [(b"a\n..x\r\n", b"a\r\n.x\r\n"), (b"a\n.\r\n", b"a\r\n\r\n"), (b"\n.y\r\n", b"\r\ny\r\n")],
)
@pytest.mark.parametrize("at", [0, 1, 2])
def test_a_dot_line_after_a_bare_lf_is_unstuffed_however_it_arrives(
    content: bytes, expected: bytes, at: int
) -> None:
    """bare_newline = normalize: a line after a bare LF is a line, so a leading dot is
    stuffing. Whole, the codec removed it; when the bare LF came at the end of a read, it
    kept it (hypothesis: the content depended on the chunking)."""
    end = b".\r\n"
    chunks = [content[:at], content[at:] + end] if at else [content + end]
    events, _ = drive(make(False, "normalize"), [*HEAD, *[c for c in chunks if c]], [True])
    body = b"".join(e.data for e in events if isinstance(e, ev.BodyChunk))
    assert body == expected


@pytest.mark.parametrize(
    ("files", "chain"),
    [
        ({"/d": "/d"}, "/d -> /d"),
        ({"/d": "a.example\n/e", "/e": "b.example, /d"}, "/d -> /e -> /d"),
    ],
)
def test_a_domain_file_that_includes_itself_is_a_table_error(
    files: dict[str, str], chain: str
) -> None:
    """``domain = /d`` where /d names /d (or a file naming /d): parse_domain_list expanded
    it forever and died of RecursionError instead of naming the file (hypothesis)."""
    text = "dbpath = /x\nquery = q\ndomain = /d\n"
    with pytest.raises(TableError) as caught:
        parse_sql_config(TableName("sqlite", "/etc/postfix/t.cf"), text, files.__getitem__)
    assert caught.value.line == 3
    assert f"includes itself ({chain})" in caught.value.message
    assert caught.value.hint.startswith("remove /d from ")


@pytest.mark.parametrize(
    ("flavour", "pattern"),
    [
        ("regexp", b"/y!++++++++++++++++++++++++++++++y/ OK"),  # as found
        ("regexp", b"/" + b"(" * 25 + b"a+" + b")+" * 25 + b"/ OK"),
        ("pcre", b"/" + b"(" * 25 + b"a+" + b")+" * 25 + b"/ OK"),
    ],
)
def test_deeply_nested_repeats_are_a_rule_error(flavour: Flavour, pattern: bytes) -> None:
    """``regexp:`` reads ``!+++...`` as repeats of repeats; ``regex`` compiled the nested groups
    in memory exponential in their depth, and 29 of them took the process past 2 GB (atheris,
    fuzz_patterns: libFuzzer out-of-memory). Now a RuleError naming the line; the depth
    realistic tables reach still compiles."""
    with pytest.raises(RuleError, match="nested") as caught:
        parse_table(b"/a/ OK\n" + pattern, flavour)
    assert caught.value.line == 2
    shallow = b"/" + b"(" * 5 + b"a+" + b")+" * 5 + b"/ OK"
    assert parse_table(shallow, flavour).query(b"aa") == "OK"
