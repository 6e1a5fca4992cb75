"""What a server says about its limits: ``x-ratelimit-*`` headers and the words of a 429.

Pure functions over headers and messages, tested by tables::

    >>> stated({"x-ratelimit-limit-tokens": "600000", "x-ratelimit-remaining-tokens": "8990",
    ...         "x-ratelimit-reset-tokens": "101ms"}, "tokens")
    Stated(per_minute=600000.0, remaining=8990.0, reset=0.101)
    >>> message_wait("Rate limit reached ... Please try again in 1.5s. Visit ...")
    1.5
    >>> throttled_budget({"type": "tokens"}, "")
    'tokens'
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

REQUESTS, TOKENS = "requests", "tokens"
UNITS = (REQUESTS, TOKENS)
# "Please try again in 102ms." / "try again in 6m0s" / "Try again in 20 seconds".
_TRY_AGAIN = re.compile(r"try again in\s+([0-9][0-9.hmsuµn]*)(?:\s*(seconds?|s)\b)?", re.I)
_BUDGET_WORDS = (
    (TOKENS, ("tokens per min", "(tpm)", "tokens per day", "(tpd)")),
    (REQUESTS, ("requests per min", "(rpm)", "requests per day", "(rpd)")),
)


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


# Every answer states its resets, in few distinct texts: each is parsed once a job.
@functools.lru_cache(maxsize=1024)
def parse_go_duration(text: str) -> float | None:
    """Seconds in a Go duration as sent in ``x-ratelimit-reset-*``: ``6m0s``, ``12ms``, ``8.64s``.

    Returns None for anything else; a bare number is taken as seconds.
    """
    text = text.strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    position = 0
    total = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            return None
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    return total if position == len(text) else None


@dataclass(frozen=True, slots=True)
class Stated:
    """A limit as the server states it: per minute, what is left now, seconds to full."""

    per_minute: float
    remaining: float | None
    reset: float | None


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value >= 0 and value == value and value != float("inf") else None


# The header names of each unit's limit, remaining and reset, built once.
_HEADERS = {
    unit: (
        f"x-ratelimit-limit-{unit}",
        f"x-ratelimit-remaining-{unit}",
        f"x-ratelimit-reset-{unit}",
    )
    for unit in UNITS
}


def stated_level(headers: Mapping[str, str], unit: str) -> tuple[float, float | None] | None:
    """The ``unit`` limit per minute in ``headers`` and what remains of it (None when
    unstated): :func:`stated` without the reset, for reading every answer."""
    limit_name, remaining_name, _ = _HEADERS[unit]
    per_minute = _number(headers.get(limit_name))
    if not per_minute:
        return None
    return per_minute, _number(headers.get(remaining_name))


def stated(headers: Mapping[str, str], unit: str) -> Stated | None:
    """The ``unit`` (``requests`` or ``tokens``) limit in ``headers``, or None when the
    server states none (or states it in a form that cannot be read)."""
    level = stated_level(headers, unit)
    if level is None:
        return None
    return Stated(*level, parse_go_duration(headers.get(_HEADERS[unit][2], "")))


def message_wait(message: str) -> float | None:
    """The wait a 429's message names ("Please try again in 102ms."), in seconds."""
    match = _TRY_AGAIN.search(message)
    if match is None:
        return None
    text = match.group(1).rstrip(".")
    if match.group(2):
        return _number(text)
    return parse_go_duration(text)


_LIMIT = re.compile(r"\bLimit:?\s+([0-9][0-9,]*(?:\.[0-9]+)?)")


def message_limit(message: str) -> float | None:
    """The per-minute limit a 429's message states ("... (TPM): Limit 600000, Used ..."),
    only where it is a per-minute limit."""
    lowered = message.lower()
    if "per min" not in lowered and "(tpm)" not in lowered and "(rpm)" not in lowered:
        return None
    match = _LIMIT.search(message)
    return None if match is None else _number(match.group(1).replace(",", ""))


def throttled_budget(error: Mapping[str, Any], message: str) -> str:
    """The budget a 429 names: ``tokens`` or ``requests`` (OpenAI's ``error.type``, else
    the message's words), or "" when it names none."""
    kind = str(error.get("type") or "")
    if kind in UNITS:
        return kind
    lowered = message.lower()
    for unit, words in _BUDGET_WORDS:
        if any(word in lowered for word in words):
            return unit
    return ""
