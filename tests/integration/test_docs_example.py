"""The test shown in docs/plugins.md, verbatim: the guide's example must keep working."""

from __future__ import annotations

from filterd_example import ExampleTagger

from filterd.sdk import AddHeader, Reject
from filterd.testing import run_plugin


async def test_tags_and_refuses() -> None:
    result = await run_plugin(
        ExampleTagger,
        {"text": "seen", "refuse_prefix": "nobody"},
        message=b"Subject: hi\r\n\r\nbody\r\n",
        mail_from="a@example.com",
        rcpts=["nobody@example.org", "b@example.org"],
    )
    assert isinstance(result.rcpt_outcomes["nobody@example.org"].verdict, Reject)
    assert result.recipients == ["b@example.org"]
    assert AddHeader("X-Example-Tag", "seen") in result.edits
    assert result.message.startswith(b"X-Example-Tag: seen\r\n")
