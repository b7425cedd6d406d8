"""Where the committed test data lives (tests/data/, with origins and licences)."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data"
"""tests/data/ in this checkout."""

MAIL_CORPUS = DATA / "mail" / "cpython-test-email"
"""48 real-world-shaped messages from CPython's email tests (PSF licence)."""

SPF_SUITE = DATA / "spf" / "rfc7208-tests.yml"
"""The RFC 7208 SPF test suite (BSD-style licence)."""
