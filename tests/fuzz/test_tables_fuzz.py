"""The table parsers under generated input (hypothesis).

tests/unit/tables already covers source text (texthash, postmap input), brace lists,
``inline:{...}`` and single cidr rules. Here: whole ``regexp:``/``pcre:`` files made of
hostile patterns, whole cidr files with ``if``/``endif``, and sqlite/mysql/pgsql files with
any parameters: each opens as a table or fails with the one documented error (``RuleError`` /
``TableError``, naming a line of the file), and every lookup of an opened table answers a
value or nothing, never an exception.
"""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from filterd.sdk.patterns import RuleError, parse_table
from filterd.sdk.tables import TableError
from filterd.sdk.tables.cidr import parse_rules
from filterd.sdk.tables.names import TableName
from filterd.sdk.tables.sql_config import parse_sql_config

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEYS = st.lists(
    st.one_of(
        st.text(max_size=30),
        st.binary(max_size=30),
        st.sampled_from(["Subject: hi", "a@b.c", "1.2.3.4", "::1", "AAAA", "\u00e9", "\n"]),
    ),
    max_size=6,
)

# ------------------------------------------------------------------------ regexp: and pcre:
ATOMS = ["a", "b", ".", "*", "+", "?", "*?", "(", ")", "(?:", "(?i)", "(?<n>", "(?=", "(?!",
         "(?<=", "[", "]", "[^", "[[:alpha:]]", "[:", "^", "$", "\\", "\\d", "\\w", "\\1",
         "\\x41", "\\x{263a}", "\\Q", "\\E", "\\p{L}", "\\K", "\\z", "{2}", "{2,", "{,3}",
         "{3,1}", "|", "/", " ", "\t", "-", "é", "\xff", "(*ACCEPT)", "(?R)", "#"]  # fmt: skip
PATTERN = st.lists(st.sampled_from(ATOMS), max_size=10).map("".join)
FLAGS = st.text("imsxXeUA!", max_size=3)
VALUE = st.one_of(st.sampled_from(["OK", "REJECT $1", "$2x", "${1}", "$", "$$", "DUNNO", ""]),
                  st.text(max_size=10))  # fmt: skip


@st.composite
def rule_line(draw: st.DrawFn) -> str:
    delim = draw(st.sampled_from(["/", "/", "/", "#", "!", "|"]))
    pattern = f"{delim}{draw(PATTERN)}{delim}{draw(FLAGS)}"
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return f"if {pattern}"
    if kind == 1:
        return draw(st.sampled_from(["endif", "ENDIF", "endif x", "if", "IF !/a/"]))
    if kind == 2:
        return f"!{pattern} {draw(VALUE)}"
    if kind == 3:
        return f"{pattern}!/{draw(PATTERN)}/ {draw(VALUE)}"
    if kind == 4:
        return draw(st.text(max_size=20))
    space = draw(st.sampled_from([" ", "  ", "\t", ""]))
    return f"{pattern}{space}{draw(VALUE)}"


@st.composite
def rule_file(draw: st.DrawFn) -> str:
    lines = draw(st.lists(rule_line(), max_size=8))
    glue = draw(st.sampled_from(["\n", "\n", "\n  ", "\n#c\n", "\r\n"]))
    return glue.join(lines)


@FUZZ
@given(rule_file(), st.sampled_from(["regexp", "pcre"]), KEYS)
def test_a_pattern_file_is_a_table_or_a_rule_error(
    text: str, flavour: str, keys: list[str | bytes]
) -> None:
    try:
        table = parse_table(text, flavour, name="t.re", timeout=2.0)  # type: ignore[arg-type]
    except RuleError as exc:
        error = exc
    else:
        error = None
    if error is not None:
        assert error.file == "t.re"
        assert 1 <= error.line <= text.count("\n") + 1
        assert error.message
        return
    for key in keys:
        answer = table.query(key)
        assert answer is None or isinstance(answer, str)


@FUZZ
@given(st.binary(max_size=200), st.sampled_from(["regexp", "pcre"]))
def test_any_bytes_are_a_pattern_table_or_a_rule_error(data: bytes, flavour: str) -> None:
    try:
        table = parse_table(data, flavour, timeout=2.0)  # type: ignore[arg-type]
    except RuleError:
        return
    table.query(data)


def _names_a_line(error: TableError, file: str, text: str, *, line_known: bool = True) -> None:
    """A TableError names the file, a line of it (when the problem has one) and the fix."""
    assert error.file == file
    assert error.hint
    if line_known or error.line is not None:
        assert error.line is not None
        assert 1 <= error.line <= text.count("\n") + 1


