"""Helpers for ``bench/run.py``, the throughput benchmark behind ``make bench``."""
