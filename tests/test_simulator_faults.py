"""The simulator's rate limits, faults, counters, and the ways to start it."""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import aiohttp
import pytest
from conftest import API_HEADERS, FakeClock, error_of, send
from conftest import RUN_BODY as BODY

from batchrun.simulator import RunningSimulator, SimulatorConfig, serve_async
from batchrun.simulator.limits import go_duration

Make = Callable[..., RunningSimulator]
RUNS = "/threads/thread_1/runs"


# -- rate limits --------------------------------------------------------------------------


def test_rpm_bucket_answers_429_with_retry_after_then_refills(
    make_simulator: Make, clock: FakeClock
) -> None:
    sim = make_simulator(clock=clock, rpm=60, burst=2)
    statuses = [send(sim.base_url, "POST", f"/threads/t{n}/runs", BODY).status for n in range(3)]
    limited = send(sim.base_url, "POST", "/threads/t9/runs", BODY)
    assert statuses == [200, 200, 429]
    assert error_of(limited)["type"] == "requests"
    assert error_of(limited)["code"] == "rate_limit_exceeded"
    assert (limited.headers["retry-after"], limited.headers["retry-after-ms"]) == ("1", "1000")
    assert limited.headers["x-ratelimit-limit-requests"] == "60"
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"
    clock.advance(1.0)
    assert send(sim.base_url, "POST", "/threads/t9/runs", BODY).status == 200
    assert sim.stats()["rate_limited"] == 2


def test_default_burst_is_one_seconds_worth(make_simulator: Make, clock: FakeClock) -> None:
    sim = make_simulator(clock=clock, rpm=300)
    statuses = [send(sim.base_url, "POST", f"/threads/t{n}/runs", BODY).status for n in range(6)]
    assert statuses == [200] * 5 + [429]


def test_read_rpm_limits_gets_but_not_run_creation(make_simulator: Make, clock: FakeClock) -> None:
    sim = make_simulator(clock=clock, read_rpm=60, burst=1)
    assert send(sim.base_url, "GET", "/threads/thread_1").status == 200
    assert send(sim.base_url, "GET", "/threads/thread_1").status == 429
    assert send(sim.base_url, "POST", RUNS, BODY).status == 200


def test_unlimited_answers_still_carry_rate_limit_headers(base_url: str) -> None:
    reply = send(base_url, "POST", RUNS, BODY)
    assert reply.headers["x-ratelimit-limit-requests"] == "1000000"
    assert int(reply.headers["x-ratelimit-remaining-requests"]) > 900_000
    assert reply.headers["x-ratelimit-limit-tokens"] == "1000000000"
    for name in ("reset-requests", "remaining-tokens", "reset-tokens"):
        assert f"x-ratelimit-{name}" in reply.headers