# --------------------------------------------------------------------------------- cidr:
CIDR_PATTERN = st.one_of(
    st.sampled_from(["1.2.3.4", "1.2.3.0/24", "1.2.3.4/32", "0.0.0.0/0", "::/0", "::1",
                     "[::1]", "[1.2.3.4]/8", "2001:db8::/32", "1.2.3.4/33", "1.2.3.4/-1",
                     "01.2.3.4", "1.2.3", "::ffff:1.2.3.4", "1.2.3.4/", "/8", "[]", "x"]),
    st.ip_addresses().map(str),
    st.tuples(st.ip_addresses(), st.integers(0, 130)).map(lambda t: f"{t[0]}/{t[1]}"),
)  # fmt: skip


@st.composite
def cidr_file(draw: st.DrawFn) -> str:
    lines = []
    for _ in range(draw(st.integers(0, 8))):
        neg = draw(st.sampled_from(["", "", "!", "!!"]))
        match draw(st.integers(0, 5)):
            case 0:
                lines.append(f"if {neg}{draw(CIDR_PATTERN)}")
            case 1:
                lines.append(draw(st.sampled_from(["endif", "ENDIF", "endif x"])))
            case 2:
                lines.append(draw(st.text(max_size=20)))
            case _:
                lines.append(f"{neg}{draw(CIDR_PATTERN)} {draw(VALUE)}")
    return "\n".join(lines)


@FUZZ
@given(cidr_file())
def test_a_cidr_file_is_rules_or_a_table_error(text: str) -> None:
    try:
        parse_rules("cidr:t", "t", text)
    except TableError as exc:
        _names_a_line(exc, "t", text)


# ------------------------------------------------------------------ sqlite:, mysql:, pgsql:
PARAMS = ["query", "result_format", "domain", "expansion_limit", "hosts", "user", "password",
          "dbname", "dbpath", "table", "select_field", "where_field", "additional_conditions",
          "select_function", "require_result_set", "option_file", "option_group", "tls_cert_file",
          "Query", "", "x y"]  # fmt: skip
SQL_VALUE = st.one_of(
    st.sampled_from(["SELECT v FROM t WHERE k='%s'", "%u %d %U %D %S %1 %9 %%", "%", "%x", "%s%",
                     "yes", "no", "5", "-1", "\u0661\u0662", "1_0", "a, !b, /f1, hash:/x, !",
                     "/f1", "!!/f2", "unix:/s", "inet:h:3306", "localhost", "postgresql://h/d",
                     "h:", ":", "[h]:1", "#x", ""]),
    st.text(max_size=20),
)  # fmt: skip
FILES = {"/f1": "a.example b\n# c\n/f2\n!d", "/f2": "e, /f1", "/f3": "/f3"}


def read_file(path: str) -> str:
    """The ``/file`` entries of ``domain``: two that name each other, one that names itself."""
    if path not in FILES:
        raise FileNotFoundError(2, "No such file or directory", path)
    return FILES[path]


@st.composite
def sql_file(draw: st.DrawFn) -> str:
    """Parameters in any order; half the files start valid (so later lines get looked at)."""
    lines = ["dbpath = /x", "dbname = d", "query = SELECT v FROM t WHERE k='%s'"]
    lines = lines if draw(st.booleans()) else []
    for _ in range(draw(st.integers(0, 8))):
        name = draw(st.sampled_from(PARAMS))
        lines.append(f"{name}{draw(st.sampled_from([' = ', '=', ' ']))}{draw(SQL_VALUE)}")
        if draw(st.integers(0, 5)) == 0:
            lines.append(draw(st.sampled_from(["  continued", "# comment", "", "\tmore %s"])))
    return "\n".join(lines)


@FUZZ
@given(
    st.sampled_from(["sqlite", "mysql", "pgsql"]), st.one_of(sql_file(), st.text(max_size=80)), KEYS
)
@example("sqlite", "dbpath = /x\nquery = q\ndomain = /f1", [])  # RecursionError, fixed
def test_a_sql_file_is_a_config_or_a_table_error(
    kind: str, text: str, keys: list[str | bytes]
) -> None:
    try:
        config = parse_sql_config(TableName(kind, "/etc/postfix/t.cf"), text, read_file)
    except TableError as exc:
        _names_a_line(exc, "/etc/postfix/t.cf", text, line_known=False)
        return
    for key in keys:
        text_key = key.decode("utf-8", "surrogateescape") if isinstance(key, bytes) else key
        query = config.expand_query(text_key, lambda s: s.replace("'", "''"))
        assert query is None or isinstance(query, str)
        result = config.expand_result(text_key, text_key)
        assert result is None or isinstance(result, str)
        config.domain_gate(text_key)
