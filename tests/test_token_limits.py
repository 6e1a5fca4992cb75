"""Account limits in the client, on a fake clock: the tokens budget, limits taken from the
server's headers, what a 429 names, and how prompt tokens are counted."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import itertools
from pathlib import Path
from typing import Any

import pytest
import tiktoken
import tiktoken_ext.openai_public

from batchrun.sending.limiter import DRAINED_SLACK, FROM_SERVER, RateLimiter
from batchrun.sending.retry import decide
from batchrun.sending.stated_limits import (
    Stated,
    message_limit,
    message_wait,
    stated,
    throttled_budget,
)
from batchrun.sending.tokens import (
    ENCODING_FILES,
    TokenCounter,
    cached_encoding,
    max_output_tokens,
)


class FakeTime:
    """A clock that only moves when something sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)


def limiter(time: FakeTime, **options: Any) -> RateLimiter:
    return RateLimiter(clock=time.clock, sleep=time.sleep, grace=0.0, **options)


def grant_times(limiter: RateLimiter, time: FakeTime, costs: list[int]) -> list[float]:
    """When each request (of the given token costs, in order) was let go, one caller."""

    async def main() -> list[float]:
        times = []
        for cost in costs:
            await limiter.acquire(cost)
            times.append(time.now)
        return times

    return asyncio.run(main())


def headers(unit: str, limit: float, remaining: float, reset: str = "1s") -> dict[str, str]:
    return {
        f"x-ratelimit-limit-{unit}": str(limit),
        f"x-ratelimit-remaining-{unit}": str(remaining),
        f"x-ratelimit-reset-{unit}": reset,
    }


# -- the tokens budget ------------------------------------------------------------------------


def test_tokens_per_minute_paces_requests_by_their_cost() -> None:
    time = FakeTime()
    times = grant_times(limiter(time, tokens_per_minute=60_000), time, [100] * 40)
    # 1,000 tokens a second, one second's worth at once: ten at once, then one per 0.1 s.
    assert times[:10] == [1000.0] * 10
    assert times[-1] == pytest.approx(1003.0)
    assert [b - a for a, b in itertools.pairwise(times[10:])] == pytest.approx([0.1] * 29)


def test_a_request_larger_than_the_bucket_goes_on_a_full_one_and_leaves_debt() -> None:
    time = FakeTime()
    times = grant_times(limiter(time, tokens_per_minute=6_000), time, [300, 100])
    # 100 tokens a second: the 300 go at once, the debt of 200 and the next 100 take 3 s
    # (and the slack of a request that needs the whole bucket).
    assert times == [1000.0, pytest.approx(1003.0 + DRAINED_SLACK)]


def test_requests_and_tokens_budgets_both_hold() -> None:
    time = FakeTime()
    both = limiter(time, per_minute=120, tokens_per_minute=600_000)
    times = grant_times(both, time, [10] * 6)
    assert times == [1000.0, 1000.0, *(pytest.approx(1000.0 + n * 0.5) for n in range(1, 5))]


# -- limits from the server ---------------------------------------------------------------------


def test_the_first_request_goes_alone_until_an_answer_states_the_limits() -> None:
    time = FakeTime()
    cautious = limiter(time, from_server=True)

    async def main() -> list[str]:
        order: list[str] = []

        async def request(name: str) -> None:
            await cautious.acquire(100)
            order.append(name)

        first = asyncio.create_task(request("first"))
        await first
        others = [asyncio.create_task(request(f"other{n}")) for n in range(3)]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert order == ["first"]  # held back: the limits are not known yet
        cautious.observe({**headers("tokens", 60_000, 150), **headers("requests", 600, 9)})
        await asyncio.gather(*others)
        return order

    assert asyncio.run(main()) == ["first", "other0", "other1", "other2"]
    # 150 tokens left as the server said: one goes at once, the next two 0.05 s and 0.1 s on.
    assert time.now == pytest.approx(1000.15)
    assert cautious.in_force() == (
        f"600 requests/min ({FROM_SERVER}), 60,000 tokens/min ({FROM_SERVER})"
    )


def test_remaining_lowers_what_a_budget_of_the_servers_holds_and_never_raises_it() -> None:
    time = FakeTime()
    paced = limiter(time, from_server=True)
    paced.observe(headers("tokens", 60_000, 1_000))
    paced.observe(headers("tokens", 60_000, 0))  # another client spent it
    assert grant_times(paced, time, [100]) == [pytest.approx(1000.1)]
    paced.observe(headers("tokens", 60_000, 50_000))  # more than a second's worth: ignored
    budget = paced.budget("tokens")
    assert budget is not None and budget.level <= budget.capacity


def test_a_new_stated_limit_replaces_the_old_one() -> None:
    time = FakeTime()
    paced = limiter(time, from_server=True)
    paced.observe(headers("tokens", 60_000, 1_000))
    paced.observe(headers("tokens", 30_000, 500))
    assert paced.in_force() == f"30,000 tokens/min ({FROM_SERVER})"


