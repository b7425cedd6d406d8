"""``python -m filterd``: the same as the ``filterd`` command."""

from filterd.cli import main

raise SystemExit(main())
