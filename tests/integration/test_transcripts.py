"""Golden transcripts (tests/transcripts/*.txt) replayed against the real session code.

Format: ``S: line`` is a line the server must send, ``C: line`` a line the client sends
(consecutive C: lines go out together, as a pipelining client would). In C: lines the escapes
``\\r`` and ``\\n`` stand for raw bytes (for bare-LF attacks); every C: line gets a CRLF.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.fakes import ScriptedDelivery
from tests.support.session import session

TRANSCRIPTS = sorted((Path(__file__).parent.parent / "transcripts").glob("*.txt"))


def parse(path: Path) -> list[tuple[str, str]]:
    steps = []
    for raw in path.read_text().splitlines():
        if not raw or raw.startswith("#"):
            continue
        who, _, text = raw.partition(":")
        steps.append((who, text[1:] if text.startswith(" ") else text))
    return steps


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=[p.stem for p in TRANSCRIPTS])
async def test_transcript(path: Path) -> None:
    steps = parse(path)
    delivery = ScriptedDelivery()
    async with session(delivery) as client:
        pending: list[bytes] = []
        for number, (who, text) in enumerate(steps, start=1):
            if who == "C":
                pending.append(text.replace("\\r", "\r").replace("\\n", "\n").encode() + b"\r\n")
                continue
            if pending:
                await client.send(*pending)
                pending = []
            got = await client.line()
            assert got == text, f"{path.name} step {number}: expected {text!r}, got {got!r}"
        if pending:
            await client.send(*pending)
        assert await client.closed()