def test_flags_override_the_servers_limits() -> None:
    time = FakeTime()
    flagged = limiter(time, tokens_per_minute=6_000, from_server=True)
    flagged.observe(headers("tokens", 600_000, 10_000))
    assert flagged.in_force() == "6,000 tokens/min (--tpm)"
    assert grant_times(flagged, time, [100, 100]) == [1000.0, pytest.approx(1001 + DRAINED_SLACK)]


def test_a_server_that_states_no_limits_gets_only_the_concurrency_cap() -> None:
    time = FakeTime()
    free = limiter(time, from_server=True)
    free.observe({"content-type": "application/json"})
    assert set(grant_times(free, time, [10_000] * 50)) == {1000.0}
    assert free.in_force() == "none stated by the server (concurrency cap and 429s only)"


def test_a_429_naming_tokens_pauses_everyone_and_restarts_only_the_tokens_budget() -> None:
    time = FakeTime()
    both = limiter(time, per_minute=600, tokens_per_minute=60_000)
    grant_times(both, time, [100])
    both.throttled(0.5, {}, "tokens")
    # Paused to 1000.5; then the tokens budget fills from empty: 100 tokens take 0.1 s.
    assert grant_times(both, time, [100]) == [pytest.approx(1000.6)]
    tokens, requests = both.budget("tokens"), both.budget("requests")
    assert tokens is not None and requests is not None
    assert requests.level > 1  # the requests budget was not emptied


def test_a_429_without_headers_adopts_the_limit_its_message_states() -> None:
    time = FakeTime()
    blind = limiter(time, from_server=True)
    blind.observe({})
    blind.throttled(0.25, {}, "tokens", 60_000)
    assert blind.in_force() == "60,000 tokens/min (stated in a 429)"
    assert grant_times(blind, time, [100]) == [pytest.approx(1000.35)]


# -- what a server says ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "unit", "expected"),
    [
        pytest.param(headers("tokens", 600_000, 8_990, "101ms"), "tokens",
                     Stated(600_000, 8_990, 0.101), id="tokens"),
        pytest.param(headers("requests", 500, 499, "6m0s"), "requests",
                     Stated(500, 499, 360.0), id="minutes"),
        pytest.param({"x-ratelimit-limit-tokens": "30000"}, "tokens", Stated(30_000, None, None),
                     id="limit-only"),
        pytest.param(headers("requests", 500, 1), "tokens", None, id="other-unit"),
        pytest.param({"x-ratelimit-limit-tokens": "lots"}, "tokens", None, id="unreadable"),
        pytest.param({"x-ratelimit-limit-tokens": "0"}, "tokens", None, id="zero"),
    ],
)  # fmt: skip
def test_stated_limits_are_read_from_the_headers(
    given: dict[str, str], unit: str, expected: Stated | None
) -> None:
    assert stated(given, unit) == expected


@pytest.mark.parametrize(
    ("message", "seconds"),
    [
        pytest.param("Rate limit reached ... Please try again in 102ms. Visit ...", 0.102,
                     id="ms"),
        pytest.param("Please try again in 1.5s.", 1.5, id="s"),
        pytest.param("Please try again in 6m0s.", 360.0, id="go-minutes"),
        pytest.param("Please try again in 20 seconds.", 20.0, id="words"),
        pytest.param("You exceeded your current quota.", None, id="none"),
    ],
)  # fmt: skip
def test_a_429_message_names_its_wait(message: str, seconds: float | None) -> None:
    assert message_wait(message) == (pytest.approx(seconds) if seconds is not None else None)


@pytest.mark.parametrize(
    ("error", "message", "budget"),
    [
        pytest.param({"type": "tokens"}, "", "tokens", id="type-tokens"),
        pytest.param({"type": "requests"}, "", "requests", id="type-requests"),
        pytest.param({}, "Rate limit reached on tokens per min (TPM): Limit 30000", "tokens",
                     id="words-tokens"),
        pytest.param({}, "Rate limit reached on requests per min (RPM): Limit 3", "requests",
                     id="words-requests"),
        pytest.param({"type": "rate_limit_error"}, "Slow down.", "", id="unnamed"),
    ],
)  # fmt: skip
def test_a_429_names_its_budget(error: dict[str, str], message: str, budget: str) -> None:
    assert throttled_budget(error, message) == budget


def test_a_429_message_states_its_per_minute_limit() -> None:
    message = "Rate limit reached for m on tokens per min (TPM): Limit 600,000, Used 599,000"
    assert message_limit(message) == 600_000
    assert message_limit("Enqueued token limit reached. Limit: 2,000,000 enqueued") is None


