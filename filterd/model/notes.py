"""Typed notes: per-session or per-transaction state that plugins share, keyed by a NoteKey
that carries the value's type (instead of Haraka's untyped bags)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)  # not slotted: NoteKey[int](...) must be able to tag the instance
class NoteKey(Generic[T]):
    """Create one per kind of note, at module level: ``SPF = NoteKey[str]("spf.result")``."""

    name: str


@dataclass(slots=True)
class Notes:
    _values: dict[str, object] = field(default_factory=dict)

    def set(self, key: NoteKey[T], value: T) -> None:
        self._values[key.name] = value

    def get(self, key: NoteKey[T], default: T | None = None) -> T | None:
        return self._values.get(key.name, default)  # type: ignore[return-value]  # (no cast call)

    def __contains__(self, key: NoteKey[object]) -> bool:
        return key.name in self._values

    def clear(self) -> None:
        self._values.clear()
