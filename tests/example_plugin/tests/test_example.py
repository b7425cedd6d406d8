"""The example plugin's tests, as docs/plugins.md shows them."""

import pytest
from filterd_example import ExampleTagger

from filterd.sdk import AddHeader, ConfigError, Continue, Finding, Reject, Reply
from filterd.testing import run_plugin, validate_config


async def test_tags_and_refuses() -> None:
    result = await run_plugin(
        ExampleTagger,
        {"text": "seen", "refuse_prefix": "nobody"},
        message=b"Subject: hi\r\n\r\nbody\r\n",  # or a path to an .eml file
        mail_from="a@example.com",
        rcpts=["nobody@example.org", "b@example.org"],
    )
    assert result.rcpt_outcomes["nobody@example.org"].verdict == Reject(
        Reply(550, "5.7.1", "<nobody@example.org>: refused by example_tagger")
    )
    assert result.recipients == ["b@example.org"]
    assert result.returned("on_message") == Continue(
        edits=(AddHeader("X-Example-Tag", "seen"),),
        findings=(Finding("example.subject_length", "2"),),
    )
    assert result.message.startswith(b"X-Example-Tag: seen\r\n")


async def test_refuses_a_word_of_an_encoded_subject() -> None:
    message = b"Subject: =?utf-8?q?You_won_the_LOTTERY!?=\r\n\r\nbody\r\n"
    result = await run_plugin(ExampleTagger, {"refuse_words": ["lottery"]}, message=message)
    assert result.decided_at == "on_message"
    assert result.reply == Reply(550, "5.7.1", "Message refused by example_tagger")


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"config\.header: expected a header name"):
        validate_config(ExampleTagger, {"header": "X-Tag:"})
