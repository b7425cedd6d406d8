"""An SMTP reply: code, enhanced status code and text, validated on construction."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_STATUS_RE = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply. ``status`` is the RFC 3463 enhanced code ("" for greeting/EHLO replies).

    ``text`` may hold several lines separated by "\\n", each one reply line; never a CR.
    """

    code: int
    status: str
    text: str
    # to_bytes(), made once: the same replies (250 Ok, 354...) go out for every message
    _wire: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599:
            raise ValueError(f"reply code out of range: {self.code}")
        if self.status:
            if not _STATUS_RE.match(self.status):
                raise ValueError(f"bad enhanced status code: {self.status!r}")
            if self.status[0] != str(self.code)[0]:
                raise ValueError(f"reply {self.code} does not match enhanced code {self.status}")
        if "\r" in self.text or "\x00" in self.text:
            raise ValueError("reply text must not contain CR or NUL")

    @property
    def is_positive(self) -> bool:
        return self.code < 400

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

    def lines(self) -> list[str]:
        return self.text.split("\n") if self.text else [""]

    def to_bytes(self) -> bytes:
        """Render as wire bytes, multi-line replies with ``code-`` continuation."""
        wire = self._wire
        if wire is None:
            wire = self._render()
            object.__setattr__(self, "_wire", wire)
        return wire

    def _render(self) -> bytes:
        lines = self.lines()
        out: list[str] = []
        for i, line in enumerate(lines):
            sep = " " if i == len(lines) - 1 else "-"
            body = f"{self.status} {line}" if self.status and line else (self.status or line)
            out.append(f"{self.code}{sep}{body}".rstrip(" ") + "\r\n")
        return "".join(out).encode("utf-8", "surrogateescape")

    def __str__(self) -> str:
        first = self.text.partition("\n")[0]
        return f"{self.code} {self.status} {first}" if self.status else f"{self.code} {first}"

    def with_text(self, text: str) -> Reply:
        return Reply(self.code, self.status, text)
