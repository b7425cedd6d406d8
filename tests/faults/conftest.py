"""Fault-injection fixtures: private Postfix instances and filterd processes."""

from tests.support.fixtures import (  # noqa: F401 - pytest finds fixtures and hooks by name
    filterd_factory,
    postfix_factory,
    pytest_runtest_makereport,
)
