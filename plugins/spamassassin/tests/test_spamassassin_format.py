"""SpamAssassin's header format, message splitting and PROCESS rewrites as edits (no spamd)."""

from __future__ import annotations

import pytest
from filterd_spamassassin import SpamAssassin, SpamAssassinConfig, parse_address
from filterd_spamassassin.headers import (
    RawField,
    edit_value,
    fold_value,
    perl_wrap,
    rules_from_status,
    split_message,
    stars,
    status_value,
)
from filterd_spamassassin.rewrite import Original, rewrite_edits

from filterd.sdk import ConfigError, InsertHeader, RemoveHeader, ReplaceBody
from filterd.testing import validate_config


def test_status_is_folded_like_spamassassin() -> None:
    # Both verbatim from spamd 4.0.1's PROCESS output (report_safe 1, bayes_auto_learn 0).
    value = status_value(
        True,
        "1000.0",
        "5.0",
        ["GTUBE", "MSGID_SHORT", "NO_RECEIVED", "NO_RELAYS", "TVD_SPACE_RATIO"],
        autolearn="disabled",
        version="4.0.1",
    )
    assert fold_value("X-Spam-Status", value) == (
        "Yes, score=1000.0 required=5.0 tests=GTUBE,MSGID_SHORT,\n"
        "\tNO_RECEIVED,NO_RELAYS,TVD_SPACE_RATIO autolearn=disabled version=4.0.1"
    )
    value = status_value(False, "3.4", "5.0", ["RDNS_NONE", "TO_IN_SUBJ"], "disabled", "4.0.1")
    assert fold_value("X-Spam-Status", value) == (
        "No, score=3.4 required=5.0 tests=RDNS_NONE,TO_IN_SUBJ\n\tautolearn=disabled version=4.0.1"
    )


def test_status_without_tests_and_defaults() -> None:
    assert status_value(False, "-0.0", "5.0", []) == (
        "No, score=-0.0 required=5.0 tests=none autolearn=unavailable"
    )


def test_perl_wrap_counts_tabs_as_eight_columns_and_breaks_only_after_space_or_comma() -> None:
    long_token = "A" * 90
    assert perl_wrap(f"x {long_token} y", "\t", "", 79) == f"x\n\t{long_token}\n\ty"
    assert perl_wrap("a,b c", "\t", "", 79) == "a,b c"


def test_stars() -> None:
    assert stars(1000.0) == "*" * 50
    assert stars(3.9) == "***"
    assert stars(0.9) == ""
    assert stars(-4.0) == ""


def test_rules_from_status() -> None:
    assert rules_from_status("Yes, score=1.0 required=5.0 tests=A,\n\tB autolearn=no") == ("A",)
    assert rules_from_status("Yes, score=1.0 required=5.0 tests=A,B autolearn=no") == ("A", "B")
    assert rules_from_status("No, score=0.0 required=5.0 tests=none autolearn=no") == ()
    assert rules_from_status("something else") == ()


def test_split_message() -> None:
    raw = b"A: 1\r\nB: 2\r\n\tmore\r\n\r\nbody\r\n"
    split = split_message(raw)
    assert [f.name for f in split.fields] == ["A", "B"]
    assert split.fields[1].raw == b"B: 2\r\n\tmore\r\n"
    assert split.separator == b"\r\n"
    assert split.body == b"body\r\n"
    # A line that is not a header ends the section without a separator (the mbox From_ line).
    split = split_message(b"From x@y  Fri Apr 06 2001\r\nA: 1\r\n\r\nbody\r\n")
    assert split.fields == ()
    assert split.separator == b""
    assert split.body.startswith(b"From x@y")
    assert split_message(b"A: 1\r\nB: 2\r\n").fields[1].raw == b"B: 2\r\n"


def test_edit_value_is_exact_for_what_filterd_can_write() -> None:
    assert edit_value(RawField("X-A", b"X-A: v\r\n\tw\r\n")) == ("v\n\tw", True)
    assert edit_value(RawField("X-A", b"X-A: \r\n")) == ("", True)
    assert edit_value(RawField("X-A", b"X-A:  two spaces\r\n")) == (" two spaces", True)
    assert edit_value(RawField("X-A", b"X-A:v\r\n")) == ("v", False)
    assert edit_value(RawField("X-A", b"X-A: v\n")) == ("v", False)


