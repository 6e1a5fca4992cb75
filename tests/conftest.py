"""Shared fixtures: real simulators on loopback ports, a fake clock, and a raw HTTP caller.

Every test has a cache folder of its own (``$BATCHRUN_CACHE_DIR``, where ``run_frame`` keeps
its journals), so no test writes the user's real cache or meets another test's jobs.
``make_simulator(**config)`` starts a :class:`RunningSimulator` (stopped at teardown);
``simulator`` is one with ``run_seconds=0.2`` and ``base_url`` its address;
``redis_server`` is a real ``redis-server`` on a free loopback port. ``api_call`` sends
one raw request and returns status, headers and JSON, for tests that pin exact wire shapes.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from redis_server import RedisServer

from batchrun.simulator import RunningSimulator, SimulatorConfig

TEST_KEY = "sk-test-0123456789abcdef"
RUN_BODY = {"assistant_id": "asst_1", "instructions": "Be brief."}
API_HEADERS = {
    "Authorization": f"Bearer {TEST_KEY}",
    "OpenAI-Beta": "assistants=v2",
    "Content-Type": "application/json",
}


class FakeClock:
    """A wall clock that moves only when told to; thread-safe enough for float reads."""

    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        self.now += seconds


@dataclass(frozen=True)
class Reply:
    """One raw HTTP answer: status, lower-cased headers and the parsed JSON body."""

    status: int
    headers: Mapping[str, str]
    json: Any


def send(
    base_url: str,
    method: str,
    path: str,
    body: Any = None,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> Reply:
    """Send ``method path`` (relative to ``base_url``, or absolute from ``/_simulator``)."""
    url = urlsplit(base_url)
    target = path if path.startswith("/_simulator") else url.path + path
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=timeout)
    try:
        connection.request(method, target, body=data, headers=dict(headers or API_HEADERS))
        response = connection.getresponse()
        raw = response.read()
        return Reply(
            response.status,
            {name.lower(): value for name, value in response.getheaders()},
            json.loads(raw) if raw else None,
        )
    finally:
        connection.close()


def error_of(reply: Reply) -> dict[str, Any]:
    """The inner object of OpenAI's error envelope, after checking all four keys are there."""
    assert set(reply.json) == {"error"}
    error: dict[str, Any] = reply.json["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


@pytest.fixture(autouse=True)
def cache_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's cache folder, named by ``$BATCHRUN_CACHE_DIR`` (subprocesses inherit it)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("BATCHRUN_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def api_call() -> Callable[..., Reply]:
    """``api_call(base_url, method, path, body=None, *, headers=API_HEADERS)`` -> :class:`Reply`."""
    return send


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock to pass to ``make_simulator(clock=...)``."""
    return FakeClock()


@pytest.fixture
def make_simulator() -> Iterator[Callable[..., RunningSimulator]]:
    """Factory: ``make_simulator(clock=None, **config)`` -> a started simulator."""
    started: list[RunningSimulator] = []

    def make(clock: Callable[[], float] | None = None, **config: Any) -> RunningSimulator:
        simulator = RunningSimulator(SimulatorConfig(**config), clock=clock or time.time)
        started.append(simulator.start())
        return simulator

    yield make
    for simulator in started:
        simulator.stop()


@pytest.fixture
def simulator(make_simulator: Callable[..., RunningSimulator]) -> RunningSimulator:
    """A running simulator with default settings but short runs (``run_seconds=0.2``)."""
    return make_simulator(run_seconds=0.2)


@pytest.fixture
def base_url(simulator: RunningSimulator) -> str:
    """The running ``simulator``'s base URL, ``http://127.0.0.1:PORT/v1``."""
    return simulator.base_url


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real ``redis-server`` on a free loopback port (see ``redis_server.py``)."""
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()