def test_a_429_without_retry_headers_waits_what_its_message_says() -> None:
    error = {
        "type": "tokens",
        "message": "Rate limit reached for gpt-4o on tokens per min (TPM): Limit 30000, "
        "Used 29500, Requested 1010. Please try again in 102ms.",
    }
    decision = decide(attempt=1, max_retries=6, status=429, error=error, rand=lambda: 0.0)
    assert decision.delay == pytest.approx(0.102)
    assert (decision.pause_all, decision.budget) == (True, "tokens")
    assert decision.limit == 30_000


# -- counting tokens ---------------------------------------------------------------------------


def tiny_encoding(name: str) -> tiktoken.Encoding:
    """A made-up encoding: every byte a token, and "ab" one token more."""
    ranks = {bytes([n]): n for n in range(256)}
    ranks[b"ab"] = 256
    return tiktoken.Encoding(name, pat_str=r"\S+|\s+", mergeable_ranks=ranks, special_tokens={})


CHAT = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "system", "content": "ab ab"}, {"role": "user", "content": "abc"}],
    "max_completion_tokens": 100,
}


def test_prompt_tokens_are_counted_with_the_models_encoding() -> None:
    loaded: list[str] = []

    def load(name: str) -> tiktoken.Encoding:
        loaded.append(name)
        return tiny_encoding(name)

    counter = TokenCounter(load)
    # "ab", " ", "ab" and "ab", "c": 5 tokens, plus the 100 the answer may take.
    assert counter.charge(CHAT) == 105
    assert counter.charge({**CHAT, "model": "gpt-4o"}) == 105
    assert loaded == ["o200k_base"]  # one load per encoding and model, not per row
    assert counter.counted_by("gpt-4o-mini") == "tiktoken o200k_base"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({**CHAT, "model": "someones-own-model"}, id="unknown-model"),
        pytest.param({k: v for k, v in CHAT.items() if k != "model"}, id="no-model"),
    ],
)
def test_unknown_models_are_counted_at_four_characters_a_token(body: dict[str, Any]) -> None:
    counter = TokenCounter(tiny_encoding)
    assert counter.charge(body) == 2 + 100  # "ab ab" and "abc": 8 characters
    assert counter.counted_by(body.get("model")) == "characters/4"


def test_a_missing_encoding_file_falls_back_to_characters_without_downloading(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    assert cached_encoding("o200k_base") is None
    url, _ = ENCODING_FILES["o200k_base"]
    (tmp_path / hashlib.sha1(url.encode()).hexdigest()).write_bytes(b"not the encoding")
    assert cached_encoding("o200k_base") is None  # tiktoken would download it again: not us
    assert list(tmp_path.iterdir()) == [tmp_path / hashlib.sha1(url.encode()).hexdigest()]
    assert TokenCounter().charge(CHAT) == 2 + 100


def test_the_encoding_files_and_hashes_are_tiktokens_own() -> None:
    source = inspect.getsource(tiktoken_ext.openai_public)
    for name, (url, sha256) in ENCODING_FILES.items():
        assert f'"{url}"' in source and f'"{sha256}"' in source, name


@pytest.mark.parametrize(
    ("body", "most"),
    [
        pytest.param({"max_output_tokens": 7}, 7, id="responses"),
        pytest.param({"max_completion_tokens": 8}, 8, id="chat"),
        pytest.param({"max_tokens": 9}, 9, id="legacy"),
        pytest.param({"max_tokens": True}, 0, id="not-a-number"),
        pytest.param({}, 0, id="none"),
        # Chat's n answers are each charged the maximum, as OpenAI's limiter counts them.
        pytest.param({"max_completion_tokens": 8, "n": 3}, 24, id="n-answers"),
        pytest.param({"max_completion_tokens": 8, "n": 1}, 8, id="one-answer"),
        pytest.param({"max_completion_tokens": 8, "n": True}, 8, id="n-not-a-number"),
        pytest.param({"n": 3}, 0, id="n-without-a-maximum"),
    ],
)
def test_the_most_output_tokens_a_request_asks_for(body: dict[str, Any], most: int) -> None:
    assert max_output_tokens(body) == most


def test_a_tokens_budget_from_the_first_answer_counts_the_debt_the_first_request_left() -> None:
    # The first request (623 tokens) goes alone and leaves a one-second bucket of 500 in
    # debt; the server's remaining says 0, never less. Before, the budget made from that
    # answer started at 0 and let the next 623-token request go after 1 s: a 429.
    time = FakeTime()
    limiter = RateLimiter(from_server=True, clock=time.clock, sleep=time.sleep, grace=0.0)

    async def two_requests() -> float:
        await limiter.acquire(623)
        limiter.observe(headers("tokens", 30_000, 0))
        started = time.now
        await limiter.acquire(623)
        return time.now - started

    assert asyncio.run(two_requests()) == pytest.approx(623 / 500 + DRAINED_SLACK)
