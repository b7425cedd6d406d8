"""header_checks(5) rule files under generated input (hypothesis; the fuzzing suite of
docs/testing.md): any file is a table or a ``TableError`` naming its line, and every lookup
of a table read with its actions checked answers a ``Match`` or nothing, never an exception.
"""

from __future__ import annotations

import re

from filterd_header_checks.action_table import Match, TableError, parse_table
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]+):")
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PATTERNS = st.sampled_from(
    ["^Subject: (.*)", "^subject:", "^(To|Cc): .*@(.*)", "^X-Spam-Flag: YES", "^[^:]+: (\\d+)$",
     "^Received: from (\\S+)", ".*", "^Subject:\\s*$", "^From: .*\\n\\s(.*)",
     "^Content-Type: multipart/", "[[:upper:]]{3}", "^(?i)x-.*: (.+)"]
)  # fmt: skip
ACTIONS = st.sampled_from(
    ["REJECT", "REJECT $1", "WARN bad", "PREPEND X-Tag: $1", "REPLACE X-New: $2", "IGNORE",
     "DISCARD", "HOLD", "FILTER smtp:[h]:25", "REDIRECT $1", "REDIRECT a@b.c", "BCC x@y.z",
     "DUNNO", "OK", "INFO $1", "STRIP", "REJECT \u00e9 $1"]
)  # fmt: skip
BROKEN = st.sampled_from(
    ["/(/ REJECT", "/a/ BOGUS", "/a/", "endif", "if /a/ x", "/a/q REJECT", "$1", "/a/ $1 x",
     "/\\/ OK", "/a{3,1}/ OK", "!/a/!/b/ OK", "if /x/"]
)  # fmt: skip
HEADERS = st.lists(
    st.one_of(
        st.sampled_from(["Subject: hi", "Subject:", "To: a@b.c", "Received: from x by y",
                         "X-Spam-Flag: YES", "From: A\n\tB <a@b>", "Content-Type: multipart/mixed",
                         "subject: ABC", "X: 12", "x-a: $1"]),
        st.text(max_size=30),
    ),
    max_size=6,
)  # fmt: skip


@st.composite
def rule_file(draw: st.DrawFn) -> str:
    """Rules (some in if/endif blocks, some negated); one line in ten broken."""
    lines: list[str] = []
    for _ in range(draw(st.integers(0, 8))):
        rule = f"/{draw(PATTERNS)}/{draw(st.sampled_from(['', '', 'i', 'm']))} {draw(ACTIONS)}"
        match draw(st.integers(0, 9)):
            case 0:
                lines.append(draw(BROKEN))
            case 1:
                lines += [f"if /{draw(PATTERNS)}/", rule, "endif"]
            case 2:
                lines.append("!" + rule.replace("$1", "x").replace("$2", "y"))
            case _:
                lines.append(rule)
    return "\n".join(lines)


@FUZZ
@given(rule_file(), st.sampled_from(["regexp", "pcre"]), HEADERS)
def test_a_rule_file_is_a_table_or_a_table_error(
    text: str, flavour: str, headers: list[str]
) -> None:
    try:
        table = parse_table(text, flavour, name="header_checks", timeout=2.0)  # type: ignore[arg-type]
    except TableError as exc:
        error: TableError | None = exc
    else:
        error = None
    if error is not None:
        assert error.file == "header_checks"
        assert 1 <= error.line <= text.count("\n") + 1
        return
    for header in headers:
        found = table.lookup(header)
        assert found is None or isinstance(found, Match)
        table.lookup_body(header)  # a Match or None, as lookup
        raw = header.encode("utf-8", "surrogatepass")
        named = _FIELD.match(raw)
        if named is not None:  # a header: the by-name index gives what a plain lookup gives
            name = named.group(1).lower()
            assert table.lookup_header(raw, name) == table.lookup(raw)
            if not table.may_match(name):
                assert found is None
