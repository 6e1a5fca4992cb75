"""Retry decisions, as tables of (answer) -> (retry?, delay, flags)."""

from __future__ import annotations

from typing import Any

import pytest

from batchrun.sending.retry import Failure, RetryDecision, decide, server_pause
from batchrun.sending.stated_limits import parse_go_duration


def no_jitter() -> float:
    return 0.0


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param(
            {"status": 500}, RetryDecision(True, 0.5, ambiguous=True, reason="HTTP 500"), id="500"
        ),
        pytest.param(
            {"status": 503}, RetryDecision(True, 0.5, ambiguous=True, reason="HTTP 503"), id="503"
        ),
        pytest.param(
            {"status": 408}, RetryDecision(True, 0.5, ambiguous=True, reason="HTTP 408"), id="408"
        ),
        pytest.param(
            {"status": 409}, RetryDecision(True, 0.5, ambiguous=True, reason="HTTP 409"), id="409"
        ),
        pytest.param({"status": 400}, RetryDecision(False, reason="HTTP 400"), id="400-final"),
        pytest.param({"status": 404}, RetryDecision(False, reason="HTTP 404"), id="404-final"),
        pytest.param({"status": 422}, RetryDecision(False, reason="HTTP 422"), id="422-final"),
        pytest.param(
            {"status": 401},
            RetryDecision(False, systemic=True, reason="HTTP 401"),
            id="401-systemic",
        ),
        pytest.param(
            {"status": 403},
            RetryDecision(False, systemic=True, reason="HTTP 403"),
            id="403-systemic",
        ),
        pytest.param(
            {"status": 429, "headers": {"retry-after": "2"}},
            RetryDecision(True, 2.0, pause_all=True, reason="HTTP 429"),
            id="429-retry-after-pauses-all",
        ),
        pytest.param(
            {"status": 429, "headers": {"retry-after-ms": "250", "retry-after": "9"}},
            RetryDecision(True, 0.25, pause_all=True, reason="HTTP 429"),
            id="429-retry-after-ms-wins",
        ),
        pytest.param(
            {"status": 429},
            RetryDecision(True, 0.5, pause_all=True, reason="HTTP 429"),
            id="429-no-header-backoff",
        ),
        pytest.param(
            {"status": 429, "headers": {"retry-after": "86400"}},
            RetryDecision(
                False,
                systemic=True,
                reason="HTTP 429, server asked to wait 86400 s; rerun later",
            ),
            id="429-a-day-is-not-waited",
        ),
        pytest.param(
            {"status": 429, "error": {"type": "insufficient_quota", "code": "insufficient_quota"}},
            RetryDecision(False, systemic=True, reason="no quota (insufficient_quota)"),
            id="429-quota-never-retried",
        ),
        pytest.param(
            {"status": 429, "error": {"type": "requests", "code": "project_spend_limit_exceeded"}},
            RetryDecision(False, systemic=True, reason="no quota (project_spend_limit_exceeded)"),
            id="429-billing-never-retried",
        ),
        pytest.param(
            {"status": 500, "headers": {"x-should-retry": "false"}},
            RetryDecision(False, ambiguous=True, reason="HTTP 500, server said not to retry"),
            id="should-retry-false-a-5xx-still-may-have-stored-the-run",
        ),
        pytest.param(
            {"status": 400, "headers": {"x-should-retry": "true"}},
            RetryDecision(True, 0.5, ambiguous=True, reason="HTTP 400"),
            id="should-retry-true",
        ),
        pytest.param(
            {"failure": Failure.CONNECT},
            RetryDecision(True, 0.5, ambiguous=False, reason="could not connect"),
            id="connect-not-ambiguous",
        ),
        pytest.param(
            {"failure": Failure.TIMEOUT},
            RetryDecision(True, 0.5, ambiguous=True, reason="timed out waiting for the answer"),
            id="timeout-ambiguous",
        ),
        pytest.param(
            {"failure": Failure.DISCONNECT},
            RetryDecision(True, 0.5, ambiguous=True, reason="connection dropped before the answer"),
            id="reset-ambiguous",
        ),
        # No wait lets it pass: before, it paused every worker and was retried 30 times.
        pytest.param(
            {
                "status": 429,
                "error": {
                    "type": "tokens",
                    "code": "rate_limit_exceeded",
                    "message": "Request too large for gpt-4o in organization org-1 on tokens "
                    "per min (TPM): Limit 30000, Requested 50000. The input or output tokens "
                    "must be reduced in order to run successfully.",
                },
            },
            RetryDecision(False, reason="larger than the limit allows at all", too_large=True),
            id="429-request-too-large",
        ),
    ],
)
def test_first_attempt_decision(kwargs: dict[str, Any], expected: RetryDecision) -> None:
    assert decide(attempt=1, max_retries=6, rand=no_jitter, **kwargs) == expected


@pytest.mark.parametrize(
    ("attempt", "rand", "delay"),
    [
        pytest.param(1, 0.0, 0.5, id="first"),
        pytest.param(3, 0.0, 2.0, id="third-doubles"),
        pytest.param(3, 1.0, 1.5, id="jitter-takes-up-to-a-quarter"),
        pytest.param(10, 0.0, 20.0, id="capped"),
    ],
)
def test_backoff_grows_exponentially_with_jitter(attempt: int, rand: float, delay: float) -> None:
    decision = decide(attempt=attempt, max_retries=20, status=502, rand=lambda: rand)
    assert decision.delay == pytest.approx(delay)


def test_retries_stop_after_max_retries() -> None:
    assert decide(attempt=6, max_retries=6, status=500, rand=no_jitter).retry
    assert not decide(attempt=7, max_retries=6, status=500, rand=no_jitter).retry


def test_retry_after_as_http_date_uses_the_injected_clock() -> None:
    headers = {"retry-after": "Wed, 25 Nov 2026 12:00:10 GMT"}
    now = 1795608000.0  # 2026-11-25 12:00:00 UTC
    assert server_pause(headers, now=now) == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("1s", 1.0, id="seconds"),
        pytest.param("6m0s", 360.0, id="minutes"),
        pytest.param("12ms", 0.012, id="milliseconds-not-minutes"),
        pytest.param("7m12s", 432.0, id="mixed"),
        pytest.param("8.64s", 8.64, id="fraction"),
        pytest.param("2", 2.0, id="bare-number"),
        pytest.param("soon", None, id="garbage"),
        pytest.param("", None, id="empty"),
    ],
)
def test_go_durations(text: str, seconds: float | None) -> None:
    assert parse_go_duration(text) == (pytest.approx(seconds) if seconds is not None else None)
