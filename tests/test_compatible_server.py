"""Pins the behaviours of ``compatible_server`` (the fake self-hosted server) over real HTTP.

Tests of how batchrun copes with that server trust these behaviours, so each quirk is shown
doing what its docstring says: wordings, ghost runs, run lifecycles on a fake clock, 422s,
id and timestamp shapes, metadata, one active run per thread, lists, the "another client"
hook, auth and the record. No test sleeps: time moves by ``clock.advance``.
"""

from __future__ import annotations

import ast
import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from compatible_server import Answer, CompatibleServer, Quirks, Seen, call, compatible_server
from conftest import FakeClock

BODY: dict[str, Any] = {
    "assistant_id": "asst_1",
    "instructions": "Be brief.",
    "metadata": {"batchrun_key": "k1"},
}
Serve = Callable[..., tuple[CompatibleServer, str]]


@pytest.fixture
def serve(clock: FakeClock) -> Iterator[Serve]:
    """``serve(**quirks)`` -> (server, base_url), on the test's fake clock; stopped at teardown."""
    with contextlib.ExitStack() as stack:

        def start(**quirks: Any) -> tuple[CompatibleServer, str]:
            return stack.enter_context(compatible_server(Quirks(**quirks), clock=clock))

        yield start


def create(base: str, thread: str, body: Any = None, **kw: Any) -> Answer:
    return call(f"{base}/threads/{thread}/runs", "POST", BODY if body is None else body, **kw)


def get(base: str, path: str, **kw: Any) -> Answer:
    return call(f"{base}{path}", **kw)


