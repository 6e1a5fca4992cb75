"""Token buckets for ``--rpm``/``--read-rpm``/``--tpm`` and the ``x-ratelimit-*`` headers.

A bucket refills at ``per_minute / 60`` units a second and holds ``capacity`` units, as
gateways enforce per-minute limits over short windows: a client that sends a whole minute's
budget at once is refused, one that spreads it evenly never is. A request bucket charges
each request 1; the token bucket (``--tpm``) charges what the service charges at admission:
characters/4 of the prompt plus the request's maximum output tokens (:func:`charged_tokens`).
A request larger than the bucket is admitted once the bucket is full and leaves it in debt,
so anything up to the per-minute limit can pass, as on the service.

Headers follow OpenAI's: ``x-ratelimit-limit-requests`` is the per-minute limit,
``-remaining-requests`` what may be sent right now without a 429 (the whole units in the
bucket), and ``-reset-requests`` the time until the bucket is full again, as a Go duration;
the same three for ``-tokens``. Without a limit of a kind, its headers state a generous one
that no single client reaches.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

UNLIMITED_REQUESTS = 1_000_000
UNLIMITED_TOKENS = 1_000_000_000
# Where a prompt may be, by endpoint: messages (chat), input and instructions (responses),
# instructions and additional_messages (runs).
PROMPT_FIELDS = (
    "messages",
    "input",
    "instructions",
    "additional_instructions",
    "additional_messages",
)
MAX_OUTPUT_FIELDS = ("max_output_tokens", "max_completion_tokens", "max_tokens")


def plain_number(value: float) -> str:
    """``200.0`` -> ``"200"``, ``0.5`` -> ``"0.5"``: never an exponent."""
    return str(int(value)) if value == int(value) else f"{value:.6f}".rstrip("0")


def go_duration(seconds: float) -> str:
    """Seconds as Go prints a ``time.Duration``: ``12ms``, ``1s``, ``8.64s``, ``6m0s``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        # Go would print µs below a millisecond; a client only needs "very soon".
        return f"{max(1.0, round(seconds * 1000, 3)):g}ms"
    whole_minutes, rest = divmod(round(seconds, 3), 60)
    hours, minutes = divmod(int(whole_minutes), 60)
    text = f"{round(rest, 3):g}s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    if minutes:
        return f"{minutes}m{text}"
    return text


# Keys whose values say what an item is, not what it says.
NOT_TEXT = frozenset({"role", "type"})


def _characters(value: Any) -> int:
    """The characters of the text in a prompt field, however deeply it is nested."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, Mapping):
        return sum(_characters(item) for key, item in value.items() if key not in NOT_TEXT)
    if isinstance(value, list):
        return sum(_characters(item) for item in value)
    return 0


def charged_tokens(body: Mapping[str, Any]) -> int:
    """What a create costs at admission: characters/4 of its prompt (rounded up) plus its
    maximum output tokens (none when it states none), once for each of chat's ``n`` answers."""
    characters = sum(_characters(body.get(name)) for name in PROMPT_FIELDS)
    most = 0
    for name in MAX_OUTPUT_FIELDS:
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            answers = body.get("n")
            most = value * (answers if type(answers) is int and answers > 0 else 1)
            break
    return -(-characters // 4) + most


class TokenBucket:
    """Allows ``per_minute`` units a minute, at most ``capacity`` of them at once."""

    __slots__ = ("capacity", "per_minute", "rate", "stamp", "tokens")

    def __init__(self, per_minute: float, capacity: float, now: float) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        self.capacity = capacity
        self.tokens = capacity  # starts full
        self.stamp = now

    def _refill(self, now: float) -> None:
        # max(): a clock that steps back must not drain the bucket.
        elapsed = max(0.0, now - self.stamp)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
        self.stamp = now

    def take(self, now: float, cost: float = 1.0) -> float:
        """Take ``cost`` units; 0.0 if granted, else the seconds until they would be.

        A cost above the capacity needs a full bucket and leaves it in debt.
        """
        self._refill(now)
        needed = min(cost, self.capacity)
        # The epsilon forgives float rounding, so a client pacing exactly at the rate passes.
        if self.tokens >= needed - 1e-6:
            self.tokens = self.tokens - cost if cost > 1.0 else max(0.0, self.tokens - cost)
            return 0.0
        return (needed - self.tokens) / self.rate

    def headers(self, now: float, kind: str) -> dict[str, str]:
        """The ``x-ratelimit-*-{kind}`` headers describing this bucket at ``now``."""
        self._refill(now)
        return {
            f"x-ratelimit-limit-{kind}": plain_number(self.per_minute),
            f"x-ratelimit-remaining-{kind}": str(max(0, int(self.tokens))),
            f"x-ratelimit-reset-{kind}": go_duration((self.capacity - self.tokens) / self.rate),
        }


UNLIMITED_HEADERS = {
    "requests": {
        "x-ratelimit-limit-requests": str(UNLIMITED_REQUESTS),
        "x-ratelimit-remaining-requests": str(UNLIMITED_REQUESTS - 1),
        "x-ratelimit-reset-requests": go_duration(60.0 / UNLIMITED_REQUESTS),
    },
    "tokens": {
        "x-ratelimit-limit-tokens": str(UNLIMITED_TOKENS),
        "x-ratelimit-remaining-tokens": str(UNLIMITED_TOKENS),
        "x-ratelimit-reset-tokens": "0s",
    },
}
