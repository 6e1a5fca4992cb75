"""batchrun against a compatible server that is not OpenAI word for word (issue: other
wordings, ghost runs, failed runs, --retry-failed, FastAPI 422s)."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import pytest
from compatible_server import Quirks, compatible_server
from job_support import read_rows, settings_for

from batchrun.errors import ExitCode
from batchrun.jobs import JobReport, run_file
from batchrun.sending.judge import Verdict, judge


def write_sheet(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    """Rows of (thread_id, assistant_id, instructions)."""
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["thread_id", "assistant_id", "instructions"])
        writer.writerows(rows)
    return path


def run(tmp_path: Path, base_url: str, **options: Any) -> tuple[JobReport, list[dict[str, str]]]:
    report = run_file(
        tmp_path / "in.csv", tmp_path / "out.csv", settings_for(base_url, timeout=5, **options)
    )
    return report, read_rows(report.output)


def test_a_404_about_the_row_fails_that_row_and_every_other_row_is_sent(tmp_path: Path) -> None:
    rows = [(f"t_{n}", "asst_1" if n % 2 else "typo_1", "hi") for n in range(8)]
    write_sheet(tmp_path / "in.csv", rows)
    with compatible_server() as (server, base_url):
        report, out = run(tmp_path, base_url)
        again, _ = run(tmp_path, base_url)
    assert report.summary.exit_code is ExitCode.ROWS_FAILED  # not a stopped job
    for n, row in enumerate(out):
        if n % 2:
            assert row["status"] == "200", row
        else:
            assert row["status"] == "404" and "Assistant not found" in row["error"], row
    assert again.summary.exit_code is ExitCode.ROWS_FAILED and again.summary.sent == 0
    assert server.runs_created == 4


@pytest.mark.parametrize("not_found", ["fastapi", "html", "empty"])
def test_a_base_url_without_its_prefix_stops_the_job_with_a_hint(
    tmp_path: Path, not_found: Any
) -> None:
    write_sheet(tmp_path / "in.csv", [(f"t_{n}", "asst_1", "hi") for n in range(20)])
    with compatible_server(Quirks(not_found=not_found)) as (_, base_url):
        report, out = run(tmp_path, base_url.replace("/api/v1", "/v1"), concurrency=1)
    assert report.summary.exit_code is ExitCode.ABORTED
    assert "check --base-url" in (report.summary.aborted or "")
    assert sum(1 for row in out if row["status"] == "404") == 3
    assert report.summary.left == 20  # all of them go again once the URL is right


def test_a_ghost_run_says_so_on_its_row_and_in_the_summary(tmp_path: Path) -> None:
    write_sheet(tmp_path / "in.csv", [("t_1", "asst_1", "hi"), ("t_2", "asst_1", "hi")])
    with compatible_server(Quirks(ghost_threads=frozenset({"t_1"}))) as (server, base_url):
        report, out = run(tmp_path, base_url)
    assert report.summary.exit_code is ExitCode.OK
    assert out[0]["status"] == "200" and out[0]["run_id"] == server.runs("t_1")[0]["id"]
    assert "the create answered HTTP 500, but the run was made" in out[0]["error"]
    assert out[1]["error"] == ""
    assert report.summary.ghosts == 1 and report.summary.reconciled == 1
    assert server.creates("t_1") == 1


def test_an_adopted_run_that_ended_failed_counts_as_run_failed(tmp_path: Path) -> None:
    write_sheet(tmp_path / "in.csv", [("t_1", "asst_1", "crash [fail]")])
    quirks = Quirks(ghost_threads=frozenset({"t_1"}), run_seconds=0.2)
    with compatible_server(quirks) as (server, base_url):
        report, out = run(tmp_path, base_url, wait=True)
    assert report.summary.exit_code is ExitCode.ROWS_FAILED
    assert out[0]["run_status"] == "failed" and "worker crashed" in out[0]["last_error"]
    assert report.summary.outcomes == {"run failed": 1}
    assert server.creates("t_1") == 1


def test_a_ghost_run_that_never_starts_is_not_waited_for_again(tmp_path: Path) -> None:
    write_sheet(tmp_path / "in.csv", [("t_1", "asst_1", "a"), ("t_1", "asst_1", "b")])
    quirks = Quirks(ghost_threads=frozenset({"t_1"}), ghost_stuck=True, max_ghosts=1)
    with compatible_server(quirks) as (server, base_url):
        _, out = run(tmp_path, base_url, wait=True, wait_timeout=1)
        started = time.monotonic()
        _, out_again = run(tmp_path, base_url, wait=True, wait_timeout=30)
        seconds = time.monotonic() - started
    assert "may never start" in out[0]["error"]
    # Waiting again would take the --wait-timeout of 30 s; the margin is for a loaded machine.
    assert seconds < 15, "the rerun waited again for a run it gave up on"
    assert out_again[0]["run_status"] == "queued" and "may never start" in out_again[0]["error"]
    assert out_again[1]["error"].startswith("not sent")
    assert server.creates("t_1") == 1


def test_retry_failed_sends_a_new_run_for_a_row_whose_run_ended_failed(tmp_path: Path) -> None:
    write_sheet(tmp_path / "in.csv", [("t_1", "asst_1", "hi")])
    with compatible_server(Quirks(run_seconds=0.3)) as (server, base_url):
        run(tmp_path, base_url)
        (old,) = server.runs("t_1")
        server.set_status(old["id"], "failed")
        failed, out = run(tmp_path, base_url, wait=True)
        plain, _ = run(tmp_path, base_url, wait=True)
        retried, out_retried = run(tmp_path, base_url, wait=True, retry_failed=True)
    assert out[0]["run_status"] == "failed" and failed.summary.exit_code is ExitCode.ROWS_FAILED
    assert plain.summary.sent == 0
    assert retried.summary.exit_code is ExitCode.OK, out_retried
    assert out_retried[0]["run_id"] != old["id"] and out_retried[0]["run_status"] == "completed"
    assert server.creates("t_1") == 2


def test_a_fastapi_422_reads_as_field_and_message(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text(
        'thread_id,assistant_id,tool_choice\nt_1,asst_1,"{""type"": ""function""}"\n',
        encoding="utf-8",
    )
    with compatible_server() as (_, base_url):
        _, out = run(tmp_path, base_url)
    assert out[0]["status"] == "422"
    assert out[0]["error"] == "HTTP 422: tool_choice: Input should be a valid string"


def test_a_newer_run_of_another_client_is_not_taken_for_the_rows_own() -> None:
    # A server that keeps metadata shows it for every run; once the job has seen its own
    # tags there, an untagged run is another client's, not a reason to refuse the row.
    foreign = {"id": "r2", "status": "completed", "created_at": 100, "metadata": {}}
    judged = judge([foreign], tag="k.j", unsure=True, sent_at=100, tags_seen=True)
    assert judged.verdict is Verdict.ABSENT
    unseen = judge([foreign], tag="k.j", unsure=True, sent_at=100, tags_seen=False)
    assert unseen.verdict is Verdict.UNSURE
    for shown in ({"metadata": None}, {}):  # null or absent: another client's too
        dropped = {key: value for key, value in foreign.items() if key != "metadata"} | shown
        judged = judge([dropped], tag="k.j", unsure=True, sent_at=100, tags_seen=True)
        assert judged.verdict is Verdict.ABSENT
