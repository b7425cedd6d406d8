"""The razor plugin's tests use the project's test support (tests/support/)."""

import sys
from pathlib import Path

# `pytest plugins/razor` puts only this directory on sys.path; the support package lives at
# the repository root.
ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
