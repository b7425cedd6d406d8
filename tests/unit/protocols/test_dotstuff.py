"""Outgoing DATA content: dot-stuffing, terminator, bare CR/LF policy (SMTP smuggling)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from filterd.model import replies
from filterd.protocols.smtp.common import LocalProtocolError
from filterd.protocols.smtp.dotstuff import BareNewlineError, BareNewlinePolicy, DotStuffer

# --- a per-line reference and helpers ------------------------------------------------------------

_LINE_END = re.compile(rb"(\r\n|\r|\n)")
_BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")


def reference_body(content: bytes) -> bytes:
    """Stuffed content, line by line: every line end → CRLF, a leading "." doubled."""
    pieces = _LINE_END.split(content)
    lines, ends = pieces[0::2], pieces[1::2]
    out = []
    for i, line in enumerate(lines):
        out.append(b"." + line if line.startswith(b".") else line)
        if i < len(ends):
            out.append(b"\r\n")
    return b"".join(out)


def reference(content: bytes) -> bytes:
    body = reference_body(content)
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + b".\r\n"


def stuff(chunks: Sequence[bytes], policy: BareNewlinePolicy = "normalize") -> bytes:
    stuffer = DotStuffer(bare_newline=policy)
    return b"".join([*(stuffer.feed(chunk) for chunk in chunks), stuffer.finish()])


def splits(content: bytes) -> list[list[bytes]]:
    """Whole, byte by byte, and every cut into two chunks."""
    ways = [[content], [content[i : i + 1] for i in range(len(content))]]
    ways += [[content[:cut], content[cut:]] for cut in range(1, len(content))]
    return ways


def unstuff(wire: bytes) -> bytes:
    """What a strict receiver reads: the content up to the first CRLF.CRLF (its first CRLF
    included), with the leading dot of each line removed."""
    end = (b"\r\n" + wire).find(b"\r\n.\r\n")
    assert end >= 0
    lines = wire[:end].split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


# --- examples ------------------------------------------------------------------------------------

EXAMPLES = [
    (b"", b".\r\n"),
    (b"Subject: x\r\n\r\nhello\r\n", b"Subject: x\r\n\r\nhello\r\n.\r\n"),
    (b"no final newline", b"no final newline\r\n.\r\n"),
    (b".leading dot line\r\n", b"..leading dot line\r\n.\r\n"),
    (b"a\r\n.\r\nb\r\n", b"a\r\n..\r\nb\r\n.\r\n"),
    (b"..two\r\n.", b"...two\r\n..\r\n.\r\n"),
    (b"mid.dot\r\n", b"mid.dot\r\n.\r\n"),
    (b"\r\n", b"\r\n.\r\n"),
]


@pytest.mark.parametrize(("content", "wire"), EXAMPLES)
@pytest.mark.parametrize("policy", ["normalize", "reject"])
def test_known_contents_whatever_the_chunking(
    content: bytes, wire: bytes, policy: BareNewlinePolicy
) -> None:
    for chunks in splits(content):
        assert stuff(chunks, policy) == wire


NORMALIZED = [
    (b"a\nb\n", b"a\r\nb\r\n.\r\n"),
    (b"a\rb\r", b"a\r\nb\r\n.\r\n"),
    (b"a\r\r\nb", b"a\r\n\r\nb\r\n.\r\n"),
    (b"a\n\rb", b"a\r\n\r\nb\r\n.\r\n"),
    (b"end in cr\r", b"end in cr\r\n.\r\n"),
]


@pytest.mark.parametrize(("content", "wire"), NORMALIZED)
def test_normalize_turns_bare_cr_and_lf_into_crlf(content: bytes, wire: bytes) -> None:
    for chunks in splits(content):
        assert stuff(chunks) == wire


SMUGGLING = [
    b"hi\n.\nMAIL FROM:<evil@example.com>\n",
    b"hi\n.\r\nMAIL FROM:<evil@example.com>\r\n",
    b"hi\r\n.\nMAIL FROM:<evil@example.com>\r\n",
    b"hi\r.\rMAIL FROM:<evil@example.com>\r",
    b"hi\r\n.\rMAIL FROM:<evil@example.com>\r\n",
    b"hi\r.\r\nMAIL FROM:<evil@example.com>\r\n",
]


@pytest.mark.parametrize("content", SMUGGLING)
def test_smuggled_end_of_data_is_stuffed_under_normalize(content: bytes) -> None:
    for chunks in splits(content):
        wire = stuff(chunks)
        assert (b"\r\n" + wire).find(b"\r\n.\r\n") == len(wire) - 3  # only the real terminator
        assert b"\r\n..\r\n" in wire


@pytest.mark.parametrize("content", SMUGGLING)
def test_smuggled_end_of_data_is_refused_under_reject(content: bytes) -> None:
    for chunks in splits(content):
        with pytest.raises(BareNewlineError):
            stuff(chunks, "reject")


def test_crlf_split_between_chunks_is_not_bare_under_reject() -> None:
    assert stuff([b"a\r", b"\n.b\r", b"\n"], "reject") == b"a\r\n..b\r\n.\r\n"


def test_cr_at_the_very_end_is_bare_under_reject() -> None:
    stuffer = DotStuffer(bare_newline="reject")
    assert stuffer.feed(b"a\r") == b"a"  # the CR is held back, not yet judged
    with pytest.raises(BareNewlineError):
        stuffer.finish()


def test_rejection_emits_nothing_of_the_offending_chunk() -> None:
    stuffer = DotStuffer(bare_newline="reject")
    assert stuffer.feed(b"fine\r\n") == b"fine\r\n"
    with pytest.raises(BareNewlineError) as info:
        stuffer.feed(b"bad\nline\r\n")
    assert info.value.reply == replies.BARE_LF
    assert isinstance(info.value, LocalProtocolError)
    with pytest.raises(LocalProtocolError, match="after finish"):
        stuffer.feed(b"more\r\n")


def test_at_most_one_byte_is_held_back() -> None:
    stuffer = DotStuffer()
    assert stuffer.feed(b"abc") == b"abc"
    assert stuffer.feed(b"\r") == b""
    assert stuffer.feed(b"\n") == b"\r\n"
    assert stuffer.feed(b"") == b""
    assert stuffer.feed(b".") == b".."


def test_stuffer_is_single_use() -> None:
    stuffer = DotStuffer()
    stuffer.finish()
    with pytest.raises(LocalProtocolError):
        stuffer.feed(b"x")
    with pytest.raises(LocalProtocolError):
        stuffer.finish()


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="bare_newline"):
        DotStuffer(bare_newline="allow")  # type: ignore[arg-type]


def test_large_message_in_uneven_chunks() -> None:
    line = b".dotted line with some text in it\r\n"
    content = (line + b"plain line\r\n") * 3000
    chunks = [content[i : i + 4093] for i in range(0, len(content), 4093)]
    assert stuff(chunks) == reference(content)


# --- properties ----------------------------------------------------------------------------------

TRICKY = st.lists(
    st.sampled_from([b"\r", b"\n", b".", b"a", b"\r\n", b"..", b"\r\n.", b"\n.", b"\r.", b" "]),
    max_size=40,
).map(b"".join)
CONTENT = st.one_of(st.binary(max_size=200), TRICKY)


@st.composite
def chunked(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    content = draw(CONTENT)
    cuts = sorted(draw(st.lists(st.integers(0, len(content)), max_size=8)))
    bounds = [0, *cuts, len(content)]
    return content, [content[a:b] for a, b in itertools.pairwise(bounds)]


@given(chunked())
def test_normalize_matches_the_per_line_reference_for_any_chunking(
    case: tuple[bytes, list[bytes]],
) -> None:
    content, chunks = case
    stuffer = DotStuffer(bare_newline="normalize")
    wire = b""
    fed = b""
    for chunk in chunks:
        wire += stuffer.feed(chunk)
        fed += chunk
        # everything but a trailing CR has been emitted already
        assert wire == reference_body(fed[:-1] if fed.endswith(b"\r") else fed)
    wire += stuffer.finish()
    assert wire == reference(content)


@given(chunked())
def test_normalized_output_is_safe_on_the_wire(case: tuple[bytes, list[bytes]]) -> None:
    content, chunks = case
    wire = stuff(chunks)
    with_data_line = b"\r\n" + wire  # the DATA command's CRLF precedes the content
    assert with_data_line.endswith(b"\r\n.\r\n")
    assert with_data_line.find(b"\r\n.\r\n") == len(wire) - 3  # no early end of data
    assert wire.count(b"\r") == wire.count(b"\n") == wire.count(b"\r\n")  # no bare CR/LF
    lines = wire[:-3].split(b"\r\n")
    assert all(not line.startswith(b".") or line.startswith(b"..") for line in lines)
    normalized = _LINE_END.sub(b"\r\n", content)
    if normalized and not normalized.endswith(b"\r\n"):
        normalized += b"\r\n"
    assert unstuff(wire) == normalized  # a strict receiver gets the content back


@given(chunked())
def test_reject_raises_iff_the_content_has_a_bare_cr_or_lf(
    case: tuple[bytes, list[bytes]],
) -> None:
    content, chunks = case
    if _BARE.search(content):
        with pytest.raises(BareNewlineError):
            stuff(chunks, "reject")
    else:
        assert stuff(chunks, "reject") == reference(content)


# --- content the server codec checked: CRLF line ends only --------------------------------------

_CLEAN_LINES = st.lists(
    st.sampled_from([b"", b".", b"..x", b"text", b"a.b", b"\t. \x00"]), max_size=8
)


@given(_CLEAN_LINES, st.lists(st.integers(min_value=0, max_value=60), max_size=4))
def test_checked_content_cut_anywhere_goes_out_as_unchecked_content(
    lines: list[bytes], cuts: list[int]
) -> None:
    """Content known to have CRLF line ends only skips the scans for bare CR/LF, cut
    wherever (a CRLF split between two chunks included): the same wire bytes."""
    content = b"".join(line + b"\r\n" for line in lines)
    points = sorted({0, len(content), *(c for c in cuts if c < len(content))})
    chunks = [content[a:b] for a, b in itertools.pairwise(points)]
    checked = DotStuffer()
    wire = b"".join([*(checked.feed(c, crlf_only=True) for c in chunks), checked.finish()])
    assert wire == stuff(chunks) == reference(content)


@pytest.mark.parametrize(
    ("before", "content"),
    [(b"X-Plugin: a\r", b"body\r\n"), (b"X-Plugin: a", b"\nbody\r\n"), (b"X: a\r", b"\n")],
)
def test_a_line_end_split_with_text_from_elsewhere_is_still_checked(
    before: bytes, content: bytes
) -> None:
    """A header a plugin wrote (not checked) ends in a bare CR, or checked content starts
    with the LF of a CRLF that is not there: normalized all the same."""
    stuffer = DotStuffer()
    wire = stuffer.feed(before) + stuffer.feed(content, crlf_only=True) + stuffer.finish()
    assert wire == reference(before + content)
    assert _BARE.search(wire) is None
