"""A requests-per-minute budget shared through Redis by every process that names one key.

    async with limiters_for(settings, on_lost=control.abort, stop=StopSending) as limiters:
        create_limiter, read_limiter = limiters
        await create_limiter.acquire()           # before every run creation

or on its own, with the interface of :class:`batchrun.sending.limiter.RateLimiter`::

    client = await connect("redis://127.0.0.1:6379/0")
    limiter = SharedRateLimiter(client, "batchrun:team-a:create", per_minute=600)
    await limiter.acquire()                      # 10 a second across every process

The algorithm is GCRA (the generic cell rate algorithm) in one Lua script, run atomically
by Redis. The key holds the *theoretical arrival time* (TAT): when the budget would be
back to full if nobody asked again. Each :meth:`~SharedRateLimiter.acquire` *reserves*
the next slot and learns how long to wait for it: one round trip, no polling, and slots go
out in the order Redis sees the requests. Time is Redis's own (``TIME``), so the clocks of
the machines sharing the key never enter into it. As in-process, the first burst is one
second's worth (at least one request) and the steady rate is exact.

A slot, once reserved, is spent: a process killed while waiting loses at most the slots it
holds (one per waiting caller, at most ``--concurrency``), never more, and nothing needs
cleaning up: the key expires when its budget is full again.

A 429's pause pushes the shared TAT past its end, so every process sharing the key holds
back, and the budget restarts empty after it, as in-process; slots that other processes
reserved before it still go out, this process's own waiting callers reserve again.
``x-ratelimit-remaining-requests: 0`` pushes the TAT to the server's next free slot, only
when the schedule is ahead of the server. If Redis goes away, ``on_lost`` is told once and
the waiting caller gets ``stop(reason)`` raised: the job stops dispatching (exit 3) with the
rows left for the next run. ``redis`` is imported only when a client is made (``--limiter-url``),
so ``batchrun --help`` stays quick.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from batchrun.config import Settings
from batchrun.errors import UsageError
from batchrun.sending.limiter import (
    DEFAULT_GRACE,
    DRAINED_SLACK,
    Limiter,
    RateLimiter,
    observed_pause,
    per_minute_text,
)
from batchrun.sending.retry import LONGEST_PAUSE
from batchrun.sending.stated_limits import REQUESTS, TOKENS
from batchrun.sending.urls import mask_url

if TYPE_CHECKING:
    from redis.asyncio import Redis

Sleep = Callable[[float], Awaitable[None]]
# Seconds to connect to Redis, and to wait for one answer, before it counts as lost.
CONNECT_TIMEOUT = 3.0
ANSWER_TIMEOUT = 5.0
# Slots are handed out ahead, exactly one interval apart: without the slack, about half
# the requests at --rpm 60 met a 429 (see DRAINED_SLACK).
DRAINED_SLACK_US = round(DRAINED_SLACK * 1e6)
KEY_PREFIX = "batchrun:"

# KEYS: the TAT of each budget (requests, then tokens), in microseconds of Redis TIME.
# ARGV: a pause (us; 0 reserves), the grace (us), the slack (us) of a request that needs a
# whole budget, then per key: the interval between units (us), the burst (units at once)
# and the units this request costs. Returns the
# microseconds the caller waits before sending (0: go now). A request waits until every
# budget holds its cost (a cost beyond the burst: a full budget, left in debt), then takes
# it from each at that moment: the budgets move together, in one atomic step.
GCRA_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local pause = tonumber(ARGV[1])
local go = now
local bases = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[3 * i + 1])
  local burst = tonumber(ARGV[3 * i + 2])
  local cost = tonumber(ARGV[3 * i + 3])
  local stored = tonumber(redis.call('GET', key))
  if pause > 0 then
    -- No unit before the pause ends, and then no burst: the budget restarts empty.
    local tat = now + pause + (burst - 1) * interval
    if not stored or stored < tat then
      redis.call('SET', key, string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
    end
  elseif stored then
    -- Units are there once the TAT is within the burst tolerance of them.
    bases[i] = math.max(stored, now)
    local ready = bases[i] - (burst - math.min(cost, burst)) * interval
    if cost >= burst and stored > now then
      -- It needs the whole budget, which is not full: the server's bucket is empty when
      -- the one before arrives, so a slot exactly one interval later races it.
      ready = ready + tonumber(ARGV[3])
    end
    if ready > go then go = ready end
  else
    -- A fresh budget, full: refilling starts a short grace after the first request, whose
    -- latency includes connecting (a client in lockstep with the server would arrive early).
    bases[i] = now + tonumber(ARGV[2])
  end
end
if pause > 0 then return 0 end
for i, key in ipairs(KEYS) do
  local tat = math.max(bases[i], go) + tonumber(ARGV[3 * i + 3]) * tonumber(ARGV[3 * i + 1])
  -- '%d': tostring() would print 16 digits in exponent form and round the TAT.
  redis.call('SET', key, string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
end
return go - now
"""


