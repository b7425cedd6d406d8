"""The ``filterd`` command."""

from filterd.cli.main import main

__all__ = ["main"]
