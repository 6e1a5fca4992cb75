"""Whole chat jobs against a simulator that limits tokens per minute: paced by the limits
its headers state, or by --tpm where it states none, each row made once."""

from __future__ import annotations

import csv
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from job_support import TEST_KEY, command, read_rows, settings_for

from batchrun.jobs import run_file
from batchrun.simulator import RunningSimulator

Make = Callable[..., RunningSimulator]
ROWS = 30
# Each row: 40 characters (10 tokens) and at most 100 more: 110 tokens; 3,300 in all.
TPM = 60_000  # 1,000 tokens a second, one second's worth at once


def chat_sheet(path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["model", "user", "max_completion_tokens"])
        for n in range(ROWS):
            writer.writerow(["gpt-4o-mini", f"Question {n:03d}: " + "x" * 26, "100"])
    return path


def test_without_flags_a_job_paces_itself_by_the_servers_token_headers(
    make_simulator: Make, tmp_path: Path
) -> None:
    sim = make_simulator(tpm=TPM)
    report = run_file(
        chat_sheet(tmp_path / "chat.csv"),
        tmp_path / "out.csv",
        settings_for(sim.base_url, endpoint="chat"),
    )
    assert report.summary.exit_code == 0
    stats = sim.stats()
    assert stats["chat_completions_created"] == ROWS
    assert stats["duplicate_chat_completions"] == 0
    assert stats["tokens_admitted"] == ROWS * 110
    # Paced by the stated limits from the first answer on: a 429 at most now and then.
    assert stats["rate_limited"] <= 2
    assert "60,000 tokens/min (the server's x-ratelimit headers)" in report.summary.limits
    assert {row["outcome"] for row in read_rows(tmp_path / "out.csv")} == {"ok"}


def test_with_tpm_a_job_keeps_within_a_server_that_states_no_limits(
    make_simulator: Make, tmp_path: Path
) -> None:
    sim = make_simulator(tpm=TPM, limit_headers=False)
    report = run_file(
        chat_sheet(tmp_path / "chat.csv"),
        tmp_path / "out.csv",
        settings_for(sim.base_url, endpoint="chat", tpm=TPM),
    )
    assert report.summary.exit_code == 0
    stats = sim.stats()
    assert (stats["chat_completions_created"], stats["rate_limited"]) == (ROWS, 0)
    assert report.summary.limits == "60,000 tokens/min (--tpm)"


def test_a_server_stating_no_limits_is_met_with_429_handling_and_its_stated_limit(
    make_simulator: Make, tmp_path: Path
) -> None:
    sim = make_simulator(tpm=TPM, limit_headers=False)
    report = run_file(
        chat_sheet(tmp_path / "chat.csv"),
        tmp_path / "out.csv",
        settings_for(sim.base_url, endpoint="chat", concurrency=4),
    )
    assert report.summary.exit_code == 0
    stats = sim.stats()
    assert (stats["chat_completions_created"], stats["duplicate_chat_completions"]) == (ROWS, 0)
    # The first 429 names its budget and limit; from then on the job keeps to it.
    assert 1 <= stats["rate_limited"] <= 4
    assert report.summary.limits == "60,000 tokens/min (stated in a 429)"


def test_the_cli_says_which_limits_were_in_force(make_simulator: Make, tmp_path: Path) -> None:
    sim = make_simulator(tpm=600_000)
    source = chat_sheet(tmp_path / "chat.csv")
    result = subprocess.run(
        [*command(source, tmp_path / "out.csv", sim.base_url), "--endpoint", "chat"],
        capture_output=True,
        text=True,
        env={**os.environ, "OPENAI_API_KEY": TEST_KEY},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    *_, limits, summary = result.stderr.splitlines()  # the summary line last
    assert limits == (
        "limits: 1,000,000 requests/min (the server's x-ratelimit headers), "
        "600,000 tokens/min (the server's x-ratelimit headers)"
    )
    assert " rows: " in summary and summary.endswith("out.csv"), summary


def test_without_read_rpm_polls_pace_themselves_by_the_servers_headers(
    make_simulator: Make, tmp_path: Path
) -> None:
    # Before: the read budget only paused when an answer said none remained, and polls of
    # 20 background responses met a 429 on about every other read.
    sim = make_simulator(run_seconds=1.0, read_rpm=600)
    source = tmp_path / "prompts.csv"
    with source.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["model", "input"])
        writer.writerows(["gpt-4o-mini", f"Question {n}"] for n in range(20))
    settings = settings_for(sim.base_url, endpoint="responses", wait=True)
    report = run_file(source, tmp_path / "out.csv", settings)
    assert report.summary.outcomes == {"ok": 20}
    polls = sim.stats()["requests"]["GET /v1/responses/{response_id}"]
    assert polls.get("429", 0) == 0, polls
