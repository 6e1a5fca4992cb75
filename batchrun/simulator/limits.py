"""Token buckets for ``--rpm``/``--read-rpm`` and the ``x-ratelimit-*`` headers they show.

A bucket refills at ``per_minute / 60`` tokens a second and holds ``capacity`` tokens, as
gateways enforce per-minute limits over short windows: a client that sends a whole minute's
budget at once is refused, one that spreads it evenly never is.

Headers follow OpenAI's: ``x-ratelimit-limit-requests`` is the per-minute limit,
``-remaining-requests`` what may be sent right now without a 429 (the whole tokens in the
bucket), and ``-reset-requests`` the time until the bucket is full again, as a Go duration.
The ``-tokens`` twins are plausible fakes derived from the request's size.
"""

from __future__ import annotations

UNLIMITED_REQUESTS = 10_000
TOKENS_PER_MINUTE = 2_000_000


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


class TokenBucket:
    """Allows ``per_minute`` requests a minute, at most ``capacity`` of them at once."""

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

    def take(self, now: float) -> float:
        """Take one token; 0.0 if granted, else the seconds until one is available."""
        self._refill(now)
        # The epsilon forgives float rounding, so a client pacing exactly at the rate passes.
        if self.tokens >= 1.0 - 1e-6:
            self.tokens = max(0.0, self.tokens - 1.0)
            return 0.0
        return (1.0 - self.tokens) / self.rate

    def headers(self, now: float) -> dict[str, str]:
        """The ``x-ratelimit-*-requests`` headers describing this bucket at ``now``."""
        self._refill(now)
        return {
            "x-ratelimit-limit-requests": plain_number(self.per_minute),
            "x-ratelimit-remaining-requests": str(int(self.tokens)),
            "x-ratelimit-reset-requests": go_duration((self.capacity - self.tokens) / self.rate),
        }


UNLIMITED_HEADERS = {
    "x-ratelimit-limit-requests": str(UNLIMITED_REQUESTS),
    "x-ratelimit-remaining-requests": str(UNLIMITED_REQUESTS - 1),
    "x-ratelimit-reset-requests": go_duration(60.0 / UNLIMITED_REQUESTS),
}


def token_headers(content_length: int | None) -> dict[str, str]:
    """Fake but plausible ``x-ratelimit-*-tokens`` headers for a request of this size."""
    # About four characters a token, as OpenAI estimates before counting properly.
    used = (content_length or 0) // 4 + 1
    return {
        "x-ratelimit-limit-tokens": str(TOKENS_PER_MINUTE),
        "x-ratelimit-remaining-tokens": str(TOKENS_PER_MINUTE - used),
        "x-ratelimit-reset-tokens": go_duration(used * 60.0 / TOKENS_PER_MINUTE),
    }
