"""Whole ``batchrun run`` jobs sharing a budget through a real redis-server.

Several jobs against one simulator enforcing R keep under R together; Redis unreachable at
the start stops a job before it sends (exit 2); Redis lost mid-job stops it (exit 3) with
the rows left for the next run.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from job_support import TEST_KEY, command, read_rows
from redis_server import RedisServer, free_port

from batchrun.simulator import RunningSimulator

MakeSimulator = Callable[..., RunningSimulator]
ENV = {**os.environ, "OPENAI_API_KEY": TEST_KEY}


def sheet(path: Path, count: int, prefix: str = "thread") -> Path:
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["thread_id", "assistant_id"])
        writer.writerows([f"{prefix}_{n:04d}", "asst_1"] for n in range(count))
    return path


def start_job(source: Path, base_url: str, *extra: str) -> subprocess.Popen[str]:
    output = source.with_suffix(".out.csv")
    return subprocess.Popen(
        command(source, output, base_url, *extra),
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(job: subprocess.Popen[str]) -> tuple[int, str]:
    _, err = job.communicate(timeout=60)
    return job.returncode, err


def test_jobs_sharing_a_limit_together_stay_within_it(
    tmp_path: Path, make_simulator: MakeSimulator, redis_server: RedisServer
) -> None:
    """Three jobs at --rpm 1200 against a server enforcing 1200/min: no 429 at all.

    The server holds 30 tokens where the jobs' first burst is 20 (one second's worth):
    paced exactly at its rate, a request delayed on a loaded machine while the next one is
    not would otherwise meet an empty bucket. Unshared, the three first bursts alone (60)
    would still meet 30 429s.
    """
    simulator = make_simulator(rpm=1200, burst=30, run_seconds=0)
    shared = ("--rpm", "1200", "--limiter-url", redis_server.url)
    jobs = [
        start_job(sheet(tmp_path / f"in{n}.csv", 25, f"job{n}"), simulator.base_url, *shared)
        for n in range(3)
    ]
    for job in jobs:
        code, err = finish(job)
        assert code == 0, err
    stats = simulator.stats()
    assert stats["runs_created"] == 75 and stats["duplicate_runs"] == 0
    assert stats["rate_limited"] == 0


def test_jobs_sharing_a_limit_of_one_request_a_second_meet_no_429s(
    tmp_path: Path, make_simulator: MakeSimulator, redis_server: RedisServer
) -> None:
    """Two jobs at --rpm 60 against a server enforcing 60/min with a bucket of one request.

    Slots are handed out ahead, one interval apart, and the server's bucket is empty as
    each request before arrives: before, the least delay on the way made a 429 of about
    every other request (12 of 20 for one job), and a job stalled behind each one.
    """
    simulator = make_simulator(rpm=60, run_seconds=0)
    shared = ("--rpm", "60", "--limiter-url", redis_server.url)
    jobs = [
        start_job(sheet(tmp_path / f"in{n}.csv", 5, f"job{n}"), simulator.base_url, *shared)
        for n in range(2)
    ]
    for job in jobs:
        code, err = finish(job)
        assert code == 0, err
    stats = simulator.stats()
    assert stats["runs_created"] == 10 and stats["duplicate_runs"] == 0
    assert stats["rate_limited"] <= 1, stats["rate_limited"]  # a loaded machine's one


def test_unreachable_redis_stops_the_job_before_it_sends(
    tmp_path: Path, simulator: RunningSimulator
) -> None:
    port = free_port()
    url = f"redis://:hunter2secret@127.0.0.1:{port}/0"
    source = sheet(tmp_path / "in.csv", 5)
    code, err = finish(start_job(source, simulator.base_url, "--rpm", "600", "--limiter-url", url))
    assert code == 2
    assert f"--limiter-url redis://:***@127.0.0.1:{port}/0: cannot reach Redis" in err
    assert "hunter2secret" not in err
    assert simulator.stats()["runs_created"] == 0


def test_redis_lost_mid_job_stops_dispatching_and_the_next_run_sends_the_rest(
    tmp_path: Path,
    make_simulator: MakeSimulator,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    simulator = make_simulator(run_seconds=0)
    source = sheet(tmp_path / "in.csv", 60)
    job = start_job(source, simulator.base_url, "--rpm", "1200", "--limiter-url", redis_server.url)
    deadline = time.monotonic() + 30
    while simulator.stats()["runs_created"] < 20:  # the first second's burst is out
        assert time.monotonic() < deadline and job.poll() is None
        time.sleep(0.02)
    redis_server.stop()
    code, err = finish(job)
    assert code == 3, err
    assert f"stopped: lost the shared rate limiter at {redis_server.url}" in err
    rows = read_rows(source.with_suffix(".out.csv"))
    sent = [r for r in rows if r["status"] == "200"]
    left = [r for r in rows if r["error"].startswith("not sent: job stopped (lost the shared")]
    assert len(sent) + len(left) == 60 and 20 <= len(sent) < 60
    assert all(r["status"] == "" and r["attempts"] in ("", "0") for r in left)
    assert simulator.stats()["runs_created"] == len(sent)

    # Redis is back (a new one): the same command sends only the rows left.
    again = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        rerun = start_job(source, simulator.base_url, "--rpm", "1200", "--limiter-url", again.url)
        code, err = finish(rerun)
    finally:
        again.stop()
    assert code == 0, err
    stats = simulator.stats()
    assert stats["runs_created"] == 60 and stats["duplicate_runs"] == 0
    assert {r["status"] for r in read_rows(source.with_suffix(".out.csv"))} == {"200"}


def test_limiter_url_without_rpm_is_a_usage_error(tmp_path: Path) -> None:
    source = sheet(tmp_path / "in.csv", 1)
    job = command(source, tmp_path / "o.csv", "http://127.0.0.1:9/v1")
    result = subprocess.run(
        [*job, "--limiter-url", "redis://127.0.0.1:9/0"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--limiter-url shares the --rpm/--tpm budgets" in result.stderr


def test_help_does_not_import_redis() -> None:
    code = "import sys, batchrun.cli.commands; print('redis' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"
