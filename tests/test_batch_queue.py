"""--batch jobs against a simulator that limits the tokens enqueued at once: parts cut to
the limit and submitted as earlier ones end, a refused batch sent again once, and --no-wait
runs moving the queue along."""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeClock, send
from job_support import TEST_KEY, read_rows, settings_for
from openai import OpenAI

from batchrun.batch import job
from batchrun.batch.lines import PartWriter
from batchrun.batch.queue import has_room, queue_refusal, stated_queue_limit
from batchrun.jobs import run_file
from batchrun.report import ExitCode
from batchrun.simulator import RunningSimulator

Make = Callable[..., RunningSimulator]
HEADERS = {"Authorization": f"Bearer {TEST_KEY}", "Content-Type": "application/json"}
ROWS = 20
PER_ROW = 110  # a 40-character prompt (10 tokens) and max_completion_tokens 100
BATCH = {"endpoint": "chat", "batch": True}


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(job, "POLL_FIRST", 0.05)


def chat_sheet(path: Path, rows: int = ROWS) -> Path:
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["model", "user", "max_completion_tokens"])
        for n in range(rows):
            writer.writerow(["gpt-4o-mini", f"Question {n:03d}: " + "x" * 26, "100"])
    return path


def batches(sim: RunningSimulator) -> list[dict[str, Any]]:
    """Every batch, oldest first."""
    found = send(sim.base_url, "GET", "/batches?limit=100", headers=HEADERS).json["data"]
    return list(reversed(found))


def refused(sim: RunningSimulator) -> list[dict[str, Any]]:
    return [batch for batch in batches(sim) if queue_refusal(batch) is not None]


def lines_of(batch: dict[str, Any], sim: RunningSimulator) -> int:
    with OpenAI(base_url=sim.base_url, api_key=TEST_KEY, max_retries=0) as client:
        return len(client.files.content(batch["input_file_id"]).text.splitlines())


def assert_each_row_answered_once(sim: RunningSimulator, out: Path, rows: int = ROWS) -> None:
    stats = sim.stats()
    assert (stats["chat_completions_created"], stats["duplicate_chat_completions"]) == (rows, 0)
    assert [row["outcome"] for row in read_rows(out)] == ["ok"] * rows


def test_with_batch_queue_tokens_parts_fit_and_go_one_after_another(
    make_simulator: Make, tmp_path: Path
) -> None:
    sim = make_simulator(batch_seconds=0.3, batch_queue_tokens=600)
    out = tmp_path / "out.csv"
    settings = settings_for(sim.base_url, batch_queue_tokens=600, **BATCH)
    report = run_file(chat_sheet(tmp_path / "chat.csv"), out, settings)
    assert report.summary.exit_code == ExitCode.OK, report.summary.line()
    assert_each_row_answered_once(sim, out)
    made = batches(sim)
    # 600 tokens hold five rows of 110: four parts, none refused, never two at once.
    assert [lines_of(batch, sim) for batch in made] == [5, 5, 5, 5]
    assert refused(sim) == []
    for earlier, later in itertools.pairwise(made):
        assert later["created_at"] >= earlier["completed_at"]


def test_without_the_flag_a_refused_batch_goes_again_cut_to_the_stated_limit(
    make_simulator: Make, tmp_path: Path
) -> None:
    sim = make_simulator(batch_seconds=0.3, batch_queue_tokens=1_000)
    out, journal = tmp_path / "out.csv", tmp_path / "chat.batchrun.sqlite"
    report = run_file(chat_sheet(tmp_path / "chat.csv"), out, settings_for(sim.base_url, **BATCH))
    assert report.summary.exit_code == ExitCode.OK, report.summary.line()
    assert_each_row_answered_once(sim, out)
    first, *rest = batches(sim)
    assert queue_refusal(first) is not None and lines_of(first, sim) == ROWS
    assert [lines_of(batch, sim) for batch in rest] == [9, 9, 2]  # 990, 990 and 220 tokens
    assert refused(sim) == [first]
    assert f"1 refused for the enqueued-token limit and sent again ({first['id']})" in (
        report.summary.line()
    )
    # The limit is kept for the job's next runs.
    with contextlib.closing(sqlite3.connect(journal)) as kept:
        stated = kept.execute("SELECT tokens FROM batch_queue").fetchall()
    assert stated == [(1_000,)]