def _original(raw: bytes) -> Original:
    split = split_message(raw)
    return Original(split.fields, split.separator, [split.body])


def _apply(raw: bytes, edits: tuple[object, ...]) -> bytes:
    """A model of filterd's editing (apply_header_edits + rewrite) for the edits used here."""
    split = split_message(raw)
    fields = [f.raw for f in split.fields]
    names = [f.name for f in split.fields]
    body = split.body
    for edit in edits:
        if isinstance(edit, RemoveHeader):
            positions = [i for i, n in enumerate(names) if n.lower() == edit.name.lower()]
            doomed = positions[edit.occurrence - 1]
            del fields[doomed], names[doomed]
        elif isinstance(edit, InsertHeader):
            text = f"{edit.name}: {edit.value}".replace("\n", "\r\n") + "\r\n"
            fields.insert(edit.index, text.encode("utf-8", "surrogateescape"))
            names.insert(edit.index, edit.name)
        elif isinstance(edit, ReplaceBody):
            body = edit.body
    return b"".join(fields) + split.separator + body


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (  # ham: headers added after Return-Path, body untouched
            b"Return-Path: <a@b>\r\nFrom: a@b\r\nTo: c@d\r\n\r\nhi\r\n",
            b"Return-Path: <a@b>\r\nX-Spam-Level: \r\nX-Spam-Status: No, score=0.0\r\n"
            b"\tautolearn=no\r\nFrom: a@b\r\nTo: c@d\r\n\r\nhi\r\n",
        ),
        (  # spam, report_safe: most headers replaced, new body, duplicates by name
            b"Received: one\r\nReceived: two\r\nMessage-ID: <x@y>\r\nTo: c@d\r\n\r\nspam\r\n",
            b"Received: new\r\nReceived: two\r\nTo: c@d\r\nMessage-Id: <x@y>\r\n"
            b"X-Spam-Flag: YES\r\n\r\nwrapper\r\n\r\nspam\r\n",
        ),
        (b"A: 1\r\n\r\n", b"A: 1\r\n\r\n"),  # nothing changed
    ],
)
def test_rewrite_edits_reproduce_spamd_output(before: bytes, after: bytes) -> None:
    rewrite = rewrite_edits(_original(before), split_message(after))
    assert rewrite.exact
    assert _apply(before, rewrite.edits) == after
    assert rewrite.body_replaced == (split_message(before).body != split_message(after).body)


def test_rewrite_edits_report_what_they_cannot_express() -> None:
    before = b"A: 1\r\n\r\nbody\r\n"
    rewrite = rewrite_edits(
        _original(before), split_message(b"A: 1\r\nX-B:squeezed\r\n\r\nbody\r\n")
    )
    assert not rewrite.exact
    assert "X-B" in rewrite.problems[0]
    assert rewrite.edits == (InsertHeader(1, "X-B", "squeezed"),)


@pytest.mark.parametrize(
    ("address", "parsed"),
    [
        ("127.0.0.1:783", ("127.0.0.1", 783)),
        ("spamd.example:1783", ("spamd.example", 1783)),
        ("[::1]:783", ("::1", 783)),
        ("unix:/run/spamd.sock", "/run/spamd.sock"),
    ],
)
def test_parse_address(address: str, parsed: object) -> None:
    assert parse_address(address) == parsed


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"address": "localhost"}, "host:port"),
        ({"address": "::1:783"}, "brackets"),
        ({"address": "unix:"}, "socket path"),
        ({"user": "two words"}, "printable"),
        ({"ca_file": "/nonexistent/ca.pem", "tls": True}, "does not exist"),
        ({"tls": True, "address": "unix:/run/spamd.sock"}, "TCP"),
        ({"quarantine_score": 10, "reject_score": 5}, "below"),
        ({"reject_text": "bad\rtext"}, "CR"),
        ({"mode": "report"}, "symbols"),
        ({"max_connections": 0}, "must be at least 1"),
        ({"adress": "127.0.0.1:783"}, 'unknown key "adress"'),
    ],
)
def test_config_errors(settings: dict[str, object], complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        validate_config(SpamAssassin, settings)


def test_defaults() -> None:
    config = SpamAssassinConfig()
    assert config.max_size == 512000
    assert config.mode == "symbols"
    assert config.address == "127.0.0.1:783"
    assert SpamAssassin.Config is SpamAssassinConfig
