"""The pipe(8) door's answer: exit status and output line as pipe(8) reads them."""

from __future__ import annotations

import pytest

from filterd.model import replies
from filterd.model.reply import Reply
from filterd.protocols.pipe_map import (
    EX_DATAERR,
    EX_NOPERM,
    EX_OK,
    EX_TEMPFAIL,
    exit_status,
    report,
)


@pytest.mark.parametrize(
    ("reply", "status", "line"),
    [
        (Reply(250, "2.0.0", "Ok: queued as X"), EX_OK, None),
        (Reply(451, "4.3.0", "Error: message check failed"), EX_TEMPFAIL,
         "4.3.0 Error: message check failed"),
        (Reply(421, "", "Service shutting down"), EX_TEMPFAIL, "4.0.0 Service shutting down"),
        (Reply(550, "5.7.1", "Message refused\nsecond line"), EX_NOPERM,
         "5.7.1 Message refused second line"),
        (replies.TOO_BIG, EX_DATAERR, "5.3.4 Error: message file too big"),
        (Reply(554, "", "no"), EX_DATAERR, "5.0.0 no"),
    ],
)  # fmt: skip
def test_exit_status_and_line(reply: Reply, status: int, line: str | None) -> None:
    assert exit_status(reply) == status
    assert report(reply) == line


def test_line_fits_what_pipe_keeps() -> None:
    line = report(Reply(550, "5.7.1", "x" * 10000))
    assert line is not None
    assert line.startswith("5.7.1 xxx")
    assert len(line) < 4096
