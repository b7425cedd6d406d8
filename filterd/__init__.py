"""filterd: a pluggable mail content-filter framework for Postfix, on trio."""

__version__ = "0.1.0"
