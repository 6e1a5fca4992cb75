"""The simulator's account limits: tokens per minute, the six x-ratelimit-* headers on every
answer, a server that states none, and the Batch API's enqueued-token limit."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from conftest import TEST_KEY, FakeClock, error_of, send
from openai import OpenAI

from batchrun.simulator import RunningSimulator
from batchrun.simulator.limits import charged_tokens

Make = Callable[..., RunningSimulator]
CHAT = "/chat/completions"
SIX = tuple(
    f"x-ratelimit-{what}-{unit}"
    for unit in ("requests", "tokens")
    for what in ("limit", "remaining", "reset")
)


def chat(text: str = "x" * 40, most: int = 90) -> dict[str, Any]:
    """A chat body charged 40/4 + 90 = 100 tokens by default."""
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": text}],
        "max_completion_tokens": most,
    }


@pytest.mark.parametrize(
    ("body", "tokens"),
    [
        pytest.param(chat(), 100, id="chat-messages-plus-max-completion"),
        pytest.param({"model": "m", "input": "abcde", "max_output_tokens": 7}, 2 + 7, id="resp"),
        pytest.param({"model": "m", "messages": [], "max_tokens": 5}, 5, id="legacy-max-tokens"),
        pytest.param(
            {
                "assistant_id": "a",
                "instructions": "12345678",
                "additional_messages": [
                    {"role": "user", "content": [{"type": "text", "text": "abcd"}]}
                ],
            },
            3,  # "12345678" and "abcd": 12 characters (roles and types are not text)
            id="run-nested-text",
        ),
        pytest.param({"model": "m", "input": "abc"}, 1, id="no-max-output"),
        pytest.param(
            {"model": "m", "messages": [], "max_completion_tokens": 5, "n": 4}, 20, id="n-answers"
        ),
    ],
)
def test_charged_tokens_are_prompt_characters_over_4_plus_max_output(
    body: dict[str, Any], tokens: int
) -> None:
    assert charged_tokens(body) == tokens


def test_tpm_refuses_tokens_beyond_one_seconds_worth_naming_the_budget_and_wait(
    make_simulator: Make, clock: FakeClock
) -> None:
    sim = make_simulator(clock=clock, tpm=12_000)  # 200 tokens a second, 200 at once
    first, second = (send(sim.base_url, "POST", CHAT, chat()) for _ in range(2))
    limited = send(sim.base_url, "POST", CHAT, chat())
    assert (first.status, second.status, limited.status) == (200, 200, 429)
    error = error_of(limited)
    assert (error["type"], error["code"]) == ("tokens", "rate_limit_exceeded")
    assert error["message"].startswith(
        "Rate limit reached for gpt-4o-mini in organization org-simulated on tokens per min "
        "(TPM): Limit 12000, Used 12000, Requested 100. Please try again in 500ms."
    )
    assert (limited.headers["retry-after-ms"], limited.headers["retry-after"]) == ("500", "1")
    assert limited.headers["x-ratelimit-limit-tokens"] == "12000"
    assert limited.headers["x-ratelimit-remaining-tokens"] == "0"
    assert limited.headers["x-ratelimit-reset-tokens"] == "1s"
    clock.advance(0.5)
    assert send(sim.base_url, "POST", CHAT, chat()).status == 200
    stats = sim.stats()
    assert (stats["rate_limited"], stats["tokens_admitted"]) == (1, 300)


def test_a_request_larger_than_the_burst_passes_on_a_full_bucket_and_leaves_debt(
    make_simulator: Make, clock: FakeClock
) -> None:
    sim = make_simulator(clock=clock, tpm=6_000)  # 100 tokens a second
    assert send(sim.base_url, "POST", CHAT, chat(most=290)).status == 200  # 300 tokens
    assert send(sim.base_url, "POST", CHAT, chat()).status == 429
    clock.advance(2.9)  # the debt of 200 is paid after 2 s, then 90 more of 100 needed
    assert send(sim.base_url, "POST", CHAT, chat()).status == 429
    clock.advance(0.1)
    assert send(sim.base_url, "POST", CHAT, chat()).status == 200


def test_a_request_larger_than_the_per_minute_limit_never_passes_and_blocks_nothing(
    make_simulator: Make, clock: FakeClock
) -> None:
    # Before: it passed on a full bucket and left hours of debt that refused every create.
    sim = make_simulator(clock=clock, tpm=600)
    huge = send(sim.base_url, "POST", CHAT, chat(most=100_000))
    assert huge.status == 429
    error = error_of(huge)
    assert (error["type"], error["code"]) == ("tokens", "rate_limit_exceeded")
    assert error["message"].startswith(
        "Request too large for gpt-4o-mini in organization org-simulated on tokens per min "
        "(TPM): Limit 600, Requested 100010. The input or output tokens must be reduced"
    )
    assert send(sim.base_url, "POST", CHAT, chat(most=5)).status == 200


def test_a_request_refused_for_tokens_costs_no_request(
    make_simulator: Make, clock: FakeClock
) -> None:
    sim = make_simulator(clock=clock, rpm=120, burst=2, tpm=6_000)
    assert send(sim.base_url, "POST", CHAT, chat()).status == 200
    assert send(sim.base_url, "POST", CHAT, chat()).status == 429  # tokens
    clock.advance(0.01)  # one token's time
    one_token = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "ab"}]}
    reply = send(sim.base_url, "POST", CHAT, one_token)
    assert reply.status == 200
    assert reply.headers["x-ratelimit-remaining-requests"] == "0"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("POST", CHAT, chat(), id="create"),
        pytest.param("GET", "/threads/thread_1", None, id="read"),
        pytest.param("POST", "/responses", {"input": "no model"}, id="400"),
    ],
)
def test_every_answer_carries_all_six_rate_limit_headers(
    make_simulator: Make, method: str, path: str, body: Any
) -> None:
    sim = make_simulator(rpm=600, tpm=60_000)
    reply = send(sim.base_url, method, path, body)
    assert all(name in reply.headers for name in SIX), reply.headers


def test_a_server_that_states_no_limits_sends_no_rate_limit_headers(
    make_simulator: Make, clock: FakeClock
) -> None:
    sim = make_simulator(clock=clock, tpm=6_000, limit_headers=False)
    assert not any(name in send(sim.base_url, "POST", CHAT, chat()).headers for name in SIX)
    limited = send(sim.base_url, "POST", CHAT, chat())
    assert limited.status == 429 and limited.headers["retry-after-ms"] == "1000"
    assert not any(name in limited.headers for name in SIX)


# -- the batch queue ------------------------------------------------------------------------


def submit(client: OpenAI, count: int, prefix: str) -> Any:
    """A chat batch of ``count`` lines of 100 tokens each."""
    lines = [
        {
            "custom_id": f"{prefix}{n}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": chat(),
        }
        for n in range(count)
    ]
    content = "".join(json.dumps(item) + "\n" for item in lines).encode()
    uploaded = client.files.create(file=("in.jsonl", content), purpose="batch")
    return client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )


def test_a_batch_beyond_the_enqueued_token_limit_fails_in_openais_words(
    make_simulator: Make, clock: FakeClock
) -> None:
    sim = make_simulator(clock=clock, batch_queue_tokens=2_500, batch_seconds=10)
    client = OpenAI(base_url=sim.base_url, api_key=TEST_KEY, max_retries=0)
    held = submit(client, 20, "a")  # 2,000 tokens enqueued
    refused = submit(client, 6, "b")  # 600 more: past 2,500
    fits = submit(client, 5, "c")  # 500 more: exactly 2,500
    clock.advance(1.0)  # past validation
    assert client.batches.retrieve(held.id).status == "in_progress"
    assert client.batches.retrieve(fits.id).status == "in_progress"
    failed = client.batches.retrieve(refused.id)
    assert failed.status == "failed"
    assert failed.errors is not None and failed.errors.data is not None
    error = failed.errors.data[0]
    assert error.code == "token_limit_exceeded"
    assert error.message == (
        "Enqueued token limit reached for gpt-4o-mini in organization org-simulated. "
        "Limit: 2,500 enqueued tokens. Please try again once some in_progress batches have "
        "been completed."
    )
    assert submit(client, 1, "d").status == "validating"  # queue full: refused as well
    clock.advance(10.0)  # the first batches complete and free the queue
    assert client.batches.retrieve(held.id).status == "completed"
    again = submit(client, 6, "b")
    clock.advance(10.0)
    assert client.batches.retrieve(again.id).status == "completed"
    stats = sim.stats()
    assert stats["chat_completions_created"] == 20 + 5 + 6
