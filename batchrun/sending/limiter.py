"""Requests and tokens per minute: exact long-run rates, bounded bursts, the server's word.

    limiter = RateLimiter(per_minute=600, tokens_per_minute=30_000)
    await limiter.acquire(tokens=1_010)      # before every request it covers

Each budget is a token bucket refilled at ``per_minute / 60`` per second holding one
second's worth (at least one). Unlike a leaky bucket that starts with a full period's
allowance, the first burst is one second's worth, not a minute's, because gateways enforce
per-minute limits over short windows. A request costing more tokens than the bucket holds
goes once the bucket is full and leaves it in debt, as the service admits it. Refilling
starts a short ``grace`` after the first request: the first request's latency includes
connecting, later ones do not, so a client refilling in lockstep with the server would
sometimes arrive a hair early and be refused.

``from_server=True`` takes every budget no flag sets from the server's ``x-ratelimit-*``
headers (:mod:`batchrun.sending.stated_limits`). Until the first answer tells the limits,
one request goes alone (a cautious start: at most ``PROBE_SECONDS``, and only while that
request may still be answered); then each
answer's ``remaining`` can only lower what the budget holds, so another client spending the
same account slows this one. A server that states no limits leaves only the concurrency cap
and 429 handling.

:meth:`pause` holds back every caller (a 429 for one request means the server is
refusing all of them) and restarts a budget empty; :meth:`throttled` is a 429 naming its
budget. The clock and sleep are injectable so tests never sleep for real. :class:`Limiter`
is the interface the sender relies on; :mod:`batchrun.sending.shared_limiter` implements it
on Redis, for several processes sharing one budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from batchrun.sending.retry import LONGEST_PAUSE
from batchrun.sending.stated_limits import (
    REQUESTS,
    TOKENS,
    UNITS,
    parse_go_duration,
    stated,
    stated_level,
)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
DEFAULT_GRACE = 0.05
# A request that needs a whole budget (one a second or slower; tokens beyond a second's
# worth) goes this much after the budget is full again: the server's bucket is empty as
# the one before arrives, so a request exactly one interval later races it, and the least
# delay on the way of the one before made a 429 of it. 1% of the rate at 60/min.
DRAINED_SLACK = 0.01
# The longest the first request goes alone while the server has not told its limits.
PROBE_SECONDS = 5.0
FROM_SERVER = "the server's x-ratelimit headers"
FROM_429 = "stated in a 429"


class Limiter(Protocol):
    """What the sender needs of a limiter: in-process (:class:`RateLimiter`) or shared."""

    @property
    def rate(self) -> float | None:
        """Requests per second, or None when unlimited."""

    async def acquire(self, tokens: int = 0) -> None:
        """Wait until one more request, charged ``tokens``, may start."""

    def pause(self, seconds: float) -> None:
        """Hold back every caller for ``seconds`` from now."""

    def throttled(
        self,
        seconds: float,
        headers: Mapping[str, str],
        budget: str = "",
        limit: float | None = None,
    ) -> None:
        """A 429 answered with these headers, naming ``budget`` (``requests``, ``tokens`` or
        "") and perhaps its per-minute ``limit``: pause, and adapt where the limiter can."""

    def observe(self, headers: Mapping[str, str]) -> None:
        """Apply a server's ``x-ratelimit-*`` headers."""

    def in_force(self) -> str:
        """The limits in force and where they came from, for the summary."""


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


def per_minute_text(per_minute: float, unit: str) -> str:
    """``600000.0, "tokens"`` -> ``"600,000 tokens/min"``."""
    number = f"{per_minute:,.0f}" if per_minute == int(per_minute) else f"{per_minute:,.2f}"
    return f"{number} {unit}/min"


