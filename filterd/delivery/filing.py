"""Filing rules: which Maildir++ folder a delivered message goes to (``[[delivery.filing]]``),
the Sieve step of a Dovecot set-up (``if header :is "X-Spam-Flag" "YES" { fileinto "Junk"; }``)
done by filterd. The first rule that matches decides; none: the inbox."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from filterd.config.schema import FilingRule
from filterd.model.findings import Finding
from filterd.model.headers import Header

__all__ = ["folder_for", "matches"]


def matches(rule: FilingRule, headers: Sequence[Header], findings: Iterable[Finding]) -> bool:
    if rule.header is not None:
        name, colon, value = rule.header.partition(":")
        named = [header for header in headers if header.is_named(name.strip())]
        if not colon:
            return bool(named)
        wanted = value.strip().casefold()
        return any(header.value.strip().casefold() == wanted for header in named)
    return any(
        finding.name == rule.finding and (rule.score is None or finding.score >= rule.score)
        for finding in findings
    )


def folder_for(
    rules: Sequence[FilingRule], headers: Sequence[Header], findings: Sequence[Finding]
) -> str | None:
    """The folder of the first rule that matches (``.Junk``), or None for the inbox."""
    for rule in rules:
        if matches(rule, headers, findings):
            return rule.folder
    return None
