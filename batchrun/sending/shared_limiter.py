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

from batchrun.config import Settings, mask_url
from batchrun.errors import UsageError
from batchrun.sending.limiter import DEFAULT_GRACE, Limiter, RateLimiter, observed_pause
from batchrun.sending.retry import LONGEST_PAUSE

if TYPE_CHECKING:
    from redis.asyncio import Redis

Sleep = Callable[[float], Awaitable[None]]
# Seconds to connect to Redis, and to wait for one answer, before it counts as lost.
CONNECT_TIMEOUT = 3.0
ANSWER_TIMEOUT = 5.0
KEY_PREFIX = "batchrun:"

# KEYS[1]: the TAT, in microseconds of Redis TIME. ARGV: the interval between requests
# (us), the burst (requests at once), a pause (us; 0 reserves a slot), the grace (us).
# Returns the microseconds the caller waits before sending (0: go now).
GCRA_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local interval = tonumber(ARGV[1])
local tolerance = (tonumber(ARGV[2]) - 1) * interval
local pause = tonumber(ARGV[3])
local stored = tonumber(redis.call('GET', KEYS[1]))
local tat, wait
if pause > 0 then
  -- No slot before the pause ends, and then no burst: the budget restarts empty.
  tat = now + pause + tolerance
  if stored and stored >= tat then return 0 end
  wait = 0
elseif stored then
  -- A slot is allowed once the TAT is within the burst tolerance of it.
  tat = math.max(stored, now)
  wait = math.max(0, tat - tolerance - now)
  tat = tat + interval
else
  -- A fresh budget: refilling starts a short grace after the first request, whose latency
  -- includes connecting (a client in lockstep with the server would arrive early).
  tat = now + tonumber(ARGV[4]) + interval
  wait = 0
end
-- '%d': tostring() would print 16 digits in exponent form and round the TAT.
redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
return wait
"""


class SharedLimiterLost(Exception):
    """Redis stopped answering mid-job (raised when ``limiters_for`` is given no ``stop``)."""


class SharedRateLimiter:
    """GCRA on Redis: ``per_minute`` requests a minute across every process using ``key``."""

    __slots__ = (
        "_burst",
        "_clock",
        "_grace_us",
        "_interval_us",
        "_key",
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
        "granted",
    )

    def __init__(
        self,
        client: Redis,
        key: str,
        per_minute: float,
        *,
        where: str = "Redis",
        on_lost: Callable[[str], None] = lambda reason: None,
        stop: Callable[[str], Exception] = SharedLimiterLost,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        grace: float = DEFAULT_GRACE,
    ) -> None:
        self._redis = client
        self._script = client.register_script(GCRA_SCRIPT)
        self._key = key
        self._rate = per_minute / 60
        self._interval_us = 1e6 / self._rate
        # One second's worth at once, at least one: the in-process limiter's first burst.
        self._burst = max(1, int(self._rate))
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
        self.granted = 0

    @property
    def rate(self) -> float:
        """Requests per second, shared by every process using the key."""
        return self._rate

    @property
    def key(self) -> str:
        """The Redis key holding this budget's state."""
        return self._key

    async def acquire(self) -> None:
        """Reserve the next shared slot and wait for it."""
        while True:
            now = self._clock()
            if now < self._paused_until:
                await self._sleep(self._paused_until - now)
                continue
            wait_us = await self._run(0.0)
            if wait_us > 0:
                await self._sleep(wait_us / 1e6)
            # A slot that a pause (a 429 met meanwhile) has overtaken is given up: the pause
            # pushed the shared TAT past its end, so the caller reserves again after it
            # instead of sending into it.
            if self._clock() >= self._paused_until:
                break
        self.granted += 1

    def pause(self, seconds: float) -> None:
        """Hold back every process sharing the key for ``seconds``; the budget restarts empty.

        This process's own waiting callers give up slots that fall within the pause.
        """
        seconds = min(seconds, LONGEST_PAUSE)
        if seconds <= 0 or self._lost is not None:
            return
        self._paused_until = max(self._paused_until, self._clock() + seconds)
        self._push_later(seconds)

    def throttled(self, seconds: float, headers: Mapping[str, str]) -> None:
        """A 429: pause everyone sharing the key (the shared rate is fixed by ``--rpm``)."""
        self.pause(seconds)

    def observe(self, headers: Mapping[str, str]) -> None:
        """``x-ratelimit-remaining-requests: 0``: no new slot before the server has one.

        Only the shared state moves, and only when the schedule is ahead of the server:
        pacing exactly at the server's rate leaves its bucket near empty by design, and
        the slots already handed out were paced, so they are kept (a local pause here
        would give up a slot after nearly every answer).
        """
        seconds = observed_pause(headers)
        if seconds is not None and self._lost is None:
            self._push_later(min(seconds, LONGEST_PAUSE))

    def _push_later(self, seconds: float) -> None:
        # Called from synchronous code: the push to Redis runs beside the caller.
        task = asyncio.get_running_loop().create_task(self._push(seconds))
        self._pushes.add(task)
        task.add_done_callback(self._pushes.discard)

    async def aclose(self) -> None:
        """Let pauses still being pushed to Redis finish (briefly)."""
        if self._pushes:
            await asyncio.wait(set(self._pushes), timeout=ANSWER_TIMEOUT)

    async def _push(self, seconds: float) -> None:
        with contextlib.suppress(Exception):  # lost: _run has told on_lost already
            await self._run(seconds)

    async def _run(self, pause: float) -> float:
        """Run the script; the microseconds to wait. Redis gone: tell, then raise ``stop``."""
        from redis.exceptions import RedisError

        if self._lost is not None:
            raise self._stop(self._lost)
        try:
            args: list[str | float] = [self._interval_us, self._burst, round(pause * 1e6)]
            args.append(self._grace_us)
            wait: Any = await self._script(keys=[self._key], args=args)
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


@contextlib.asynccontextmanager
async def limiters_for(
    settings: Settings,
    *,
    on_lost: Callable[[str], None] = lambda reason: None,
    stop: Callable[[str], Exception] = SharedLimiterLost,
) -> AsyncIterator[tuple[Limiter, Limiter]]:
    """(create limiter, read limiter) for a job: in-process, or shared through Redis.

    With ``settings.limiter_url`` the create budget (``--rpm``) and the read budget
    (``--read-rpm``) are two Redis keys, ``<limit key>:create`` and ``<limit key>:read``;
    a read budget without ``--read-rpm`` stays in-process (it adapts to the server alone).
    """
    if settings.limiter_url is None:
        yield RateLimiter(settings.rpm), RateLimiter(settings.read_rpm)
        return
    assert settings.rpm is not None, "Settings refuses --limiter-url without --rpm"
    client = await connect(settings.limiter_url)
    base = limit_key(settings)
    options: dict[str, Any] = {"where": mask_url(settings.limiter_url), "on_lost": on_lost}
    create = SharedRateLimiter(client, f"{base}:create", settings.rpm, stop=stop, **options)
    read: Limiter = RateLimiter(None)
    if settings.read_rpm is not None:
        read = SharedRateLimiter(client, f"{base}:read", settings.read_rpm, stop=stop, **options)
    try:
        yield create, read
    finally:
        for limiter in (create, read):
            if isinstance(limiter, SharedRateLimiter):
                await limiter.aclose()
        await client.aclose()