def hold_queue(sim: RunningSimulator) -> None:
    """Another job's batch: 880 of the 1,000 enqueued tokens, until it ends."""
    held = [
        {"custom_id": f"other{n}", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "m", "messages": [{"role": "user", "content": "x" * 40}],
                  "max_completion_tokens": 100}}
        for n in range(8)
    ]  # fmt: skip
    content = "".join(json.dumps(line) + "\n" for line in held).encode()
    with OpenAI(base_url=sim.base_url, api_key=TEST_KEY, max_retries=0) as client:
        uploaded = client.files.create(file=("held.jsonl", content), purpose="batch")
        client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )


def test_a_part_refused_again_fails_its_rows_for_retry_failed(
    make_simulator: Make, clock: FakeClock, tmp_path: Path
) -> None:
    sim = make_simulator(clock=clock, batch_seconds=100, batch_queue_tokens=1_000)
    hold_queue(sim)
    source, out = chat_sheet(tmp_path / "chat.csv", 3), tmp_path / "out.csv"
    settings = settings_for(sim.base_url, no_wait=True, **BATCH)
    assert run_file(source, out, settings).summary.exit_code == ExitCode.BATCH_RUNNING
    clock.advance(11)  # refused at validation; its rows wait for the other job's batch
    for _ in range(2):  # this run, and a later one while nothing has ended since
        held = run_file(source, out, settings)
        assert held.summary.exit_code == ExitCode.BATCH_RUNNING
        assert "waiting for 1 batch of other jobs to make room in the queue; run again" in (
            held.summary.line()
        )
        assert read_rows(out)[0]["error"] == (
            "not sent: waiting for room in the batch queue (1,000 enqueued tokens, held by 1 "
            "batch of other jobs); rerun the same command to go on"
        )
        assert len(batches(sim)) == 2  # not submitted again
    # The other batch ends, and another job's takes its room at once: the part has its
    # second chance once a batch has ended since the refusal, and is refused again.
    clock.advance(90)
    hold_queue(sim)
    assert run_file(source, out, settings).summary.exit_code == ExitCode.BATCH_RUNNING
    assert len(refused(sim)) == 1 and len(batches(sim)) == 4
    clock.advance(11)  # refused again: no third chance
    report = run_file(source, out, settings)
    assert report.summary.exit_code == ExitCode.ROWS_FAILED
    rows = read_rows(out)
    assert {row["outcome"] for row in rows} == {"failed"}
    assert "Enqueued token limit reached" in rows[0]["error"]
    assert [batch["request_counts"]["completed"] for batch in refused(sim)] == [0, 0]


def test_a_part_refused_while_other_jobs_hold_the_queue_waits_for_one_of_them_to_end(
    make_simulator: Make, tmp_path: Path
) -> None:
    # Before: its one second chance went at once, into the same full queue, and the job
    # ended with every row failed while the other job's batch was still running.
    sim = make_simulator(batch_seconds=1.5, batch_queue_tokens=1_000)
    hold_queue(sim)
    out = tmp_path / "out.csv"
    settings = settings_for(sim.base_url, **BATCH)
    report = run_file(chat_sheet(tmp_path / "chat.csv", 3), out, settings)
    assert report.summary.exit_code == ExitCode.OK, report.summary.line()
    assert [row["outcome"] for row in read_rows(out)] == ["ok"] * 3
    assert len(refused(sim)) == 1