def error_of(answer: Answer) -> dict[str, Any]:
    """The inner error of the envelope, after checking its four keys."""
    payload = answer.json()
    assert set(payload) == {"error"}
    error: dict[str, Any] = payload["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def with_body(**changes: Any) -> dict[str, Any]:
    return {**BODY, **changes}


# --- routing, wordings and auth -----------------------------------------------------------


def test_serves_under_the_prefix_and_ignores_the_beta_header(serve: Serve) -> None:
    _, base = serve()
    assert base.endswith("/api/v1")
    answer = create(base, "t1", headers={"OpenAI-Beta": "nonsense"})
    assert answer.status == 200
    run = answer.json()
    assert run["object"] == "thread.run"
    assert (run["thread_id"], run["assistant_id"], run["status"]) == ("t1", "asst_1", "queued")
    assert get(base, "/threads/t1").json()["id"] == "t1"
    thread = call(f"{base}/threads", "POST", {"metadata": {"a": "b"}}).json()
    assert thread["object"] == "thread" and thread["metadata"] == {"a": "b"}


def test_unknown_assistant_is_a_404_from_the_runs_route(serve: Serve) -> None:
    server, base = serve()
    answer = create(base, "t1", with_body(assistant_id="gpt-helper"))
    assert answer.status == 404
    assert answer.json() == {
        "error": {
            "message": "Assistant not found",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    assert server.runs("t1") == []


def test_assistant_registry_by_set_prefix_and_registration(serve: Serve) -> None:
    server, base = serve(assistant_prefix=None, assistants=frozenset({"helper"}))
    assert create(base, "t1", with_body(assistant_id="asst_1")).status == 404
    assert create(base, "t2", with_body(assistant_id="helper")).status == 200
    assert create(base, "t3", with_body(assistant_id="late")).status == 404
    server.register_assistant("late")
    assert create(base, "t3", with_body(assistant_id="late")).status == 200


@pytest.mark.parametrize(
    ("style", "content_type", "body"),
    [
        ("fastapi", "application/json", b'{"detail": "Not Found"}'),
        ("html", "text/html", b"<html>\r\n<head><title>404 Not Found</title></head>"),
        ("empty", None, b""),
    ],
)
def test_unknown_route_is_a_bare_404(
    serve: Serve, style: str, content_type: str | None, body: bytes
) -> None:
    server, base = serve(not_found=style)
    without_api = base.replace("/api/v1", "/v1")
    for answer in (
        create(without_api, "t1"),
        get(without_api, "/threads/t1/runs?limit=20&order=desc"),
        get(base, "/threads/t1/runs/r1/steps"),
        get(base, "/nowhere", key=None),
    ):
        assert answer.status == 404
        assert answer.body.startswith(body)
        if content_type:
            assert answer.headers["content-type"].startswith(content_type)
        else:
            assert answer.body == b""
    assert server.creates("t1") == 0
    assert server.runs_created == 0


@pytest.mark.parametrize(
    ("style", "body"),
    [("fastapi", b'{"detail": "Method Not Allowed"}'), ("html", b"405: Method Not Allowed")],
)
def test_wrong_method_is_a_405(serve: Serve, style: str, body: bytes) -> None:
    server, base = serve(not_found=style)
    answer = call(f"{base}/threads/t1/runs", "DELETE")
    assert answer.status == 405
    assert answer.body == body
    assert set(answer.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}
    assert server.requests == [Seen("DELETE", "/api/v1/threads/t1/runs", 405)]


def test_auth_needs_any_non_empty_bearer_key(serve: Serve) -> None:
    server, base = serve()
    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Basic abc"}):
        answer = create(base, "t1", key=None, headers=headers)
        assert answer.status == 401
        assert error_of(answer)["type"] == "authentication_error"
    assert create(base, "t1", key="x").status == 200
    assert get(base.replace("/api/v1", ""), "/v1/threads", key=None).status == 404
    assert server.runs_created == 1

    _, open_base = serve(require_auth=False)
    assert create(open_base, "t1", key=None).status == 200


# --- ghost runs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer_style", "content_type", "body"),
    [
        ("json", "application/json", b'{"detail": "Internal Server Error"}'),
        ("text", "text/plain", b"Internal Server Error"),
    ],
)
def test_ghost_thread_stores_the_run_then_answers_500(
    serve: Serve, answer_style: str, content_type: str, body: bytes
) -> None:
    server, base = serve(ghost_threads=frozenset({"ghost"}), ghost_answer=answer_style)
    answer = create(base, "ghost")
    assert answer.status == 500
    assert answer.body == body
    assert answer.headers["content-type"].startswith(content_type)
    (run,) = server.runs("ghost")
    assert run["metadata"] == {"batchrun_key": "k1"}
    listed = get(base, "/threads/ghost/runs?limit=20&order=desc").json()
    assert [item["id"] for item in listed["data"]] == [run["id"]]
    assert create(base, "healthy").status == 200
    assert (server.runs_created, server.ghosts_created) == (2, 1)


def test_ghost_every_counts_accepted_creates(serve: Serve) -> None:
    server, base = serve(ghost_every=2)
    assert create(base, "t1", with_body(assistant_id="unknown")).status == 404  # not accepted
    statuses = [create(base, f"t{n}").status for n in range(1, 6)]
    assert statuses == [200, 500, 200, 500, 200]
    assert (server.runs_created, server.ghosts_created) == (5, 2)


def test_ghost_predicate_and_cap(serve: Serve) -> None:
    server, base = serve(ghost_if=lambda body: "[ghost]" in body["instructions"], max_ghosts=1)
    haunted = with_body(instructions="[ghost] hello")
    assert create(base, "t1", haunted).status == 500
    assert create(base, "t2", haunted).status == 200  # the cap is reached
    assert create(base, "t3").status == 200
    assert server.ghosts_created == 1
    assert len(server.runs("t1")) == 1


def test_ghost_runs_execute_unless_stuck(serve: Serve, clock: FakeClock) -> None:
    server, base = serve(ghost_threads=frozenset({"g"}))
    create(base, "g")
    clock.advance(2.0)
    assert [run["status"] for run in server.runs("g")] == ["completed"]

    stuck, stuck_base = serve(ghost_threads=frozenset({"g"}), ghost_stuck=True)
    create(stuck_base, "g")
    clock.advance(10_000)
    (run,) = stuck.runs("g")
    assert run["status"] == "queued"
    assert get(stuck_base, f"/threads/g/runs/{run['id']}").json()["status"] == "queued"
    busy = create(stuck_base, "g")
    assert busy.status == 400
    assert error_of(busy)["message"] == f"Thread g already has an active run {run['id']}."


# --- run lifecycle ------------------------------------------------------------------------


def test_runs_move_with_the_clock_to_completed(serve: Serve, clock: FakeClock) -> None:
    _, base = serve(run_seconds=4.0)
    run = create(base, "t1").json()
    assert run["status"] == "queued"
    assert run["usage"] is None and run["started_at"] is None
    path = f"/threads/t1/runs/{run['id']}"
    clock.advance(2.0)
    assert get(base, path).json()["status"] == "in_progress"
    clock.advance(2.0)
    done = get(base, path).json()
    assert done["status"] == "completed"
    assert done["started_at"] == run["created_at"] + 2
    assert done["completed_at"] == run["created_at"] + 4
    assert done["expires_at"] is None and done["last_error"] is None
    usage = done["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    messages = get(base, "/threads/t1/messages").json()["data"]
    assert [(m["role"], m["run_id"]) for m in messages] == [("assistant", run["id"])]
    assert messages[0]["content"][0]["type"] == "text"


def test_fail_marker_ends_failed_with_worker_crashed(serve: Serve, clock: FakeClock) -> None:
    server, base = serve()
    run = create(base, "t1", with_body(instructions="Go [fail]")).json()
    clock.advance(2.0)
    failed = get(base, f"/threads/t1/runs/{run['id']}").json()
    assert failed["status"] == "failed"
    assert failed["last_error"] == {"code": "server_error", "message": "worker crashed"}
    assert failed["failed_at"] == run["created_at"] + 2
    assert failed["usage"] is None
    assert server.messages("t1") == []


def test_requires_action_marker_stops_then_expires(serve: Serve, clock: FakeClock) -> None:
    server, base = serve(expire_seconds=60.0)
    tools = [{"type": "function", "function": {"name": "lookup_price"}}]
    run = create(base, "t1", with_body(instructions="[requires_action]", tools=tools)).json()
    clock.advance(2.0)
    waiting = server.run(run["id"])
    assert waiting["status"] == "requires_action"
    (tool_call,) = waiting["required_action"]["submit_tool_outputs"]["tool_calls"]
    assert tool_call["function"]["name"] == "lookup_price"
    assert create(base, "t1").status == 400  # still active
    clock.advance(58.0)
    expired = server.run(run["id"])
    assert (expired["status"], expired["required_action"]) == ("expired", None)
    assert create(base, "t1").status == 200


def test_expire_marker_ends_expired(serve: Serve, clock: FakeClock) -> None:
    server, base = serve()
    run = create(base, "t1", with_body(instructions="[expire]")).json()
    clock.advance(2.0)
    assert server.run(run["id"])["status"] == "expired"


def test_cancel_answers_cancelling_then_cancelled(serve: Serve, clock: FakeClock) -> None:
    _, base = serve(cancel_seconds=1.0)
    run = create(base, "t1").json()
    path = f"/threads/t1/runs/{run['id']}"
    answer = call(f"{base}{path}/cancel", "POST")
    assert answer.json()["status"] == "cancelling"
    clock.advance(1.0)
    cancelled = get(base, path).json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["cancelled_at"] == run["created_at"] + 1
    again = call(f"{base}{path}/cancel", "POST")
    assert again.status == 400
    assert error_of(again)["message"] == f"Run {run['id']} cannot be cancelled: it is cancelled."
    assert call(f"{base}/threads/t1/runs/nope/cancel", "POST").status == 404


# --- 422s ---------------------------------------------------------------------------------


def test_type_errors_are_422_with_pydantic_repr_in_the_envelope(serve: Serve) -> None:
    server, base = serve()
    answer = create(base, "t1", with_body(tool_choice={"type": "function"}, temperature="hot"))
    assert answer.status == 422
    error = error_of(answer)
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", None, None)
    assert error["message"] == (
        "[{'type': 'float_parsing', 'loc': ('body', 'temperature'), 'msg': 'Input should be a "
        "valid number, unable to parse string as a number', 'input': 'hot', "
        "'url': 'https://errors.pydantic.dev/2.7/v/float_parsing'}, "
        "{'type': 'string_type', 'loc': ('body', 'tool_choice'), "
        "'msg': 'Input should be a valid string', 'input': {'type': 'function'}, "
        "'url': 'https://errors.pydantic.dev/2.7/v/string_type'}]"
    )
    assert server.runs("t1") == [] and server.creates("t1") == 1


def test_type_errors_as_fastapi_detail(serve: Serve) -> None:
    _, base = serve(validation="detail", pydantic_url=None)
    answer = create(base, "t1", with_body(temperature=[1], tool_choice=3))
    assert answer.status == 422
    assert answer.json() == {
        "detail": [
            {
                "type": "float_type",
                "loc": ["body", "temperature"],
                "msg": "Input should be a valid number",
                "input": [1],
            },
            {
                "type": "string_type",
                "loc": ["body", "tool_choice"],
                "msg": "Input should be a valid string",
                "input": 3,
            },
        ]
    }


@pytest.mark.parametrize(
    ("body", "kind", "loc"),
    [
        (b"{not json", "json_invalid", ("body", 1)),
        (b"", "missing", ("body",)),
        ([BODY], "model_attributes_type", ("body",)),
        ({"instructions": "x"}, "missing", ("body", "assistant_id")),
        (with_body(assistant_id=7), "string_type", ("body", "assistant_id")),
        (with_body(metadata=["k"]), "dict_type", ("body", "metadata")),
        (with_body(tools={}), "list_type", ("body", "tools")),
        (with_body(instructions=1), "string_type", ("body", "instructions")),
    ],
)
def test_unreadable_bodies_are_422(
    serve: Serve, body: Any, kind: str, loc: tuple[Any, ...]
) -> None:
    server, base = serve()
    answer = create(base, "t1", body)
    assert answer.status == 422
    (issue,) = ast.literal_eval(error_of(answer)["message"])
    assert (issue["type"], issue["loc"]) == (kind, loc)
    assert server.runs_created == 0


@pytest.mark.parametrize(
    "changes",
    [
        {"tool_choice": "auto"},
        {"tool_choice": {"type": "function", "function": {"name": "f"}}},
        {"tool_choice": {"type": "file_search"}},
        {"temperature": "0.5", "top_p": True},
        {"temperature": None, "tool_choice": None, "metadata": None},
    ],
)
def test_lax_values_pass_validation(serve: Serve, changes: dict[str, Any]) -> None:
    _, base = serve()
    answer = create(base, "t1", with_body(**changes))
    assert answer.status == 200
    if changes.get("temperature") == "0.5":
        assert (answer.json()["temperature"], answer.json()["top_p"]) == (0.5, True)


def test_validation_off_accepts_anything(serve: Serve) -> None:
    _, base = serve(validation="off")
    answer = create(base, "t1", with_body(temperature="hot", tool_choice=3))
    assert answer.status == 200
    assert answer.json()["temperature"] == "hot"
    assert create(base, "t2", b"{not json").status == 404  # read as {}: no such assistant
    assert get(base, "/threads/t1/runs?limit=0&order=sideways").status == 200


def test_list_query_errors_are_422(serve: Serve) -> None:
    _, base = serve(validation="detail")
    cases = {
        "limit=abc": ("int_parsing", ["query", "limit"]),
        "limit=0": ("greater_than_equal", ["query", "limit"]),
        "limit=101": ("less_than_equal", ["query", "limit"]),
        "order=sideways": ("literal_error", ["query", "order"]),
    }
    for query, (kind, loc) in cases.items():
        for route in ("runs", "messages"):
            answer = get(base, f"/threads/t1/{route}?{query}")
            assert answer.status == 422
            (issue,) = answer.json()["detail"]
            assert (issue["type"], issue["loc"]) == (kind, loc)


# --- shapes -------------------------------------------------------------------------------


def test_ids_are_bare_hex_and_timestamps_whole_seconds(serve: Serve, clock: FakeClock) -> None:
    server, base = serve(run_seconds=0.0)
    clock.advance(0.75)
    run = create(base, "t1").json()
    assert len(run["id"]) == 32 and int(run["id"], 16) >= 0
    assert run["status"] == "completed"  # a zero-second run is done in the create answer
    assert run["created_at"] == int(clock.now) and isinstance(run["created_at"], int)
    (message,) = server.messages("t1")
    assert len(message["id"]) == 32 and isinstance(message["created_at"], int)


def test_prefixed_ids_and_float_timestamps(serve: Serve, clock: FakeClock) -> None:
    _, base = serve(ids="prefixed", float_timestamps=True)
    clock.advance(0.75)
    run = create(base, "t1").json()
    assert run["id"].startswith("run_") and len(run["id"]) == 28
    assert run["created_at"] == clock.now
    thread = call(f"{base}/threads", "POST").json()
    assert thread["id"].startswith("thread_")


@pytest.mark.parametrize(
    ("mode", "shown"), [("keep", {"batchrun_key": "k1"}), ("empty", {}), ("absent", None)]
)
def test_metadata_kept_emptied_or_absent(
    serve: Serve, mode: str, shown: Mapping[str, Any] | None
) -> None:
    _, base = serve(metadata=mode)
    created = create(base, "t1").json()
    listed = get(base, "/threads/t1/runs?limit=20&order=desc").json()["data"][0]
    fetched = get(base, f"/threads/t1/runs/{created['id']}").json()
    for run in (created, listed, fetched):
        assert run.get("metadata") == shown
        assert ("metadata" in run) == (shown is not None)


# --- threads, lists and the other client --------------------------------------------------


def test_one_active_run_per_thread(serve: Serve, clock: FakeClock) -> None:
    server, base = serve()
    first = create(base, "t1").json()
    busy = create(base, "t1")
    assert busy.status == 400
    assert error_of(busy) == {
        "message": f"Thread t1 already has an active run {first['id']}.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    clock.advance(2.0)
    assert create(base, "t1").status == 200
    assert (server.creates("t1"), server.runs_created) == (3, 2)

    _, relaxed = serve(one_active_run=False)
    assert [create(relaxed, "t1").status for _ in range(2)] == [200, 200]

    _, worded = serve(busy_message="busy: {run_id} on {thread_id}")
    run_id = create(worded, "t1").json()["id"]
    assert error_of(create(worded, "t1"))["message"] == f"busy: {run_id} on t1"


def test_list_runs_pages_newest_first(serve: Serve) -> None:
    _, base = serve(run_seconds=0.0)
    ids = [create(base, "t1", with_body(metadata={"n": str(n)})).json()["id"] for n in range(5)]
    desc = get(base, "/threads/t1/runs?limit=2&order=desc").json()
    assert [run["id"] for run in desc["data"]] == ids[:-3:-1]
    assert desc["object"] == "list" and desc["has_more"] is True
    assert (desc["first_id"], desc["last_id"]) == (ids[4], ids[3])
    after = get(base, f"/threads/t1/runs?limit=20&order=desc&after={ids[3]}").json()
    assert [run["id"] for run in after["data"]] == ids[2::-1]
    assert after["has_more"] is False
    asc = get(base, "/threads/t1/runs?order=asc").json()
    assert [run["id"] for run in asc["data"]] == ids
    empty = get(base, "/threads/never/runs").json()
    assert empty == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }


def test_unknown_run_is_a_404(serve: Serve) -> None:
    server, base = serve()
    answer = get(base, "/threads/t1/runs/nope")
    assert answer.status == 404
    assert error_of(answer)["message"] == "Run not found"
    with pytest.raises(KeyError):
        server.run("nope")


def test_messages_list_and_filter_by_run(serve: Serve) -> None:
    _, base = serve(run_seconds=0.0)
    extra = [{"role": "user", "content": "Hello"}]
    first = create(base, "t1", with_body(additional_messages=extra)).json()
    second = create(base, "t1").json()
    listed = get(base, "/threads/t1/messages?order=asc").json()["data"]
    assert [(m["role"], m["run_id"]) for m in listed] == [
        ("user", None),
        ("assistant", first["id"]),
        ("assistant", second["id"]),
    ]
    assert listed[0]["content"][0]["text"]["value"] == "Hello"
    only = get(base, f"/threads/t1/messages?run_id={second['id']}").json()["data"]
    assert [m["run_id"] for m in only] == [second["id"]]


def test_add_run_puts_a_newer_foreign_run_on_the_thread(serve: Serve, clock: FakeClock) -> None:
    server, base = serve()
    mine = create(base, "t1").json()
    clock.advance(2.0)
    foreign = server.add_run("t1", metadata={"owner": "someone else"})
    assert foreign["status"] == "in_progress" and foreign["metadata"] == {"owner": "someone else"}
    clock.advance(10_000)  # pinned: the clock does not move it
    listed = get(base, "/threads/t1/runs?limit=20&order=desc").json()["data"]
    assert [(run["id"], run["status"]) for run in listed] == [
        (foreign["id"], "in_progress"),
        (mine["id"], "completed"),
    ]
    busy = create(base, "t1")
    assert error_of(busy)["message"].endswith(f"active run {foreign['id']}.")
    assert server.set_status(foreign["id"], "completed")["usage"] is not None
    assert create(base, "t1").status == 200
    assert (server.runs_created, server.creates("t1")) == (2, 3)

    failed = server.add_run("t2", status="failed")
    assert failed["last_error"] == {"code": "server_error", "message": "worker crashed"}
    with pytest.raises(ValueError, match="unknown run status"):
        server.add_run("t1", status="running")


def test_record_of_requests_and_creates(serve: Serve) -> None:
    server, base = serve(ghost_threads=frozenset({"g"}))
    create(base, "t1")
    create(base, "g")
    get(base, "/threads/t1/runs?limit=20&order=desc")
    create(base, "t1", key=None)
    call(base.replace("/api", "") + "/threads/t1/runs", "POST", BODY)
    assert server.requests == [
        Seen("POST", "/api/v1/threads/t1/runs", 200),
        Seen("POST", "/api/v1/threads/g/runs", 500),
        Seen("GET", "/api/v1/threads/t1/runs?limit=20&order=desc", 200),
        Seen("POST", "/api/v1/threads/t1/runs", 401),
        Seen("POST", "/v1/threads/t1/runs", 404),
    ]
    # An unauthenticated create never reached the route; the creates count is the route's.
    assert (server.creates("t1"), server.creates("g"), server.creates("other")) == (1, 1, 0)
    assert (server.runs_created, server.ghosts_created) == (2, 1)
