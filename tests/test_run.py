"""`batchrun run` against the real simulator over loopback HTTP."""

from __future__ import annotations

import csv
import gc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from job_support import read_rows, settings_for

from batchrun.errors import ExitCode
from batchrun.jobs import run_file
from batchrun.simulator import RunningSimulator

KEY = "sk-test-0123456789abcdef"
MakeSimulator = Callable[..., RunningSimulator]


def write_sheet(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def sheet(tmp_path: Path, count: int, **extra: str) -> Path:
    rows = [
        {"thread_id": f"thread_{n:04d}", "assistant_id": "asst_1", **extra} for n in range(count)
    ]
    return write_sheet(tmp_path / "in.csv", rows)


def creates(stats: dict[str, Any]) -> dict[str, int]:
    return stats["requests"].get("POST /v1/threads/{thread_id}/runs", {})


def test_every_valid_row_is_sent_once_in_input_order(
    tmp_path: Path, simulator: RunningSimulator
) -> None:
    source = sheet(tmp_path, 30)
    report = run_file(source, tmp_path / "out.csv", settings_for(simulator.base_url))
    rows = read_rows(report.output)
    assert [r["thread_id"] for r in rows] == [f"thread_{n:04d}" for n in range(30)]
    assert {r["status"] for r in rows} == {"200"}
    assert all(r["run_id"].startswith("run_") and r["attempts"] == "1" for r in rows)
    assert report.summary.exit_code is ExitCode.OK
    stats = simulator.stats()
    assert stats["runs_created"] == 30 and stats["duplicate_runs"] == 0


def test_a_job_leaves_the_garbage_collector_as_it_found_it(
    tmp_path: Path, simulator: RunningSimulator
) -> None:
    """A job collects rarely while it holds its rows (see jobs.run.rare_collections)."""
    settings = settings_for(simulator.base_url)
    threshold = gc.get_threshold()
    frozen = gc.get_freeze_count()  # none, but CPython 3.12 starts with a few hundred
    run_file(sheet(tmp_path, 5), tmp_path / "a.csv", settings)
    assert gc.get_threshold() == threshold and gc.get_freeze_count() == frozen
    gc.freeze()  # a caller's own frozen objects stay frozen
    try:
        run_file(sheet(tmp_path, 5), tmp_path / "b.csv", settings)
        assert gc.get_threshold() == threshold and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_input_columns_named_like_unused_result_columns_are_written_as_read(
    tmp_path: Path, simulator: RunningSimulator
) -> None:
    """Without --wait there are no usage columns: an input column of that name is input."""
    values = ["00123", "nan", "1.50", "<NA>"]
    source = sheet(tmp_path, 4)
    rows = read_rows(source)
    for row, value in zip(rows, values, strict=True):
        row["usage_total_tokens"] = value
    write_sheet(source, rows)
    report = run_file(source, tmp_path / "out.csv", settings_for(simulator.base_url))
    assert [r["usage_total_tokens"] for r in read_rows(report.output)] == values


def test_faults_never_lose_a_row_nor_create_a_second_run(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    """10% 5xx, 2% hangs beyond the client timeout, 2% dropped connections."""
    sim = make_simulator(
        run_seconds=0, fail_rate=0.10, hang_rate=0.02, hang_seconds=3, reset_rate=0.02, seed=11
    )
    source = sheet(tmp_path, 300)
    settings = settings_for(sim.base_url, timeout=1.0, max_retries=10, concurrency=32)
    report = run_file(source, tmp_path / "out.csv", settings)
    rows = read_rows(report.output)
    assert [r["thread_id"] for r in rows] == [f"thread_{n:04d}" for n in range(300)]
    assert {r["status"] for r in rows} == {"200"}, {r["error"] for r in rows}
    stats = sim.stats()
    assert stats["duplicate_runs"] == 0
    assert stats["runs_created"] == 300
    assert report.summary.reconciled > 0  # hangs and resets were adopted, not re-created
    assert sum(v for k, v in creates(stats).items() if k.startswith("5")) > 0


def test_wrong_key_stops_early_with_exit_3_and_every_row_says_why(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(api_key="sk-the-right-key-000000")
    source = sheet(tmp_path, 200)
    report = run_file(
        source, tmp_path / "out.csv", settings_for(sim.base_url, key="sk-wrong-key-999999999")
    )
    assert report.summary.exit_code is ExitCode.ABORTED
    assert sum(creates(sim.stats()).values()) <= 16 + 2
    rows = read_rows(report.output)
    assert all(r["error"] for r in rows)
    assert sum(r["status"] == "401" for r in rows) >= 1
    assert all("401" in r["error"] or "not sent" in r["error"] for r in rows)
    # Said once: "HTTP 401: Incorrect API key ...", not again as "... (HTTP 401)".
    refused = [r["error"] for r in rows if r["status"] == "401"]
    assert all(error.count("401") == 1 for error in refused), refused
    assert (report.summary.aborted or "").count("401") == 1, report.summary.aborted
    text = report.output.read_text()
    assert "sk-wrong-key-999999999" not in text


def test_quota_429_stops_the_job_and_is_never_retried(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(quota_exhausted=True)
    report = run_file(
        sheet(tmp_path, 100), tmp_path / "out.csv", settings_for(sim.base_url, concurrency=4)
    )
    assert report.summary.exit_code is ExitCode.ABORTED
    assert "quota" in (report.summary.aborted or "")
    assert sum(creates(sim.stats()).values()) <= 4 + 1
    rows = read_rows(report.output)
    assert all(r["error"] for r in rows)


def test_rows_stopped_by_a_systemic_error_are_sent_by_the_next_run(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(api_key="sk-the-right-key-000000")
    source, out = sheet(tmp_path, 20), tmp_path / "out.csv"
    run_file(source, out, settings_for(sim.base_url, key="sk-wrong-key-999999999"))
    report = run_file(source, out, settings_for(sim.base_url, key="sk-the-right-key-000000"))
    assert report.summary.exit_code is ExitCode.OK
    assert {r["status"] for r in read_rows(out)} == {"200"}


def test_a_missing_route_stops_after_three_404s_with_a_hint(
    tmp_path: Path, simulator: RunningSimulator
) -> None:
    base = simulator.base_url.replace("/v1", "/v0")
    report = run_file(sheet(tmp_path, 50), tmp_path / "out.csv", settings_for(base, concurrency=1))
    assert report.summary.exit_code is ExitCode.ABORTED
    assert "no Assistants runs route" in (report.summary.aborted or "")
    assert sum(creates(simulator.stats()).values()) == 0
    rows = read_rows(report.output)
    assert sum(r["status"] == "404" for r in rows) == 3
    again = run_file(
        report.output.with_name("in.csv"), report.output, settings_for(simulator.base_url)
    )
    assert again.summary.exit_code is ExitCode.OK, "rows stopped by the missing route are resent"


def test_rpm_matching_the_server_limit_gets_no_429(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(rpm=1200, run_seconds=0)
    report = run_file(
        sheet(tmp_path, 60), tmp_path / "out.csv", settings_for(sim.base_url, rpm=1200)
    )
    assert report.summary.exit_code is ExitCode.OK
    assert sim.stats()["rate_limited"] == 0


def test_429s_pause_and_every_row_still_succeeds(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    # A server that states no limits: the job learns them from its 429s.
    sim = make_simulator(rpm=600, run_seconds=0, limit_headers=False)
    report = run_file(
        sheet(tmp_path, 40), tmp_path / "out.csv", settings_for(sim.base_url, concurrency=16)
    )
    assert report.summary.exit_code is ExitCode.OK
    stats = sim.stats()
    assert stats["rate_limited"] > 0
    assert stats["runs_created"] == 40 and stats["duplicate_runs"] == 0


def test_without_rpm_a_job_keeps_to_the_request_limit_the_server_states(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(rpm=600, run_seconds=0)
    report = run_file(
        sheet(tmp_path, 40), tmp_path / "out.csv", settings_for(sim.base_url, concurrency=16)
    )
    assert report.summary.exit_code is ExitCode.OK
    stats = sim.stats()
    assert (stats["rate_limited"], stats["runs_created"]) == (0, 40)
    assert report.summary.limits.startswith("600 requests/min (the server's x-ratelimit headers)")


def test_rows_sharing_a_thread_go_in_order_after_the_previous_run_ends(
    tmp_path: Path, make_simulator: MakeSimulator, api_call: Callable[..., Any]
) -> None:
    sim = make_simulator(run_seconds=0.2)
    rows = [
        {"thread_id": "thread_shared", "assistant_id": "asst_1", "instructions": f"step {n}"}
        for n in range(4)
    ]
    rows.insert(2, {"thread_id": "thread_other", "assistant_id": "asst_1", "instructions": "other"})
    report = run_file(
        write_sheet(tmp_path / "in.csv", rows), tmp_path / "out.csv", settings_for(sim.base_url)
    )
    out = read_rows(report.output)
    assert {r["status"] for r in out} == {"200"}, [r["error"] for r in out]
    shared = [r for r in out if r["thread_id"] == "thread_shared"]
    listed = sim.stats()
    assert listed["duplicate_runs"] == 0
    runs = api_call(sim.base_url, "GET", "/threads/thread_shared/runs?order=asc").json["data"]
    assert [run["id"] for run in runs] == [r["run_id"] for r in shared]
    assert [run["instructions"] for run in runs] == [f"step {n}" for n in range(4)]


def test_requires_action_blocks_the_threads_later_rows(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(run_seconds=0.1)
    rows = [
        {
            "thread_id": "thread_a",
            "assistant_id": "asst_1",
            "instructions": "[sim:requires_action]",
        },
        {"thread_id": "thread_a", "assistant_id": "asst_1", "instructions": "next"},
        {"thread_id": "thread_b", "assistant_id": "asst_1", "instructions": "fine"},
    ]
    report = run_file(
        write_sheet(tmp_path / "in.csv", rows), tmp_path / "out.csv", settings_for(sim.base_url)
    )
    out = read_rows(report.output)
    assert out[0]["status"] == "200" and out[2]["status"] == "200"
    assert out[1]["status"] == "" and "requires_action" in out[1]["error"]
    assert report.summary.exit_code is ExitCode.ROWS_FAILED


def test_without_the_run_tag_an_ambiguous_failure_is_not_resent(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(run_seconds=0, fail_rate=1.0, seed=1)
    report = run_file(
        sheet(tmp_path, 3), tmp_path / "out.csv", settings_for(sim.base_url, run_tag=False)
    )
    out = read_rows(report.output)
    assert all("--retry-failed" in r["error"] for r in out)
    assert sum(creates(sim.stats()).values()) == 3