def test_no_wait_runs_move_the_queue_along(
    make_simulator: Make, clock: FakeClock, tmp_path: Path
) -> None:
    sim = make_simulator(clock=clock, batch_seconds=100, batch_queue_tokens=1_200)
    source, out = chat_sheet(tmp_path / "chat.csv"), tmp_path / "out.csv"
    settings = settings_for(sim.base_url, batch_queue_tokens=1_200, no_wait=True, **BATCH)
    first = run_file(source, out, settings)
    assert first.summary.exit_code == ExitCode.BATCH_RUNNING
    waiting = [row for row in read_rows(out) if row["outcome"] == "not sent"]
    assert len(waiting) == ROWS - 10  # 10 rows of 110: 1,100 tokens in the first part
    assert "waiting for room in the batch queue (1,200 enqueued tokens)" in waiting[0]["error"]
    again = run_file(source, out, settings)  # the first batch still runs: nothing more goes
    assert again.summary.exit_code == ExitCode.BATCH_RUNNING and len(batches(sim)) == 1
    clock.advance(101)
    third = run_file(source, out, settings)  # collects the first, submits the second
    assert third.summary.exit_code == ExitCode.BATCH_RUNNING and len(batches(sim)) == 2
    clock.advance(101)
    last = run_file(source, out, settings)
    assert last.summary.exit_code == ExitCode.OK, last.summary.line()
    assert_each_row_answered_once(sim, out)
    assert refused(sim) == []


def test_a_row_larger_than_the_queue_is_invalid_with_the_reason(
    make_simulator: Make, tmp_path: Path
) -> None:
    sim = make_simulator(batch_seconds=0.3)
    out = tmp_path / "out.csv"
    settings = settings_for(sim.base_url, batch_queue_tokens=100, **BATCH)
    report = run_file(chat_sheet(tmp_path / "chat.csv", 2), out, settings)
    assert report.summary.exit_code == ExitCode.ROWS_FAILED
    rows = read_rows(out)
    assert {row["outcome"] for row in rows} == {"invalid"}
    assert rows[0]["error"] == (
        "the row is charged 110 tokens, more than the batch queue holds (100 enqueued "
        "tokens): send it without --batch"
    )


# -- pure parts ------------------------------------------------------------------------------


def test_part_writer_cuts_parts_at_the_token_limit(tmp_path: Path) -> None:
    with PartWriter(lambda n: tmp_path / f"{n}.jsonl", max_tokens=250) as writer:
        for n, tokens in enumerate([100, 100, 100, 300, 50]):
            writer.add(f"k{n}", b"{}\n", tokens)
    assert [(part.keys, part.tokens) for part in writer.parts] == [
        (["k0", "k1"], 200),
        (["k2"], 100),
        (["k3"], 300),  # alone over the limit: the job refuses such rows before this
        (["k4"], 50),
    ]


@pytest.mark.parametrize(
    ("message", "limit"),
    [
        pytest.param(
            "Enqueued token limit reached for gpt-4o-mini in organization org-abc. Limit: "
            "2,000,000 enqueued tokens. Please try again once some in_progress batches have "
            "been completed.",
            2_000_000,
            id="openai",
        ),
        pytest.param("Limit: 90000 enqueued tokens.", 90_000, id="no-commas"),
        pytest.param("Enqueued token limit reached.", None, id="no-limit"),
    ],
)
def test_the_limit_a_refusal_states(message: str, limit: int | None) -> None:
    assert stated_queue_limit(message) == limit


def test_a_queue_refusal_is_told_from_other_failures() -> None:
    error = {"code": "token_limit_exceeded", "message": "Enqueued token limit reached."}
    failed = {"status": "failed", "errors": {"data": [error]}}
    assert queue_refusal(failed) == "Enqueued token limit reached."
    other = {"status": "failed", "errors": {"data": [{"code": "invalid_json", "message": "x"}]}}
    assert queue_refusal(other) is None
    assert queue_refusal({"status": "completed"}) is None


@pytest.mark.parametrize(
    ("tokens", "enqueued", "limit", "room"),
    [
        pytest.param(500, 0, 100, True, id="alone-always"),
        pytest.param(40, 60, 100, True, id="fits"),
        pytest.param(41, 60, 100, False, id="over"),
        pytest.param(10**9, 10**9, None, True, id="no-limit"),
    ],
)
def test_a_part_has_room_while_the_unfinished_parts_leave_it(
    tokens: int, enqueued: int, limit: int | None, room: bool
) -> None:
    assert has_room(tokens, enqueued, limit) is room
