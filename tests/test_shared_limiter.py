"""The shared limiter in one process, on a real redis-server: budgets, pauses, losing Redis.

Timing tests run on the real clock (a fake one cannot reach Redis's ``TIME``); the rates are
chosen so that each test waits well under a second.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import pytest
from job_support import TEST_KEY, settings_for
from redis_server import RedisServer, free_port

from batchrun.config import Settings
from batchrun.errors import UsageError
from batchrun.sending.limiter import RateLimiter
from batchrun.sending.shared_limiter import SharedRateLimiter, connect, limit_key, limiters_for

BASE_URL = "http://127.0.0.1:9/v1"


class Stopped(Exception):
    """What the tests ask the limiter to raise once Redis is lost."""


def shared_settings(url: str, **options: Any) -> Settings:
    return settings_for(BASE_URL, **{"rpm": 600, "limiter_url": url, **options})


async def all_keys_and_values(server: RedisServer) -> dict[str, str]:
    client = await connect(server.url)
    try:
        keys = [key.decode() for key in await client.keys("*")]
        return {key: (await client.get(key) or b"").decode() for key in keys}
    finally:
        await client.aclose()


def test_the_first_burst_is_one_seconds_worth_then_the_exact_rate(
    redis_server: RedisServer,
) -> None:
    async def main() -> list[float]:
        client = await connect(redis_server.url)
        limiter = SharedRateLimiter(client, "batchrun:burst", per_minute=1200)  # 20/s
        times: list[float] = []

        async def caller() -> None:
            for _ in range(6):
                await limiter.acquire()
                times.append(time.monotonic())

        started = time.monotonic()
        await asyncio.gather(*(caller() for _ in range(5)))
        await client.aclose()
        return [t - started for t in sorted(times)]

    # Times count from before the first request: a slot is never granted early, only late
    # on a loaded machine, so the lower bounds are exact and the upper ones leave 0.25 s.
    times = asyncio.run(main())
    assert times[19] < 0.35  # 20 without waiting (the round trips only): one second's worth
    # Then one every 50 ms, after the 50 ms grace: the 21st at ~0.1 s, the 30th at ~0.55 s.
    assert 0.095 <= times[20] <= 0.35
    assert 0.545 <= times[29] <= 0.8


def test_create_and_read_budgets_are_shared_separately(redis_server: RedisServer) -> None:
    settings = shared_settings(redis_server.url, rpm=60, read_rpm=60)  # one a second each

    async def main() -> None:
        async with limiters_for(settings) as (create, read):
            await create.acquire()  # the create budget's one-second burst is spent
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(create.acquire(), 0.2)
            started = time.monotonic()
            await read.acquire()  # the read budget is untouched: no wait of ~0.8 s
            assert time.monotonic() - started < 0.4
            keys = await all_keys_and_values(redis_server)
        base = limit_key(settings)
        assert set(keys) == {f"{base}:create", f"{base}:read"}

    asyncio.run(main())


def test_a_read_budget_without_read_rpm_stays_in_process(redis_server: RedisServer) -> None:
    async def main() -> None:
        async with limiters_for(shared_settings(redis_server.url)) as (create, read):
            assert isinstance(create, SharedRateLimiter) and create.rate == 10
            assert isinstance(read, RateLimiter) and read.rate is None

    asyncio.run(main())


def test_the_limit_key_holds_a_hash_of_the_api_key_never_the_key(
    redis_server: RedisServer,
) -> None:
    settings = shared_settings(redis_server.url)

    async def main() -> dict[str, str]:
        async with limiters_for(settings) as (create, _):
            await create.acquire()
            return await all_keys_and_values(redis_server)

    stored = asyncio.run(main())
    digest = hashlib.sha256(TEST_KEY.encode()).hexdigest()[:16]
    assert list(stored) == [f"batchrun:{BASE_URL}:{digest}:create"]
    assert not any(TEST_KEY in key or TEST_KEY in value for key, value in stored.items())


def test_limiter_key_names_the_shared_budget(redis_server: RedisServer) -> None:
    settings = shared_settings(redis_server.url, limiter_key="team-a")
    other = settings_for("https://elsewhere.example/v1", key="sk-other-key-42", rpm=600)

    async def main() -> dict[str, str]:
        async with limiters_for(settings) as (create, _):
            await create.acquire()
            return await all_keys_and_values(redis_server)

    assert list(asyncio.run(main())) == ["batchrun:team-a:create"]
    assert limit_key(other) != limit_key(settings_for(BASE_URL, rpm=600))


def test_a_pause_holds_back_every_process_sharing_the_key(redis_server: RedisServer) -> None:
    """One process meets a 429: another process's next request waits for the pause too."""

    async def main() -> list[float]:
        first, second = await connect(redis_server.url), await connect(redis_server.url)
        paused = SharedRateLimiter(first, "batchrun:pause", per_minute=600)
        other = SharedRateLimiter(second, "batchrun:pause", per_minute=600)
        await other.acquire()
        started = time.monotonic()  # before the pause starts: it ends 0.3 s later or after
        paused.throttled(0.3, {"retry-after": "0.3"})
        await paused.aclose()  # the pause has reached Redis
        times = []
        for _ in range(3):
            await other.acquire()
            times.append(time.monotonic() - started)
        await first.aclose()
        await second.aclose()
        return times

    times = asyncio.run(main())
    # Nothing for 0.3 s, then the budget restarts empty: one every 0.1 s, no burst. A grant
    # is never early, only late on a loaded machine: exact lower bounds, 0.25 s above.
    for n, at in enumerate(times):
        assert 0.295 + 0.1 * n <= at <= 0.55 + 0.1 * n, times


