"""The test-suite helpers the spamd, policy and pipe benchmarks reuse (tests/support/): the
repository root is put on ``sys.path`` so that they import as ``tests.support.*``, as they do in
the tests."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

from tests.support.data import MAIL_CORPUS  # noqa: E402
from tests.support.dns_server import DnsServer  # noqa: E402
from tests.support.pipe_door import NOBODY, filterd_command, postfix_with_pipe  # noqa: E402
from tests.support.postfix import SENDMAIL, PostfixInstance  # noqa: E402
from tests.support.spamd import (  # noqa: E402
    GTUBE,
    SPAMC,
    SPAMD,
    SpamdInstance,
    running_spamd,
    spamd_installed,
)

__all__ = [
    "GTUBE",
    "MAIL_CORPUS",
    "NOBODY",
    "REPO",
    "SENDMAIL",
    "SPAMC",
    "SPAMD",
    "DnsServer",
    "PostfixInstance",
    "SpamdInstance",
    "filterd_command",
    "postfix_with_pipe",
    "running_spamd",
    "spamd_installed",
]
