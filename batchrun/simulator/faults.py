"""Injected faults, reproducible from a seed.

Each route template has its own random stream, seeded from ``seed`` and the template, and
every request draws the same three numbers from it on arrival, whatever happens to the
request afterwards (auth error, 429, success). So the same sequence of requests to a route
meets the same faults, however requests to other routes interleave with it and however
long each takes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from batchrun.simulator.settings import SimulatorConfig

SERVER_ERROR_STATUSES = (500, 502, 503)


@dataclass(frozen=True, slots=True)
class Faults:
    """What goes wrong with one request: an error status instead of an answer, or after it."""

    fail_status: int | None = None  # 500/502/503 answered before any state change
    hang: bool = False  # create-run only: the run is created, the answer held back
    reset: bool = False  # create-run only: the run is created, the connection dropped


NO_FAULTS = Faults()


class FaultPlan:
    """Draws each request's faults from a per-route random stream."""

    __slots__ = ("_config", "_enabled", "_streams")

    def __init__(self, config: SimulatorConfig) -> None:
        self._config = config
        self._enabled = bool(config.fail_rate or config.hang_rate or config.reset_rate)
        self._streams: dict[str, random.Random] = {}

    def reset(self) -> None:
        """Start every stream again from the seed."""
        self._streams.clear()

    def draw(self, route: str, *, creates_run: bool) -> Faults:
        """The faults of the next request to ``route`` (a "METHOD /v1/template" key)."""
        if not self._enabled:
            return NO_FAULTS
        stream = self._streams.get(route)
        if stream is None:
            seed = self._config.seed
            # A str seed is hashed with SHA-512, so it is stable across processes.
            stream = random.Random(f"{seed}/{route}") if seed is not None else random.Random()
            self._streams[route] = stream
        # Always three draws, used or not, so one fault never shifts the next request's.
        fail, status, after = stream.random(), stream.random(), stream.random()
        config = self._config
        fail_status = None
        if fail < config.fail_rate:
            fail_status = SERVER_ERROR_STATUSES[int(status * len(SERVER_ERROR_STATUSES))]
        reset = creates_run and after < config.reset_rate
        hang = creates_run and not reset and after < config.reset_rate + config.hang_rate
        if fail_status is None and not hang and not reset:
            return NO_FAULTS
        return Faults(fail_status, hang=hang, reset=reset)
