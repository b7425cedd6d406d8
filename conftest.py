"""For every test (tests/ and plugins/*/tests/): the suite runs as root (``make test`` installs
Debian packages first), and ``filterd run`` refuses to run as root unless told to, so the
filterd processes the tests start are told to (``FILTERD_ALLOW_ROOT=1``). The tests of the
refusal itself remove it (tests/integration/test_privileges.py)."""

import os

from filterd.runtime.privileges import ALLOW_ROOT_ENV

os.environ.setdefault(ALLOW_ROOT_ENV, "1")
