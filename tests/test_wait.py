"""--wait and --reply: follow runs to their end and bring back the answer."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import send
from job_support import command, read_rows, settings_for

from batchrun.errors import ExitCode
from batchrun.jobs import run_file
from batchrun.simulator import RunningSimulator

KEY = "sk-test-wait-0123456789"
MakeSimulator = Callable[..., RunningSimulator]


def write_rows(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["thread_id", "assistant_id", "instructions"])
        writer.writerows([(thread, "asst_1", text) for thread, text in rows])
    return path


def test_every_row_ends_completed_with_reply_and_tokens(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(run_seconds=0.3)
    source = write_rows(tmp_path / "in.csv", [(f"thread_{n}", f"question {n}") for n in range(12)])
    report = run_file(source, tmp_path / "out.csv", settings_for(sim.base_url, reply=True))
    rows = read_rows(report.output)
    assert report.summary.exit_code is ExitCode.OK
    assert {r["run_status"] for r in rows} == {"completed"}
    for row in rows:
        assert row["reply"].startswith(f"Simulated reply to {row['run_id']}")
        prompt, completion = int(row["usage_prompt_tokens"]), int(row["usage_completion_tokens"])
        assert int(row["usage_total_tokens"]) == prompt + completion > 0
    assert "runs: 12 completed" in report.summary.line()


def test_several_rows_per_thread_complete_in_one_pass(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(run_seconds=0.2)
    plan = [
        ("thread_a", "a1"),
        ("thread_b", "b1"),
        ("thread_a", "a2"),
        ("thread_a", "a3"),
        ("thread_b", "b2"),
    ]
    report = run_file(
        write_rows(tmp_path / "in.csv", plan),
        tmp_path / "out.csv",
        settings_for(sim.base_url, reply=True),
    )
    rows = read_rows(report.output)
    assert [r["run_status"] for r in rows] == ["completed"] * 5, [r["error"] for r in rows]
    assert all("active run" not in r["error"] and r["attempts"] == "1" for r in rows)
    assert len({r["reply"] for r in rows}) == 5
    assert sim.stats()["runs_created"] == 5


def test_failed_and_expired_runs_report_their_last_error(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(run_seconds=0.1)
    plan = [("thread_ok", "fine"), ("thread_fail", "[sim:fail]"), ("thread_exp", "[sim:expire]")]
    report = run_file(
        write_rows(tmp_path / "in.csv", plan),
        tmp_path / "out.csv",
        settings_for(sim.base_url, wait=True),
    )
    ok, failed, expired = read_rows(report.output)
    assert ok["run_status"] == "completed" and ok["error"] == ""
    assert failed["run_status"] == "failed"
    assert failed["last_error"] == "server_error: Simulated failure."
    assert "run ended failed" in failed["error"]
    assert expired["run_status"] == "expired" and "run ended expired" in expired["error"]
    assert report.summary.exit_code is ExitCode.ROWS_FAILED


def test_wait_timeout_reports_runs_still_going_and_exits_nonzero(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(run_seconds=0.1)
    plan = [("thread_slow", "[sim:slow]"), ("thread_slow", "after"), ("thread_quick", "fine")]
    report = run_file(
        write_rows(tmp_path / "in.csv", plan),
        tmp_path / "out.csv",
        settings_for(sim.base_url, wait=True, wait_timeout=0.4),
    )
    slow, after, quick = read_rows(report.output)
    assert slow["status"] == "200" and slow["run_status"] in ("queued", "in_progress")
    assert "--wait-timeout" in slow["error"]
    assert after["status"] == "" and "still busy" in after["error"]
    assert quick["run_status"] == "completed"
    assert report.summary.exit_code is ExitCode.ROWS_FAILED


def wait_until(seen: Callable[[], bool], seconds: float = 60.0) -> bool:
    """Poll for a state the job or the server reaches (a marker, not a timer)."""
    deadline = time.monotonic() + seconds
    while not seen():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def latest_run(sim: RunningSimulator, thread: str) -> dict[str, Any]:
    listed = send(sim.base_url, "GET", f"/threads/{thread}/runs?limit=1&order=desc").json
    assert listed is not None and listed["data"], listed
    run: dict[str, Any] = listed["data"][0]
    return run


def test_rerun_after_a_kill_fills_replies_without_creating_runs_again(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(run_seconds=1.5)
    threads = [f"thread_{n}" for n in range(20)]
    source = write_rows(tmp_path / "in.csv", [(thread, "hi") for thread in threads])
    output = tmp_path / "out.csv"
    args = command(source, output, sim.base_url, "--reply")
    env = {**os.environ, "OPENAI_API_KEY": KEY}
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Killed once every run is made and before they end (a run takes 1.5 s): the journal
    # holds the rows as sending or created, none with its reply.
    made = wait_until(lambda: sim.stats()["runs_created"] == 20 or process.poll() is not None)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    assert made and process.returncode == -signal.SIGKILL
    assert sim.stats()["runs_created"] == 20
    # The runs end while no job runs: the rerun finds them completed, adopts or follows
    # them, and must still read every reply.
    assert wait_until(lambda: all(latest_run(sim, t)["status"] == "completed" for t in threads))
    finished = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert finished.returncode == 0, finished.stderr
    rows = read_rows(output)
    assert {r["run_status"] for r in rows} == {"completed"}
    assert all(r["reply"] for r in rows), [r["reply"] for r in rows]
    assert sim.stats()["runs_created"] == 20
    # And a rerun after that sends nothing and keeps every reply.
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert all(r["reply"] for r in read_rows(output))
    assert sim.stats()["runs_created"] == 20


def test_a_pending_run_is_followed_again_by_the_next_run(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(run_seconds=0.1)
    source = write_rows(tmp_path / "in.csv", [("thread_slow", "[sim:slow]")])
    output = tmp_path / "out.csv"
    first = run_file(source, output, settings_for(sim.base_url, wait=True, wait_timeout=0.3))
    assert first.summary.exit_code is ExitCode.ROWS_FAILED
    # Still running ([sim:slow] takes ten times run_seconds): followed until it ends.
    second = run_file(source, output, settings_for(sim.base_url, wait=True))
    (row,) = read_rows(second.output)
    assert row["run_status"] == "completed" and row["error"] == ""
    assert second.summary.exit_code is ExitCode.OK
    assert sim.stats()["runs_created"] == 1


def test_an_answer_the_server_no_longer_has_fails_its_row_and_frees_its_conversation(
    make_simulator: Callable[..., RunningSimulator], tmp_path: Path
) -> None:
    # Before: the row stayed pending ("could not read the response's status") and its
    # conversation's later rows "still busy" on every rerun, --retry-failed included.
    sim = make_simulator(run_seconds=30)
    source = tmp_path / "in.csv"
    source.write_text(
        "model,conversation,input\ngpt-4o-mini,conv_c0,first\ngpt-4o-mini,conv_c0,second\n",
        encoding="utf-8",
    )
    settings = settings_for(sim.base_url, endpoint="responses", wait=True, wait_timeout=0.3)
    run_file(source, tmp_path / "out.csv", settings)
    assert [row["outcome"] for row in read_rows(tmp_path / "out.csv")] == ["pending", "not sent"]
    send(sim.base_url, "POST", "/_simulator/reset")  # the server forgets the response
    report = run_file(source, tmp_path / "out.csv", settings)
    first, second = read_rows(tmp_path / "out.csv")
    assert first["outcome"] == "failed" and first["response_status"] == "not found"
    assert "is no longer found (HTTP 404: Response with id" in first["error"]
    assert first["error"].endswith("then rerun with --retry-failed to send the row again")
    assert (second["status"], second["outcome"]) == ("200", "pending")  # sent now
    assert report.summary.sent == 1


def test_a_row_left_waiting_says_the_rerun_must_wait_too(
    make_simulator: Callable[..., RunningSimulator], tmp_path: Path
) -> None:
    # Before: "rerun to keep waiting", and a rerun without --wait kept it pending forever.
    sim = make_simulator(run_seconds=30)
    source = tmp_path / "in.csv"
    source.write_text("model,input\ngpt-4o-mini,first\n", encoding="utf-8")
    settings = settings_for(sim.base_url, endpoint="responses", wait=True, wait_timeout=0.3)
    run_file(source, tmp_path / "out.csv", settings)
    (row,) = read_rows(tmp_path / "out.csv")
    assert row["outcome"] == "pending"
    assert row["error"].endswith("after --wait-timeout; rerun with --wait to keep waiting")
