"""Unit tests for the regexp:/pcre: table engine and the header_checks actions.

The Postfix behaviours asserted here were checked against Postfix 3.7.11 (postmap -q,
Debian postfix/postfix-pcre with PCRE2 10.42); test_postmap_differential.py checks the
matching itself against postmap on the whole corpus.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from filterd_header_checks.action_table import (
    Flavour,
    Match,
    Table,
    TableError,
    load_table,
    parse_table,
)
from filterd_header_checks.actions import (
    Action,
    ActionError,
    ActionKind,
    is_header,
    parse_action,
)

BOTH: list[Flavour] = ["regexp", "pcre"]


def value(table: Table, key: str | bytes) -> str | None:
    match = table.lookup(key)
    return None if match is None else match.value


# --- parse errors name the file and the line ------------------------------------------


@pytest.mark.parametrize("flavour", BOTH)
@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("/abc\n", 1, 'no closing regexp delimiter "/"'),
        ("# c\n\n/a/ DUNNO\n/a/q DUNNO\n", 4, 'unknown regexp option "q"'),
        ("/a/ DUNNO\n/(a/ DUNNO\n", 2, ""),
        ("/a/\n", 1, "no replacement text"),
        ("/a/ DEFER\n", 1, "unknown header_checks action 'DEFER'"),
        ("/a/ DEFER_IF_PERMIT try later\n", 1, "unknown header_checks action"),
        ("/a/ 550 no\n", 1, "unknown header_checks action '550'"),
        ("/(a)/ $1\n", 1, "the action name must be literal"),
        ("/(a)/ REJECT $2\n", 1, 'out of range replacement index "2"'),
        ("/(a)/ REJECT $0\n", 1, 'out of range replacement index "0"'),
        ("/(a)/ REJECT $1x\n", 1, 'non-numeric replacement index "1x"'),
        ("/(a)/ REJECT ${1\n", 1, "truncated macro reference"),
        ("/(a)/ REJECT costs $\n", 1, "empty macro name"),
        ("!/(a)/ REJECT $1\n", 1, "$number found in negative match"),
        ("/a/ FILTER smtp\n", 1, "need transport:destination"),
        ("/a/ FILTER\n", 1, "missing FILTER command argument"),
        ("/a/ REDIRECT postmaster\n", 1, "need user@domain"),
        ("/a/ BCC\n", 1, "need user@domain"),
        ("/a/ PREPEND\n", 1, "PREPEND action without text"),
        ("/a/ REPLACE\n", 1, "REPLACE action without text"),
        ("/a/ DUNNO\nendif\n", 2, "ENDIF without matching IF"),
        ("if /a/\n/b/ DUNNO\n", 1, "IF has no matching ENDIF"),
        ("if /a/\nif /b/\nendif\n", 1, "IF has no matching ENDIF"),
        ("if /a/ /b/ DUNNO\nendif\n", 1, "extra text after IF"),
        ("if /a/\nendif x\n", 2, "extra text after ENDIF"),
        ("foo /a/ DUNNO\n", 1, "unrecognized request"),
        ("  /a/ DUNNO\n", 1, "must not start with whitespace"),
        ("!\n", 1, "no regexp"),
        ("/a/ DUNNO\n/b/ WARN x\x00y\n", 2, "NUL byte"),
        ("/a/ DUNNO\n\n/(b/\n  DUNNO\n", 3, ""),  # a multi-line rule: its first line
        ("/a/ DUNNO\n# x\n  # y\n/[b/ DUNNO\n", 4, ""),
    ],
)
def test_errors_name_file_and_line(flavour: Flavour, text: str, line: int, message: str) -> None:
    with pytest.raises(TableError) as info:
        parse_table(text, flavour, name="/etc/postfix/hc")
    err = info.value
    assert (err.file, err.line) == ("/etc/postfix/hc", line)
    assert message in err.message
    assert str(err).startswith(f"/etc/postfix/hc, line {line}: ")


@pytest.mark.parametrize(
    ("flavour", "text", "message"),
    [
        ("pcre", "/a/!/b/ DUNNO", 'unknown regexp option "!"'),  # regexp-only syntax
        ("pcre", r"/\y/ DUNNO", r"unrecognized or unsupported escape \y"),
        ("pcre", "/a**/ DUNNO", ""),
        ("pcre", "/*a/ DUNNO", "quantifier does not follow a repeatable item"),
        ("pcre", "/(?R)/ DUNNO", "unsupported recursion"),
        ("pcre", "/(*UTF)a/ DUNNO", "unsupported (*VERB)"),
        ("pcre", r"/\p{L}/ DUNNO", "unsupported escape"),
        ("pcre", r"/[\d-z]/ DUNNO", "invalid range in character class"),
        ("pcre", "/[z-a]/ DUNNO", "range out of order"),
        ("pcre", "/[[.a.]]/ DUNNO", "POSIX collating elements are not supported"),
        ("pcre", r"/\x{100}/ DUNNO", "too large"),
        ("regexp", "/a/s DUNNO", 'unknown regexp option "s"'),
        ("regexp", "/*a/ DUNNO", "Invalid preceding regular expression"),
        ("regexp", "/^*a/ DUNNO", "Invalid preceding regular expression"),
        ("regexp", "/a{1/ DUNNO", "Unmatched \\{"),
        ("regexp", "/a{2,1}/ DUNNO", "Invalid content of \\{\\}"),
        ("regexp", "/[a-z-0]/ DUNNO", "Invalid range end"),
        ("regexp", "/[[:nope:]]/ DUNNO", "Invalid character class name"),
        ("regexp", "/[[.space.]]/ DUNNO", "Invalid collation character"),
        ("regexp", r"/\1(a)/ DUNNO", "Invalid back reference"),
        ("regexp", "/a\\/ DUNNO", "no closing regexp delimiter"),
        ("regexp", r"/\(a/x DUNNO", "Unmatched ( or \\("),
        ("regexp", r"/a\)/x DUNNO", "Unmatched ) or \\)"),
        ("regexp", "/[Z-a]/ DUNNO", "Invalid range end"),  # upper-cased to [Z-A]
        ("regexp", "/a**/x DUNNO", "Invalid preceding regular expression"),  # BRE
        ("regexp", r"/a*\{2\}/x DUNNO", "Invalid preceding regular expression"),
    ],
)
def test_pattern_errors(flavour: Flavour, text: str, message: str) -> None:
    with pytest.raises(TableError) as info:
        parse_table(text, flavour)
    assert info.value.line == 1
    assert message in info.value.message


def test_case_sensitive_reversed_range_is_fine_for_regexp() -> None:
    # Without the i flag there is no upper-casing, so [Z-a] is a valid range.
    table = parse_table("/^[Z-a]+$/i DUNNO", "regexp")
    assert value(table, "_^") == "DUNNO"


def test_load_table_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "header_checks"
    path.write_bytes(b"/^Subject: hi/ DUNNO\n/^X-/ NOPE\n")
    with pytest.raises(TableError) as info:
        load_table(path, "pcre")
    assert info.value.file == str(path)
    assert info.value.line == 2
    path.write_bytes(b"/^Subject: (.*)/ WARN $1\n")
    table = load_table(path, "pcre")
    assert (table.name, table.flavour, len(table)) == (str(path), "pcre", 1)
    assert value(table, "Subject: hi") == "WARN hi"


def test_unknown_flavour() -> None:
    with pytest.raises(ValueError, match="flavour"):
        parse_table("/a/ DUNNO", "hash")  # type: ignore[arg-type]


# --- table syntax -----------------------------------------------------------------------


@pytest.mark.parametrize("flavour", BOTH)
def test_continuation_lines_and_comments(flavour: Flavour) -> None:
    table = parse_table(
        "# leading comment\n"
        "\n"
        "/^Subject: (.*)/\n"
        "  WARN subject\n"
        "    # a comment inside the logical line is dropped\n"
        "\n"
        "\tis $1\n"
        "   \n"
        "/^X-Long:\n"
        "   two/ INFO spaces are part of the pattern\n"
        "/^Date:/ INFO date    \n",
        flavour,
    )
    # Physical lines are joined as they are: no separator, leading white space kept.
    assert value(table, "Subject: hi") == "WARN subject\tis hi"
    assert table.lookup("Subject: hi") == Match(
        value="WARN subject\tis hi", action=parse_action("WARN subject\tis hi"), line=3
    )
    assert value(table, "X-Long: two") is None
    assert value(table, "X-Long:   two") == "INFO spaces are part of the pattern"
    # Trailing white space of a logical line is trimmed.
    assert value(table, "Date: now") == "INFO date"


def test_crlf_table_file() -> None:
    table = parse_table(b"/^Subject:/ WARN crlf\r\n/^Date:/\r\n  INFO x\r\n", "pcre")
    assert value(table, "Subject: a") == "WARN crlf"
    assert value(table, "Date: a") == "INFO x"  # "/^Date:/\r  INFO x": \r is white space


@pytest.mark.parametrize("flavour", BOTH)
def test_other_delimiters_and_escaped_delimiters(flavour: Flavour) -> None:
    table = parse_table(
        "#^X-Path: /usr/bin# INFO a comment, never a rule: # cannot be a delimiter\n"
        ",^X-Path: /usr/bin, INFO comma-delimited\n"
        "|^X-Pipe: a\\|b| INFO escaped pipe is a literal pipe\n"
        "/^X-Slash: a\\/b/ INFO escaped slash\n"
        "%^X-Pct: (a|b)% INFO percent-delimited $1\n",
        flavour,
    )
    assert value(table, "X-Path: /usr/bin/env") == "INFO comma-delimited"
    assert value(table, "X-Pipe: a|b") == "INFO escaped pipe is a literal pipe"
    assert value(table, "X-Pipe: a") is None
    assert value(table, "X-Slash: a/b") == "INFO escaped slash"
    assert value(table, "X-Pct: b") == "INFO percent-delimited b"
    # "!" is negation, not a delimiter: here "^" becomes the delimiter and never closes.
    with pytest.raises(TableError, match='no closing regexp delimiter "\\^"'):
        parse_table("!^X-Bang: (a|b)! INFO bang\n", flavour)


@pytest.mark.parametrize("flavour", BOTH)
def test_if_endif_nesting(flavour: Flavour) -> None:
    table = parse_table(
        "if /^Received:/\n"
        "if !/localhost/\n"
        "/from ([^ ]+)/ INFO remote $1\n"
        "endif\n"
        "/./ DUNNO local\n"
        "endif\n"
        "IF/^X-/\n"
        "/spam/ REJECT spam header\n"
        "EndIf\n"
        "/^X-/ WARN x-header without spam\n",
        flavour,
    )
    assert value(table, "Received: from mx.example by us") == "INFO remote mx.example"
    assert value(table, "Received: from localhost by us") == "DUNNO local"
    assert value(table, "Received: by us") == "DUNNO local"
    assert value(table, "X-Spam-Flag: spam") == "REJECT spam header"
    assert value(table, "X-Spam-Flag: no") == "REJECT spam header"  # case-insensitive
    assert value(table, "X-Ham: yes") == "WARN x-header without spam"
    assert value(table, "Subject: from me") is None
    match = table.lookup("Received: from a.b by c")
    assert match is not None
    assert match.line == 3
    assert len(table) == 4


@pytest.mark.parametrize("flavour", BOTH)
def test_a_block_for_one_header_applies_to_that_header_only(flavour: Flavour) -> None:
    """``if /^Name:/`` blocks are set aside for other headers (a lookup need not look at
    them): what they decide is the same as evaluating them."""
    table = parse_table(
        "if /^Subject:/\n"
        "/./ WARN any subject\n"
        "endif\n"
        "if /./\n"
        "if /^X-Mailer:/\n"
        "/bulk/ REJECT bulk mailer\n"
        "endif\n"
        "/bulk/ WARN bulk elsewhere\n"
        "endif\n"
        "if !/^Subject:/\n"
        "/spam/ WARN spam outside the subject\n"
        "endif\n",
        flavour,
    )
    assert value(table, "Subject: hello") == "WARN any subject"
    assert value(table, "SUBJECT: hello") == "WARN any subject"  # case-insensitive
    assert value(table, "Subject: spam") == "WARN any subject"
    assert value(table, "X-Mailer: bulk 1.0") == "REJECT bulk mailer"
    assert value(table, "X-Other: bulk") == "WARN bulk elsewhere"
    assert value(table, "From: spam") == "WARN spam outside the subject"
    assert value(table, "From: a subject") is None


@pytest.mark.parametrize("flavour", BOTH)
def test_first_match_wins_and_negation(flavour: Flavour) -> None:
    table = parse_table(
        "/^Subject: .*python/ DUNNO\n"
        "/^Subject:/ REJECT no subjects\n"
        "!/@/ INFO no at sign\n"
        "! ! /^To:/ INFO double negation\n",
        flavour,
    )
    assert value(table, "Subject: python rocks") == "DUNNO"
    assert value(table, "Subject: hello") == "REJECT no subjects"
    assert value(table, "Date: today") == "INFO no at sign"
    assert value(table, "To: a@b") == "INFO double negation"
    assert value(table, "Cc: a@b") is None


def test_regexp_secondary_pattern() -> None:
    table = parse_table(
        "/^Subject:/!/python/ WARN without python\n/^Subject:/!!/python/ WARN with python\n",
        "regexp",
    )
    assert value(table, "Subject: hello") == "WARN without python"
    assert value(table, "Subject: python") == "WARN with python"


# --- actions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "optional"),
    [
        ("BCC archive@example.org", ActionKind.BCC, "archive@example.org"),
        ("DISCARD", ActionKind.DISCARD, ""),
        ("discard spam trap", ActionKind.DISCARD, "spam trap"),
        ("DUNNO", ActionKind.DUNNO, ""),
        ("OK", ActionKind.OK, ""),
        ("FILTER smtp:[127.0.0.1]:10025", ActionKind.FILTER, "smtp:[127.0.0.1]:10025"),
        ("HOLD", ActionKind.HOLD, ""),
        ("Hold\tfor review", ActionKind.HOLD, "for review"),
        ("IGNORE", ActionKind.IGNORE, ""),
        ("ignore even with text", ActionKind.IGNORE, "even with text"),
        ("INFO", ActionKind.INFO, ""),
        ("INFO  seen it", ActionKind.INFO, "seen it"),
        ("PASS trusted", ActionKind.PASS, "trusted"),
        ("PREPEND X-Tag: yes", ActionKind.PREPEND, "X-Tag: yes"),
        ("REDIRECT postmaster@example.org", ActionKind.REDIRECT, "postmaster@example.org"),
        ("REPLACE Subject: [spam]", ActionKind.REPLACE, "Subject: [spam]"),
        ("REJECT", ActionKind.REJECT, ""),
        ("reject 4.7.1 try later", ActionKind.REJECT, "4.7.1 try later"),
        ("STRIP", ActionKind.STRIP, ""),
        ("strip removed user agent", ActionKind.STRIP, "removed user agent"),
        ("WARN", ActionKind.WARN, ""),
        ("WaRn watch this", ActionKind.WARN, "watch this"),
    ],
)
def test_every_action_parses(text: str, kind: ActionKind, optional: str) -> None:
    action = parse_action(text)
    assert action.kind is kind
    assert action.raw == text
    assert action.text == optional
    assert action.command.upper() == kind.value
    # ...and as a table value in both flavours.
    for flavour in BOTH:
        table = parse_table(f"/^Subject:/ {text}\n", flavour)
        match = table.lookup("Subject: x")
        assert match is not None
        assert match.action == action


@pytest.mark.parametrize(
    "text", ["DEFER", "DEFER_IF_PERMIT x", "DEFER_IF_REJECT", "550 no", "PERMIT", "REJECTX", ""]
)
def test_unknown_actions(text: str) -> None:
    with pytest.raises(ActionError):
        parse_action(text)


def test_action_properties() -> None:
    stops = {k for k in ActionKind if parse_action(f"{k.value} a@b:c").stops_inspection}
    assert stops == {ActionKind.REJECT, ActionKind.DISCARD, ActionKind.PASS}
    deletes = {k for k in ActionKind if parse_action(f"{k.value} a@b:c").deletes_line}
    assert deletes == {ActionKind.IGNORE, ActionKind.STRIP}
    noops = {k for k in ActionKind if parse_action(f"{k.value} x").is_noop}
    assert noops == {ActionKind.DUNNO, ActionKind.OK}
    not_smtp = {
        k for k in ActionKind if not parse_action(f"{k.value} a@b:c").supported_in_smtp_checks
    }
    assert not_smtp == {
        ActionKind.BCC,
        ActionKind.DISCARD,
        ActionKind.FILTER,
        ActionKind.HOLD,
        ActionKind.PASS,
        ActionKind.REDIRECT,
        ActionKind.REJECT,
    }


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("REJECT", "5.7.1 message content rejected"),
        ("REJECT no spam", "5.7.1 no spam"),
        ("REJECT 5.7.0 policy", "5.7.0 policy"),
        ("REJECT 4.7.1   later", "4.7.1 later"),
        ("REJECT 4.7.1", "4.7.1 "),
        ("REJECT 2.0.0 odd", "4.0.0 odd"),  # cleanup(8) turns a non-4/5 class into 4
        ("REJECT 5.7.1000 too many digits", "5.7.1 5.7.1000 too many digits"),
        ("REJECT 5.7.1x not a code", "5.7.1 5.7.1x not a code"),
    ],
)
def test_reject_reason(text: str, reason: str) -> None:
    assert parse_action(text).reject_reason() == reason


def test_action_problems_depend_on_context() -> None:
    assert parse_action("PREPEND X-Ok: 1").problem() is None
    assert "headername: headervalue" in (parse_action("PREPEND not a header").problem() or "")
    assert parse_action("PREPEND not a header").problem("body") is None
    assert parse_action("REPLACE Subject : old style").problem() is None
    assert "user@domain" in (parse_action("BCC nobody").problem() or "")
    assert parse_action("DUNNO").problem() is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Subject: x", True),
        ("Subject:x", True),
        ("X-A : b", True),
        ("X-A\t: b", True),
        (": x", False),
        (" Subject: x", False),
        ("Sub ject: x", False),
        ("Subj\xe9ct: x", False),
        ("Subject", False),
        ("", False),
    ],
)
def test_is_header(text: str, expected: bool) -> None:
    assert is_header(text) is expected


def test_substituted_action_value_is_checked_at_runtime() -> None:
    table = parse_table(r"/^X-Fwd: (.*)/ REDIRECT $1", "pcre")
    match = table.lookup("X-Fwd: nobody")
    assert match is not None
    assert match.action.kind is ActionKind.REDIRECT
    assert "need user@domain" in (match.action.problem() or "")


# --- substitution ------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", BOTH)
def test_substitution_forms(flavour: Flavour) -> None:
    # $n, ${n}, $(n); an unmatched group is empty; $$ is a literal $; $01 is $1.
    table = parse_table(
        "/^Subject: ([^ ]+) (x)?(.*)/ WARN [$1] ${1}s $(3) [$2] $$1 $$ $01\n", flavour
    )
    assert value(table, "Subject: hello world") == "WARN [hello] hellos world [] $1 $ hello"


@pytest.mark.parametrize("flavour", BOTH)
def test_many_groups(flavour: Flavour) -> None:
    table = parse_table("/^(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)(k)/ INFO $10$11 ${1}0 $(11)\n", flavour)
    assert value(table, "abcdefghijk") == "INFO jk a0 k"


@pytest.mark.parametrize("flavour", BOTH)
def test_literal_dollars_without_groups(flavour: Flavour) -> None:
    table = parse_table("/^Subject:/ REJECT costs $$5 and $$$$\n", flavour)
    assert value(table, "Subject: x") == "REJECT costs $5 and $$"


def test_folded_header_capture_keeps_newlines() -> None:
    header = "Subject: first\n\tsecond"
    for flavour in BOTH:
        table = parse_table("/^Subject: (.*)$/ WARN $1\n", flavour)
        assert value(table, header) == "WARN first\n\tsecond"
    # pcre: "s" is on by default; toggled off, "." stops at the newline and "$" can
    # only match at the very end, so the pattern no longer matches.
    assert value(parse_table("/^Subject: (.*)$/s WARN $1", "pcre"), header) is None
    assert value(parse_table("/^Subject: (.*)/s WARN $1", "pcre"), header) == "WARN first"
    # regexp: "m" (REG_NEWLINE) stops "." and "[^...]" at newlines, "^"/"$" see lines.
    table = parse_table("/^\tsecond$/m WARN line\n/^Subject: ([^x]*)/m WARN $1\n", "regexp")
    assert value(table, header) == "WARN line"
    assert value(table, "Subject: a\nb") == "WARN a"


# --- case rules --------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", BOTH)
def test_case_insensitive_by_default_and_i_toggles(flavour: Flavour) -> None:
    table = parse_table("/^subject: (HELLO)/ WARN $1\n/^Date:/i INFO exact\n", flavour)
    assert value(table, "SUBJECT: hello") == "WARN hello"  # captures keep the input's case
    assert value(table, "Date: x") == "INFO exact"
    assert value(table, "DATE: x") is None


@pytest.mark.parametrize("flavour", BOTH)
def test_only_ascii_letters_have_case(flavour: Flavour) -> None:
    table = parse_table("/café/ WARN cafe\n", flavour)
    assert value(table, "Subject: CAFé") == "WARN cafe"
    assert value(table, "Subject: CAFÉ") is None
    assert value(table, b"Subject: caf\xe9") is None  # bytes are bytes: latin-1 is not UTF-8


def test_regexp_glibc_icase_quirks() -> None:
    # glibc upper-cases pattern and subject for REG_ICASE, except the byte after "\".
    table = parse_table(r"/^\d$/ WARN d" + "\n" + r"/^\D$/ WARN D" + "\n", "regexp")
    assert value(table, "d") == "WARN D"  # \d never matches; \D matches d and D
    assert value(table, "D") == "WARN D"
    assert value(table, "1") is None  # \d is no digit class in POSIX regexps
    assert value(parse_table(r"/^\d$/i WARN d", "regexp"), "d") == "WARN d"
    table = parse_table("/^[+-z]+$/ WARN icase\n", "regexp")
    assert value(table, "a+Z") == "WARN icase"
    assert value(table, "_") is None  # [+-z] became [+-Z]
    table = parse_table("/^[+-z]+$/i WARN exact\n", "regexp")
    assert value(table, "_") == "WARN exact"
    table = parse_table("/^[[:lower:]]$/ WARN lower\n", "regexp")
    assert value(table, "A") == "WARN lower"  # upper and lower mean alpha under icase


def test_pcre_class_case_rules() -> None:
    table = parse_table("/^[^[:lower:]]$/ WARN x\n/^[[:^upper:]]$/ WARN y\n", "pcre")
    assert value(table, "a") is None
    assert value(table, "A") is None
    assert value(table, "1") == "WARN x"
    table = parse_table("/^[^a]$/ WARN not-a\n", "pcre")
    assert value(table, "A") is None


def test_pcre_flags() -> None:
    assert value(parse_table("/b/A WARN x", "pcre"), "ab") is None
    assert value(parse_table("/a/A WARN x", "pcre"), "ab") == "WARN x"
    assert value(parse_table("/(a+)/U WARN $1", "pcre"), "aaa") == "WARN a"
    assert value(parse_table("/(a+?)/U WARN $1", "pcre"), "aaa") == "WARN aaa"
    assert value(parse_table("/a$/ WARN x", "pcre"), "a\n") == "WARN x"
    assert value(parse_table("/a$/E WARN x", "pcre"), "a\n") is None
    assert value(parse_table("/^b/m WARN x", "pcre"), "a\nb") == "WARN x"
    assert value(parse_table("/a b/x WARN x", "pcre"), "ab") == "WARN x"
    assert value(parse_table("/ab/X WARN x", "pcre"), "ab") == "WARN x"  # ignored, as PCRE2
    assert value(parse_table("/(?-i)ab/ WARN x", "pcre"), "AB") is None


def test_pcre_escapes_and_quantifier_corners() -> None:
    assert value(parse_table(r"/^\N{2}$/ WARN x", "pcre"), "ab") == "WARN x"
    assert value(parse_table(r"/^a\Q\E+$/ WARN x", "pcre"), "aaa") == "WARN x"
    assert value(parse_table(r"/^x{,2}$/ WARN x", "pcre"), "x{,2}") == "WARN x"  # literal
    assert value(parse_table(r"/^\Qa.b\E$/ WARN x", "pcre"), "a.b") == "WARN x"
    assert value(parse_table(r"/^\Qa.b\E$/ WARN x", "pcre"), "axb") is None
    assert value(parse_table(r"/^\x41\101\o{101}\cA$/i WARN x", "pcre"), "AAA\x01") == "WARN x"
    assert value(parse_table(r"/^(?<n>a)\k<n>\g{-1}\g1$/ WARN x", "pcre"), "aAaa") == "WARN x"
    assert value(parse_table(r"/^(?<n>a)\k<n>$/ WARN x", "pcre"), "aA") == "WARN x"
    assert value(parse_table(r"/^(?<n>a)\k<n>$/i WARN x", "pcre"), "aA") is None


def test_regexp_extended_corners() -> None:
    assert value(parse_table("/^a{,2}b$/ WARN x", "regexp"), "aab") == "WARN x"  # {0,2}
    assert value(parse_table("/^(a+?)b/ WARN $1", "regexp"), "aab") == "WARN aa"  # (a+)?
    assert value(parse_table("/^a)$/ WARN x", "regexp"), "a)") == "WARN x"
    assert value(parse_table("/^$|x/ WARN x", "regexp"), "x") == "WARN x"
    assert value(parse_table(r"/\<foo\>/ WARN x", "regexp"), "a foo b") == "WARN x"
    assert value(parse_table(r"/\<foo\>/ WARN x", "regexp"), "afoo") is None


def test_regexp_basic_syntax_with_x_toggled() -> None:
    # BRE: \( \) group, \1 back-reference, "+" and "|" are literals.
    table = parse_table(r"/^\(a\)\1* x+y|z$/x WARN $1" + "\n", "regexp")
    assert value(table, "aaa x+y|z") == "WARN a"
    assert value(table, "aa xy") is None


# --- lookups -----------------------------------------------------------------------------


def test_keys_str_and_bytes_and_8bit() -> None:
    table = parse_table(b"/^Subject: (.*)/ WARN $1\n", "pcre")
    assert value(table, "Subject: café") == "WARN café"
    assert value(table, "Subject: café".encode()) == "WARN café"
    # Invalid UTF-8 round-trips through surrogateescape.
    raw = b"Subject: \xe9t\xe9"
    decoded = raw.decode("utf-8", "surrogateescape")
    assert value(table, raw) == "WARN " + decoded[9:]
    assert value(table, decoded) == "WARN " + decoded[9:]


@pytest.mark.parametrize("flavour", BOTH)
def test_empty_and_nul_keys(flavour: Flavour) -> None:
    table = parse_table("/^/ WARN anything\n/^a$/ WARN a\n", flavour)
    assert table.lookup("") is None  # empty lines never match
    assert value(table, "a\x00b") == "WARN anything"
    assert table.lookup("\x00b") is None


def test_lookup_body() -> None:
    table = parse_table("/^hello$/ WARN body\n", "regexp")
    assert value(table, "hello\n") is None  # regexp "$" is the very end
    match = table.lookup_body("hello\r\n")
    assert match is not None
    assert match.value == "WARN body"
    assert table.lookup_body(b"hello\n") == match
    assert table.lookup_body("\n") is None


def test_query_and_generic_tables() -> None:
    table = parse_table(
        "/^postmaster@/ OK\n/^(.*)-outgoing@(.*)$/ 550 Use ${1}@${2} instead\n",
        "regexp",
        check_actions=False,
    )
    assert table.query("owner-list-outgoing@example.org") == (
        "550 Use owner-list@example.org instead"
    )
    assert table.query("postmaster@x") == "OK"
    assert table.query("nobody@x") is None
    with pytest.raises(ActionError):
        table.lookup("a-outgoing@b")


def test_timeout_counts_as_neither_match_nor_non_match() -> None:
    table = parse_table(
        "/^(a|aa)+$/ REJECT slow\n!/^(a|aa)+$/ REJECT slow negated\n/a/ WARN reached\n",
        "pcre",
        timeout=0.02,
    )
    assert value(table, "a" * 60 + "b") == "WARN reached"


def test_repr_and_len() -> None:
    table = parse_table("if /a/\n/b/ DUNNO\nendif\n/c/ DUNNO\n", "pcre", name="t")
    assert len(table) == 2
    assert repr(table) == "<Table pcre:t (2 rules)>"


def test_lookup_speed_with_50_rules() -> None:
    rules = "".join(f"/^X-Rule-{i}: .*(spam|ham){i}/ REJECT rule $1\n" for i in range(50))
    header = "Received: from a.example.org\n\tby b.example.net with ESMTP id 12345\n\tfor <x@y>"
    for flavour in BOTH:
        table = parse_table(rules, flavour)
        start = time.perf_counter()
        for _ in range(1000):
            assert table.lookup(header) is None
        elapsed = time.perf_counter() - start
        assert elapsed < 1.0, f"{flavour}: {elapsed * 1000:.0f} us per lookup of 50 rules"


def test_action_is_frozen() -> None:
    action = parse_action("WARN x")
    with pytest.raises(AttributeError):
        action.text = "y"  # type: ignore[misc]
    assert isinstance(action, Action)


@pytest.mark.parametrize(
    ("source", "anchored"),
    [
        (rb"\AFROM\x3a", True),
        (rb"\A(FROM|TO)\x3a", True),
        (rb"\A[|]\x7c", True),
        (rb"\A[]|]x", True),
        (rb"\A[^]|]x", True),
        (rb"\AFROM|TO", False),
        (rb"\A(A)|B", False),
        (rb"FROM\x3a", False),
        (rb"\x40\A", False),
    ],
)
def test_which_patterns_only_match_at_the_start(source: bytes, anchored: bool) -> None:
    from filterd.sdk.patterns.table import _starts_anchored

    assert _starts_anchored(source) is anchored


@pytest.mark.parametrize("flavour", BOTH)
def test_screened_runs_answer_as_their_rules(flavour: Flavour) -> None:
    """Runs of ``^From:`` rules are screened by one match; rules between them that may match
    anywhere (or that are negated) keep their place in the order."""
    table = parse_table(
        "/^From:.*alpha/ WARN alpha\n"
        "/^From:.*beta/ WARN beta\n"
        "/evil/ REJECT evil anywhere\n"
        "/^From:.*gamma/ WARN gamma\n"
        "/^From: x|y/ WARN x or y anywhere\n"
        "!/^From:/ INFO not a From header\n"
        "/^From:.*delta/ WARN delta\n"
        "/^From:.*epsilon/ WARN epsilon\n",
        flavour,
    )
    assert value(table, "From: beta alpha") == "WARN alpha"
    assert value(table, "From: beta") == "WARN beta"
    assert value(table, "From: gamma evil") == "REJECT evil anywhere"
    assert value(table, "From: gamma") == "WARN gamma"
    assert value(table, "From: delta y") == "WARN x or y anywhere"
    assert value(table, "From: epsilon") == "WARN epsilon"
    assert value(table, "From: delta") == "WARN delta"
    assert value(table, "From: nothing") is None
    assert value(table, "To: evil") == "REJECT evil anywhere"
    assert value(table, "To: friend") == "INFO not a From header"
