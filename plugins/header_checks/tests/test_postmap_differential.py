"""Differential test: our regexp:/pcre: engine against Postfix's own ``postmap -q``.

For every table below and both flavours (where the pattern is valid in both), every key
is looked up once by Postfix and once by :mod:`filterd_header_checks.action_table`; the values
must be byte-identical, and a key that no rule matches must be unmatched in both.

Keys:

* header keys -- every logical header of the 48 corpus messages (CRLF made LF, as
  smtpd(8) does before cleanup(8) sees it) plus a block of synthetic headers (8-bit
  text, folding, odd spacing). They go to ``postmap -h -q -`` as one header block, so
  Postfix itself unfolds them: a folded header becomes one key with its embedded
  newlines, exactly what header_checks sees. The test reads postmap's output key by
  key against our own unfolding, so a different unfolding is a failure too.
* line keys -- single-line strings (body-like lines, probes for pattern corners) fed
  to plain ``postmap -q -``, one per line.

Every table gets a final sentinel rule ``/^/ __NOMATCH__`` for postmap only, so each
key yields exactly one output line and output lines can be paired with keys even when
a value contains a newline captured from a folded header; our engine gets the table
without the sentinel and must return None exactly where postmap printed the sentinel.

A second test feeds malformed rules to both and checks that Postfix warns about (and
skips) exactly the rules we refuse with a TableError, on the same line.

postmap runs with ``smtputf8_enable = no``: cleanup(8) opens header_checks tables
without UTF-8 enforcement, so keys are matched as raw bytes; this configuration makes
``postmap -q`` do the same.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from filterd_header_checks.action_table import Flavour, TableError, parse_table

from tests.support.data import MAIL_CORPUS

CORPUS_DIR = MAIL_CORPUS
SENTINEL = b"__NOMATCH__"
BOTH: tuple[Flavour, ...] = ("regexp", "pcre")
REGEXP: tuple[Flavour, ...] = ("regexp",)
PCRE: tuple[Flavour, ...] = ("pcre",)


@dataclass(frozen=True)
class Case:
    name: str
    table: bytes
    flavours: tuple[Flavour, ...] = BOTH
    never: bool = False  # the table matches no key at all (so it is not vacuous by mistake)


def _rule(
    name: str, line: str, flavours: tuple[Flavour, ...] = BOTH, *, never: bool = False
) -> Case:
    return Case(name, line.encode() + b"\n", flavours, never)


CASES: list[Case] = [
    # --- single rules valid in both flavours ---------------------------------------
    _rule("received-ignore", r"/^Received: .*/ IGNORE"),
    _rule("user-agent-ignore", r"/^User-Agent: .*/ IGNORE"),
    _rule("subject-spam", r"/^Subject:.*(viagra|test)/ REJECT spam $1"),
    _rule("subject-capture", r"/^Subject: (.*)$/ WARN subject is $1"),
    _rule("case-sensitive", r"/^Subject:/i INFO exact case"),
    _rule("case-sensitive-lower", r"/^subject:/i INFO lower-case name"),
    _rule("from-domain", r"/^(From|To|Cc): .*@([a-z0-9.-]+)/ INFO domain $2 in $1"),
    _rule("negation", r"!/^(Received|From|To|Subject|Date):/ DUNNO"),
    _rule(
        "message-id",
        r"/^Message-ID: <([^@>]+)@([^>]+)>/ REPLACE Message-ID: <$1@example.invalid> $2",
    ),
    _rule("escaped-delimiter", r"/^Content-Type: multipart\/([a-z]+);/ INFO multipart $1"),
    _rule("other-delimiter", r"%^Content-Type: text/(plain|html)% INFO text $1"),
    _rule("x-header-strip", r"/^X-[a-z0-9-]+:/ STRIP x-header"),
    _rule("weekday", r"/^Date: (Mon|Tue|Wed|Thu|Fri|Sat|Sun), +([0-9]+) / INFO $1 the ${2}th"),
    _rule("empty-value", r"/^[[:alpha:]-]+: *$/ WARN empty header"),
    _rule("four-digits", r"/[[:digit:]]{4}/ INFO has four digits"),
    _rule("cte", r"/^Content-Transfer-Encoding: *(base64|quoted-printable)/ INFO cte $1"),
    _rule("received-from-by", r"/^Received: from ([^ ]+) .*by ([^ ]+)/ INFO from $1 by $2"),
    _rule("backslash-n", r"/^Received:.*\n/ INFO backslash-n", PCRE),
    # regexp: "\n" is a literal "n" from the un-folded pattern, never matched under icase
    _rule("backslash-n-posix", r"/^Received:.*\n/ INFO backslash-n", REGEXP, never=True),
    _rule("received-id", r"/^Received:.*[[:space:]]id ([[:alnum:]]+)/ INFO id $1"),
    _rule("to-bcc", r"/^To: .*<([^>@]*)@[^>]*>$/ BCC archive+$1@example.org"),
    _rule("subject-tag", r"/^(Subject): *(.*)/ REPLACE $1: [tagged] $2"),
    _rule("encoded-word", r"/^Subject: =\?([^?]+)\?([BQbq])\?/ INFO charset $1 encoding $2"),
    _rule("null-sender", r"/^Return-Path: <>$/ DISCARD bounce"),
    _rule("hold", r"/^From: .*(aperson|barry)@/ HOLD held $1"),
    _rule("prepend", r"/^X-Mailer: (.+)/ PREPEND X-Original-Mailer: $1"),
    _rule("dunno", r"/^(Received|Delivered-To):/ DUNNO"),
    _rule("mime-ok", r"/^Mime-Version: 1\.0$/ OK"),
    _rule("mime-case-sensitive", r"/^Mime-Version: 1\.0$/i DUNNO"),
    _rule("long-subject", r"/^Subject: .{20,}/ WARN long subject"),
    _rule("short-subject", r"/^Subject: .{0,10}$/ WARN short subject"),
    _rule("eight-bit", r"/^[^:]+: .*[^[:print:][:space:]]/ WARN 8-bit or control"),
    _rule("utf8-literal", "/é|ü|ä/ WARN umlaut"),
    _rule("filter", r"/^Subject:.*python/ FILTER smtp:[127.0.0.1]:10025"),
    _rule("redirect", r"/^(Sender|Reply-To): +(.*)/ REDIRECT postmaster@example.org"),
    _rule("braces-and-dollars", r"/^Subject: (Re|Fwd): (.*)/ INFO ${1}-reply $(2) costs $$5"),
    _rule("content-header", r"/^(Content-[a-z]+): (.*)$/ INFO $2 in $1"),
    _rule("list-header", r"/^List-[a-z]+: <(mailto|https?):/ INFO list $1"),
    _rule("two-part-name", r"/^([a-z]+)-([a-z]+): / INFO two-part $1 $2"),
    _rule("repeated-group", r"/^([A-Z][a-z]*)(-[A-Z][a-z]*)*:/ INFO name $1 last $2"),
    _rule("posix-submatch", r"/(a|ab)(c|bcd)(d*)/ INFO $1-$2-$3"),
    _rule("submatch-around", r"/^Subject: (.*)(test|viagra|python)(.*)$/ INFO $1|$2|$3"),
    _rule("submatch-split", r"/^(.*)(@)(.*)$/ INFO $1|$3"),
    _rule("submatch-name-value", r"/^([^:]*): *(.*)/ INFO $1|$2"),
    _rule("submatch-star-group", r"/([a-z]+)*$/ INFO $1"),
    _rule("submatch-digits", r"/([0-9]+)(.*)([0-9]+)/ INFO $1|$2|$3"),
    _rule("submatch-two-stars", r"/(.*)(.*)/ INFO $1|$2"),
    _rule("submatch-alternatives", r"/((a)|(b))+/ INFO $1|$2|$3"),
    _rule("submatch-optional", r"/(.+)?(.)/ INFO $1|$2"),
    _rule("submatch-last-words", r"/([^ ]*) ?([^ ]*)$/ INFO $1|$2"),
    _rule("submatch-address", r"/(<)?([a-z.]+@[a-z.]+)(>)?/ INFO $1|$2|$3"),
    _rule("submatch-prefix", r"/(ab|a)(bc|c)?/ INFO $1|$2"),
    _rule("optional-group", r"/^(X-[a-z]+)(-[a-z]+)?: (.*)/ INFO $1|$2|$3"),
    _rule("unset-group", r"/^(Subject)|^(Date)/ INFO [$1][$2]"),
    _rule("anything", r"/./ INFO any"),
    _rule("everything-captured", r"/^(.*)$/ WARN $1"),
    _rule("trailing-space", r"/[ \t]$/ WARN trailing blank"),
    _rule("address-list", r"/^(To|Cc):.*,.*,/ WARN three or more recipients"),
    _rule("bracket-corners", r"/[]a-]x|[^]b-]y/ INFO bracket"),
    _rule("interval", r"/^X-[A-Za-z]{3,5}-/ INFO short x"),
    _rule("alternation-empty", r"/^(Subject|):/ INFO empty alternative [$1]"),
    _rule("question-mark", r"/^Subject: Re?:/ INFO re"),
    _rule("upper-class", r"/^[[:upper:]][[:lower:]]+:/ INFO one word name"),
    _rule("upper-class-cs", r"/^[[:upper:]][[:lower:]]+:/i INFO one word name (case)"),
    _rule("bare-dollar-at-end", r"/^Subject:.*\$$/ INFO ends with dollar"),
    # --- table syntax ----------------------------------------------------------------
    Case(
        "if-endif-nesting",
        b"if /^Received:/\n"
        b"if !/localhost/\n"
        b"/from ([^ ]+)/ INFO remote $1\n"
        b"endif\n"
        b"/./ DUNNO local\n"
        b"endif\n"
        b"IF /^Subject:/\n"
        b"/python/ WARN python subject\n"
        b"ENDIF\n"
        b"/^Subject:/ REJECT no subjects\n",
    ),
    Case(
        "if-negated-and-order",
        b"if !/^(Received|Subject|From|To|Date):/\n"
        b"/^X-/ INFO x-header\n"
        b"/^Content-/ INFO content header\n"
        b"endif\n"
        b"/^Subject: .*python/ DUNNO\n"
        b"/^Subject:/ HOLD\n"
        b"!/@/ INFO no at sign\n",
    ),
    Case(
        "continuation-and-comments",
        b"# a comment\n"
        b"\n"
        b"/^(From|To):/\n"
        b"  INFO address header\n"
        b"   # an indented comment inside the logical line\n"
        b"\t  continued\n"
        b"/^Subject:\n"
        b"  x/ WARN never (pattern has spaces)\n"
        b"\n"
        b"/^Date:/ INFO date   \n",
    ),
    Case("double-negation", b"! ! /^Subject:/ INFO not not\n! /^Date:/ INFO not date\n"),
    Case("case-insensitive-keywords", b"If /^X-/\n/spam/ REJECT\nEndIf\n/^Date/ dunno\n"),
    Case("lower-case-action", b"/^Subject:(.*)/ reject lower-case action$1\n"),
    # --- regexp: only (glibc POSIX) ------------------------------------------------
    _rule("word-start", r"/\<(re|fwd?):/ INFO reply-ish $1", REGEXP),
    _rule("word-boundary", r"/^Subject:.*\bthe\b/ INFO the", REGEXP),
    _rule("icase-range-quirk", r"/^[+-z]+:/ INFO plus-to-z", REGEXP),
    _rule("icase-range-cs", r"/^[+-z]+:/i INFO plus-to-z case-sensitive", REGEXP),
    _rule("escaped-S", r"/^\Subject:/ INFO escaped S", REGEXP),
    _rule("escaped-lower-never", r"/\d|\e/ INFO never under icase", REGEXP, never=True),
    _rule("escaped-lower-cs", r"/\e/i INFO literal e", REGEXP),
    _rule("gnu-word-classes", r"/^(\w+)-(\w+):\s+(\S+)/ INFO $1/$2/$3", REGEXP),
    _rule("buffer-anchors", r"/\`Sub.*[0-9]\'/ INFO buffer anchors", REGEXP),
    _rule("backref", r"/(.)\1\1/ INFO triple $1", REGEXP),
    _rule("stacked-quantifier", r"/^(X-[a-z]+?)-/ INFO stacked $1", REGEXP),
    _rule("newline-mode", r"/^[[:space:]]+(by|for) ([^ ]+)$/m INFO continuation $1 $2", REGEXP),
    _rule("newline-mode-negated-class", r"/^Received:[^;]*$/m INFO no semicolon", REGEXP),
    _rule("dot-matches-newline", r"/^Received:.*for/ INFO for", REGEXP),
    _rule("dot-no-newline", r"/^Received:.*for/m INFO for on first line", REGEXP),
    _rule("basic-syntax", r"/^\(Subject\): \(.*\)$/x INFO BRE $1 $2", REGEXP),
    _rule("basic-interval", r"/^X-[a-z]\{3,\}:/x INFO BRE interval", REGEXP),
    _rule("basic-literals", r"/^*+?|{}/x INFO BRE literals", REGEXP),
    _rule("secondary-pattern", r"/^Subject:/!/python/ WARN subject without python", REGEXP),
    _rule("secondary-positive", r"/^Subject:/!!/python/ WARN subject with python", REGEXP),
    _rule("equivalence-class", r"/^[[=s=]][[.u.]]b/ INFO equivalence", REGEXP),
    _rule("unmatched-paren", r"/\)$/ INFO ends with paren", REGEXP),
    # --- pcre: only ------------------------------------------------------------------
    _rule("perl-classes", r"/^Subject:\s+(\S+)/ INFO first word $1", PCRE),
    _rule("folded-by", r"/^Received:.*\n\s+by (\S+)/ INFO by $1", PCRE),
    _rule("lookahead", r"/^(?!X-)([\w-]+):/ INFO not x $1", PCRE),
    _rule("year", r"/^Date:.*\b(\d{4})\b/ INFO year $1", PCRE),
    _rule("lazy", r"/^Subject:.*?(\w+)$/ INFO last word $1", PCRE),
    _rule("multiline", r"/^\s+by (\S+)/m INFO continuation by $1", PCRE),
    _rule("no-dotall", r"/^Received:.*for/s INFO for on first line", PCRE),
    _rule("dollar-endonly", r"/^Subject: .*\w$/E INFO ends in a word char", PCRE),
    _rule("anchored", r"/[a-z]+:/A INFO anchored", PCRE),
    _rule("ungreedy", r"/^subject: (.+)/Ui INFO ungreedy $1", PCRE),
    _rule("ungreedy-inverted", r"/^Subject: (.+?)$/U INFO greedy again $1", PCRE),
    _rule("inline-caseless", r"/^(?-i)subject|^(?i)DATE/ INFO inline", PCRE),
    _rule("quoted", r"/^Subject: \Q[PATCH]\E/ INFO patch", PCRE),
    _rule("named-group", r"/^Received:.*\bid\s+(?<id>\w+)/ INFO id $1", PCRE),
    _rule("hex-escapes", r"/^Subject:\x20\x52/ INFO subject starts with R", PCRE),
    _rule(
        "extended",
        r"/^Content-Type: \s* text \/ (plain|html) # comment" + "\n"
        r"  \b/x INFO extended $1",
        PCRE,
    ),
    _rule("horizontal-space", r"/\h+$/ WARN trailing blank", PCRE),
    _rule("lookbehind", r"/^X-.*(?<!\.com)$/ INFO not .com", PCRE),
    _rule("atomic-possessive", r"/^(?>[A-Za-z-]+):\s*+(\d++)/ INFO number $1", PCRE),
    _rule("backref", r"/(.)\1\1/ INFO triple $1", PCRE),
    _rule("branch-reset", r"/^(?|From: (.*)|To: (.*))$/ INFO addr $1", PCRE),
    _rule("conditional", r"/^(<)?[a-z]+@[a-z.]+(?(1)>)$/ INFO bare address", PCRE),
    _rule("newline-escape", r"/\R\t/ INFO tab-folded", PCRE),
    _rule("non-ascii-class", r"/[\x80-\xff]{2}/ WARN 8-bit pair", PCRE),
    _rule("dollar-before-newline", r"/^Subject: abc$/ INFO abc", PCRE),
]

SYNTHETIC_HEADERS = [
    "Subject: café au lait".encode(),
    b"Subject: \xe9t\xe9 in latin-1",
    "Subject: ÉTÉ upper".encode(),
    b"X-Spam-Flag: YES",
    b"Subject: Re: Fwd: [PATCH] test viagra",
    b"subject: lower-case header name",
    b"SUBJECT: UPPER CASE",
    b"X-Folded: first\n second line\n\tthird",
    b"Received: from localhost (localhost [127.0.0.1])\n\tby mx.example.org (Postfix) with ESMTP"
    b" id ABC123\n\tfor <x@example.org>; Mon, 1 Jan 2024 00:00:00 +0000",
    b"Received: from mail.example.net (mail.example.net [192.0.2.7])\n"
    b"        by mx.example.org (Postfix) with ESMTPS id 4Abc\n"
    b"        for <user@example.org>; Tue, 2 Jan 2024 10:00:00 +0100 (CET)",
    b"X-Empty:",
    b"X-Space: ",
    b"X-Trailing: value   ",
    b"X-Tab:\tvalue",
    b"To: Some One <one@example.org>, two@example.net, <three@example.com>",
    b'Content-Type: multipart/mixed; boundary="xyz"',
    b"Content-Type: text/plain; charset=utf-8",
    b"Message-ID: <abc.def@host.example>",
    b"X-Weird: $1 ${1} $$ \\ / | ( ) [ ] { } ^ . * + ?",
    b"Return-Path: <>",
    b"Date: Mon, 1 Jan 2024 00:00:00 +0000",
    b"X-Mailer: The Bat! (v3.5)",
    b"X-Long: " + b"a" * 1000,
    b"Subject: abcd",
    b"Subject: abc",
    b"X-Ctrl: a\x01b\x7fc",
    b"Subject:no space",
    b"Subject : obsolete space before the colon",
    b"Subject: Price $5 $",
    b"From: <bare@example.org>",
    b"From: bare@example.org",
    b"X-Mailer-Version: 1.2.3",
    b"Sub-Topic: things",
    b"X-Ip: 192.0.2.1 (Example.Com)",
    b"X-Url: http://example.com",
    b"X-Count: 123456",
    b"X-Folded-Empty:\n\tcontinued only",
    b"Content-Transfer-Encoding: base64",
    b"Subject: =?utf-8?B?w6k=?=",
    b"Subject: [PATCH] fix it",
    b"X-Relayed: yes\n\tby relay.example.org",
]

LINE_KEYS = [
    b"Hello world",
    b"http://example.com/viagra",
    b"<iframe src=cid:x height=0 width=0>",
    "caf\u00e9".encode(),
    b"\xe9t\xe9",
    b"abcd",
    b"aaa",
    b"a+b",
    b"\\d",
    b"d",
    b"D",
    b"e",
    b"E",
    b"_",
    b"tab\there",
    b"  leading spaces",
    b"trailing  ",
    b"$",
    b"x" * 3000,
    b"Subject: test",
    b"subject: TEST",
    b"Subject:",
    b"Date: Sun, 12 May 2002 08:56:15 +0100",
    b"From: aperson@dom.ain",
    b"Received: from a by b",
    b"X-Spam: yes",
    b"-- ",
    b"--boundary--",
    b"=?utf-8?B?w6k=?=",
    b"Sub-Topic: x",
    b"SUB: x",
    b"sSub: x",
    b"+Z: x",
    b"_: x",
    b"aa)",
    b"subject: abc def",
    b"*+?|{}",
    b"<bare@example.org>",
    b"bare@example.org",
    b"<bare@example.org",
]


_HEADER_START = re.compile(rb"([!-9;-~]+)[ \t]*:")


def logical_headers(message: bytes) -> list[bytes]:
    """The primary header block as cleanup(8) presents it to header_checks.

    A header starts with a label of printable ASCII and a colon (is_header()); blanks
    between label and colon are removed (mime_state(3) normalises the obsolete
    "name : value" form to "name: value"); continuation lines are appended with their
    newline and leading white space; the first other line ends the header block.
    """
    headers: list[bytes] = []
    for line in message.replace(b"\r\n", b"\n").split(b"\n"):
        if line[:1] in (b" ", b"\t") and headers:
            headers[-1] += b"\n" + line
            continue
        start = _HEADER_START.match(line)
        if start is None:
            break
        headers.append(start.group(1) + b":" + line[start.end() :])
    return headers


def corpus_header_keys() -> list[bytes]:
    files = sorted(CORPUS_DIR.glob("*.txt"))
    assert len(files) >= 48, f"expected the 48 corpus messages in {CORPUS_DIR}"
    keys: list[bytes] = []
    for path in files:
        message = path.read_bytes()
        if message.startswith(b"From "):  # mbox separator: sendmail(1) drops it
            message = message.split(b"\n", 1)[1]
        keys.extend(logical_headers(message))
    return keys


@pytest.fixture(scope="module")
def postmap_env(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    postmap = shutil.which("postmap") or "/usr/sbin/postmap"
    if not os.path.exists(postmap):
        pytest.fail("postmap(1) is required (deploy/install-system-packages.sh installs it)")
    conf = tmp_path_factory.mktemp("postfix-conf")
    (conf / "main.cf").write_text("compatibility_level = 3.6\nsmtputf8_enable = no\n")
    types = subprocess.run(
        ["postconf", "-c", str(conf), "-m"], capture_output=True, check=True
    ).stdout.split()
    for needed in (b"regexp", b"pcre"):
        if needed not in types:
            pytest.fail(f"Postfix lacks {needed.decode()}: tables (install postfix-pcre)")
    return postmap, conf


def _postmap(
    env: tuple[str, Path], flavour: Flavour, table: Path, stdin: bytes, header_mode: bool
) -> tuple[bytes, bytes]:
    postmap, conf = env
    args = [postmap, "-c", str(conf)]
    if header_mode:
        args.append("-h")
    args += ["-q", "-", f"{flavour}:{table}"]
    proc = subprocess.run(args, input=stdin, capture_output=True, timeout=60)
    assert proc.returncode in (0, 1), proc.stderr.decode(errors="replace")
    return proc.stdout, proc.stderr


def _pair_output(output: bytes, keys: Sequence[bytes]) -> Iterator[tuple[bytes, bytes]]:
    """Split postmap output into (key, value), one per key, in order.

    Each line is ``key<TAB>value<LF>``; a value may contain a newline (captured from a
    folded header), so a value ends where the next expected key begins.
    """
    pos = 0
    for index, key in enumerate(keys):
        prefix = key + b"\t"
        assert output.startswith(prefix, pos), (
            f"postmap presented key #{index} differently: expected {key!r}, "
            f"got {output[pos : pos + len(key) + 40]!r}"
        )
        start = pos + len(prefix)
        if index + 1 < len(keys):
            end = output.find(b"\n" + keys[index + 1] + b"\t", start)
            assert end >= 0, f"no output for key #{index + 1} {keys[index + 1]!r}"
        else:
            assert output.endswith(b"\n"), output[-80:]
            end = len(output) - 1
        yield key, output[start:end]
        pos = end + 1
    assert pos == len(output), f"unexpected trailing output {output[pos:]!r}"


def _cases() -> Iterator[tuple[Case, Flavour]]:
    for case in CASES:
        for flavour in case.flavours:
            yield case, flavour


def test_engine_agrees_with_postmap(
    postmap_env: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus_keys = corpus_header_keys()
    synthetic_block = b"\n".join(SYNTHETIC_HEADERS) + b"\n"
    header_keys = corpus_keys + logical_headers(synthetic_block)
    assert len(header_keys) == len(corpus_keys) + len(SYNTHETIC_HEADERS)
    corpus_count = len(corpus_keys)
    header_stdin = b"\n".join(corpus_keys) + b"\n" + synthetic_block + b"\nbody\n"
    line_stdin = b"\n".join(LINE_KEYS) + b"\n"
    assert all(b"\n" not in key and key for key in LINE_KEYS)

    disagreements: list[str] = []
    vacuous: list[str] = []
    pairs = 0
    tables = 0
    matched = 0
    for case, flavour in _cases():
        tables += 1
        path = tmp_path / f"{case.name}.{flavour}"
        path.write_bytes(case.table + b"/^/ " + SENTINEL + b"\n")
        try:
            table = parse_table(case.table, flavour, name=case.name)
        except TableError as exc:
            disagreements.append(f"{flavour}:{case.name}: we refuse the table: {exc}")
            continue
        case_matches = 0
        for keys, stdin, header_mode in (
            (header_keys, header_stdin, True),
            (LINE_KEYS, line_stdin, False),
        ):
            out, err = _postmap(postmap_env, flavour, path, stdin, header_mode)
            if err:
                disagreements.append(
                    f"{flavour}:{case.name}: postmap warned: {err.decode(errors='replace')}"
                )
                break
            for key, theirs in _pair_output(out, keys):
                pairs += 1
                match = table.lookup(key)
                ours = SENTINEL if match is None else match.value.encode("utf-8", "surrogateescape")
                if theirs != SENTINEL:
                    matched += 1
                    case_matches += 1
                if ours != theirs:
                    disagreements.append(
                        f"{flavour}:{case.name}: key {key!r}: ours {ours!r}, postfix {theirs!r}"
                    )
        if (case_matches == 0) != case.never:
            vacuous.append(f"{flavour}:{case.name}: {case_matches} keys matched")
    with capsys.disabled():
        print(
            f"\npostmap differential: {pairs} (table, key) pairs = {tables} tables x "
            f"({len(header_keys)} header keys [{corpus_count} from the corpus] + "
            f"{len(LINE_KEYS)} line keys); {matched} matched; "
            f"{len(disagreements)} disagreements"
        )
    assert pairs >= 200
    assert not disagreements, "\n".join(disagreements[:200])
    assert not vacuous, "tables that test nothing (or match where never=True):\n" + "\n".join(
        vacuous
    )


# Malformed rules: Postfix warns and skips them; we must refuse them on the same line.
BAD_RULES: list[tuple[str, tuple[Flavour, ...]]] = [
    ("/abc", BOTH),  # no closing delimiter
    ("/abc/q DUNNO", BOTH),  # unknown flag
    ("/(abc/ DUNNO", BOTH),  # bad regex
    ("/[abc/ DUNNO", BOTH),
    ("/a{2,1}/ DUNNO", BOTH),
    ("/(a)/ REJECT $2", BOTH),  # $n beyond the groups
    ("/(a)/ REJECT $0", BOTH),  # $0 is not supported
    ("/(a)/ REJECT $1x", BOTH),  # non-numeric index
    ("/(a)/ REJECT ${1", BOTH),  # truncated
    ("/(a)/ REJECT costs $", BOTH),  # empty macro name
    ("!/(a)/ REJECT $1", BOTH),  # $n with negation
    ("endif", BOTH),  # ENDIF without IF
    ("foo /a/ DUNNO", BOTH),  # unrecognized request
    ("if /a/ extra", BOTH),  # text after IF
    ("/a/!/b/ DUNNO", PCRE),  # secondary pattern is regexp-only
    (r"/\y/ DUNNO", PCRE),  # unknown escape
    (r"/[z-a]/ DUNNO", BOTH),
    (r"/[a-z-0]/ DUNNO", REGEXP),
    (r"/a\{1/x DUNNO", REGEXP),
    (r"/*a/ DUNNO", BOTH),
    (r"/a**/ DUNNO", PCRE),
    (r"/[[:nope:]]/ DUNNO", BOTH),
    (r"/(?<n>a)\k<m>/ DUNNO", PCRE),
    (r"/\1(a)/ DUNNO", REGEXP),
]


@pytest.mark.parametrize(("rule", "flavour"), [(r, f) for r, fs in BAD_RULES for f in fs])
def test_postfix_rejects_what_we_reject(
    postmap_env: tuple[str, Path], tmp_path: Path, rule: str, flavour: Flavour
) -> None:
    text = f"/^ok/ DUNNO\n# comment\n{rule}\n/^ok2/ DUNNO\n".encode()
    with pytest.raises(TableError) as info:
        parse_table(text, flavour, name="bad")
    assert info.value.line == 3
    path = tmp_path / "bad"
    path.write_bytes(text)
    _, err = _postmap(postmap_env, flavour, path, b"zzz\n", header_mode=False)
    assert f"{path}, line 3:".encode() in err, err.decode(errors="replace")


def test_screens_and_header_lookups_change_no_answer() -> None:
    """Runs of plain rules are screened by one search for any of them; a header is looked up
    by its name. Every answer is the one of the rules tried one by one (a table with a time
    limit tries them one by one), on every table and key of the differential test."""
    header_keys = corpus_header_keys() + logical_headers(b"\n".join(SYNTHETIC_HEADERS) + b"\n")
    screened = 0
    for case, flavour in _cases():
        try:
            fast = parse_table(case.table, flavour, name=case.name)
        except TableError:
            continue
        one_by_one = parse_table(case.table, flavour, name=case.name, timeout=60.0)
        plans = [fast._rules._generic, *fast._rules._by_name.values()]
        screened += sum(len(plan.screens) for plan in plans)
        for key in [*header_keys, *LINE_KEYS]:
            expected = one_by_one.query(key)
            assert fast.query(key) == expected, (flavour, case.name, key)
            name, colon, _ = key.partition(b":")
            if colon and name and not name.endswith((b" ", b"\t")):
                found = fast.lookup_header(key, name.lower())
                assert (found.value if found else None) == expected, (flavour, case.name, key)
    assert screened >= 10  # the tables have runs to screen: the test is not vacuous
