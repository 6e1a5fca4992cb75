"""Retry decisions as pure functions: (attempt, answer) -> what to do next.

Nothing here sleeps or sends; the sender asks and obeys. Randomness (jitter) and the
clock (HTTP-date ``Retry-After``) are parameters so tables of cases test it exactly::

    >>> decide(attempt=1, max_retries=6, status=503, rand=lambda: 0.0).delay
    0.5
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Any

from batchrun.sending.stated_limits import message_limit, message_wait, throttled_budget

BACKOFF_BASE = 0.5
BACKOFF_CAP = 20.0
# A server asking for a longer pause than this is not waited for: the job stops with the
# reason and the next run picks its rows up (nobody wants a bulk job to sleep for a day).
LONGEST_PAUSE = 120.0
RETRY_STATUSES = frozenset({408, 409, 429})
# 429s that retrying cannot fix: the account is out of money, not out of speed.
BILLING_CODES = frozenset(
    {
        "insufficient_quota",
        "credit_balance_exhausted",
        "organization_usage_limit_exceeded",
        "organization_spend_limit_exceeded",
        "project_spend_limit_exceeded",
        "billing_hard_limit_reached",
    }
)


class Failure(Enum):
    """A request that got no HTTP answer, by what that says about the server's state."""

    CONNECT = "connect"  # never reached the server: nothing can have been created
    TIMEOUT = "timeout"  # sent, no answer in time: a run may exist
    DISCONNECT = "disconnect"  # connection dropped after sending: a run may exist
    TLS = "tls"  # the server's certificate failed verification: no request was sent


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """What to do after one attempt."""

    retry: bool
    delay: float = 0.0
    # The request may have reached the server and created a run: read before re-sending.
    ambiguous: bool = False
    # A rate-limit answer: hold back every worker, not just this one.
    pause_all: bool = False
    # No row can succeed (bad key, no quota): stop the whole job.
    systemic: bool = False
    reason: str = ""
    # The budget a 429 names (``requests``, ``tokens``; "" when it names none) and the
    # per-minute limit its message states.
    budget: str = ""
    limit: float | None = None
    # Refused for the row's own size (a request larger than a limit): failed, not left for
    # the next run as a 429 for speed is.
    too_large: bool = False


# How OpenAI's 429 for a request larger than the tokens-per-minute limit begins.
TOO_LARGE = "Request too large"


def decide(
    *,
    attempt: int,
    max_retries: int,
    status: int | None = None,
    headers: Mapping[str, str] | None = None,
    error: Mapping[str, Any] | None = None,
    failure: Failure | None = None,
    rand: Callable[[], float],
    now: float | None = None,
) -> RetryDecision:
    """Decide after ``attempt`` (1-based) failed with ``status`` or ``failure``.

    ``error`` is the ``error`` object of OpenAI's envelope when the body had one.
    """
    headers = headers or {}
    error = error or {}
    left = attempt <= max_retries
    backoff = backoff_delay(attempt, rand)
    if failure is Failure.TLS:
        # Every row would meet the same certificate: stop rather than fail them one by one.
        return RetryDecision(False, systemic=True, reason="TLS certificate verification failed")
    if failure is not None:
        ambiguous = failure is not Failure.CONNECT
        reason = {
            Failure.CONNECT: "could not connect",
            Failure.TIMEOUT: "timed out waiting for the answer",
            Failure.DISCONNECT: "connection dropped before the answer",
        }.get(failure, failure.value)
        return RetryDecision(left, backoff, ambiguous=ambiguous, reason=reason)
    assert status is not None
    code = str(error.get("code") or "")
    kind = str(error.get("type") or "")
    if status in (401, 403):
        return RetryDecision(False, systemic=True, reason=f"HTTP {status}")
    if status == 429 and (kind == "insufficient_quota" or code in BILLING_CODES):
        return RetryDecision(False, systemic=True, reason=f"no quota ({code or kind})")
    should = headers.get("x-should-retry", "").strip().lower()
    if should == "false":
        # Not retried, but a 5xx may still have stored the run: reconcile before any resend.
        return RetryDecision(
            False, ambiguous=status >= 500, reason=f"HTTP {status}, server said not to retry"
        )
    # 501 Not Implemented is how some servers say "no such route": retrying cannot help.
    retryable = should == "true" or status in RETRY_STATUSES or (status >= 500 and status != 501)
    if not retryable:
        return RetryDecision(False, reason=f"HTTP {status}")
    ambiguous = status != 429
    if status == 429:
        message = str(error.get("message") or "")
        if message.startswith(TOO_LARGE):
            # More tokens than the limit allows in its whole period (a minute, a day): no
            # wait lets this one pass.
            return RetryDecision(
                False, reason="larger than the limit allows at all", too_large=True
            )
        wait = server_pause(headers, now=now)
        if wait is None:
            wait = message_wait(message)
        if wait is not None and wait > LONGEST_PAUSE:
            # The server refuses everyone for that long: pause the job by stopping it, with
            # every unsent row left for the next run, rather than fail each on its own 429.
            return RetryDecision(
                False,
                systemic=True,
                reason=f"HTTP 429, server asked to wait {wait:.0f} s; rerun later",
            )
        return RetryDecision(
            left,
            backoff if wait is None else wait,
            pause_all=True,
            reason="HTTP 429",
            budget=throttled_budget(error, message),
            limit=message_limit(message),
        )
    return RetryDecision(left, backoff, ambiguous=ambiguous, reason=f"HTTP {status}")


def backoff_delay(attempt: int, rand: Callable[[], float]) -> float:
    """Exponential backoff with jitter: 0.5 s, 1 s, 2 s ... capped, minus up to 25%."""
    return float(min(BACKOFF_BASE * 2 ** (attempt - 1), BACKOFF_CAP) * (1 - 0.25 * rand()))


def server_pause(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """The pause a 429 asks for: ``retry-after-ms``, else ``Retry-After`` (seconds or date)."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    after = headers.get("retry-after")
    if not after:
        return None
    try:
        return max(0.0, float(after))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(after)
    except (TypeError, ValueError):
        return None
    if now is None or moment.tzinfo is None:
        return None
    return max(0.0, float(moment.timestamp()) - now)
