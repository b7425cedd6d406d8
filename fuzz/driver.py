"""The small driver every atheris harness in this directory shares.

A harness turns atheris's bytes into the arguments of one property of tests/fuzz (or of a
parser directly) and runs it: the properties hypothesis checks in ``make test`` for a few
hundred inputs, atheris checks coverage-guided for as long as it is given. Any exception
other than the property's own documented error is a crash: atheris stops, writes the input to
``var/fuzz/<harness>/crash-*`` and prints the traceback (docs/testing.md, "Fuzzing").

Run one: ``.venv/bin/python fuzz/fuzz_smtp_server.py -max_total_time=60 var/fuzz/corpus``;
all of them: ``make fuzz FUZZ_SECONDS=60``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeVar

import atheris

# The harnesses import the properties from tests/fuzz: the checkout's root on the path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

T = TypeVar("T")


def instrumented() -> AbstractContextManager[None]:
    """Imports inside this block are instrumented for coverage (filterd and the plugins)."""
    return atheris.instrument_imports(include=["filterd", "filterd_header_checks"])  # type: ignore[no-any-return]


def prop(test: Callable[..., None]) -> Callable[..., None]:
    """The body of a hypothesis test, callable with plain arguments."""
    return test.hypothesis.inner_test  # type: ignore[attr-defined, no-any-return]


class Input:
    """atheris's bytes as arguments: small choices first, then the rest as data."""

    def __init__(self, data: bytes) -> None:
        self._fdp = atheris.FuzzedDataProvider(data)

    def flag(self) -> bool:
        return bool(self._fdp.ConsumeBool())

    def pick(self, choices: Sequence[T]) -> T:
        return choices[self._fdp.ConsumeIntInRange(0, len(choices) - 1)]

    def ints(self, count: int, high: int = 10_000) -> list[int]:
        return [
            self._fdp.ConsumeIntInRange(0, high)
            for _ in range(self._fdp.ConsumeIntInRange(0, count))
        ]

    def bytes(self, size: int) -> bytes:
        return bytes(self._fdp.ConsumeBytes(size))

    def text(self, size: int) -> str:
        return str(self._fdp.ConsumeUnicodeNoSurrogates(size))

    def rest(self) -> bytes:
        return bytes(self._fdp.ConsumeBytes(self._fdp.remaining_bytes()))


def run(one_input: Callable[[Input], Any]) -> None:
    """Fuzz ``one_input`` with the command line's libFuzzer options (-max_total_time=...)."""
    atheris.Setup(sys.argv, lambda data: one_input(Input(data)))
    atheris.Fuzz()