class Budget:
    """One token bucket: ``per_minute`` units a minute, one second's worth at once."""

    __slots__ = ("capacity", "last", "level", "per_minute", "rate", "source")

    def __init__(self, per_minute: float, source: str) -> None:
        self.per_minute = self.rate = self.capacity = 0.0
        self.set_limit(per_minute)
        self.level = self.capacity
        self.last: float | None = None
        self.source = source

    def set_limit(self, per_minute: float) -> None:
        """A new limit; what the bucket holds stays, within the new capacity."""
        self.per_minute = per_minute
        self.rate = per_minute / 60
        self.capacity = max(1.0, float(int(self.rate)))

    def refill(self, now: float, grace: float) -> None:
        if self.last is None:
            self.last = now + grace
        elif now > self.last:
            self.level = min(self.capacity, self.level + (now - self.last) * self.rate)
            self.last = now

    def shortfall(self, cost: float) -> float:
        """Seconds until ``cost`` may be taken (a cost beyond the capacity: a full bucket,
        and :data:`DRAINED_SLACK` more when it is refilling to that)."""
        needed = min(cost, self.capacity)
        # Float time cannot resolve an infinitesimal wait: count "almost enough" as enough.
        if self.level >= needed - 1e-9:
            return 0.0
        slack = DRAINED_SLACK if needed >= self.capacity else 0.0
        return (needed - self.level) / self.rate + slack

    def empty(self, at: float) -> None:
        """Restart from nothing (or from the debt it is in) at ``at``."""
        self.level = min(self.level, 0.0)
        self.last = at