def test_remaining_zero_pauses_the_shared_budget(redis_server: RedisServer) -> None:
    headers = {
        "x-ratelimit-limit-requests": "600",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1s",
    }

    async def main() -> float:
        client = await connect(redis_server.url)
        observer = SharedRateLimiter(client, "batchrun:observe", per_minute=6000)
        other = SharedRateLimiter(client, "batchrun:observe", per_minute=6000)
        started = time.monotonic()
        observer.observe(headers)  # the next request in 60 / 600 = 0.1 s
        await observer.aclose()
        await other.acquire()
        await client.aclose()
        return time.monotonic() - started

    assert 0.095 <= asyncio.run(main()) <= 0.35  # never early; late only under load


def test_losing_redis_tells_once_and_stops_every_caller(redis_server: RedisServer) -> None:
    told: list[str] = []

    async def main() -> None:
        client = await connect(redis_server.url)
        limiter = SharedRateLimiter(
            client, "batchrun:lost", 600, where="redis://here", on_lost=told.append, stop=Stopped
        )
        await limiter.acquire()
        redis_server.stop()
        with pytest.raises(Stopped, match="lost the shared rate limiter at redis://here"):
            await limiter.acquire()
        with pytest.raises(Stopped):
            await limiter.acquire()
        limiter.pause(1.0)  # nothing to push to any more: no error, no task
        await client.aclose()

    asyncio.run(main())
    assert len(told) == 1


def test_unreachable_redis_is_a_usage_error_naming_the_url_without_password() -> None:
    url = f"redis://:hunter2secret@127.0.0.1:{free_port()}/0"
    with pytest.raises(UsageError) as caught:
        asyncio.run(connect(url))
    message = str(caught.value)
    assert "redis://:***@127.0.0.1:" in message and "nothing was sent" in message
    assert "hunter2secret" not in message


def test_without_limiter_url_the_limiters_are_in_process() -> None:
    async def main() -> None:
        async with limiters_for(settings_for(BASE_URL, rpm=600, read_rpm=60)) as (create, read):
            assert isinstance(create, RateLimiter) and create.rate == 10
            assert isinstance(read, RateLimiter) and read.rate == 1

    asyncio.run(main())


def test_a_shared_tokens_budget_paces_requests_by_their_cost(redis_server: RedisServer) -> None:
    async def main() -> list[float]:
        client = await connect(redis_server.url)
        # Two processes' worth of limiters on one key: 6,000 tokens a minute, 100 a second.
        first, second = (
            SharedRateLimiter(client, "batchrun:tpm", None, tokens_per_minute=6_000, grace=0)
            for _ in range(2)
        )
        times: list[float] = []

        async def caller(limiter: SharedRateLimiter) -> None:
            for _ in range(3):
                await limiter.acquire(25)
                times.append(time.monotonic())

        await asyncio.gather(caller(first), caller(second))
        await client.aclose()
        return [t - min(times) for t in sorted(times)]

    times = asyncio.run(main())
    # 100 tokens at once (four of 25), then one every 0.25 s.
    assert times[3] < 0.1
    assert times[4] == pytest.approx(0.25, abs=0.05)
    assert times[5] == pytest.approx(0.5, abs=0.05)


def test_with_tpm_the_shared_create_budget_has_a_tokens_key(redis_server: RedisServer) -> None:
    settings = shared_settings(redis_server.url, rpm=None, tpm=600)  # 10 tokens a second

    async def main() -> None:
        async with limiters_for(settings) as (create, _):
            await create.acquire(10)  # the one-second burst is spent
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(create.acquire(10), 0.2)
            assert create.in_force().startswith("600 tokens/min (--tpm, shared through redis://")
            keys = await all_keys_and_values(redis_server)
        assert set(keys) == {f"{limit_key(settings)}:create:tokens"}

    asyncio.run(main())