def test_exhausted_quota_refuses_every_run_without_retry_after(make_simulator: Make) -> None:
    sim = make_simulator(quota_exhausted=True)
    reply = send(sim.base_url, "POST", RUNS, BODY)
    assert reply.status == 429 and "retry-after" not in reply.headers
    error = error_of(reply)
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
    assert send(sim.base_url, "GET", "/threads/thread_1").status == 200


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(0, "0s", id="zero"),
        pytest.param(0.012, "12ms", id="ms"),
        pytest.param(0.0001, "1ms", id="sub-ms-rounds-up"),
        pytest.param(1, "1s", id="s"),
        pytest.param(8.64, "8.64s", id="fractional-s"),
        pytest.param(360, "6m0s", id="minutes"),
        pytest.param(432, "7m12s", id="m-and-s"),
        pytest.param(3723, "1h2m3s", id="hours"),
    ],
)
def test_reset_headers_are_go_durations(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


# -- faults -------------------------------------------------------------------------------


def fault_pattern(sim: RunningSimulator, count: int, *, with_reads: bool) -> list[int]:
    statuses = []
    for n in range(count):
        statuses.append(send(sim.base_url, "POST", f"/threads/t{n}/runs", BODY).status)
        if with_reads:
            send(sim.base_url, "GET", f"/threads/t{n}/runs")
    return statuses


def test_same_seed_and_requests_give_the_same_faults(make_simulator: Make) -> None:
    first = fault_pattern(make_simulator(seed=3, fail_rate=0.3), 40, with_reads=False)
    # Requests to other routes draw from their own stream, so they do not shift this one.
    second = fault_pattern(make_simulator(seed=3, fail_rate=0.3), 40, with_reads=True)
    other = fault_pattern(make_simulator(seed=4, fail_rate=0.3), 40, with_reads=False)
    assert first == second != other
    assert {200, 500, 502, 503} >= set(first) > {200}


def test_injected_server_error_changes_nothing(make_simulator: Make) -> None:
    sim = make_simulator(fail_rate=1.0)
    reply = send(sim.base_url, "POST", RUNS, BODY)
    assert reply.status in (500, 502, 503)
    assert error_of(reply)["type"] == "server_error"
    stats = sim.stats()
    assert (stats["runs_created"], stats["faults"]["fail"]) == (0, 1)


def test_hung_request_still_creates_its_run(make_simulator: Make) -> None:
    sim = make_simulator(hang_rate=1.0, hang_seconds=30)
    with pytest.raises(TimeoutError):
        send(sim.base_url, "POST", RUNS, BODY, timeout=0.3)
    listing = send(sim.base_url, "GET", RUNS).json
    assert len(listing["data"]) == 1
    assert sim.stats()["runs_created"] == 1 and sim.stats()["faults"]["hang"] == 1


def test_short_hang_answers_late(make_simulator: Make) -> None:
    sim = make_simulator(hang_rate=1.0, hang_seconds=0.2)
    started = time.monotonic()
    assert send(sim.base_url, "POST", RUNS, BODY).status == 200
    assert time.monotonic() - started >= 0.2


def test_reset_drops_the_connection_after_creating_the_run(make_simulator: Make) -> None:
    sim = make_simulator(reset_rate=1.0)
    with pytest.raises(http.client.RemoteDisconnected):
        send(sim.base_url, "POST", RUNS, BODY)

    async def post_with_aiohttp() -> None:
        async with aiohttp.ClientSession() as session:
            url = f"{sim.base_url}/threads/thread_2/runs"
            async with session.post(url, json=BODY, headers=API_HEADERS) as response:
                await response.read()

    with pytest.raises(aiohttp.ServerDisconnectedError):
        asyncio.run(post_with_aiohttp())
    stats = sim.stats()
    assert (stats["runs_created"], stats["faults"]["reset"]) == (2, 2)
    # By a status code as DESIGN says (before: "reset"): nginx's 444, closed unanswered.
    assert stats["requests"]["POST /v1/threads/{thread_id}/runs"] == {"444": 2}


def test_latency_delays_every_answer(make_simulator: Make) -> None:
    sim = make_simulator(latency_ms=100)
    started = time.monotonic()
    send(sim.base_url, "GET", "/nowhere")
    assert time.monotonic() - started >= 0.1


# -- stats and reset ----------------------------------------------------------------------


def test_duplicate_runs_counts_a_second_run_with_same_thread_and_body(
    make_simulator: Make,
) -> None:
    sim = make_simulator(run_seconds=0)
    tagged = {**BODY, "metadata": {"batchrun_key": "row-1"}}
    send(sim.base_url, "POST", RUNS, tagged)
    send(sim.base_url, "POST", "/threads/thread_2/runs", tagged)  # other thread: not a duplicate
    send(sim.base_url, "POST", RUNS, {**BODY, "metadata": {"batchrun_key": "row-2"}})
    assert sim.stats()["duplicate_runs"] == 0
    send(sim.base_url, "POST", RUNS, {"metadata": {"batchrun_key": "row-1"}, **BODY})
    assert sim.stats()["duplicate_runs"] == 1


def test_stats_count_requests_by_route_template_and_status(base_url: str) -> None:
    send(base_url, "POST", RUNS, BODY)
    send(base_url, "POST", RUNS, BODY)
    send(base_url, "GET", "/nope")
    stats = send(base_url, "GET", "/_simulator/stats", headers={}).json
    assert {"requests", "runs_created", "duplicate_runs", "rate_limited", "faults"} <= set(stats)
    assert stats["requests"] == {
        "POST /v1/threads/{thread_id}/runs": {"200": 1, "400": 1},
        "GET <unmatched>": {"404": 1},
    }
    assert (stats["runs_created"], stats["duplicate_runs"], stats["rate_limited"]) == (1, 0, 0)
    assert stats["faults"] == {"fail": 0, "hang": 0, "reset": 0}


def test_reset_route_clears_state_and_counters(make_simulator: Make) -> None:
    sim = make_simulator(strict_threads=True)
    thread_id = send(sim.base_url, "POST", "/threads", {}).json["id"]
    send(sim.base_url, "POST", f"/threads/{thread_id}/runs", BODY)
    assert send(sim.base_url, "POST", "/_simulator/reset", headers={}).status == 200
    stats = sim.stats()
    assert (stats["requests"], stats["runs_created"], stats["threads"]) == ({}, 0, 0)
    assert send(sim.base_url, "GET", f"/threads/{thread_id}").status == 404
    sim.reset()  # the in-process handle does the same
    assert sim.stats()["requests"] == {}


# -- ways to run it -----------------------------------------------------------------------


def test_serve_async_runs_inside_the_callers_loop() -> None:
    async def scenario() -> int:
        async with serve_async(SimulatorConfig()) as base_url:
            assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
            async with aiohttp.ClientSession() as session:
                url = f"{base_url}/threads/thread_1/runs"
                async with session.post(url, json=BODY, headers=API_HEADERS) as response:
                    return response.status

    assert asyncio.run(scenario()) == 200


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_serve_forever_announces_then_stops_cleanly_on_signal(stop_signal: int) -> None:
    code = (
        # A shell's background job starts with Ctrl-C ignored; a terminal user's does not.
        "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from batchrun.simulator import SimulatorConfig, serve_forever\n"
        "serve_forever(SimulatorConfig(port=0), lambda line: print(line, flush=True))\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-W", "error", "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert child.stdout is not None
        banner = child.stdout.readline().strip()
        assert banner.startswith("batchrun simulator listening on http://127.0.0.1:")
        assert banner.endswith("/v1 (Ctrl-C to stop)")
        assert send(banner.split()[4], "GET", "/threads/thread_1").status == 200
        child.send_signal(stop_signal)
        _, stderr = child.communicate(timeout=10)
    finally:
        child.kill()
        child.wait()
    assert (child.returncode, stderr) == (0, "")


def test_running_simulator_reports_a_port_in_use(simulator: RunningSimulator) -> None:
    port = int(simulator.base_url.rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(OSError):
        RunningSimulator(port=port).start()


def test_config_rejects_impossible_settings_and_hides_the_key() -> None:
    with pytest.raises(ValueError, match="fail_rate"):
        SimulatorConfig(fail_rate=1.5)
    with pytest.raises(ValueError, match="hang_rate"):
        SimulatorConfig(hang_rate=0.6, reset_rate=0.6)
    assert "sk-secret" not in repr(SimulatorConfig(api_key="sk-secret"))
