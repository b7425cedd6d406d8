"""Findings: named evidence (like rspamd symbols), logged, and turned into a verdict only by
an explicit rule."""

from __future__ import annotations

from dataclasses import dataclass

from filterd.model.notes import NoteKey


@dataclass(frozen=True, slots=True)
class Finding:
    name: str
    detail: str = ""
    score: float = 0.0

    def __str__(self) -> str:
        score = f"({self.score:g})" if self.score else ""
        detail = f"={self.detail}" if self.detail else ""
        return f"{self.name}{score}{detail}"


MESSAGE_FINDINGS = NoteKey[tuple[Finding, ...]]("chain.message_findings")
"""The findings of the chain's message stage, noted on the transaction by the SMTP/LMTP door
before delivery (the Maildir stage's filing rules read them)."""
