"""Whole --batch jobs against the real simulator over loopback: rows joined back in input
order with a direct job's columns, split files, --no-wait runs moving a job on, expired
batches, failed and rejected lines, and validate --batch-jsonl files the Batch API takes."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeClock, send
from job_support import TEST_KEY, read_rows, settings_for

from batchrun.batch import job, lines
from batchrun.jobs import run_file, validate_file
from batchrun.simulator import RunningSimulator

Make = Callable[..., RunningSimulator]
HEADERS = {"Authorization": f"Bearer {TEST_KEY}", "Content-Type": "application/json"}
PROMPTS = [["gpt-4o", f"Question {n}", f"row{n}"] for n in range(1, 6)]


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(job, "POLL_FIRST", 0.05)


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def prompts(tmp_path: Path, rows: list[list[str]] = PROMPTS) -> Path:
    return write_csv(tmp_path / "prompts.csv", ["model", "input", "note"], rows)


def batches(sim: RunningSimulator) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = send(sim.base_url, "GET", "/batches", headers=HEADERS).json[
        "data"
    ]
    return found


def posts(sim: RunningSimulator) -> dict[str, int]:
    requests = sim.stats()["requests"]
    return {
        route: sum(requests.get(route, {}).values())
        for route in ("POST /v1/files", "POST /v1/batches", "POST /v1/responses")
    }


def result_names(rows: list[dict[str, str]]) -> list[str]:
    names = list(rows[0])
    return names[names.index("note") + 1 :]


def test_a_responses_batch_joins_rows_in_input_order_with_the_direct_columns(
    make_simulator: Make, tmp_path: Path
) -> None:
    sim = make_simulator(batch_seconds=0.3, run_seconds=0)
    source = prompts(tmp_path, [*PROMPTS, ["", "no model", "bad"]])
    report = run_file(source, tmp_path / "batch.csv", settings_for(sim.base_url, **BATCH))
    run_file(source, tmp_path / "direct.csv", settings_for(sim.base_url, endpoint="responses"))
    assert report.summary.exit_code == 1  # the invalid row
    batched, sent = read_rows(tmp_path / "batch.csv"), read_rows(tmp_path / "direct.csv")
    assert result_names(batched) == result_names(sent)
    assert [row["note"] for row in batched] == [row[2] for row in PROMPTS] + ["bad"]
    *good, bad = batched
    assert bad["outcome"] == "invalid" and bad["error"] == sent[-1]["error"]
    # A reply is a function of the request: each row got its own line's answer.
    assert [row["reply"] for row in good] == [row["reply"] for row in sent[:-1]]
    assert len({row["reply"] for row in good}) == len(good)
    for row in good:
        body = json.loads(row["body"])
        assert row["outcome"] == "ok" and row["status"] == "200" and row["attempts"] == "1"
        assert row["response_id"] == body["id"] and row["response_status"] == "completed"
        assert row["reply"] == body["output"][0]["content"][0]["text"] and row["reply"]
        assert int(row["usage_total_tokens"]) == body["usage"]["total_tokens"] > 0
    assert sim.stats()["batches_created"] == 1
    assert posts(sim)["POST /v1/responses"] == 5  # the direct job's, none from the batch
    line = report.summary.line()
    assert "batch: 1 submitted (batch_" in line and "1 finished" in line


BATCH = {"endpoint": "responses", "batch": True}


def test_a_chat_batch_fills_the_chat_columns(make_simulator: Make, tmp_path: Path) -> None:
    sim = make_simulator(batch_seconds=0.3)
    source = write_csv(
        tmp_path / "chat.csv",
        ["model", "system", "user", "note"],
        [["gpt-4o", "Be brief.", f"Hello {n}", f"n{n}"] for n in range(4)],
    )
    settings = settings_for(sim.base_url, endpoint="chat", batch=True)
    assert run_file(source, tmp_path / "out.csv", settings).summary.exit_code == 0
    rows = read_rows(tmp_path / "out.csv")
    assert [row["note"] for row in rows] == ["n0", "n1", "n2", "n3"]
    for row in rows:
        body = json.loads(row["body"])
        assert row["completion_id"] == body["id"] and row["finish_reason"] == "stop"
        assert row["reply"] == body["choices"][0]["message"]["content"]
        assert int(row["usage_total_tokens"]) > 0
    [batch] = batches(sim)
    assert batch["endpoint"] == "/v1/chat/completions"


def test_rows_over_the_line_limit_go_in_several_batches_all_joined(
    make_simulator: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lines, "MAX_LINES", 2)
    sim = make_simulator(batch_seconds=0.3)
    report = run_file(prompts(tmp_path), tmp_path / "out.csv", settings_for(sim.base_url, **BATCH))
    assert report.summary.exit_code == 0
    assert [row["outcome"] for row in read_rows(tmp_path / "out.csv")] == ["ok"] * 5
    made = batches(sim)
    assert sorted(batch["request_counts"]["total"] for batch in made) == [1, 2, 2]
    assert sorted(batch["metadata"]["batchrun_part"] for batch in made) == ["1", "2", "3"]
    assert len({batch["metadata"]["batchrun_job"] for batch in made}) == 1
    assert sim.stats()["files_uploaded"] == 3


def cli(source: Path, output: Path, base_url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "batchrun", "run", str(source), "-o", str(output)]
    args += ["--base-url", base_url, "--endpoint", "responses", "--batch", "--no-progress"]
    env = {"OPENAI_API_KEY": TEST_KEY, "PATH": "/usr/bin:/bin"}
    return subprocess.run([*args, *extra], env=env, capture_output=True, text=True, timeout=60)


def test_no_wait_runs_submit_check_and_collect_and_never_submit_twice(
    make_simulator: Make, clock: FakeClock, tmp_path: Path
) -> None:
    sim = make_simulator(clock=clock, batch_seconds=100)
    source, out = prompts(tmp_path), tmp_path / "out.csv"
    first = cli(source, out, sim.base_url, "--no-wait")
    assert first.returncode == 75, first.stderr
    assert "batch: 1 submitted (batch_" in first.stderr and "run again to collect" in first.stderr
    pending = read_rows(out)
    assert {row["outcome"] for row in pending} == {"pending"}
    assert pending[0]["error"].endswith(
        "(validating, 0/5 done); run the same command again to collect"
    )
    clock.advance(50)
    second = cli(source, out, sim.base_url, "--no-wait")
    assert second.returncode == 75 and "1 running (batch_" in second.stderr
    assert "(in_progress, 2/5 done)" in read_rows(out)[0]["error"]
    clock.advance(60)
    third = cli(source, out, sim.base_url, "--no-wait")
    assert third.returncode == 0, third.stderr
    assert "5 ok" in third.stderr and "1 finished" in third.stderr
    done = read_rows(out)
    assert [row["outcome"] for row in done] == ["ok"] * 5
    before = posts(sim)
    assert before == {"POST /v1/files": 1, "POST /v1/batches": 1, "POST /v1/responses": 0}
    again = cli(source, tmp_path / "again.csv", sim.base_url)
    assert again.returncode == 0 and "5 from the journal" in again.stderr
    assert posts(sim) == before
    assert read_rows(tmp_path / "again.csv") == done


def test_a_fresh_no_wait_job_says_to_collect_without_fresh(
    make_simulator: Make, clock: FakeClock, tmp_path: Path
) -> None:
    # Before: "run the same command again to collect", and the same command (--fresh)
    # submitted every row again in a new batch, leaving the first uncollected.
    sim = make_simulator(clock=clock, batch_seconds=100)
    source, out = prompts(tmp_path), tmp_path / "out.csv"
    first = cli(source, out, sim.base_url, "--no-wait", "--fresh")
    assert first.returncode == 75, first.stderr
    assert "; run again without --fresh to collect" in first.stderr
    assert read_rows(out)[0]["error"].endswith(
        "(validating, 0/5 done); run the same command again without --fresh to collect"
    )
    clock.advance(110)
    second = cli(source, out, sim.base_url, "--no-wait")  # as told
    assert second.returncode == 0, second.stderr
    assert posts(sim)["POST /v1/batches"] == 1


def test_rows_an_expired_batch_left_go_again_with_retry_failed_in_a_new_batch(
    make_simulator: Make, tmp_path: Path
) -> None:
    sim = make_simulator(batch_seconds=0.3, batch_expire=True)
    source, out = prompts(tmp_path, PROMPTS[:4]), tmp_path / "out.csv"
    settings = settings_for(sim.base_url, **BATCH)
    assert run_file(source, out, settings).summary.exit_code == 1
    rows = read_rows(out)
    missing = [row for row in rows if row["outcome"] == "failed"]
    assert [row["outcome"] for row in rows].count("ok") == 2 and len(missing) == 2
    for row in missing:
        assert row["error"].startswith("not answered: the batch batch_")
        assert row["error"].endswith(
            " ended expired before this row ran; --retry-failed sends it again"
        )
    # Without --retry-failed nothing goes again.
    assert run_file(source, out, settings).summary.exit_code == 1
    assert sim.stats()["batches_created"] == 1
    retry = settings_for(sim.base_url, retry_failed=True, **BATCH)
    run_file(source, out, retry)
    newest = batches(sim)[0]
    assert sim.stats()["batches_created"] == 2 and newest["request_counts"]["total"] == 2
    assert newest["metadata"]["batchrun_part"] == "2"
    after = read_rows(out)
    assert [row["outcome"] for row in after].count("ok") == 3  # one more answered this time
    kept = [row for row in rows if row["outcome"] == "ok"]
    assert all(row in after for row in kept)


def test_failed_lines_and_lines_the_endpoint_rejects_fail_their_own_rows(
    make_simulator: Make, tmp_path: Path
) -> None:
    source = write_csv(
        tmp_path / "prompts.csv",
        ["model", "input", "previous_response_id", "note"],
        [
            ["gpt-4o", "one", "", "a"],
            ["gpt-4o", "two", "", "b"],
            ["gpt-4o", "three", "resp_missing", "c"],
            ["gpt-4o", "four", "", "d"],
        ],
    )
    checked = validate_file(
        source, tmp_path / "checked.csv", settings_for("", endpoint="responses"),
        batch_jsonl=tmp_path / "b.jsonl",
    )  # fmt: skip
    assert checked.summary.exit_code == 0
    keys = [
        json.loads(text)["custom_id"]
        for text in (tmp_path / "b.jsonl").read_text().split("\n")
        if text
    ]
    sim = make_simulator(batch_seconds=0.3, batch_fail_lines=keys[1])
    out = tmp_path / "out.csv"
    assert run_file(source, out, settings_for(sim.base_url, **BATCH)).summary.exit_code == 1
    a, b, c, d = read_rows(out)
    assert a["outcome"] == d["outcome"] == "ok"
    assert (
        b["outcome"] == "failed" and b["status"] == "" and b["error"].startswith("server_error: ")
    )
    assert c["outcome"] == "failed" and c["status"] == "400"
    assert c["error"] == "HTTP 400: Previous response with id 'resp_missing' not found."
    assert json.loads(c["body"])["error"]["code"] == "previous_response_not_found"
    assert [json.loads(row["attempts"]) for row in (a, b, c, d)] == [1, 1, 1, 1]


def test_background_rows_are_invalid_in_a_batch(make_simulator: Make, tmp_path: Path) -> None:
    sim = make_simulator(batch_seconds=0.3)
    source = write_csv(
        tmp_path / "p.csv", ["model", "input", "background"], [["m", "x", "true"], ["m", "y", ""]]
    )
    run_file(source, tmp_path / "out.csv", settings_for(sim.base_url, **BATCH))
    first, second = read_rows(tmp_path / "out.csv")
    assert first["outcome"] == "invalid" and first["error"].startswith("background: true cannot")
    assert second["outcome"] == "ok"
    checked = validate_file(
        source, tmp_path / "c.csv", settings_for("", endpoint="responses"),
        batch_jsonl=tmp_path / "b.jsonl",
    )  # fmt: skip
    assert checked.summary.outcomes == {"invalid": 1, "ok": 1}
    assert len((tmp_path / "b.jsonl").read_text().splitlines()) == 1
    # The row a batch cannot carry shows no request and is out of the cost line (before:
    # its request stayed, and the line counted "2 prompt tokens").
    assert read_rows(tmp_path / "c.csv")[0]["request"] == ""
    assert checked.summary.estimate.startswith("1 prompt token + at most 0 output tokens")


def test_only_the_first_row_of_a_conversation_goes_in_a_batch(
    make_simulator: Make, tmp_path: Path
) -> None:
    sim = make_simulator(batch_seconds=0.3)
    source = write_csv(
        tmp_path / "p.csv",
        ["conversation", "model", "input"],
        [["conv_a", "m", "first"], ["conv_a", "m", "second"], ["conv_b", "m", "other"]],
    )
    run_file(source, tmp_path / "out.csv", settings_for(sim.base_url, **BATCH))
    rows = read_rows(tmp_path / "out.csv")
    assert [row["outcome"] for row in rows] == ["ok", "invalid", "ok"]
    assert rows[1]["error"] == (
        "conversation: conv_a has an earlier row, and a batch keeps no order among its "
        "requests; send rows that continue a conversation without --batch"
    )
    checked = validate_file(
        source, tmp_path / "c.csv", settings_for("", endpoint="responses"),
        batch_jsonl=tmp_path / "b.jsonl",
    )  # fmt: skip
    assert checked.summary.outcomes == {"ok": 2, "invalid": 1}
    assert len((tmp_path / "b.jsonl").read_text().splitlines()) == 2


def test_a_validate_jsonl_is_taken_by_the_batch_api_and_every_custom_id_comes_back(
    make_simulator: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lines, "MAX_LINES", 3)
    source = prompts(tmp_path)
    report = validate_file(
        source, None, settings_for("", endpoint="responses"), batch_jsonl=tmp_path / "b.jsonl"
    )
    assert "5 lines in 2 files (b.jsonl, b.2.jsonl)" in report.summary.line()
    sim = make_simulator(batch_seconds=0, clock=FakeClock())
    from openai import OpenAI

    with OpenAI(base_url=sim.base_url, api_key=TEST_KEY, max_retries=0) as client:
        sent, back = [], []
        for name in ("b.jsonl", "b.2.jsonl"):
            data = (tmp_path / name).read_bytes()
            sent += [json.loads(text)["custom_id"] for text in data.decode().splitlines()]
            uploaded = client.files.create(file=(name, data), purpose="batch")
            batch = client.batches.create(
                input_file_id=uploaded.id, endpoint="/v1/responses", completion_window="24h"
            )
            batch = client.batches.retrieve(batch.id)
            assert batch.status == "completed" and batch.output_file_id
            content = client.files.content(batch.output_file_id).text
            back += [json.loads(text)["custom_id"] for text in content.splitlines()]
    assert len(sent) == 5 and sorted(back) == sorted(sent)


def test_batch_with_runs_or_wait_is_a_usage_error(tmp_path: Path) -> None:
    source = prompts(tmp_path)
    for extra, words in (
        (["--endpoint", "runs"], "never takes Assistants runs"),
        (["--endpoint", "chat", "--wait"], "--wait does not apply to --batch"),
        (["--endpoint", "chat", "--reply"], "--reply does not apply to --batch"),
    ):
        args = [sys.executable, "-m", "batchrun", "run", str(source), "--batch", "--simulate"]
        done = subprocess.run([*args, *extra], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and words in done.stderr


def test_run_frame_sends_through_the_batch_api(
    make_simulator: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pandas as pd

    from batchrun import run_frame

    sim = make_simulator(batch_seconds=0.3)
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    frame = pd.DataFrame({"model": ["gpt-4o", "gpt-4o"], "input": ["one", "two"]})
    out = run_frame(frame, base_url=sim.base_url, endpoint="responses", batch=True)
    assert list(out["outcome"]) == ["ok", "ok"] and out["reply"].str.len().min() > 0
    assert sim.stats()["batches_created"] == 1 and posts(sim)["POST /v1/responses"] == 0
