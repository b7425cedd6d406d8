"""The ratelimit plugin's tests use the project's test support (redis-server, Postfix, filterd)."""

import sys
from pathlib import Path

# `pytest plugins/ratelimit` puts only this directory on sys.path; the support package lives at the
# repository root (`python -m pytest` from the root finds it either way).
ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.fixtures import (  # noqa: E402, F401 - pytest finds fixtures and hooks by name
    filterd_factory,
    postfix_factory,
    pytest_runtest_makereport,
)
