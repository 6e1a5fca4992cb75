"""Requests say exactly what the row says: rules beyond the schema, and the columns that
name both a body field and a shortcut."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import send
from job_support import TEST_KEY, read_rows, settings_for

from batchrun.config import Settings, environment_settings
from batchrun.errors import InputError, UsageError
from batchrun.jobs import run_file, validate_file
from batchrun.simulator import RunningSimulator

Make = Callable[..., RunningSimulator]


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def chat_posts(sim: RunningSimulator) -> int:
    return sum(sim.stats()["requests"].get("POST /v1/chat/completions", {}).values())


def test_a_chat_row_with_a_negative_token_maximum_is_invalid_and_never_sent(
    make_simulator: Make, tmp_path: Path
) -> None:
    sim = make_simulator(run_seconds=0)
    source = write_csv(
        tmp_path / "chat.csv",
        ["model", "user", "max_completion_tokens", "max_tokens"],
        [["gpt-4o", "Hi", "-5", ""], ["gpt-4o", "Hi", "", "0"], ["gpt-4o", "Hi", "5", ""]],
    )
    report = run_file(source, tmp_path / "out.csv", settings_for(sim.base_url, endpoint="chat"))
    rows = read_rows(tmp_path / "out.csv")
    assert [row["outcome"] for row in rows] == ["invalid", "invalid", "ok"]
    assert rows[0]["error"] == "max_completion_tokens: -5 is less than the minimum of 1"
    assert rows[1]["error"] == "max_tokens: 0 is less than the minimum of 1"
    assert chat_posts(sim) == 1
    assert report.summary.exit_code == 1
    # The simulator refuses such a body as the service does.
    answer = send(
        sim.base_url,
        "POST",
        "/chat/completions",
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": -1},
    )
    assert answer.status == 400
    assert answer.json["error"]["param"] == "max_tokens"


def test_a_chat_row_not_stored_carries_no_metadata_and_no_run_tag(
    make_simulator: Make, tmp_path: Path
) -> None:
    # OpenAI refuses metadata on a chat completion it does not store ("The 'metadata'
    # parameter is only allowed when 'store' is enabled."): before, every such row was sent
    # with the run tag in metadata, and all of them would have been refused.
    sim = make_simulator(run_seconds=0)
    source = write_csv(
        tmp_path / "chat.csv",
        ["model", "user", "store", "metadata.customer"],
        [["gpt-4o", "Hi", "", ""], ["gpt-4o", "Ho", "true", "ACME"], ["gpt-4o", "Hu", "", "B"]],
    )
    settings = settings_for(sim.base_url, endpoint="chat")
    lines = tmp_path / "batch.jsonl"
    validate_file(source, tmp_path / "checked.csv", settings, batch_jsonl=lines)
    requests = [json.loads(row["request"] or "{}") for row in read_rows(tmp_path / "checked.csv")]
    assert "metadata" not in requests[0]
    assert set(requests[1]["metadata"]) == {"customer", "batchrun_key"}
    batched = [json.loads(line)["body"] for line in lines.read_text().splitlines()]
    assert ["metadata" in body for body in batched] == [False, True]
    run_file(source, tmp_path / "out.csv", settings)
    rows = read_rows(tmp_path / "out.csv")
    assert [row["outcome"] for row in rows] == ["ok", "ok", "invalid"], rows
    assert rows[2]["error"].startswith("metadata: is only allowed when store is true")
    assert chat_posts(sim) == 2
    # The simulator refuses it as the service does, in its words.
    messages = [{"role": "user", "content": "Hi"}]
    for extra in ({}, {"store": False}):
        body = {"model": "gpt-4o", "messages": messages, "metadata": {"k": "v"}, **extra}
        answer = send(sim.base_url, "POST", "/chat/completions", body)
        assert answer.status == 400
        assert answer.json["error"]["param"] == "metadata"
        assert answer.json["error"]["message"] == (
            "The 'metadata' parameter is only allowed when 'store' is enabled."
        )


def test_a_background_response_not_stored_is_invalid_and_refused_by_the_simulator(
    make_simulator: Make, tmp_path: Path
) -> None:
    # Background mode keeps the response to be polled: OpenAI refuses it with store false.
    sim = make_simulator(run_seconds=0)
    source = write_csv(
        tmp_path / "bg.csv",
        ["model", "input", "store", "background"],
        [["gpt-4o", "Hi", "false", "true"], ["gpt-4o", "Ho", "", "true"]],
    )
    settings = settings_for(sim.base_url, endpoint="responses", wait=True)
    run_file(source, tmp_path / "out.csv", settings)
    rows = read_rows(tmp_path / "out.csv")
    assert [row["outcome"] for row in rows] == ["invalid", "ok"], rows
    assert rows[0]["error"].startswith("background: true needs the response stored")
    assert sim.stats()["responses_created"] == 1
    body = {"model": "gpt-4o", "input": "Hi", "background": True, "store": False}
    answer = send(sim.base_url, "POST", "/responses", body)
    assert answer.status == 400 and answer.json["error"]["param"] == "background"


@pytest.mark.parametrize(
    ("endpoint", "header", "cells", "path"),
    [
        pytest.param(
            "responses",
            ["model", "input", "reasoning.efort"],
            ["gpt-4o", "Hi", "high"],
            "reasoning.efort",
            id="responses-dotted-typo",
        ),
        pytest.param(
            "responses",
            ["model", "input", "request_json"],
            ["gpt-4o", "Hi", '{"bogus": 1}'],
            "bogus",
            id="responses-top-level",
        ),
        pytest.param(
            "chat",
            ["model", "user", "request_json"],
            ["gpt-4o", "Hi", '{"temprature": 0.2}'],
            "temprature",
            id="chat-top-level",
        ),
        pytest.param(
            "chat",
            ["model", "user", "web_search_options.search_context_sise"],
            ["gpt-4o", "Hi", "low"],
            "web_search_options.search_context_sise",
            id="chat-dotted-typo",
        ),
    ],
)
def test_a_field_the_service_does_not_know_is_invalid_before_sending_and_refused_by_the_simulator(
    make_simulator: Make,
    tmp_path: Path,
    endpoint: str,
    header: list[str],
    cells: list[str],
    path: str,
) -> None:
    # The cut-out schemas allow any field, the service answers 400 "Unknown parameter":
    # before, validate said ok, and the row failed when sent (nested ones were sent).
    sim = make_simulator(run_seconds=0)
    source = write_csv(tmp_path / "in.csv", header, [cells])
    for settings in (
        Settings(**environment_settings({"endpoint": endpoint}, {})),  # OpenAI's own
        Settings(**environment_settings({"endpoint": endpoint, "simulate": True}, {})),
    ):
        validate_file(source, tmp_path / "checked.csv", settings)
        (row,) = read_rows(tmp_path / "checked.csv")
        assert row["outcome"] == "invalid"
        assert f"{path}: is not a field here" in row["error"].split("; ")
    # A compatible server may take fields of its own (a gateway's top_k): sent to it, and
    # the simulator, as OpenAI, answers 400.
    run_file(source, tmp_path / "out.csv", settings_for(sim.base_url, endpoint=endpoint))
    (row,) = read_rows(tmp_path / "out.csv")
    assert (row["outcome"], row["status"]) == ("failed", "400")
    assert "Unknown parameter" in row["error"]
    body = (
        {"model": "gpt-4o", "input": "Hi"}
        if endpoint == "responses"
        else {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}
    )
    first, _, rest = path.partition(".")
    body[first] = {rest: "x"} if rest else 1
    route = "/responses" if endpoint == "responses" else "/chat/completions"
    answer = send(sim.base_url, "POST", route, body)
    assert answer.status == 400
    assert answer.json["error"]["code"] == "unknown_parameter"
    assert answer.json["error"]["message"] == f"Unknown parameter: '{path}'."


# --- a column that names both a field and a shortcut -----------------------------------------


def requests_of(source: Path, tmp_path: Path, **options: object) -> list[dict[str, Any]]:
    """The bodies ``validate`` says each row would send ({} for an invalid row)."""
    settings = Settings(**environment_settings({"endpoint": "chat", **options}, {}))
    validate_file(source, tmp_path / "checked.csv", settings)
    rows = read_rows(tmp_path / "checked.csv")
    return [json.loads(row["request"]) if row["request"] else {} for row in rows]


def test_a_chat_user_column_is_the_user_message_and_field_user_is_the_field(
    tmp_path: Path,
) -> None:
    source = write_csv(
        tmp_path / "chat.csv",
        ["model", "User", "Field.User"],
        [["gpt-4o", "Hello there", ""], ["gpt-4o", "Hi again", "customer-42"]],
    )
    first, second = requests_of(source, tmp_path, run_tag=False)
    assert first == {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello there"}]}
    assert second == {
        "model": "gpt-4o",
        "user": "customer-42",
        "messages": [{"role": "user", "content": "Hi again"}],
    }


def test_field_user_is_reached_by_column_and_set_and_a_bare_set_user_says_how(
    tmp_path: Path,
) -> None:
    source = write_csv(
        tmp_path / "chat.csv", ["model", "user", "End user"], [["gpt-4o", "Hi", "u-1"]]
    )
    (body,) = requests_of(source, tmp_path, run_tag=False, columns={"field.user": "End user"})
    assert body["user"] == "u-1" and body["messages"] == [{"role": "user", "content": "Hi"}]
    (body,) = requests_of(source, tmp_path, run_tag=False, set_values={"field.user": "u-9"})
    assert body["user"] == "u-9"
    with pytest.raises(UsageError, match=r"--set field\.user=VALUE"):
        requests_of(source, tmp_path, set_values={"user": "u-9"})


def test_the_sample_chat_sheet_sends_no_user_field(tmp_path: Path) -> None:
    sample = Path(__file__).parent.parent / "samples" / "chat.csv"
    bodies = requests_of(sample, tmp_path)
    assert bodies and all("user" not in body for body in bodies)
    assert any(body.get("messages") for body in bodies)


def test_a_plain_field_and_its_field_dot_twin_together_are_an_input_error(
    tmp_path: Path,
) -> None:
    source = write_csv(tmp_path / "chat.csv", ["model", "field.model"], [["a", "b"]])
    with pytest.raises(InputError, match="both name the field 'model'"):
        requests_of(source, tmp_path)


# --- an Assistants sheet moved to --endpoint responses ------------------------------------


def responses_posts(sim: RunningSimulator) -> int:
    return sum(sim.stats()["requests"].get("POST /v1/responses", {}).values())


def test_a_responses_row_with_nothing_to_answer_is_invalid_and_never_sent(
    make_simulator: Make, tmp_path: Path
) -> None:
    sim = make_simulator(run_seconds=0)
    source = write_csv(
        tmp_path / "old.csv",
        ["thread_id", "assistant_id", "model", "input", "instructions", "temperature"],
        [
            ["thread_1", "asst_1", "gpt-4o", "", "", "0.2"],  # an Assistants row, moved
            ["thread_2", "asst_1", "gpt-4o", " ", "", ""],  # an input of only spaces
            ["thread_3", "asst_1", "gpt-4o", "", "Say hello.", ""],
            ["thread_4", "asst_1", "gpt-4o", "Hi", "", ""],
        ],
    )
    settings = settings_for(sim.base_url, endpoint="responses")
    report = run_file(source, tmp_path / "out.csv", settings)
    rows = read_rows(tmp_path / "out.csv")
    assert [row["outcome"] for row in rows] == ["invalid", "invalid", "ok", "ok"]
    assert rows[0]["error"] == (
        "input: is required: the row has no input, instructions, prompt, conversation or "
        "previous_response_id, so there is nothing to answer"
    )
    assert responses_posts(sim) == 2
    assert report.summary.outcomes == {"ok": 2, "invalid": 2}


def test_the_note_on_unsent_assistants_columns_comes_before_sending_and_from_validate(
    make_simulator: Make, tmp_path: Path
) -> None:
    sim = make_simulator(run_seconds=0)
    source = write_csv(
        tmp_path / "old.csv",
        ["thread_id", "assistant_id", "model", "input"],
        [["thread_1", "asst_1", "gpt-4o", "Hi"]],
    )
    heard: list[tuple[str, int]] = []
    settings = settings_for(sim.base_url, endpoint="responses")
    run_file(
        source,
        tmp_path / "out.csv",
        settings,
        notice=lambda note: heard.append((note, responses_posts(sim))),
    )
    ((note, posts_then),) = heard
    assert note.startswith("column(s) thread_id, assistant_id are Assistants fields")
    assert posts_then == 0  # heard before anything was sent
    checked = validate_file(source, tmp_path / "checked.csv", settings)
    assert checked.summary.notes == (note,)
    # The command line prints it once, before the summary line, for run and validate.
    env = {**os.environ, "OPENAI_API_KEY": TEST_KEY}
    for args in (
        ["run", str(source), "-o", str(tmp_path / "again.csv"), "--base-url", sim.base_url],
        ["validate", str(source), "-o", str(tmp_path / "checked2.csv")],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "batchrun", *args, "--endpoint", "responses"],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        lines = done.stderr.splitlines()
        assert lines[0] == f"note: {note}", done.stderr
        assert lines[-1].startswith("1 row: 1 ok"), done.stderr  # the summary line last
        assert not any(line.startswith("note:") for line in lines[1:]), done.stderr


# --- header hints ---------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["Assistant", "Assistant ID", "assistant id", "Assistant-Id"])
def test_a_human_header_for_assistant_id_is_named_in_the_row_error_and_a_note(
    tmp_path: Path, header: str
) -> None:
    source = write_csv(tmp_path / "runs.csv", ["thread_id", header], [["thread_1", "asst_1"]])
    settings = Settings(**environment_settings({}, {}))
    report = validate_file(source, tmp_path / "checked.csv", settings)
    (row,) = read_rows(tmp_path / "checked.csv")
    assert row["error"] == (
        f"assistant_id: is required (the column {header!r} looks like it: pass "
        f'--column "assistant_id={header}")'
    )
    assert report.summary.notes == (
        f"column {header!r} looks like the field assistant_id but is not sent: pass "
        f'--column "assistant_id={header}"',
    )


@pytest.mark.parametrize(("header", "noted"), [("N", True), (" N ", True), (" n ", False)])
def test_a_column_feeding_chats_n_by_a_header_written_otherwise_is_named_before_sending(
    tmp_path: Path, header: str, noted: bool
) -> None:
    # A numbering column "N" matches the field n (headers match ignoring case): every row
    # would ask for N answers, each charged. The note comes before the row is sent.
    source = write_csv(tmp_path / "chat.csv", [header, "model", "user"], [["3", "gpt-4o", "Hi"]])
    done = subprocess.run(
        [sys.executable, "-m", "batchrun", "validate", str(source), "--endpoint", "chat"],
        capture_output=True,
        text=True,
        env={**os.environ, "OPENAI_API_KEY": TEST_KEY},
        check=False,
    )
    note = (
        f"note: column {header.strip()!r} is sent as n, the number of answers each row asks "
        "for (each one charged): rename the column to keep it out of the request"
    )
    assert (note in done.stderr.splitlines()) is noted, done.stderr
    assert done.stderr.startswith(note) is noted


def test_every_field_gets_a_hint_and_a_column_that_feeds_a_field_gets_none(
    tmp_path: Path,
) -> None:
    source = write_csv(
        tmp_path / "chat.csv",
        ["Model", "user", "Max Tokens", "Temperature", "Speed", "Notes"],
        [["gpt-4o", "Hi", "5", "0.2", "fast", "x"]],
    )
    settings = Settings(**environment_settings({"endpoint": "chat"}, {}))
    report = validate_file(source, tmp_path / "checked.csv", settings)
    assert report.summary.notes == (
        "column 'Max Tokens' looks like the field max_tokens but is not sent: pass "
        '--column "max_tokens=Max Tokens"',
    )
