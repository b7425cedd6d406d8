"""filterd's exception families : catch by family at the shell, never bare."""

from __future__ import annotations

from collections.abc import Sequence


class FilterdError(Exception):
    """Base of every error filterd raises on purpose."""


class ConfigError(FilterdError):
    """A configuration problem, naming the file, the line, the key and the fix.

    ``str()`` gives ``filterd.toml:14: limits.command_timeout: expected a duration such as "30s",
    got "thirty" (fix: ...)``. ``line`` is ``None`` when no line applies (a missing file, a key
    missing from the top level); ``key`` is ``""`` when no key applies (a TOML syntax error).

    One exception can carry several problems found in one pass: ``problems`` lists them all (this
    one first), and ``str()`` puts each on its own line.
    """

    def __init__(
        self,
        file: str,
        line: int | None,
        key: str,
        message: str,
        hint: str = "",
        *,
        more: Sequence[ConfigError] = (),
    ) -> None:
        super().__init__(file, line, key, message, hint)
        self.file = file
        self.line = line
        self.key = key
        self.message = message
        self.hint = hint
        self.more: tuple[ConfigError, ...] = tuple(more)

    @classmethod
    def collect(cls, errors: Sequence[ConfigError]) -> ConfigError:
        """One exception for several problems (``errors`` must not be empty)."""
        first, *rest = errors
        return cls(first.file, first.line, first.key, first.message, first.hint, more=rest)

    @property
    def problems(self) -> tuple[ConfigError, ...]:
        return (ConfigError(self.file, self.line, self.key, self.message, self.hint), *self.more)

    def describe(self) -> str:
        """This problem alone, on one line."""
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        key = f"{self.key}: " if self.key else ""
        fix = f" (fix: {self.hint})" if self.hint else ""
        return f"{where}: {key}{self.message}{fix}"

    def __str__(self) -> str:
        return "\n".join(problem.describe() for problem in self.problems)
