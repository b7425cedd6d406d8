"""The header fields the plugin adds: Received-SPF (RFC 7208 §9.1, pyspf's wording, as
pypolicyd-spf writes it) and Authentication-Results (RFC 8601, built with ``authres``), folded."""

from __future__ import annotations

import re
from collections.abc import Sequence

import authres  # type: ignore[import-untyped]

from .checker import SpfAnswer

FOLD_WIDTH = 78  # RFC 5322 §2.1.1 "SHOULD"
_COMMENT_SAFE: dict[str, str | int | None] = {"(": "[", ")": "]", "\\": "/"}
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


def fold(name: str, value: str, width: int = FOLD_WIDTH) -> str:
    """``value`` with "\\n" put before spaces so lines stay within ``width`` where a space
    allows it (unfolding, RFC 5322 §2.2.3, gives back ``value`` exactly)."""
    words = value.split(" ")
    lines: list[list[str]] = [[]]
    used = len(name) + 2  # "Name: "
    for word in words:
        line = lines[-1]
        if line and word and used + 1 + len(word) > width:
            lines.append([word])
            used = 1 + len(word)
        else:
            used += len(word) + (1 if line else 0)
            line.append(word)
    return "\n ".join(" ".join(line) for line in lines)


def received_spf(answer: SpfAnswer) -> str:
    return fold("Received-SPF", answer.received_spf)


def _pvalue(text: str) -> str:
    """An RFC 8601 property value: the text as a dot-atom, else a quoted-string."""
    if _DOT_ATOM.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _comment(text: str) -> str:
    """Text safe inside an RFC 5322 comment (no nesting, no quoted-pairs)."""
    return text.translate(str.maketrans(_COMMENT_SAFE))


def authentication_results(authserv_id: str, answers: Sequence[SpfAnswer]) -> str:
    """The Authentication-Results value: one ``spf=`` result per identity checked."""
    results = []
    for answer in answers:
        mechanism = answer.mechanism or "default"
        if answer.identity == "mailfrom":
            result = authres.SPFAuthenticationResult(
                result=answer.result,
                result_comment=_comment(answer.comment),
                smtp_mailfrom=_pvalue(answer.domain),
                smtp_mailfrom_comment=_comment(
                    f"sender={answer.sender}; helo={answer.helo}; client-ip={answer.client_ip}; "
                    f"receiver={answer.receiver}; mechanism={mechanism}"
                ),
            )
        else:
            result = authres.SPFAuthenticationResult(
                result=answer.result,
                result_comment=_comment(answer.comment),
                smtp_helo=_pvalue(answer.helo),
                smtp_helo_comment=_comment(
                    f"client-ip={answer.client_ip}; receiver={answer.receiver}; "
                    f"mechanism={mechanism}"
                ),
            )
        results.append(result)
    header = authres.AuthenticationResultsHeader(authserv_id=authserv_id, results=results)
    value = str(header).removeprefix("Authentication-Results: ")
    return fold("Authentication-Results", value)
