"""The rate limiter on a fake clock: exact long-run rate, bounded first burst, pauses."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from batchrun.sending.limiter import DRAINED_SLACK, RateLimiter


class FakeTime:
    """A clock that only moves when something sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)


def grant_times(limiter: RateLimiter, time: FakeTime, count: int, workers: int = 8) -> list[float]:
    times: list[float] = []

    async def worker(jobs: asyncio.Queue[int]) -> None:
        while not jobs.empty():
            jobs.get_nowait()
            await limiter.acquire()
            times.append(time.now)

    async def main() -> None:
        jobs: asyncio.Queue[int] = asyncio.Queue()
        for n in range(count):
            jobs.put_nowait(n)
        await asyncio.gather(*(worker(jobs) for _ in range(workers)))

    asyncio.run(main())
    return times


@pytest.mark.parametrize(
    "rpm",
    [
        pytest.param(60, id="1-per-s"),
        pytest.param(600, id="10-per-s"),
        pytest.param(6000, id="100-per-s"),
    ],
)
def test_long_run_rate_is_exact(rpm: int) -> None:
    time = FakeTime()
    limiter = RateLimiter(rpm, clock=time.clock, sleep=time.sleep, grace=0.0)
    times = grant_times(limiter, time, 1000)
    burst = max(1, rpm // 60)
    steady = times[burst:]
    rate = (len(steady) - 1) / (steady[-1] - steady[0])
    # A budget of one request: each request needs it whole, and waits the slack more.
    interval = 60 / rpm + (DRAINED_SLACK if burst == 1 else 0.0)
    assert rate == pytest.approx(1 / interval if burst == 1 else rpm / 60, rel=1e-6)


@pytest.mark.parametrize("rpm", [60, 600, 6000])
def test_no_one_second_window_exceeds_two_seconds_worth_and_the_first_holds_one(rpm: int) -> None:
    time = FakeTime()
    limiter = RateLimiter(rpm, clock=time.clock, sleep=time.sleep, grace=0.05)
    times = grant_times(limiter, time, 500)
    per_second = rpm / 60
    start = times[0]
    first_instant = sum(1 for t in times if t == start)
    assert first_instant == max(1, int(per_second))
    # A server bucket of one second's worth, refilled at the same rate, never runs dry:
    # replay the grants against it.
    tokens, last = max(1.0, float(int(per_second))), start
    for moment in times:
        tokens = min(max(1.0, float(int(per_second))), tokens + (moment - last) * per_second)
        last = moment
        assert tokens >= 1 - 1e-9
        tokens -= 1


def test_pause_holds_back_every_caller() -> None:
    time = FakeTime()
    limiter = RateLimiter(None, clock=time.clock, sleep=time.sleep)
    limiter.pause(3.0)
    times = grant_times(limiter, time, 5)
    assert min(times) >= 1003.0


def test_observe_pauses_when_the_server_says_none_remain() -> None:
    time = FakeTime()
    limiter = RateLimiter(None, clock=time.clock, sleep=time.sleep)
    limiter.observe({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1.5s"})
    assert grant_times(limiter, time, 1) == [1001.5]
    limiter.observe({"x-ratelimit-remaining-requests": "7", "x-ratelimit-reset-requests": "1s"})
    assert grant_times(limiter, time, 1) == [1001.5]


def test_observe_waits_one_token_when_the_limit_is_known() -> None:
    time = FakeTime()
    limiter = RateLimiter(None, clock=time.clock, sleep=time.sleep)
    limiter.observe(
        {
            "x-ratelimit-limit-requests": "600",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "1s",
        }
    )
    assert grant_times(limiter, time, 1) == [pytest.approx(1000.1)]


def test_unlimited_limiter_never_waits() -> None:
    time = FakeTime()
    limiter = RateLimiter(None, clock=time.clock, sleep=time.sleep)
    assert set(grant_times(limiter, time, 100)) == {1000.0}


@pytest.mark.parametrize("rpm", [30, 60, 90])
def test_a_flag_at_the_servers_own_rate_keeps_that_rate_when_every_answer_says_none_remain(
    rpm: int,
) -> None:
    # A server enforcing rpm with a bucket of one request answers "remaining 0, one token's
    # time to the next" after each: before, the pause emptied the flag's bucket too, and
    # every request waited the pause and then a whole refill (half the rate).
    time = FakeTime()
    limiter = RateLimiter(rpm, clock=time.clock, sleep=time.sleep, grace=0.0)
    server = {
        "x-ratelimit-limit-requests": str(rpm),
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": f"{60 / rpm}s",
    }

    async def send(count: int) -> list[float]:
        times = []
        for _ in range(count):
            await limiter.acquire()
            times.append(time.now)
            limiter.observe(server)  # answered at once
        return times

    times = asyncio.run(send(20))
    gaps = {round(later - earlier, 6) for earlier, later in itertools.pairwise(times)}
    assert gaps == {round(60 / rpm, 6)}


def test_the_read_budget_takes_the_rate_the_answers_to_reads_state() -> None:
    # In-process and beside a shared create budget (--limiter-url) alike; before, the
    # shared path's reads only paused on "none remaining", and 429s met half the polls.
    from batchrun.config import Settings, environment_settings
    from batchrun.sending.shared_limiter import read_limiter

    limiter = read_limiter(Settings(**environment_settings({}, {})))
    limiter.observe({"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "59"})
    assert limiter.rate == 1.0