class SharedLimiterLost(Exception):
    """Redis stopped answering mid-job (raised when ``limiters_for`` is given no ``stop``)."""


class SharedRateLimiter:
    """GCRA on Redis: ``per_minute`` requests and ``tokens_per_minute`` tokens a minute
    across every process using ``key`` (the tokens under ``<key>:tokens``)."""

    __slots__ = (
        "_budgets",
        "_clock",
        "_grace_us",
        "_lost",
        "_on_lost",
        "_paused_until",
        "_pushes",
        "_rate",
        "_redis",
        "_script",
        "_sleep",
        "_stop",
        "_where",
        "key",
    )

    def __init__(
        self,
        client: Redis,
        key: str,
        per_minute: float | None,
        *,
        tokens_per_minute: float | None = None,
        where: str = "Redis",
        on_lost: Callable[[str], None] = lambda reason: None,
        stop: Callable[[str], Exception] = SharedLimiterLost,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        grace: float = DEFAULT_GRACE,
    ) -> None:
        self._redis = client
        self._script = client.register_script(GCRA_SCRIPT)
        self.key = key
        self._rate = per_minute / 60 if per_minute else None
        # (unit, Redis key, microseconds a unit, burst): one second's worth at once, at
        # least one, as in-process.
        self._budgets: list[tuple[str, str, float, int, float]] = []
        for unit, name, limit in (
            (REQUESTS, key, per_minute),
            (TOKENS, f"{key}:tokens", tokens_per_minute),
        ):
            if limit:
                rate = limit / 60
                self._budgets.append((unit, name, 1e6 / rate, max(1, int(rate)), limit))
        if not self._budgets:
            raise ValueError("a shared limiter needs per_minute or tokens_per_minute")
        self._grace_us = grace * 1e6
        self._where = where
        self._on_lost = on_lost
        self._stop = stop
        self._clock = clock
        self._sleep = sleep
        self._lost: str | None = None
        # Local pauses only: they let this process's own waiting callers re-reserve. Not
        # 0.0: nothing promises a local clock above zero (the clock-skew test sets one below).
        self._paused_until = -math.inf
        self._pushes: set[asyncio.Task[None]] = set()

    @property
    def rate(self) -> float | None:
        """Requests per second, shared by every process using the key (None: tokens only)."""
        return self._rate

    async def acquire(self, tokens: int = 0) -> None:
        """Reserve the next shared slot for a request of ``tokens`` and wait for it."""
        while True:
            now = self._clock()
            if now < self._paused_until:
                await self._sleep(self._paused_until - now)
                continue
            wait_us = await self._run(0.0, tokens)
            if wait_us > 0:
                await self._sleep(wait_us / 1e6)
            # A slot that a pause (a 429 met meanwhile) has overtaken is given up: the pause
            # pushed the shared TAT past its end, so the caller reserves again after it
            # instead of sending into it.
            if self._clock() >= self._paused_until:
                break

    def pause(self, seconds: float, budget: str = "") -> None:
        """Hold back every process sharing the key for ``seconds``; ``budget`` (every one
        if "") restarts empty.

        This process's own waiting callers give up slots that fall within the pause.
        """
        seconds = min(seconds, LONGEST_PAUSE)
        if seconds <= 0 or self._lost is not None:
            return
        self._paused_until = max(self._paused_until, self._clock() + seconds)
        self._push_later(seconds, budget)

    def throttled(
        self,
        seconds: float,
        headers: Mapping[str, str],
        budget: str = "",
        limit: float | None = None,
    ) -> None:
        """A 429: pause everyone sharing the key; the budget it names restarts empty (the
        shared rates are fixed by ``--rpm``/``--tpm``)."""
        named = budget if any(unit == budget for unit, *_ in self._budgets) else ""
        self.pause(seconds, named)

    def observe(self, headers: Mapping[str, str]) -> None:
        """``x-ratelimit-remaining-requests: 0``: no new slot before the server has one.

        Only the shared state moves, and only when the schedule is ahead of the server:
        pacing exactly at the server's rate leaves its bucket near empty by design, and
        the slots already handed out were paced, so they are kept (a local pause here
        would give up a slot after nearly every answer).
        """
        seconds = observed_pause(headers)
        if seconds is not None and self._lost is None and self._rate is not None:
            self._push_later(min(seconds, LONGEST_PAUSE), REQUESTS)

    def in_force(self) -> str:
        """The shared limits, e.g. ``600 requests/min (--rpm, shared through Redis)``."""
        return ", ".join(
            f"{per_minute_text(limit, unit)} (--{unit[0]}pm, shared through {self._where})"
            for unit, _, _, _, limit in self._budgets
        )

    def _push_later(self, seconds: float, budget: str) -> None:
        # Called from synchronous code: the push to Redis runs beside the caller.
        task = asyncio.get_running_loop().create_task(self._push(seconds, budget))
        self._pushes.add(task)
        task.add_done_callback(self._pushes.discard)

    async def aclose(self) -> None:
        """Let pauses still being pushed to Redis finish (briefly)."""
        if self._pushes:
            await asyncio.wait(set(self._pushes), timeout=ANSWER_TIMEOUT)

    async def _push(self, seconds: float, budget: str) -> None:
        with contextlib.suppress(Exception):  # lost: _run has told on_lost already
            await self._run(seconds, 0, budget)

    async def _run(self, pause: float, tokens: int, budget: str = "") -> float:
        """Run the script (a pause of ``budget``, every one if "", or a reservation of a
        request of ``tokens``); the microseconds to wait. Redis gone: tell, then raise
        ``stop``."""
        from redis.exceptions import RedisError

        if self._lost is not None:
            raise self._stop(self._lost)
        keys: list[str] = []
        args: list[str | float] = [round(pause * 1e6), self._grace_us, DRAINED_SLACK_US]
        for unit, key, interval_us, burst, _ in self._budgets:
            if pause > 0 and budget and unit != budget:
                continue
            keys.append(key)
            args += [interval_us, burst, 1 if unit == REQUESTS else tokens]
        try:
            wait: Any = await self._script(keys=keys, args=args)
        except (RedisError, OSError) as error:
            if self._lost is None:
                self._lost = f"lost the shared rate limiter at {self._where} ({error})"
                self._on_lost(self._lost)
            raise self._stop(self._lost) from None
        return float(wait)


