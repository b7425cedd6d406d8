"""Fixtures for the spamassassin plugin's tests: one private spamd per test module (plain TCP,
a unix socket and TLS on the same instance), and the end-to-end Postfix/filterd factories."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# `pytest plugins/spamassassin` puts only this directory on sys.path; the support package lives
# at the repository root.
ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.fixtures import (  # noqa: E402, F401 - pytest finds fixtures and hooks by name
    filterd_factory,
    postfix_factory,
    pytest_runtest_makereport,
)
from tests.support.spamd import SpamdInstance, running_spamd, spamd_installed  # noqa: E402

requires_spamd = pytest.mark.skipif(not spamd_installed(), reason="spamd is not installed")


@pytest.fixture(scope="module")
def spamd() -> Iterator[SpamdInstance]:
    """A private spamd (TCP, unix socket and TLS listeners) shared by a test module."""
    with running_spamd(children=2, unix_socket=True, tls=True) as instance:
        yield instance