class RateLimiter:
    """Request and token budgets; with neither (and no server limits) only pauses hold back."""

    __slots__ = (
        "_budgets",
        "_clock",
        "_from_server",
        "_grace",
        "_known",
        "_lock",
        "_paused_until",
        "_probe",
        "_probe_tokens",
        "_sleep",
    )

    def __init__(
        self,
        per_minute: float | None = None,
        *,
        tokens_per_minute: float | None = None,
        from_server: bool = False,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        grace: float = DEFAULT_GRACE,
    ) -> None:
        self._budgets: dict[str, Budget] = {}
        if per_minute:
            self._budgets[REQUESTS] = Budget(per_minute, "--rpm")
        if tokens_per_minute:
            self._budgets[TOKENS] = Budget(tokens_per_minute, "--tpm")
        self._from_server = from_server
        self._clock = clock
        self._sleep = sleep
        self._grace = grace
        self._paused_until = 0.0
        # The cautious start: None once the limits are known (or none are wanted from the
        # server); else the task holding the one request allowed meanwhile ("" before it).
        cautious = from_server and not self._budgets
        self._probe: asyncio.Task[object] | str | None = "" if cautious else None
        # What the first request was charged before any budget existed: a tokens budget
        # made from its answer starts that much lower (the server's bucket may be in debt,
        # which its remaining, never below 0, cannot say).
        self._probe_tokens = 0
        self._known = asyncio.Event()
        # One waiter at a time: grants go out in arrival order and a sleeper cannot be
        # overtaken by a newcomer that finds a freshly refilled bucket.
        self._lock = asyncio.Lock()

    @property
    def rate(self) -> float | None:
        """Requests per second, or None when unlimited."""
        budget = self._budgets.get(REQUESTS)
        return budget.rate if budget is not None else None

    def budget(self, unit: str) -> Budget | None:
        """The budget of ``unit`` (``requests`` or ``tokens``), if one is in force."""
        return self._budgets.get(unit)

    async def acquire(self, tokens: int = 0) -> None:
        """Wait until one more request, charged ``tokens``, may start."""
        if self._probe is not None and await self._alone():
            self._take(tokens)
            self._probe_tokens = tokens
            return
        if not self._lock.locked() and self._wait(tokens) == 0.0:
            self._take(tokens)  # nothing to wait for: skip the lock on the hot path
            return
        async with self._lock:
            while (wait := self._wait(tokens)) > 0.0:
                await self._sleep(wait)
            self._take(tokens)

    async def _alone(self) -> bool:
        """The cautious start: True for the first request, which goes alone; the others
        wait (outside the lock) until an answer tells the limits."""
        task = asyncio.current_task()
        if self._probe == "":
            self._probe = task
            return True
        if self._probe is task:
            # The first request's task asks again before any answer told the limits: its
            # request got none (a dropped connection, a refused port). Waiting on would
            # only delay everyone: go on without the limits, and take them when stated.
            self._limits_known()
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._known.wait(), PROBE_SECONDS)
        self._limits_known()  # waited long enough: go on without them
        return False

    def _wait(self, tokens: int) -> float:
        """Seconds to wait before a request of ``tokens`` may go (0.0: go now)."""
        now = self._clock()
        if now < self._paused_until:
            return self._paused_until - now
        wait = 0.0
        for unit, budget in self._budgets.items():
            budget.refill(now, self._grace)
            wait = max(wait, budget.shortfall(1 if unit == REQUESTS else tokens))
        return wait

    def _take(self, tokens: int) -> None:
        for unit, budget in self._budgets.items():
            budget.level -= 1 if unit == REQUESTS else tokens

    def _limits_known(self) -> None:
        if self._probe is not None:
            self._probe = None
            self._known.set()
        self._probe_tokens = 0  # told by the first answer, or never

    def pause(self, seconds: float, budget: str = "", *, empty: bool = True) -> None:
        """Hold back every caller for ``seconds`` from now; ``budget`` (every one if "")
        restarts empty after it, as the server's has (``empty``: a 429's refusal; a pause
        that only waits for the server's next free slot leaves the budgets as they are)."""
        until = self._clock() + min(seconds, LONGEST_PAUSE)
        if until > self._paused_until:
            self._paused_until = until
            if not empty:
                return
            for unit, held in self._budgets.items():
                if not budget or unit == budget:
                    held.empty(until)

    def throttled(
        self,
        seconds: float,
        headers: Mapping[str, str],
        budget: str = "",
        limit: float | None = None,
    ) -> None:
        """A 429: pause everyone; the budget it names restarts empty, and a budget not yet
        known is taken from the 429's headers, else from the limit its message states
        (pacing at the server's limit spreads out the callers the pause held back, who
        would otherwise meet another 429 together)."""
        self._adopt(headers)
        unit = budget if budget in UNITS else REQUESTS
        if unit not in self._budgets:
            header = stated(headers, unit)
            per_minute = header.per_minute if header is not None else limit
            if per_minute:
                source = FROM_SERVER if header is not None else FROM_429
                held = self._budgets[unit] = Budget(per_minute, source)
                if unit == REQUESTS:
                    held.capacity = 1.0  # no burst after a refusal: restart gently
        self._limits_known()
        self.pause(seconds, unit)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Apply an answer's ``x-ratelimit-*`` headers: limits not set by a flag follow the
        server's, and ``remaining`` lowers what a budget taken from the server holds; without
        a requests budget of the server's, ``remaining-requests: 0`` pauses."""
        self._adopt(headers)
        self._limits_known()
        held = self._budgets.get(REQUESTS)
        if held is None or held.source != FROM_SERVER:
            seconds = observed_pause(headers)
            if seconds is not None:
                # Until the server's next free slot, no more: a --rpm at the server's own
                # rate leaves its bucket empty after every request by design, and emptying
                # ours as well made each request wait the pause and then a refill (half
                # the rate).
                self.pause(seconds, REQUESTS, empty=False)

    def _adopt(self, headers: Mapping[str, str]) -> None:
        if not self._from_server:
            return
        now: float | None = None
        for unit in UNITS:
            level = stated_level(headers, unit)
            if level is None:
                continue
            per_minute, remaining = level
            now = self._clock() if now is None else now
            held = self._budgets.get(unit)
            if held is None:
                held = self._budgets[unit] = Budget(per_minute, FROM_SERVER)
                held.last = now
                if unit == TOKENS:
                    held.level -= self._probe_tokens
            elif held.source.startswith("--"):
                continue  # a flag overrides the server
            elif held.per_minute != per_minute or held.source != FROM_SERVER:
                held.set_limit(per_minute)
                held.source = FROM_SERVER
            if remaining is not None:
                held.refill(now, self._grace)
                held.level = min(held.level, remaining)

    def in_force(self) -> str:
        """``600,000 tokens/min (--tpm)``; ``none (...)`` when nothing limits the pace."""
        parts = [
            f"{per_minute_text(held.per_minute, unit)} ({held.source})"
            for unit, held in sorted(self._budgets.items())
        ]
        if parts:
            return ", ".join(parts)
        if self._from_server:
            return "none stated by the server (concurrency cap and 429s only)"
        return "none"
