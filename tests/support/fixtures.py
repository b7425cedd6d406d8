"""Fixtures for the end-to-end tests: private Postfix instances and filterd processes."""

from __future__ import annotations

import sys
from collections.abc import Generator, Iterator

import pytest

from tests.support.filterd_proc import FilterdFactory
from tests.support.postfix import PostfixFactory


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember each phase's report on the item, so fixtures can see a failure."""
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


def _failed(request: pytest.FixtureRequest) -> bool:
    reports = request.node.stash.get(_REPORTS, {})
    return any(report.failed for report in reports.values())


@pytest.fixture
def postfix_factory(request: pytest.FixtureRequest) -> Iterator[PostfixFactory]:
    """Start private Postfix instances; on failure print their logs and keep their dirs."""
    factory = PostfixFactory()
    try:
        yield factory
    finally:
        failed = _failed(request)
        if failed:
            for instance in factory.instances:
                print(f"\n=== postfix instance {instance.base_dir} (kept) ===", file=sys.stderr)
                print(instance.diagnostics(lines=200), file=sys.stderr)
        factory.close(keep_dirs=failed)


@pytest.fixture
def filterd_factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FilterdFactory]:
    """Start filterd processes; on failure print their output."""
    factory = FilterdFactory(tmp_path_factory.mktemp("filterd"))
    try:
        yield factory
    finally:
        factory.close()
        if _failed(request):
            for proc in factory.processes:
                print(f"\n=== filterd {proc.workdir} ===", file=sys.stderr)
                print(proc.output_text()[-20000:], file=sys.stderr)
