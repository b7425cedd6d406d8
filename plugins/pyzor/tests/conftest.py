"""Fixtures for the pyzor plugin's tests: one private pyzord (tests/support/pyzord.py) per
test module."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# `pytest plugins/pyzor` puts only this directory on sys.path; the support package lives at
# the repository root.
ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.pyzord import PyzordInstance, pyzord_installed, running_pyzord  # noqa: E402


@pytest.fixture(scope="module")
def pyzord() -> Iterator[PyzordInstance]:
    if not pyzord_installed():
        pytest.skip("pyzord/pyzor/python3-gdbm are not installed")
    with running_pyzord() as instance:
        yield instance
