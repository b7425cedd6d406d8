"""Key paths to line numbers in TOML text (tomllib gives no positions)."""

from __future__ import annotations

import tomllib

import pytest

from filterd.config.locate import KeyLines, locate

TEXT = """\
# a comment with [brackets] and key = value
top = 1

[log]
level = "info"   # trailing [comment]

[[listen]]
address = "127.0.0.1:10025"
xforward_hosts = [
  "127.0.0.0/8",   # first
  "::1/128",
]

[[listen]]
"quoted key" = 'x'
hostname = \"\"\"
[limits]
max_errors = 3
\"\"\"
dotted.inner = true
tls = { cert = "/a", key = "/b" }

[limits]
max_errors = 5
'literal' = 'C:\\temp\\'

[delivery . options]
a = "#not a comment"
b = "escaped \\" quote = 1"

[[listen]]
address = "unix:/x"
"""


@pytest.fixture(scope="module")
def lines() -> KeyLines:
    tomllib.loads(TEXT)  # the scanner is meant for text tomllib accepts
    return KeyLines(TEXT)


@pytest.mark.parametrize(
    ("path", "line"),
    [
        (("top",), 2),
        (("log",), 4),
        (("log", "level"), 5),
        (("listen",), 7),
        (("listen", 0), 7),
        (("listen", 0, "address"), 8),
        (("listen", 0, "xforward_hosts"), 9),
        (("listen", 0, "xforward_hosts", 0), 10),
        (("listen", 0, "xforward_hosts", 1), 11),
        (("listen", 1), 14),
        (("listen", 1, "quoted key"), 15),
        (("listen", 1, "hostname"), 16),
        (("listen", 1, "dotted"), 20),
        (("listen", 1, "dotted", "inner"), 20),
        (("listen", 1, "tls", "key"), 21),
        (("limits",), 23),
        (("limits", "max_errors"), 24),
        (("limits", "literal"), 25),
        (("delivery",), 27),
        (("delivery", "options"), 27),
        (("delivery", "options", "b"), 29),
        (("listen", 2), 31),
        (("listen", 2, "address"), 32),
    ],
)
def test_exact_lines(lines: KeyLines, path: tuple[str | int, ...], line: int) -> None:
    assert lines.exact(path) == line
    assert lines.line(path) == line


def test_text_inside_multiline_strings_is_not_read_as_keys(lines: KeyLines) -> None:
    assert lines.exact(("listen", 1, "limits")) is None
    assert lines.exact(("limits", "max_errors")) == 24


def test_missing_key_falls_back_to_its_table_header(lines: KeyLines) -> None:
    assert lines.line(("listen", 1, "adress")) == 14
    assert lines.line(("listen", 2, "protocol")) == 31
    assert lines.line(("delivery", "options", "zzz", 3)) == 27
    assert lines.line(("limits", "max_recipients")) == 23


def test_missing_top_level_key_has_no_line(lines: KeyLines) -> None:
    assert lines.line(("nowhere",)) is None
    assert lines.line(()) is None
    assert lines.exact(("listen", 3)) is None


def test_tables_of_an_array_of_tables_belong_to_its_last_element() -> None:
    text = """\
[[listen]]
address = "a:1"
[listen.extra]
x = 1
[[listen]]
address = "b:2"
[listen.extra]
x = 2
[[listen.sub]]
y = 1
[[listen.sub]]
y = 2
"""
    tomllib.loads(text)
    found = KeyLines(text)
    assert found.exact(("listen", 0, "extra", "x")) == 4
    assert found.exact(("listen", 1, "extra", "x")) == 8
    assert found.exact(("listen", 1, "sub", 0, "y")) == 10
    assert found.exact(("listen", 1, "sub", 1)) == 11


def test_inline_arrays_of_tables_are_indexed() -> None:
    text = """\
listen = [
  { address = "127.0.0.1:1" },
  { adress = "127.0.0.1:2", protocol = "lmtp" },
]
delivery = { method = "relay", next_hop = "127.0.0.1:10026" }
"""
    tomllib.loads(text)
    assert locate(text, ("listen", 0, "address")) == 2
    assert locate(text, ("listen", 1, "adress")) == 3
    assert locate(text, ("listen", 1, "protocol")) == 3
    assert locate(text, ("listen", 1, "missing")) == 3
    assert locate(text, ("delivery", "next_hop")) == 5


def test_windows_line_endings() -> None:
    text = '[log]\r\nlevel = "info"\r\n\r\n[limits]\r\nmax_errors = 1\r\n'
    tomllib.loads(text)
    assert locate(text, ("limits", "max_errors")) == 5


@pytest.mark.parametrize(
    "text",
    ["[unclosed\nkey = 1\n", 'k = "unterminated\n[t]\nx = 1\n', "= 1\n[t]\nx = 1\n", "k = [1,\n"],
)
def test_bad_text_never_raises(text: str) -> None:
    found = KeyLines(text)
    assert found.line(("zzz",)) is None
