"""Findings: named evidence (like rspamd symbols), logged, and turned into a verdict only by
an explicit rule."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Finding:
    name: str
    detail: str = ""
    score: float = 0.0

    def __str__(self) -> str:
        score = f"({self.score:g})" if self.score else ""
        detail = f"={self.detail}" if self.detail else ""
        return f"{self.name}{score}{detail}"