def limit_key(settings: Settings) -> str:
    """The Redis key prefix of a job's budgets: ``--limiter-key``, else the base URL plus a
    hash of the API key (never the key itself), so jobs sharing a key share a budget."""
    if settings.limiter_key:
        return f"{KEY_PREFIX}{settings.limiter_key.strip()}"
    digest = hashlib.sha256((settings.api_key or "").encode()).hexdigest()[:16]
    return f"{KEY_PREFIX}{settings.base_url.rstrip('/')}:{digest}"


async def connect(url: str) -> Redis:
    """A client for ``url``, checked with a PING; :class:`UsageError` (exit 2) if unreachable.

    Messages name the URL with its password masked.
    """
    import redis.asyncio
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import RedisError

    where = mask_url(url)
    try:
        client = redis.asyncio.from_url(
            url,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=ANSWER_TIMEOUT,
            # A blip (a restart) is ridden out; a Redis that stays away stops the job soon.
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        )
    except ValueError as error:
        raise UsageError(f"--limiter-url {where}: {error}") from None
    try:
        await client.ping()
    except (RedisError, OSError) as error:
        await client.aclose()
        raise UsageError(
            f"--limiter-url {where}: cannot reach Redis ({error}); nothing was sent"
        ) from None
    return client


def read_limiter(settings: Settings) -> RateLimiter:
    """The in-process read budget: ``--read-rpm``, else the rate the answers to reads
    state (their ``x-ratelimit-*`` headers), as the create budget takes its own."""
    return RateLimiter(settings.read_rpm, from_server=True)


@contextlib.asynccontextmanager
async def limiters_for(
    settings: Settings,
    *,
    on_lost: Callable[[str], None] = lambda reason: None,
    stop: Callable[[str], Exception] = SharedLimiterLost,
) -> AsyncIterator[tuple[Limiter, Limiter]]:
    """(create limiter, read limiter) for a job: in-process, or shared through Redis.

    In-process, the create limiter holds ``--rpm`` and ``--tpm`` and takes what they leave
    unset from the server's headers. With ``settings.limiter_url`` the create budgets
    (``--rpm``, ``--tpm``) and the read budget (``--read-rpm``) are Redis keys,
    ``<limit key>:create`` (``:create:tokens``) and ``<limit key>:read``; a read budget
    without ``--read-rpm`` stays in-process (it adapts to the server alone).
    """
    if settings.limiter_url is None:
        create_limiter = RateLimiter(settings.rpm, tokens_per_minute=settings.tpm, from_server=True)
        yield create_limiter, read_limiter(settings)
        return
    assert settings.rpm or settings.tpm, "Settings refuses --limiter-url without --rpm/--tpm"
    client = await connect(settings.limiter_url)
    base = limit_key(settings)
    options: dict[str, Any] = {"where": mask_url(settings.limiter_url), "on_lost": on_lost}
    create = SharedRateLimiter(
        client, f"{base}:create", settings.rpm, tokens_per_minute=settings.tpm, stop=stop, **options
    )
    read: Limiter = read_limiter(settings)
    if settings.read_rpm is not None:
        read = SharedRateLimiter(client, f"{base}:read", settings.read_rpm, stop=stop, **options)
    try:
        yield create, read
    finally:
        for limiter in (create, read):
            if isinstance(limiter, SharedRateLimiter):
                await limiter.aclose()
        await client.aclose()
