"""What the doctor reports: findings (errors and warnings, each with its fix) and notes.

- **error**: the wiring loops, loses, duplicates or holds up mail (a loop through filterd, a
  Postfix timeout shorter than filterd may take, more parallel deliveries than filterd accepts).
- **warning**: mail flows, but worse than it should (scanned twice, the original client lost
  to filterd or to the logs, bounces to possibly forged senders, requests waiting for spamd).
- **note**: something the doctor could not check (a lookup table, a spamd on another host);
  not a finding.

``filterd doctor`` exits 0 without findings and 1 with any, warnings included.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, TextIO

__all__ = ["Finding", "Report", "Severity"]

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    """One wiring mistake: ``code`` names the kind (stable, for scripts and tests), ``problem``
    says what happens to mail, ``fix`` is what to write, one line each."""

    severity: Severity
    code: str
    problem: str
    fix: tuple[str, ...]

    def render(self) -> str:
        lines = [f"{self.severity} [{self.code}]: {self.problem}"]
        for index, line in enumerate(self.fix):
            lines.append(f"  {'fix:' if index == 0 else '    '} {line}")
        return "\n".join(lines)


@dataclass
class Report:
    """Findings and notes as the checks add them; each once, in the order found."""

    findings: list[Finding]
    notes: list[str]
    wiring: list[str]

    @classmethod
    def empty(cls) -> Report:
        return cls([], [], [])

    def add(self, severity: Severity, code: str, problem: str, fix: Sequence[str]) -> None:
        finding = Finding(severity, code, problem, tuple(fix))
        if finding not in self.findings:
            self.findings.append(finding)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    @property
    def codes(self) -> list[str]:
        return [finding.code for finding in self.findings]

    def write(self, out: TextIO) -> None:
        for line in self.wiring:
            out.write(f"wiring: {line}\n")
        for finding in self.findings:
            out.write(finding.render() + "\n")
        for text in self.notes:
            out.write(f"note: {text}\n")
        out.write(summary(self.findings) + "\n")


def summary(findings: Iterable[Finding]) -> str:
    counted = list(findings)
    errors = sum(1 for finding in counted if finding.severity == "error")
    warnings = len(counted) - errors
    if not counted:
        return "filterd doctor: no findings"
    parts = [f"{errors} error{'s' * (errors != 1)}"] if errors else []
    parts += [f"{warnings} warning{'s' * (warnings != 1)}"] if warnings else []
    return f"filterd doctor: {', '.join(parts)}"
