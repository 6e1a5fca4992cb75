"""The simulator's settings: one frozen object, checked once when it is built."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_RUN_SECONDS = 1.0
DEFAULT_HANG_SECONDS = 30.0
DEFAULT_BATCH_SECONDS = 2.0
DEFAULT_MODEL = "gpt-4o"


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """How the simulator behaves: auth, run timing, rate limits and injected faults.

    ``rpm`` limits creation (``POST .../runs``, ``POST /v1/responses``,
    ``POST /v1/chat/completions``) and ``read_rpm`` the GET routes, each
    with a token bucket that holds ``burst`` tokens (default: one second's worth, at least 1)
    and starts full; ``tpm`` limits the tokens creates are charged (one second's worth at
    once). ``limit_headers`` off sends no ``x-ratelimit-*`` headers. ``batch_queue_tokens``
    fails a batch whose tokens would take the unfinished batches' past it. Fault rates are
    probabilities per request, drawn from ``seed``.

    A batch goes validating -> in_progress -> finalizing -> completed over
    ``batch_seconds``. Its faults: ``batch_expire`` makes every batch end ``expired`` instead,
    with only the first half of its lines answered; ``batch_fail_lines`` (a regular
    expression, searched in each line's ``custom_id``) puts the lines it matches in the
    error file with code ``server_error``.
    """

    api_key: str | None = field(default=None, repr=False)  # repr=False: never log the key
    strict_threads: bool = False
    run_seconds: float = DEFAULT_RUN_SECONDS
    rpm: float | None = None
    read_rpm: float | None = None
    tpm: float | None = None
    # Send the x-ratelimit-* headers (off: a server that states no limits).
    limit_headers: bool = True
    # Tokens that unfinished batches may hold at once (token_limit_exceeded beyond).
    batch_queue_tokens: int | None = None
    burst: float | None = None
    latency_ms: float = 0.0
    fail_rate: float = 0.0
    hang_rate: float = 0.0
    hang_seconds: float = DEFAULT_HANG_SECONDS
    reset_rate: float = 0.0
    seed: int | None = None
    quota_exhausted: bool = False
    batch_seconds: float = DEFAULT_BATCH_SECONDS
    batch_expire: bool = False
    batch_fail_lines: str | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    # A JSON-lines log of the runs created: replayed at start, appended to after. So the
    # in-process simulator of a --simulate rerun knows the runs of the job before it.
    run_log: str | None = None

    def __post_init__(self) -> None:
        for name in ("fail_rate", "hang_rate", "reset_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        # Hang and reset are drawn from one number, so together they cannot exceed 1.
        if self.hang_rate + self.reset_rate > 1.0:
            raise ValueError("hang_rate + reset_rate must not exceed 1")
        for name in ("rpm", "read_rpm", "tpm", "burst", "batch_queue_tokens"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number, got {value}")
        for name in ("run_seconds", "latency_ms", "hang_seconds", "batch_seconds"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be zero or more, got {value}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {self.port}")
        if self.batch_fail_lines is not None:
            try:
                re.compile(self.batch_fail_lines)
            except re.error as error:
                raise ValueError(f"batch_fail_lines is not a regular expression: {error}") from None
        if self.api_key == "":
            raise ValueError("api_key must not be empty (leave it unset to accept any key)")
        if self.burst is not None and self.rpm is None and self.read_rpm is None:
            raise ValueError("burst sizes the rpm and read_rpm buckets: give one of them too")

    def burst_for(self, per_minute: float) -> float:
        """The bucket size for a limit of ``per_minute``: ``burst`` or one second's worth."""
        return self.burst if self.burst is not None else max(1.0, per_minute / 60.0)
