"""A requests-per-minute limiter whose long-run rate is exact and whose burst is bounded.

    limiter = RateLimiter(per_minute=600)    # 10 per second, at most 10 at once
    await limiter.acquire()                  # before every request it covers

A token bucket refilled at ``per_minute / 60`` per second holding one second's worth of
tokens (at least one). Unlike a leaky bucket that starts with a full period's allowance,
the first burst is one second's worth, not a minute's, because gateways enforce per-minute
limits over short windows. Refilling starts a short ``grace`` after the first request: the
first request's latency includes connecting, later ones do not, so a client refilling in
lockstep with the server would sometimes arrive a hair early and be refused.

:meth:`pause` holds back every caller (a 429 for one request means the server is
refusing all of them); :meth:`observe` applies a server's ``x-ratelimit-*`` headers.
The clock and sleep are injectable so tests never sleep for real. :class:`Limiter` is the
interface the sender relies on; :mod:`batchrun.sending.shared_limiter` implements it on Redis, for
several processes sharing one budget.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from batchrun.sending.retry import LONGEST_PAUSE, parse_go_duration

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
DEFAULT_GRACE = 0.05


class Limiter(Protocol):
    """What the sender needs of a limiter: in-process (:class:`RateLimiter`) or shared."""

    granted: int

    @property
    def rate(self) -> float | None:
        """Requests per second, or None when unlimited."""

    async def acquire(self) -> None:
        """Wait until one more request may start."""

    def pause(self, seconds: float) -> None:
        """Hold back every caller for ``seconds`` from now."""

    def throttled(self, seconds: float, headers: Mapping[str, str]) -> None:
        """A 429 answered with these headers: pause, and adapt where the limiter can."""

    def observe(self, headers: Mapping[str, str]) -> None:
        """Apply a server's ``x-ratelimit-*`` headers."""


def observed_pause(headers: Mapping[str, str]) -> float | None:
    """The pause ``x-ratelimit-*`` headers ask for, or None when requests may go on.

    When ``x-ratelimit-remaining-requests`` is below 1, the reset header says when the
    server's bucket is full again; the next single request is allowed after one token's
    time, 60 / ``x-ratelimit-limit-requests`` seconds, so the pause is the shorter of both.
    """
    remaining = headers.get("x-ratelimit-remaining-requests")
    if remaining is None:
        return None
    try:
        left = float(remaining)
    except ValueError:
        return None
    if left >= 1:
        return None
    reset = parse_go_duration(headers.get("x-ratelimit-reset-requests", "")) or 1.0
    try:
        limit = float(headers.get("x-ratelimit-limit-requests", ""))
    except ValueError:
        limit = 0.0
    return min(reset, 60.0 / limit) if limit > 0 else reset


class RateLimiter:
    """Token bucket limiter; ``per_minute=None`` limits nothing but still honours pauses."""

    __slots__ = (
        "_capacity",
        "_clock",
        "_grace",
        "_last",
        "_lock",
        "_paused_until",
        "_rate",
        "_sleep",
        "_tokens",
        "granted",
    )

    def __init__(
        self,
        per_minute: float | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        grace: float = DEFAULT_GRACE,
    ) -> None:
        self._rate = per_minute / 60 if per_minute else None
        self._capacity = max(1.0, float(int(self._rate))) if self._rate else 0.0
        self._clock = clock
        self._sleep = sleep
        self._grace = grace
        self._tokens = self._capacity
        self._last: float | None = None
        self._paused_until = 0.0
        # One waiter at a time: tokens go out in arrival order and a sleeper cannot be
        # overtaken by a newcomer that finds a freshly refilled token.
        self._lock = asyncio.Lock()
        self.granted = 0

    @property
    def rate(self) -> float | None:
        """Tokens per second, or None when unlimited."""
        return self._rate

    async def acquire(self) -> None:
        """Wait until one more request may start."""
        if self._rate is None and not self._lock.locked() and self._clock() >= self._paused_until:
            self.granted += 1  # nothing to wait for: skip the lock on the hot path
            return
        async with self._lock:
            while True:
                now = self._clock()
                if now < self._paused_until:
                    await self._sleep(self._paused_until - now)
                    continue
                if self._rate is None:
                    break
                if self._last is None:
                    self._last = now + self._grace
                elif now > self._last:
                    self._tokens = min(
                        self._capacity, self._tokens + (now - self._last) * self._rate
                    )
                    self._last = now
                # Float time cannot resolve an infinitesimal wait: count "almost one" as one.
                if self._tokens >= 1 - 1e-9:
                    self._tokens -= 1
                    break
                await self._sleep((1 - self._tokens) / self._rate)
            self.granted += 1

    def pause(self, seconds: float) -> None:
        """Hold back every caller for ``seconds`` from now; the bucket restarts empty."""
        until = self._clock() + min(seconds, LONGEST_PAUSE)
        if until > self._paused_until:
            self._paused_until = until
            # The server's own bucket is empty too: restart from nothing after the pause.
            self._tokens = 0.0
            self._last = until

    def throttled(self, seconds: float, headers: Mapping[str, str]) -> None:
        """A 429: pause everyone, and without a rate of our own, adopt the server's.

        Without a rate every paused caller would start again at the same instant and all
        but one would meet another 429; pacing at the server's advertised limit (from
        ``x-ratelimit-limit-requests``, requests per minute) spreads them out.
        """
        self.pause(seconds)
        if self._rate is None:
            try:
                limit = float(headers.get("x-ratelimit-limit-requests", ""))
            except ValueError:
                return
            if limit > 0:
                self._rate = limit / 60
                self._capacity = 1.0  # no burst after a refusal: restart gently
                self._tokens = 0.0

    def observe(self, headers: Mapping[str, str]) -> None:
        """Adapt to ``x-ratelimit-remaining-requests`` / ``x-ratelimit-reset-requests``."""
        seconds = observed_pause(headers)
        if seconds is not None:
            self.pause(seconds)
