"""The simulator over real HTTP on loopback: SDK compatibility, error shapes, run lifecycles."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import openai
import pytest
from conftest import API_HEADERS, TEST_KEY, FakeClock, error_of, send
from conftest import RUN_BODY as BODY
from hypothesis import given
from hypothesis import strategies as st
from openai import OpenAI

from batchrun.simulator import RunningSimulator
from batchrun.simulator.envelope import mask_key
from batchrun.simulator.wire import page

Make = Callable[..., RunningSimulator]
RUNS = "/threads/thread_1/runs"
# The SDK marks every Assistants call deprecated; the simulator exists to keep them working.
sdk_deprecation = pytest.mark.filterwarnings("ignore:The Assistants API is deprecated")


# -- the official SDK ---------------------------------------------------------------------


@sdk_deprecation
def test_sdk_round_trip_creates_polls_reads_reply_and_lists_newest_first(
    simulator: RunningSimulator,
) -> None:
    with OpenAI(base_url=simulator.base_url, api_key=TEST_KEY, max_retries=0) as client:
        thread = client.beta.threads.create()
        runs = []
        for text in ("first", "second"):
            run = client.beta.threads.runs.create(
                thread_id=thread.id, assistant_id="asst_1", instructions=text
            )
            assert run.status == "queued"
            while run.status in ("queued", "in_progress"):
                time.sleep(0.05)
                run = client.beta.threads.runs.retrieve(run_id=run.id, thread_id=thread.id)
            assert run.status == "completed"
            assert run.usage is not None and run.usage.total_tokens > 0
            runs.append(run)
        messages = client.beta.threads.messages.list(thread_id=thread.id, run_id=runs[1].id)
        listed = client.beta.threads.runs.list(thread_id=thread.id)

    (reply,) = messages.data
    assert reply.role == "assistant" and reply.run_id == runs[1].id
    assert reply.content[0].type == "text"
    assert reply.content[0].text.value.startswith(f"Simulated reply to {runs[1].id}: ")
    assert [run.id for run in listed.data] == [runs[1].id, runs[0].id]


@sdk_deprecation
def test_sdk_sees_a_dropped_connection_as_a_connection_error(make_simulator: Make) -> None:
    sim = make_simulator(reset_rate=1.0)
    with (
        OpenAI(base_url=sim.base_url, api_key=TEST_KEY, max_retries=0) as client,
        pytest.raises(openai.APIConnectionError),
    ):
        client.beta.threads.runs.create(thread_id="thread_1", assistant_id="asst_1")
    assert sim.stats()["runs_created"] == 1


# -- error shapes -------------------------------------------------------------------------

NO_BETA = {k: v for k, v in API_HEADERS.items() if k != "OpenAI-Beta"}


@pytest.mark.parametrize(
    ("config", "method", "path", "body", "headers", "status", "expected"),
    [
        pytest.param(
            {}, "POST", RUNS, BODY, NO_BETA, 400,
            {"type": "invalid_request_error", "code": "invalid_beta", "param": None,
             "message": "You must provide the 'OpenAI-Beta' header to access the Assistants "
             "API. Please try again by setting the header 'OpenAI-Beta: assistants=v2'."},
            id="missing-beta-header",
        ),
        pytest.param(
            {}, "GET", "/threads/thread_1", None, {**API_HEADERS, "OpenAI-Beta": "assistants=v3"},
            400, {"code": "invalid_beta"}, id="unknown-beta-version",
        ),
        pytest.param(
            {}, "POST", RUNS, BODY, {"OpenAI-Beta": "assistants=v2"}, 401,
            {"type": "invalid_request_error", "code": None}, id="missing-key",
        ),
        pytest.param(
            {"api_key": "sk-right-0000000000"}, "POST", RUNS, BODY, None, 401,
            {"type": "invalid_request_error", "code": "invalid_api_key",
             "message": "Incorrect API key provided: sk-te***ef. You can find your API key "
             "at https://platform.openai.com/account/api-keys."},
            id="wrong-key-masked",
        ),
        pytest.param(
            {}, "POST", RUNS, {**BODY, "temperature": 3}, None, 400,
            {"type": "invalid_request_error", "param": "temperature",
             "code": "decimal_above_max_value",
             "message": "Invalid 'temperature': 3 is greater than the maximum of 2."},
            id="invalid-body-names-param",
        ),
        pytest.param(
            {}, "POST", RUNS, {"instructions": "x"}, None, 400,
            {"param": "assistant_id", "code": "missing_required_parameter",
             "message": "Missing required parameter: 'assistant_id'."},
            id="missing-assistant-id",
        ),
        pytest.param(
            {}, "POST", RUNS, BODY, {**API_HEADERS, "OpenAI-Beta": "assistants=v1"}, 200, None,
            id="v1-header-accepts-v1-body",
        ),
        pytest.param(
            {}, "POST", RUNS, {**BODY, "temperature": 1}, {**API_HEADERS, "OpenAI-Beta":
            "assistants=v1"}, 400, {"param": "temperature", "code": "unknown_parameter",
            "message": "Unknown parameter: 'temperature'."}, id="v1-header-applies-v1-schema",
        ),
        pytest.param(
            {}, "POST", RUNS, {**BODY, "temprature": 1}, None, 400,
            {"param": "temprature", "code": "unknown_parameter"}, id="unknown-parameter",
        ),
        pytest.param(
            {}, "POST", RUNS, {**BODY, "tools": [{"type": "retrieval"}]}, None, 400,
            {"param": "tools[0].type", "code": "invalid_value"}, id="bad-value-names-the-path",
        ),
        pytest.param(
            {}, "POST", RUNS, b"{not json", None, 400,
            {"type": "invalid_request_error", "param": None}, id="body-not-json",
        ),
        pytest.param(
            {}, "POST", RUNS, [BODY], None, 400,
            {"message": "Invalid type for 'body': expected an object, but got an array instead."},
            id="body-not-an-object",
        ),
        pytest.param(
            {"strict_threads": True}, "POST", "/threads/thread_X/runs", BODY, None, 404,
            {"message": "No thread found with id 'thread_X'.", "type": "invalid_request_error",
             "param": None, "code": None},
            id="unknown-thread-when-strict",
        ),
        pytest.param(
            {}, "GET", "/threads/thread.1", None, None, 404,
            {"message": "No thread found with id 'thread.1'."}, id="malformed-thread-id",
        ),
        pytest.param(
            {}, "GET", "/threads/thread_1/runs/run_nope", None, None, 404,
            {"message": "No run found with id 'run_nope'."}, id="unknown-run",
        ),
        pytest.param(
            {}, "GET", "/assistants", None, None, 404,
            {"message": "Invalid URL (GET /v1/assistants)", "type": "invalid_request_error"},
            id="unknown-route",
        ),
        pytest.param(
            {}, "DELETE", RUNS, None, None, 404,
            {"message": "Invalid URL (DELETE /v1/threads/thread_1/runs)"}, id="unknown-method",
        ),
        pytest.param(
            {}, "GET", RUNS + "?limit=101", None, None, 400,
            {"param": "limit", "code": "integer_above_max_value"}, id="limit-above-100",
        ),
        pytest.param(
            {}, "GET", RUNS + "?order=up", None, None, 400,
            {"param": "order", "code": "invalid_value"}, id="unknown-order",
        ),
    ],
)  # fmt: skip
def test_errors_use_openais_envelope(
    make_simulator: Make,
    config: dict[str, Any],
    method: str,
    path: str,
    body: Any,
    headers: dict[str, str] | None,
    status: int,
    expected: dict[str, Any] | None,
) -> None:
    sim = make_simulator(**config)
    reply = send(sim.base_url, method, path, body, headers=headers)
    assert reply.status == status, reply.json
    if expected is not None:
        error = error_of(reply)
        assert {key: error[key] for key in expected} == expected
    assert "x-ratelimit-remaining-requests" in reply.headers


def test_wrong_key_is_never_echoed_whole(make_simulator: Make) -> None:
    sim = make_simulator(api_key="sk-right-0000000000")
    reply = send(sim.base_url, "GET", "/threads/thread_1")
    assert reply.status == 401
    assert TEST_KEY not in str(reply.json) and TEST_KEY not in str(reply.headers)


@given(st.text(min_size=1, max_size=80))
def test_masked_key_hides_all_but_seven_characters_of_long_keys(key: str) -> None:
    shown = mask_key(key).replace("***", "", 1)
    assert len(shown) <= (7 if len(key) >= 12 else 0)


def test_second_active_run_is_refused_naming_the_active_run(base_url: str) -> None:
    first = send(base_url, "POST", RUNS, BODY)
    second = send(base_url, "POST", RUNS, BODY)
    assert second.status == 400
    assert error_of(second) == {
        "message": f"Thread thread_1 already has an active run {first.json['id']}.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


# -- runs and their lifecycle -------------------------------------------------------------


def test_run_object_echoes_the_body_and_starts_queued(base_url: str) -> None:
    body = {
        **BODY,
        "model": "gpt-4o-mini",
        "temperature": 0.3,
        "metadata": {"batchrun_key": "k1"},
        "tools": [{"type": "code_interpreter"}],
        "response_format": {"type": "json_object"},
        "max_prompt_tokens": 1000,
    }
    run = send(base_url, "POST", RUNS, body).json
    assert run["id"].startswith("run_") and run["object"] == "thread.run"
    assert isinstance(run["created_at"], int) and run["expires_at"] > run["created_at"]
    assert (run["status"], run["usage"], run["last_error"], run["started_at"]) == (
        "queued", None, None, None,
    )  # fmt: skip
    for name in ("assistant_id", "model", "temperature", "metadata", "tools", "response_format"):
        assert run[name] == body[name]
    assert (run["thread_id"], run["instructions"], run["max_prompt_tokens"]) == (
        "thread_1", "Be brief.", 1000,
    )  # fmt: skip
    assert (run["top_p"], run["tool_choice"], run["parallel_tool_calls"]) == (1.0, "auto", True)


def test_run_goes_queued_in_progress_completed_over_run_seconds(
    make_simulator: Make, clock: FakeClock
) -> None:
    sim = make_simulator(clock=clock, run_seconds=1.0)
    run_id = send(sim.base_url, "POST", RUNS, BODY).json["id"]
    seen = []
    for _ in range(3):
        seen.append(send(sim.base_url, "GET", f"{RUNS}/{run_id}").json["status"])
        clock.advance(0.5)
    assert seen == ["queued", "in_progress", "completed"]


def test_zero_run_seconds_answers_queued_then_reads_completed(make_simulator: Make) -> None:
    sim = make_simulator(run_seconds=0)
    created = send(sim.base_url, "POST", RUNS, BODY).json
    read = send(sim.base_url, "GET", f"{RUNS}/{created['id']}").json
    assert (created["status"], read["status"]) == ("queued", "completed")
    assert read["usage"]["total_tokens"] == (
        read["usage"]["prompt_tokens"] + read["usage"]["completion_tokens"]
    )


@pytest.mark.parametrize(
    ("field", "marker", "at", "status", "last_error"),
    [
        pytest.param("instructions", "[sim:fail]", 1.0, "failed",
                     {"code": "server_error", "message": "Simulated failure."}, id="fail"),
        pytest.param("additional_instructions", "[sim:fail]", 1.0, "failed",
                     {"code": "server_error", "message": "Simulated failure."},
                     id="fail-in-additional"),
        pytest.param("instructions", "[sim:expire]", 1.0, "expired", None, id="expire"),
        pytest.param("instructions", "[sim:requires_action]", 1.0, "requires_action", None,
                     id="requires-action"),
        pytest.param("instructions", "[sim:slow]", 9.0, "in_progress", None, id="slow-running"),
        pytest.param("instructions", "[sim:slow]", 10.0, "completed", None, id="slow-done"),
    ],
)  # fmt: skip
def test_instruction_markers_pick_the_outcome(
    make_simulator: Make,
    clock: FakeClock,
    field: str,
    marker: str,
    at: float,
    status: str,
    last_error: dict[str, str] | None,
) -> None:
    sim = make_simulator(clock=clock, run_seconds=1.0)
    body = {**BODY, field: f"Do it. {marker}", "tools": [{"type": "function", "function": {
        "name": "lookup"}}]}  # fmt: skip
    run_id = send(sim.base_url, "POST", RUNS, body).json["id"]
    clock.advance(at)
    run = send(sim.base_url, "GET", f"{RUNS}/{run_id}").json
    assert (run["status"], run["last_error"]) == (status, last_error)
    if status == "requires_action":
        calls = run["required_action"]["submit_tool_outputs"]["tool_calls"]
        assert run["required_action"]["type"] == "submit_tool_outputs"
        assert [call["function"]["name"] for call in calls] == ["lookup"]


def test_requires_action_blocks_the_thread_until_it_expires(
    make_simulator: Make, clock: FakeClock
) -> None:
    sim = make_simulator(clock=clock, run_seconds=1.0)
    body = {**BODY, "instructions": "[sim:requires_action]"}
    run_id = send(sim.base_url, "POST", RUNS, body).json["id"]
    clock.advance(2)
    assert send(sim.base_url, "POST", RUNS, BODY).status == 400
    clock.advance(600)
    expired = send(sim.base_url, "GET", f"{RUNS}/{run_id}").json
    assert (expired["status"], expired["required_action"]) == ("expired", None)
    assert send(sim.base_url, "POST", RUNS, BODY).status == 200


def test_cancel_goes_through_cancelling_and_frees_the_thread(
    make_simulator: Make, clock: FakeClock
) -> None:
    sim = make_simulator(clock=clock, run_seconds=1.0)
    run_id = send(sim.base_url, "POST", RUNS, BODY).json["id"]
    cancelling = send(sim.base_url, "POST", f"{RUNS}/{run_id}/cancel")
    assert send(sim.base_url, "POST", RUNS, BODY).status == 400  # cancelling is still active
    clock.advance(0.25)
    cancelled = send(sim.base_url, "GET", f"{RUNS}/{run_id}").json
    assert (cancelling.json["status"], cancelled["status"]) == ("cancelling", "cancelled")
    assert cancelled["cancelled_at"] is not None
    again = send(sim.base_url, "POST", f"{RUNS}/{run_id}/cancel")
    assert error_of(again)["message"] == "Cannot cancel run with status 'cancelled'."
    assert send(sim.base_url, "POST", RUNS, BODY).status == 200


def test_additional_messages_join_the_thread_before_the_reply(
    make_simulator: Make, clock: FakeClock
) -> None:
    sim = make_simulator(clock=clock, run_seconds=1.0)
    body = {**BODY, "additional_messages": [{"role": "user", "content": "What is 2+2?"}]}
    run_id = send(sim.base_url, "POST", RUNS, body).json["id"]
    clock.advance(1)
    listing = send(sim.base_url, "GET", "/threads/thread_1/messages?order=asc").json
    assert [m["role"] for m in listing["data"]] == ["user", "assistant"]
    assert listing["data"][0]["content"][0]["text"] == {"value": "What is 2+2?", "annotations": []}
    assert listing["data"][1]["run_id"] == run_id


def test_same_seed_gives_the_same_ids_and_replies(make_simulator: Make) -> None:
    replies = []
    for _ in range(2):
        sim = make_simulator(seed=7, run_seconds=0)
        run = send(sim.base_url, "POST", RUNS, BODY).json
        messages = send(sim.base_url, "GET", f"/threads/thread_1/messages?run_id={run['id']}")
        replies.append((run["id"], messages.json["data"][0]["content"][0]["text"]["value"]))
    assert replies[0] == replies[1]


def test_strict_threads_serve_created_threads(make_simulator: Make) -> None:
    sim = make_simulator(strict_threads=True)
    thread = send(sim.base_url, "POST", "/threads", {"metadata": {"team": "a"}}).json
    assert (thread["object"], thread["metadata"]) == ("thread", {"team": "a"})
    assert send(sim.base_url, "GET", f"/threads/{thread['id']}").json == thread
    assert send(sim.base_url, "POST", f"/threads/{thread['id']}/runs", BODY).status == 200


def test_lists_page_with_limit_order_and_cursors(make_simulator: Make) -> None:
    sim = make_simulator(run_seconds=0)
    ids = [send(sim.base_url, "POST", RUNS, BODY).json["id"] for _ in range(5)]
    newest = send(sim.base_url, "GET", f"{RUNS}?limit=2").json
    assert [r["id"] for r in newest["data"]] == [ids[4], ids[3]]
    assert (newest["first_id"], newest["last_id"], newest["has_more"]) == (ids[4], ids[3], True)
    rest = send(sim.base_url, "GET", f"{RUNS}?limit=10&after={ids[3]}").json
    assert ([r["id"] for r in rest["data"]], rest["has_more"]) == (ids[2::-1], False)
    oldest = send(sim.base_url, "GET", f"{RUNS}?order=asc&limit=1").json
    assert [r["id"] for r in oldest["data"]] == [ids[0]]


@pytest.mark.parametrize(
    ("after", "before", "limit", "expected", "has_more"),
    [
        pytest.param(None, None, 2, ["e", "d"], True, id="first-page"),
        pytest.param("d", None, 2, ["c", "b"], True, id="after"),
        pytest.param(None, "b", 2, ["d", "c"], True, id="before-takes-the-adjacent-page"),
        pytest.param("e", "b", 5, ["d", "c"], False, id="between"),
        pytest.param("zz", None, 2, [], False, id="unknown-cursor"),
    ],
)
def test_page_cursors_follow_openai_semantics(
    after: str | None, before: str | None, limit: int, expected: list[str], has_more: bool
) -> None:
    chosen, more = page(list("abcde"), str, order="desc", limit=limit, after=after, before=before)
    assert (chosen, more) == (expected, has_more)


def test_stream_true_is_answered_with_an_event_stream_not_a_client_rule(
    make_simulator: Callable[..., RunningSimulator],
) -> None:
    """OpenAI streams when asked; refusing stream: true is batchrun's rule, not the API's."""
    sim = make_simulator(run_seconds=0)
    request = urllib.request.Request(
        f"{sim.base_url}{RUNS}",
        data=json.dumps({**BODY, "stream": True}).encode(),
        headers=API_HEADERS,
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("text/event-stream")
        text = answer.read().decode()
    events = [block.split("\n") for block in text.strip().split("\n\n")]
    assert [lines[0] for lines in events] == ["event: thread.run.created", "event: done"]
    run = json.loads(events[0][1].removeprefix("data: "))
    assert run["object"] == "thread.run" and run["status"] == "queued"
    assert events[1][1] == "data: [DONE]"
    assert sim.stats()["runs_created"] == 1


V1_RUN_FIELDS = {
    # createrun-v1.openapi.yaml, RunObject: every property, each required.
    "id", "object", "created_at", "thread_id", "assistant_id", "status", "required_action",
    "last_error", "expires_at", "started_at", "cancelled_at", "failed_at", "completed_at",
    "model", "instructions", "tools", "file_ids", "metadata", "usage",
}  # fmt: skip


def test_a_v1_run_has_v1s_fields_and_a_v2_run_none_outside_its_schema(
    simulator: RunningSimulator,
) -> None:
    # Before: a v1 run had no file_ids and ten v2 fields; a v2 run had tool_resources.
    v1 = {**API_HEADERS, "OpenAI-Beta": "assistants=v1"}
    run = send(simulator.base_url, "POST", "/threads/thread_v1/runs", BODY, headers=v1).json
    assert set(run) == V1_RUN_FIELDS
    listed = send(simulator.base_url, "GET", "/threads/thread_v1/runs", headers=v1).json
    assert set(listed["data"][0]) == V1_RUN_FIELDS
    v2 = send(simulator.base_url, "POST", "/threads/thread_v2/runs", BODY).json
    assert "tool_resources" not in v2 and "file_ids" not in v2
    assert {"temperature", "truncation_strategy", "incomplete_details"} <= set(v2)


@pytest.mark.parametrize(
    ("metadata", "param"),
    [
        pytest.param({"a": 1}, "metadata.a", id="value-not-text"),
        pytest.param({str(n): "v" for n in range(17)}, "metadata", id="17-keys"),
        pytest.param(["a"], "metadata", id="not-an-object"),
    ],
)
def test_a_thread_refuses_metadata_beyond_the_limits_as_runs_do(
    simulator: RunningSimulator, metadata: Any, param: str
) -> None:
    # Before: POST /threads took any metadata object that runs and batches refuse.
    answer = send(simulator.base_url, "POST", "/threads", {"metadata": metadata})
    assert answer.status == 400
    assert error_of(answer)["param"] == param
