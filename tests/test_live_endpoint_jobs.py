"""Whole jobs on the live endpoints (responses, chat) against the simulator over loopback."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import send
from job_support import TEST_KEY, command, killed_once, read_rows, settings_for

from batchrun.jobs import run_file, validate_file
from batchrun.report import Outcome, RowResult
from batchrun.sending.journal import Entry
from batchrun.sending.plan import plan_job
from batchrun.sending.states import Event, RowState
from batchrun.simulator import RunningSimulator

Make = Callable[..., RunningSimulator]


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def responses_posts(sim: RunningSimulator) -> int:
    return sum(sim.stats()["requests"].get("POST /v1/responses", {}).values())


# --- responses ------------------------------------------------------------------------------


def test_a_responses_job_writes_ids_usage_and_the_reply(
    make_simulator: Make, tmp_path: Path
) -> None:
    sim = make_simulator(run_seconds=0)
    source = write_csv(
        tmp_path / "prompts.csv",
        ["model", "input", "instructions", "reasoning.effort", "metadata.team", "note"],
        [
            ["gpt-4o", "Summarise: the printer is on fire.", "Be brief.", "low", "ops", "a"],
            ["gpt-4o", '[{"role": "user", "content": "Say hi"}]', "", "", "", "b"],
        ],
    )
    settings = settings_for(sim.base_url, endpoint="responses")
    report = run_file(source, tmp_path / "out.csv", settings)
    assert report.summary.exit_code == 0
    rows = read_rows(tmp_path / "out.csv")
    names = list(rows[0])
    assert names[names.index("note") + 1 :] == [
        "outcome", "status", "body", "error", "response_id", "response_status", "attempts",
        "usage_input_tokens", "usage_output_tokens", "usage_total_tokens", "cost_usd",
        "last_error", "reply",
    ]  # fmt: skip
    first, second = rows
    sent = json.loads(first["body"])
    assert sent["reasoning"]["effort"] == "low"
    assert sent["metadata"]["team"] == "ops" and sent["metadata"]["batchrun_key"]
    assert sent["instructions"] == "Be brief."
    assert first["response_id"].startswith("resp_") and first["response_status"] == "completed"
    assert int(first["usage_total_tokens"]) == int(first["usage_input_tokens"]) + int(
        first["usage_output_tokens"]
    )
    assert first["reply"] == sent["output"][0]["content"][0]["text"]
    # JSON input items were sent as an array, plain text as a string.
    assert second["outcome"] == "ok" and second["reply"]
    assert sim.stats()["responses_created"] == 2
    assert report.summary.line().count("responses: 2 completed") == 1


def test_validate_reports_every_problem_of_a_responses_row(tmp_path: Path) -> None:
    source = write_csv(
        tmp_path / "prompts.csv",
        [
            "model",
            "input",
            "max_output_tokens",
            "stream",
            "temperature",
            "metadata",
            "conversation",
        ],
        [
            ["", "hi", "8", "true", "hot", "", ""],
            ["gpt-4o", "hi", "", "", "", json.dumps({str(i): "v" for i in range(16)}), ""],
            ["gpt-4o", "hi", "", "", "", "", "conv_1/../../files"],
            ["gpt-4o", "[not json", "", "", "", "", ""],
            ["gpt-4o", "[broken json]", "", "", "", "", ""],
            ["gpt-4o", "hello", "64", "false", "0.5", '{"k": "v"}', "conv_ok"],
        ],
    )
    settings = settings_for("http://127.0.0.1:9/v1", endpoint="responses")
    report = validate_file(source, tmp_path / "checked.csv", settings)
    errors = [row["error"] for row in read_rows(tmp_path / "checked.csv")]
    assert errors[0].split("; ") == [
        "temperature: 'hot' is not a number",
        "max_output_tokens: 8 is less than the minimum of 16",
        "stream: true is not supported: batchrun records answers, not event streams "
        "(leave stream empty or false)",
        "model: is required (prompt objects are retired: name the model in the row)",
    ]
    assert errors[1].startswith("metadata: has 16 keys; at most 15 are allowed")
    assert (
        errors[2] == "conversation: 'conv_1/../../files' may only hold letters, digits, '_' and '-'"
    )
    assert errors[3] == ""  # text that is not a JSON array is a prompt
    assert errors[4].startswith("input: is not valid JSON")
    # ... and says how to send such text (before: the parser's words only).
    assert errors[4].endswith(
        "; text in [ ] is read as a JSON list (to send it as text, give it in request_json "
        "as a JSON string)"
    )
    assert errors[5] == ""
    assert report.summary.outcomes == {"ok": 2, "invalid": 4}
    request = json.loads(read_rows(tmp_path / "checked.csv")[3]["request"])
    assert request["input"] == "[not json"


def test_rows_of_a_conversation_go_in_input_order_in_background_with_wait(
    make_simulator: Make, tmp_path: Path
) -> None:
    sim = make_simulator(run_seconds=0.1)
    rows = [["conv_a", "gpt-4o", f"a{i}"] for i in range(4)] + [["conv_b", "gpt-4o", "b0"]]
    source = write_csv(tmp_path / "c.csv", ["conversation", "model", "input"], rows)
    settings = settings_for(sim.base_url, endpoint="responses", wait=True, concurrency=4)
    report = run_file(source, tmp_path / "out.csv", settings)
    assert report.summary.exit_code == 0, report.summary.line()
    out = read_rows(tmp_path / "out.csv")
    assert all(json.loads(row["body"])["background"] is True for row in out)
    assert {row["response_status"] for row in out} == {"completed"}
    items = send(sim.base_url, "GET", "/conversations/conv_a/items?order=asc&limit=100").json
    said = [
        part["text"]
        for item in items["data"]
        if item.get("role") == "user"
        for part in item["content"]
    ]
    assert said == ["a0", "a1", "a2", "a3"]
    # No request met the lock: each waited for the one before it.
    assert responses_posts(sim) == 5


def test_a_locked_conversation_is_waited_out_not_failed(
    make_simulator: Make, tmp_path: Path
) -> None:
    sim = make_simulator(run_seconds=0.6)
    # Someone else holds the conversation with a background response.
    other = send(
        sim.base_url,
        "POST",
        "/responses",
        {"model": "gpt-4o", "input": "theirs", "conversation": "conv_x", "background": True},
    )
    assert other.status == 200
    source = write_csv(
        tmp_path / "c.csv", ["conversation", "model", "input"], [["conv_x", "m", "ours"]]
    )
    report = run_file(
        source, tmp_path / "out.csv", settings_for(sim.base_url, endpoint="responses")
    )
    (row,) = read_rows(tmp_path / "out.csv")
    assert report.summary.exit_code == 0 and row["outcome"] == "ok"
    # Theirs, then ours: refused locked at least once, then created. Every POST counts as
    # an attempt, though waiting for the lock uses none of --max-retries.
    assert int(row["attempts"]) == responses_posts(sim) - 1 >= 2
    assert sim.stats()["responses_created"] == 2


def test_a_conversation_locked_past_wait_timeout_leaves_the_row_for_the_next_run(
    make_simulator: Make, tmp_path: Path
) -> None:
    sim = make_simulator(run_seconds=30)
    send(
        sim.base_url,
        "POST",
        "/responses",
        {"model": "gpt-4o", "input": "theirs", "conversation": "conv_y", "background": True},
    )
    source = write_csv(
        tmp_path / "c.csv",
        ["conversation", "model", "input"],
        [["conv_y", "m", "one"], ["conv_y", "m", "two"]],
    )
    settings = settings_for(sim.base_url, endpoint="responses", wait_timeout=0.5)
    report = run_file(source, tmp_path / "out.csv", settings)
    rows = read_rows(tmp_path / "out.csv")
    assert [row["outcome"] for row in rows] == ["not sent", "not sent"]
    assert rows[0]["error"] == (
        "not sent: conversation conv_y still busy after --wait-timeout; rerun to send it"
    )
    assert report.summary.left == 2 and report.summary.exit_code == 1


def test_a_response_that_may_exist_is_not_sent_again_until_retry_failed(
    make_simulator: Make, tmp_path: Path
) -> None:
    sim = make_simulator(run_seconds=0, reset_rate=1.0)
    source = write_csv(tmp_path / "p.csv", ["model", "input"], [["gpt-4o", "hello"]])
    settings = settings_for(sim.base_url, endpoint="responses", max_retries=3)
    run_file(source, tmp_path / "out.csv", settings)
    (row,) = read_rows(tmp_path / "out.csv")
    assert row["outcome"] == "failed"
    assert "a response may have been created and cannot be looked up" in row["error"]
    assert "--retry-failed" in row["error"] and row["error"].startswith("connection dropped")
    assert sim.stats()["responses_created"] == 1  # one request, not four
    # A plain rerun keeps the verdict; --retry-failed is the user's word to send again.
    run_file(source, tmp_path / "out.csv", settings)
    assert sim.stats()["responses_created"] == 1
    healthy = make_simulator(run_seconds=0)
    again = settings_for(healthy.base_url, endpoint="responses", retry_failed=True)
    report = run_file(source, tmp_path / "out.csv", again)
    assert report.summary.exit_code == 0
    assert healthy.stats()["responses_created"] == 1


def test_rows_that_cannot_be_looked_up_are_marked_one_by_one() -> None:
    row = RowResult(0, key="k", body={"model": "m"})
    row.move(Event.MAYBE_ARRIVED)
    row.fail(Outcome.FAILED, "may exist")
    entries = {"k": Entry("failed", row.to_journal())}
    fresh = RowResult(0, key="k", body={"model": "m"})
    plan = plan_job([fresh], entries, retry_failed=True, wait=False, can_look=lambda r: False)
    assert plan.to_create == {0} and fresh.state is RowState.UNSENT
    fresh = RowResult(0, key="k", body={"model": "m"})
    plan = plan_job([fresh], entries, retry_failed=True, wait=False)
    assert plan.to_create == {0} and fresh.state is RowState.UNSURE


# --- chat -----------------------------------------------------------------------------------


def test_a_chat_job_builds_messages_from_system_and_user_columns(
    make_simulator: Make, tmp_path: Path
) -> None:
    sim = make_simulator(run_seconds=0)
    source = write_csv(
        tmp_path / "chat.csv",
        ["model", "system", "user", "messages", "temperature"],
        [
            ["gpt-4o", "Be terse.", "Hello", "", "0.2"],
            ["gpt-4o", "", "And now?", '[{"role": "user", "content": "Earlier"}]', ""],
            ["gpt-4o", "", "", "", ""],
        ],
    )
    report = run_file(source, tmp_path / "out.csv", settings_for(sim.base_url, endpoint="chat"))
    rows = read_rows(tmp_path / "out.csv")
    assert [row["outcome"] for row in rows] == ["ok", "ok", "invalid"]
    assert rows[2]["error"] == "messages: is required"
    first = json.loads(rows[0]["body"])
    assert rows[0]["completion_id"] == first["id"] and rows[0]["finish_reason"] == "stop"
    assert rows[0]["reply"] == first["choices"][0]["message"]["content"]
    assert int(rows[0]["usage_total_tokens"]) == first["usage"]["total_tokens"]
    assert "last_error" not in rows[0]
    listed = send(sim.base_url, "GET", "/chat/completions?limit=10").json
    assert listed["data"] == []  # nothing stored without store: true
    assert report.summary.line().startswith("3 rows: 2 ok, 1 invalid")


def test_chat_messages_are_sent_system_first_and_user_last(
    make_simulator: Make, tmp_path: Path
) -> None:
    sim = make_simulator(run_seconds=0)
    source = write_csv(
        tmp_path / "chat.csv",
        ["model", "system", "user", "messages", "store"],
        [["gpt-4o", "S", "U", '[{"role": "assistant", "content": "A"}]', "true"]],
    )
    run_file(source, tmp_path / "out.csv", settings_for(sim.base_url, endpoint="chat"))
    assert read_rows(tmp_path / "out.csv")[0]["outcome"] == "ok"
    # The request column of validate shows the body exactly as sent.
    validate_file(source, tmp_path / "checked.csv", settings_for(sim.base_url, endpoint="chat"))
    request = json.loads(read_rows(tmp_path / "checked.csv")[0]["request"])
    assert [m["role"] for m in request["messages"]] == ["system", "assistant", "user"]
    assert [m["content"] for m in request["messages"]] == ["S", "A", "U"]


def test_a_stored_chat_completion_is_found_by_its_tag_after_a_dropped_answer(
    make_simulator: Make, tmp_path: Path
) -> None:
    sim = make_simulator(run_seconds=0, reset_rate=1.0)
    source = write_csv(
        tmp_path / "chat.csv", ["model", "user", "store"], [["gpt-4o", "Hi", "true"]]
    )
    report = run_file(source, tmp_path / "out.csv", settings_for(sim.base_url, endpoint="chat"))
    (row,) = read_rows(tmp_path / "out.csv")
    assert row["outcome"] == "ok" and row["status"] == "200"
    assert report.summary.reconciled == 1
    assert sim.stats()["chat_completions_created"] == 1
    assert json.loads(row["body"])["id"] == row["completion_id"]


def test_an_unstored_chat_completion_that_may_exist_is_not_sent_again(
    make_simulator: Make, tmp_path: Path
) -> None:
    sim = make_simulator(run_seconds=0, reset_rate=1.0)
    source = write_csv(tmp_path / "chat.csv", ["model", "user"], [["gpt-4o", "Hi"]])
    run_file(source, tmp_path / "out.csv", settings_for(sim.base_url, endpoint="chat"))
    (row,) = read_rows(tmp_path / "out.csv")
    assert row["outcome"] == "failed"
    assert "a completion may have been created and cannot be looked up" in row["error"]
    assert sim.stats()["chat_completions_created"] == 1


# --- shared rules ---------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["responses", "chat"])
def test_the_key_never_reaches_the_output_of_a_live_endpoint(
    make_simulator: Make, tmp_path: Path, endpoint: str
) -> None:
    sim = make_simulator(run_seconds=0, api_key=TEST_KEY)
    header = ["model", "input"] if endpoint == "responses" else ["model", "user"]
    source = write_csv(tmp_path / "k.csv", header, [["gpt-4o", "hello"], ["", "no model"]])
    settings = settings_for(sim.base_url, endpoint=endpoint, wait=True)
    report = run_file(source, tmp_path / "out.xlsx", settings)
    assert report.summary.outcomes == {"ok": 1, "invalid": 1}
    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert len(files) >= 4  # input, output, settings, journal
    for path in files:
        assert TEST_KEY.encode() not in path.read_bytes(), path.name


def test_the_assistants_beta_header_is_not_sent_to_the_live_endpoints(
    make_simulator: Make, tmp_path: Path
) -> None:
    seen: list[str | None] = []
    lock = threading.Lock()
    sim = make_simulator(run_seconds=0)
    source = write_csv(tmp_path / "p.csv", ["model", "input"], [["gpt-4o", "hi"]])

    from aiohttp import web

    async def record(request: web.Request) -> web.Response:
        with lock:
            seen.append(request.headers.get("OpenAI-Beta"))
        return web.json_response(
            {"id": "resp_1", "object": "response", "status": "completed", "output": []}
        )

    from loopback_server import serve_app

    app = web.Application()
    app.router.add_post("/v1/responses", record)
    with serve_app(app) as base_url:
        run_file(source, tmp_path / "out.csv", settings_for(base_url, endpoint="responses"))
    assert seen == [None]
    assert sim.stats()["responses_created"] == 0


def test_responses_and_runs_of_one_input_are_jobs_of_their_own(
    make_simulator: Make, tmp_path: Path
) -> None:
    sim = make_simulator(run_seconds=0)
    source = write_csv(
        tmp_path / "both.csv",
        ["thread_id", "assistant_id", "model", "input"],
        [["thread_1", "asst_1", "gpt-4o", "hi"]],
    )
    run_file(source, tmp_path / "runs.csv", settings_for(sim.base_url))
    run_file(source, tmp_path / "resp.csv", settings_for(sim.base_url, endpoint="responses"))
    run_file(source, tmp_path / "resp2.csv", settings_for(sim.base_url, endpoint="responses"))
    stats: dict[str, Any] = sim.stats()
    assert (stats["runs_created"], stats["responses_created"]) == (1, 1)
    assert (
        read_rows(tmp_path / "resp2.csv")[0]["response_id"]
        == (read_rows(tmp_path / "resp.csv")[0]["response_id"])
    )


def test_a_killed_responses_job_loses_no_result_and_sends_nothing_twice(
    make_simulator: Make, tmp_path: Path
) -> None:
    sim = make_simulator(run_seconds=0, latency_ms=20)
    rows = [["gpt-4o", f"prompt {i}"] for i in range(300)]
    source = write_csv(tmp_path / "p.csv", ["model", "input"], rows)
    args = command(
        source, tmp_path / "out.csv", sim.base_url, "--endpoint", "responses", "--concurrency", "4"
    )
    created_before = killed_once(sim, args, "responses_created", 40)
    assert 40 <= created_before < 300
    env = {**os.environ, "OPENAI_API_KEY": TEST_KEY}
    rerun = subprocess.run(args, env=env, capture_output=True, check=False)
    assert rerun.returncode in (0, 1), rerun.stderr
    out = read_rows(tmp_path / "out.csv")
    maybe = [row for row in out if "may have been created" in row["error"]]
    # Only the requests in flight at the kill (at most one per worker) are unknown; every
    # other row was sent once, its result kept or sent by the rerun.
    assert len(maybe) <= 4
    assert all(row["outcome"] == "ok" for row in out if row not in maybe)
    stats = sim.stats()
    assert stats["duplicate_responses"] == 0
    # Each unknown row made at most one response (its request may have arrived or not).
    assert 300 - len(maybe) <= stats["responses_created"] <= 300


def test_the_cli_takes_the_endpoint_from_a_flag_or_the_config_file(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "p.csv", ["model", "input"], [["gpt-4o", "hi"], ["", "x"]])
    env = {**os.environ, "OPENAI_API_KEY": TEST_KEY}
    base = [sys.executable, "-m", "batchrun"]
    schema = subprocess.run(
        [*base, "schema", "--endpoint", "responses"], capture_output=True, text=True, check=True
    )
    assert "CreateResponse" in schema.stdout or '"conversation"' in schema.stdout
    config = tmp_path / "job.toml"
    config.write_text('endpoint = "responses"\n', encoding="utf-8")
    checked = subprocess.run(
        [*base, "validate", str(source), "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert checked.returncode == 1
    assert "2 rows: 1 ok, 1 invalid" in checked.stderr
    rows = read_rows(tmp_path / "p.checked.csv")
    assert rows[1]["error"].startswith("model: is required")
    bad = subprocess.run(
        [*base, "run", str(source), "--endpoint", "batches"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert bad.returncode == 2 and "runs" in bad.stderr and "responses" in bad.stderr


@pytest.mark.parametrize(
    ("sample", "endpoint", "outcomes"),
    [
        ("prompts.csv", "responses", {"ok": 5, "invalid": 4}),
        ("chat.csv", "chat", {"ok": 3, "invalid": 2}),
    ],
)
def test_the_samples_of_the_live_endpoints_run_as_the_readme_says(
    make_simulator: Make, tmp_path: Path, sample: str, endpoint: str, outcomes: dict[str, int]
) -> None:
    sim = make_simulator(run_seconds=0)
    source = tmp_path / sample
    source.write_bytes((Path(__file__).parent.parent / "samples" / sample).read_bytes())
    settings = settings_for(sim.base_url, endpoint=endpoint, wait=True)
    report = run_file(source, tmp_path / "out.csv", settings)
    assert report.summary.outcomes == outcomes
    rows = read_rows(tmp_path / "out.csv")
    for row in rows:
        if row["notes"].startswith("invalid"):
            assert row["outcome"] == "invalid" and row["error"], row
        else:
            assert row["outcome"] == "ok" and row["reply"], row


def test_a_migrated_sheets_assistants_columns_are_named_as_not_sent(
    make_simulator: Make, tmp_path: Path
) -> None:
    sim = make_simulator(run_seconds=0)
    source = write_csv(
        tmp_path / "old.csv",
        ["thread_id", "assistant_id", "model", "input", "additional_instructions", "notes"],
        [["thread_1", "asst_1", "gpt-4o", "hi", "Be brief.", "kept"]],
    )
    report = run_file(
        source, tmp_path / "out.csv", settings_for(sim.base_url, endpoint="responses")
    )
    assert report.summary.notes == (
        "column(s) thread_id, assistant_id, additional_instructions are Assistants fields, "
        "not fields of --endpoint responses: carried to the output, never sent (see the "
        "README's migration table)",
    )
    (row,) = read_rows(tmp_path / "out.csv")
    sent = json.loads(row["body"])
    assert row["thread_id"] == "thread_1" and sent["instructions"] is None
    runs = run_file(source, tmp_path / "runs.csv", settings_for(sim.base_url))
    assert runs.summary.notes == ()


@pytest.mark.parametrize(
    ("status", "answer"),
    [
        pytest.param(
            409, {"detail": "Conversation conv_x is locked by another request"}, id="409-detail"
        ),
        pytest.param(
            400,
            {
                "error": {
                    "message": "Conversation is locked, retry later",
                    "type": "invalid_request_error",
                }
            },
            id="400-worded",
        ),
    ],
)
def test_a_conversation_lock_worded_otherwise_is_waited_out_too(
    tmp_path: Path, status: int, answer: dict[str, Any]
) -> None:
    from aiohttp import web
    from loopback_server import serve_app

    posts: list[int] = []

    async def responses(request: web.Request) -> web.Response:
        posts.append(1)
        if len(posts) <= 2:
            return web.json_response(answer, status=status)
        return web.json_response(
            {"id": "resp_1", "object": "response", "status": "completed", "output": []}
        )

    app = web.Application()
    app.router.add_post("/v1/responses", responses)
    source = write_csv(
        tmp_path / "c.csv", ["conversation", "model", "input"], [["conv_x", "m", "hi"]]
    )
    with serve_app(app) as base_url:
        report = run_file(
            source, tmp_path / "out.csv", settings_for(base_url, endpoint="responses")
        )
    (row,) = read_rows(tmp_path / "out.csv")
    assert row["outcome"] == "ok", row["error"]
    assert report.summary.exit_code == 0 and len(posts) == 3


def test_an_unsure_chat_row_speaks_of_completions_not_of_runs_and_threads(
    make_simulator: Make, tmp_path: Path
) -> None:
    # Before: "a run may have been created and without the run tag it cannot be found:
    # check the thread, ..." on a chat row, which has neither.
    sim = make_simulator(run_seconds=0, reset_rate=1.0)
    source = write_csv(
        tmp_path / "chat.csv", ["model", "user", "store"], [["gpt-4o", "Hi", "true"]]
    )
    settings = settings_for(sim.base_url, endpoint="chat", run_tag=False)
    run_file(source, tmp_path / "out.csv", settings)
    (row,) = read_rows(tmp_path / "out.csv")
    assert row["outcome"] == "failed"
    assert (
        "a completion may have been created and without the run tag it cannot be found: "
        in (row["error"])
    )
    assert "check the server's completions, then rerun with --retry-failed" in row["error"]
