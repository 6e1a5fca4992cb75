"""The simulator's live endpoints over real HTTP on loopback: Conversations, Responses and
Chat Completions, through the official SDK and as raw wire shapes."""

from __future__ import annotations

import concurrent.futures
import json
import threading
import urllib.request
from collections.abc import Callable
from typing import Any

import openai
import pytest
from conftest import TEST_KEY, FakeClock, error_of, send
from openai import OpenAI

from batchrun.simulator import RunningSimulator

Make = Callable[..., RunningSimulator]
# The live endpoints need no OpenAI-Beta header; sending none proves it.
HEADERS = {"Authorization": f"Bearer {TEST_KEY}", "Content-Type": "application/json"}
HI = {"model": "gpt-4o", "input": "hi"}
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def call(base_url: str, method: str, path: str, body: Any = None) -> Any:
    return send(base_url, method, path, body, headers=HEADERS)


def sdk(sim: RunningSimulator) -> OpenAI:
    return OpenAI(base_url=sim.base_url, api_key=TEST_KEY, max_retries=0)


# -- the official SDK ---------------------------------------------------------------------


def test_sdk_foreground_response_joins_a_conversation_and_reads_output_text(
    make_simulator: Make,
) -> None:
    sim = make_simulator(run_seconds=0.05)
    with sdk(sim) as client:
        conversation = client.conversations.create(
            metadata={"sheet": "q3"},
            items=[{"type": "message", "role": "user", "content": "Hello"}],
        )
        response = client.responses.create(
            model="gpt-4o",
            input="What is 2+2?",
            conversation=conversation.id,
            metadata={"row": "7"},
        )
        items = client.conversations.items.list(conversation.id, order="asc")
        again = client.conversations.retrieve(conversation.id)

    assert conversation.id.startswith("conv_") and conversation.object == "conversation"
    assert again.metadata == {"sheet": "q3"} and again.created_at == conversation.created_at
    assert (response.status, response.object, response.background) == (
        "completed",
        "response",
        False,
    )
    assert response.output_text.startswith("Simulated reply: ")
    assert response.metadata == {"row": "7"}
    assert response.conversation is not None and response.conversation.id == conversation.id
    usage = response.usage
    assert usage is not None and usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert [(item.type, item.role) for item in items.data] == [  # type: ignore[union-attr]
        ("message", "user"), ("message", "user"), ("message", "assistant"),
    ]  # fmt: skip
    assert items.data[2].id == response.output[0].id


def test_sdk_background_response_is_polled_from_queued_to_completed(
    make_simulator: Make, clock: FakeClock
) -> None:
    sim = make_simulator(clock=clock, run_seconds=1.0)
    with sdk(sim) as client:
        created = client.responses.create(model="gpt-4o", input="hi", background=True)
        seen = [created.status]
        for _ in range(2):
            clock.advance(0.5)
            polled = client.responses.retrieve(created.id)
            seen.append(polled.status)
    assert seen == ["queued", "in_progress", "completed"]
    assert created.output == [] and created.usage is None
    assert polled.output_text.startswith("Simulated reply: ") and polled.usage is not None
    assert polled.completed_at == int(clock.now)


def test_sdk_cancels_a_background_response_but_not_a_foreground_one(make_simulator: Make) -> None:
    sim = make_simulator(run_seconds=5.0)
    with sdk(sim) as client:
        background = client.responses.create(model="gpt-4o", input="hi", background=True)
        cancelled = client.responses.cancel(background.id)
        twice = client.responses.cancel(background.id)
    sim_fast = make_simulator(run_seconds=0)
    with sdk(sim_fast) as client:
        foreground = client.responses.create(model="gpt-4o", input="hi")
        with pytest.raises(openai.BadRequestError) as refused:
            client.responses.cancel(foreground.id)
    assert (cancelled.status, twice.status, cancelled.output) == ("cancelled", "cancelled", [])
    assert refused.value.message.endswith("Cannot cancel a synchronous response.")


def test_sdk_chat_completions_create_and_list_stored_ones_by_metadata(
    make_simulator: Make,
) -> None:
    sim = make_simulator()
    messages: Any = [{"role": "user", "content": "hi"}]
    with sdk(sim) as client:
        tagged = client.chat.completions.create(
            model="gpt-4o", messages=messages, store=True, metadata={"batchrun_key": "k1"}
        )
        client.chat.completions.create(
            model="gpt-4o", messages=messages, store=True, metadata={"batchrun_key": "k2"}
        )
        client.chat.completions.create(model="gpt-4o", messages=messages)  # not stored
        found = client.chat.completions.list(metadata={"batchrun_key": "k1"})
        every = client.chat.completions.list()
        read = client.chat.completions.retrieve(tagged.id)

    (choice,) = tagged.choices
    assert (choice.finish_reason, choice.message.role) == ("stop", "assistant")
    assert choice.message.content is not None and choice.message.content.startswith("Simulated")
    usage = tagged.usage
    assert usage is not None and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert [c.id for c in found.data] == [tagged.id]
    assert len(every.data) == 2 and every.data[0].id == tagged.id  # oldest first
    assert read.id == tagged.id and read.choices[0].message.content == choice.message.content


def test_sdk_streams_a_response_event_by_event(make_simulator: Make) -> None:
    sim = make_simulator(run_seconds=0)
    with sdk(sim) as client, client.responses.create(model="m", input="hi", stream=True) as stream:
        events = list(stream)
    assert [event.type for event in events] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed",
    ]  # fmt: skip
    assert [event.sequence_number for event in events] == list(range(len(events)))
    final = events[-1].response  # type: ignore[union-attr]
    assert events[4].delta == final.output_text  # type: ignore[union-attr]


def test_sdk_streams_a_chat_completion_in_chunks(make_simulator: Make) -> None:
    sim = make_simulator()
    with sdk(sim) as client:
        stream = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        chunks = list(stream)
    assert [chunk.choices[0].finish_reason for chunk in chunks] == [None, "stop"]
    assert (chunks[0].choices[0].delta.content or "").startswith("Simulated reply: ")


# -- the conversation lock ----------------------------------------------------------------

LOCKED = {
    "message": "Another process is currently operating on this conversation. Please retry in "
    "a few seconds.",
    "type": "invalid_request_error",
    "param": "conversation",
    "code": "conversation_locked",
}


def test_two_concurrent_requests_on_one_conversation_one_is_refused_locked(
    make_simulator: Make,
) -> None:
    sim = make_simulator(run_seconds=0.3)
    body = {**HI, "conversation": "conv_shared"}
    start = threading.Barrier(2)

    def create() -> Any:
        start.wait()
        return call(sim.base_url, "POST", "/responses", body)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        replies = list(pool.map(lambda _: create(), range(2)))
    assert sorted(reply.status for reply in replies) == [200, 400]
    refused = next(reply for reply in replies if reply.status == 400)
    assert error_of(refused) == LOCKED
    # Once the first is over, the conversation takes the next request.
    assert call(sim.base_url, "POST", "/responses", body).status == 200
    assert sim.stats()["responses_created"] == 2


def test_sdk_sees_the_lock_as_a_bad_request_with_its_code(
    make_simulator: Make, clock: FakeClock
) -> None:
    sim = make_simulator(clock=clock, run_seconds=1.0)
    with sdk(sim) as client:
        conversation = client.conversations.create()
        client.responses.create(model="m", input="a", conversation=conversation.id, background=True)
        with pytest.raises(openai.BadRequestError) as locked:
            client.responses.create(model="m", input="b", conversation=conversation.id)
        clock.advance(1.0)
        after = client.responses.create(
            model="m", input="b", conversation={"id": conversation.id}, background=True
        )
    assert locked.value.code == "conversation_locked"
    assert locked.value.param == "conversation"
    assert after.status == "queued"


def test_failed_and_cancelled_responses_free_the_conversation_and_add_nothing(
    make_simulator: Make, clock: FakeClock
) -> None:
    sim = make_simulator(clock=clock, run_seconds=1.0)
    body = {**HI, "conversation": "conv_1", "background": True}
    failing = call(sim.base_url, "POST", "/responses", {**body, "input": "x [sim:fail]"}).json
    clock.advance(1.0)
    cancelled = call(sim.base_url, "POST", "/responses", body).json
    call(sim.base_url, "POST", f"/responses/{cancelled['id']}/cancel")
    done_id = call(sim.base_url, "POST", "/responses", body).json["id"]
    clock.advance(1.0)
    done = call(sim.base_url, "GET", f"/responses/{done_id}").json
    items = call(sim.base_url, "GET", "/conversations/conv_1/items?order=asc").json
    failed = call(sim.base_url, "GET", f"/responses/{failing['id']}").json
    assert (failed["status"], failed["error"]) == (
        "failed", {"code": "server_error", "message": "Simulated failure."},
    )  # fmt: skip
    assert done["status"] == "completed"
    assert [item["role"] for item in items["data"]] == ["user", "assistant"]


# -- lifecycles and wire shapes -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "at", "status"),
    [
        pytest.param("[sim:fail]", 1.0, "failed", id="fail"),
        pytest.param("[sim:incomplete]", 1.0, "incomplete", id="incomplete"),
        pytest.param("[sim:slow]", 9.0, "in_progress", id="slow-running"),
        pytest.param("[sim:slow]", 10.0, "completed", id="slow-done"),
    ],
)
def test_markers_in_instructions_pick_the_background_outcome(
    make_simulator: Make, clock: FakeClock, text: str, at: float, status: str
) -> None:
    sim = make_simulator(clock=clock, run_seconds=1.0)
    body = {**HI, "instructions": f"Answer. {text}", "background": True}
    response_id = call(sim.base_url, "POST", "/responses", body).json["id"]
    clock.advance(at)
    response = call(sim.base_url, "GET", f"/responses/{response_id}").json
    assert response["status"] == status
    if status == "incomplete":
        assert response["incomplete_details"] == {"reason": "max_output_tokens"}
        assert response["output"][0]["status"] == "incomplete"


def test_response_object_echoes_the_request(base_url: str) -> None:
    body = {
        **HI,
        "instructions": "Be brief.",
        "temperature": 0.2,
        "reasoning": {"effort": "low"},
        "text": {"verbosity": "low"},
        "max_output_tokens": 64,
        "metadata": {"batchrun_key": "k1"},
    }
    response = call(base_url, "POST", "/responses", body).json
    assert response["id"].startswith("resp_") and isinstance(response["created_at"], int)
    assert (response["model"], response["instructions"], response["temperature"]) == (
        "gpt-4o", "Be brief.", 0.2,
    )  # fmt: skip
    assert response["reasoning"] == {"effort": "low", "summary": None}
    assert response["text"] == {"format": {"type": "text"}, "verbosity": "low"}
    assert (response["metadata"], response["max_output_tokens"]) == ({"batchrun_key": "k1"}, 64)
    (message,) = response["output"]
    assert (message["type"], message["role"], message["status"]) == (
        "message", "assistant", "completed",
    )  # fmt: skip
    assert message["content"][0]["type"] == "output_text"
    assert call(base_url, "GET", f"/responses/{response['id']}").json == response


def test_replies_are_a_function_of_the_request_alone(make_simulator: Make) -> None:
    texts = set()
    for _ in range(2):
        sim = make_simulator(run_seconds=0)
        texts.add(
            call(sim.base_url, "POST", "/responses", HI).json["output"][0]["content"][0]["text"]
        )
    other = call(sim.base_url, "POST", "/responses", {**HI, "input": "hello"}).json
    assert len(texts) == 1 and other["output"][0]["content"][0]["text"] not in texts


def test_previous_response_id_carries_the_context_forward(make_simulator: Make) -> None:
    sim = make_simulator(run_seconds=0)
    first = call(sim.base_url, "POST", "/responses", {**HI, "input": "x" * 400}).json
    second = call(
        sim.base_url, "POST", "/responses", {**HI, "previous_response_id": first["id"]}
    ).json
    assert second["previous_response_id"] == first["id"]
    assert second["usage"]["input_tokens"] > first["usage"]["input_tokens"]


def test_an_unstored_response_cannot_be_read_back(make_simulator: Make) -> None:
    sim = make_simulator(run_seconds=0)
    response = call(sim.base_url, "POST", "/responses", {**HI, "store": False}).json
    assert response["store"] is False
    assert call(sim.base_url, "GET", f"/responses/{response['id']}").status == 404


@pytest.mark.parametrize(
    ("config", "method", "path", "body", "status", "expected"),
    [
        pytest.param({}, "POST", "/responses", {"input": "hi"}, 400,
                     {"param": "model", "code": "missing_required_parameter",
                      "message": "Missing required parameter: 'model'."}, id="model-required"),
        pytest.param({}, "POST", "/responses", {**HI, "bogus": 1}, 400,
                     {"param": "bogus", "code": "unknown_parameter",
                      "message": "Unknown parameter: 'bogus'."}, id="unknown-parameter"),
        pytest.param({}, "POST", "/responses", {**HI, "temperature": 3}, 400,
                     {"type": "invalid_request_error", "param": "temperature",
                      "code": "decimal_above_max_value",
                      "message": "Invalid 'temperature': 3 is greater than the maximum of 2."},
                     id="temperature-3"),
        pytest.param({}, "POST", "/responses", {**HI, "max_output_tokens": 8}, 400,
                     {"param": "max_output_tokens", "code": "integer_below_min_value"},
                     id="max-output-tokens-minimum"),
        pytest.param({}, "POST", "/responses", {**HI, "input": 5}, 400,
                     {"param": "input", "code": "invalid_value"}, id="input-type"),
        pytest.param({}, "POST", "/responses", {**HI, "metadata": {"k": "v" * 513}}, 400,
                     {"param": "metadata.k", "code": "string_above_max_length"},
                     id="metadata-value-too-long"),
        pytest.param({}, "POST", "/responses",
                     {**HI, "conversation": "conv_1", "previous_response_id": "resp_1"}, 400,
                     {"code": "mutually_exclusive_parameters"}, id="conversation-and-previous"),
        pytest.param({}, "POST", "/responses", {**HI, "previous_response_id": "resp_nope"}, 400,
                     {"param": "previous_response_id", "code": "previous_response_not_found",
                      "message": "Previous response with id 'resp_nope' not found."},
                     id="unknown-previous-response"),
        pytest.param({"strict_threads": True}, "POST", "/responses",
                     {**HI, "conversation": "conv_nope"}, 404,
                     {"message": "Conversation with id 'conv_nope' not found.", "param": None},
                     id="unknown-conversation-when-strict"),
        pytest.param({}, "GET", "/responses/resp_nope", None, 404,
                     {"message": "Response with id 'resp_nope' not found.",
                      "type": "invalid_request_error", "param": None, "code": None},
                     id="unknown-response"),
        pytest.param({}, "POST", "/responses/resp_nope/cancel", None, 404,
                     {"message": "Response with id 'resp_nope' not found."},
                     id="cancel-unknown-response"),
        pytest.param({}, "POST", "/conversations", {"items": [{"role": "user",
                     "content": "x"}] * 21}, 400, {"param": "items",
                     "code": "array_above_max_length"}, id="conversation-items-at-most-20"),
        pytest.param({}, "POST", "/conversations", {"title": "x"}, 400,
                     {"param": "title", "code": "unknown_parameter"},
                     id="conversation-unknown-parameter"),
        pytest.param({}, "POST", "/chat/completions", {"model": "gpt-4o"}, 400,
                     {"param": "messages", "code": "missing_required_parameter"},
                     id="chat-messages-required"),
        pytest.param({}, "POST", "/chat/completions", {**CHAT, "messages": []}, 400,
                     {"param": "messages", "code": "array_below_min_length"}, id="chat-empty"),
        pytest.param({}, "POST", "/chat/completions", {**CHAT, "temperature": 3}, 400,
                     {"param": "temperature", "code": "decimal_above_max_value"},
                     id="chat-temperature-3"),
        pytest.param({}, "GET", "/chat/completions/chatcmpl-nope", None, 404,
                     {"message": "Chat completion with id 'chatcmpl-nope' not found."},
                     id="unknown-chat-completion"),
        pytest.param({}, "GET", "/chat/completions?limit=0", None, 400,
                     {"param": "limit", "code": "integer_below_min_value"}, id="list-limit"),
        pytest.param({}, "POST", "/responses", b"{oops", 400, {"param": None},
                     id="body-not-json"),
    ],
)  # fmt: skip
def test_errors_use_openais_envelope(
    make_simulator: Make,
    config: dict[str, Any],
    method: str,
    path: str,
    body: Any,
    status: int,
    expected: dict[str, Any],
) -> None:
    sim = make_simulator(run_seconds=0, **config)
    reply = call(sim.base_url, method, path, body)
    assert reply.status == status, reply.json
    error = error_of(reply)
    assert {key: error[key] for key in expected} == expected
    assert "x-ratelimit-remaining-requests" in reply.headers
    assert sim.stats()["responses_created"] == 0


def test_the_key_is_checked_on_the_live_endpoints_too(make_simulator: Make) -> None:
    sim = make_simulator(api_key="sk-right-0000000000")
    for path, body in (("/responses", HI), ("/chat/completions", CHAT), ("/conversations", {})):
        reply = call(sim.base_url, "POST", path, body)
        assert (reply.status, error_of(reply)["code"]) == (401, "invalid_api_key")


def test_creates_share_the_rpm_bucket_and_reads_do_not_draw_from_it(
    make_simulator: Make, clock: FakeClock
) -> None:
    sim = make_simulator(clock=clock, run_seconds=0, rpm=60, burst=2)
    first = call(sim.base_url, "POST", "/responses", HI)
    assert call(sim.base_url, "POST", "/chat/completions", CHAT).status == 200
    limited = call(sim.base_url, "POST", "/responses", HI)
    assert (limited.status, error_of(limited)["code"]) == (429, "rate_limit_exceeded")
    assert limited.headers["retry-after"] == "1"
    assert call(sim.base_url, "POST", "/conversations", {}).status == 200  # not a create
    assert call(sim.base_url, "GET", f"/responses/{first.json['id']}").status == 200
    clock.advance(1.0)
    assert call(sim.base_url, "POST", "/chat/completions", CHAT).status == 200
    stats = sim.stats()
    assert stats["rate_limited"] == 1
    assert stats["requests"]["POST /v1/responses"] == {"200": 1, "429": 1}
    assert stats["requests"]["GET /v1/responses/{response_id}"] == {"200": 1}


def test_read_rpm_limits_the_live_reads(make_simulator: Make, clock: FakeClock) -> None:
    sim = make_simulator(clock=clock, read_rpm=60, burst=1)
    assert call(sim.base_url, "GET", "/chat/completions").status == 200
    assert call(sim.base_url, "GET", "/conversations/conv_1/items").status == 429


def test_a_dropped_connection_after_the_response_is_created(make_simulator: Make) -> None:
    sim = make_simulator(run_seconds=0, reset_rate=1.0)
    with sdk(sim) as client, pytest.raises(openai.APIConnectionError):
        client.responses.create(model="gpt-4o", input="hi")
    with sdk(sim) as client, pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    stats = sim.stats()
    assert (stats["responses_created"], stats["chat_completions_created"]) == (1, 1)
    assert stats["faults"]["reset"] == 2


def test_an_injected_server_error_changes_nothing(make_simulator: Make) -> None:
    sim = make_simulator(fail_rate=1.0, seed=3)
    reply = call(sim.base_url, "POST", "/responses", HI)
    assert reply.status in (500, 502, 503) and error_of(reply)["type"] == "server_error"
    assert sim.stats()["responses_created"] == 0


def test_duplicates_are_counted_per_identical_body(make_simulator: Make) -> None:
    sim = make_simulator(run_seconds=0)
    for body in (HI, HI, {**HI, "input": "other"}):
        call(sim.base_url, "POST", "/responses", body)
    call(sim.base_url, "POST", "/chat/completions", CHAT)
    call(sim.base_url, "POST", "/chat/completions", CHAT)
    stats = sim.stats()
    assert (stats["responses_created"], stats["duplicate_responses"]) == (3, 1)
    assert (stats["chat_completions_created"], stats["duplicate_chat_completions"]) == (2, 1)
    sim.reset()
    assert sim.stats()["responses_created"] == 0


def test_chat_list_pages_and_filters_by_every_metadata_pair(make_simulator: Make) -> None:
    sim = make_simulator()
    ids = []
    for index in range(4):
        body = {**CHAT, "store": True, "metadata": {"job": "a", "row": str(index % 2)}}
        ids.append(call(sim.base_url, "POST", "/chat/completions", body).json["id"])
    both = call(sim.base_url, "GET", "/chat/completions?metadata[job]=a&metadata[row]=1").json
    assert [c["id"] for c in both["data"]] == [ids[1], ids[3]]
    assert both["data"][0]["metadata"] == {"job": "a", "row": "1"}
    newest = call(sim.base_url, "GET", "/chat/completions?order=desc&limit=1").json
    assert ([c["id"] for c in newest["data"]], newest["has_more"]) == ([ids[3]], True)
    after = call(sim.base_url, "GET", f"/chat/completions?after={ids[1]}").json
    assert [c["id"] for c in after["data"]] == ids[2:]
    assert call(sim.base_url, "GET", "/chat/completions?model=other").json["data"] == []


def test_background_stream_announces_the_queued_response(make_simulator: Make) -> None:
    sim = make_simulator(run_seconds=1.0)
    request = urllib.request.Request(
        f"{sim.base_url}/responses",
        data=json.dumps({**HI, "background": True, "stream": True}).encode(),
        headers=HEADERS,
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("text/event-stream")
        text = answer.read().decode()
    blocks = [block.split("\n") for block in text.strip().split("\n\n")]
    assert [lines[0] for lines in blocks] == ["event: response.created", "event: response.queued"]
    assert json.loads(blocks[0][1].removeprefix("data: "))["response"]["status"] == "queued"


def test_conversation_items_page_newest_first_by_default(make_simulator: Make) -> None:
    sim = make_simulator()
    items = [{"role": "user", "content": f"m{index}"} for index in range(3)]
    conversation = call(sim.base_url, "POST", "/conversations", {"items": items}).json
    path = f"/conversations/{conversation['id']}/items"
    newest = call(sim.base_url, "GET", f"{path}?limit=2").json
    texts = [item["content"][0]["text"] for item in newest["data"]]
    assert (texts, newest["has_more"]) == (["m2", "m1"], True)
    rest = call(sim.base_url, "GET", f"{path}?after={newest['last_id']}").json
    assert [item["content"][0]["text"] for item in rest["data"]] == ["m0"]
    assert sim.stats()["conversations"] == 1


def test_any_well_formed_conversation_id_exists_unless_strict(make_simulator: Make) -> None:
    sim = make_simulator()
    read = call(sim.base_url, "GET", "/conversations/conv_from_a_sheet").json
    assert (read["id"], read["object"], read["metadata"]) == (
        "conv_from_a_sheet", "conversation", {},
    )  # fmt: skip
    malformed = call(sim.base_url, "GET", "/conversations/conv.x")
    assert error_of(malformed)["message"] == "Conversation with id 'conv.x' not found."
    strict = make_simulator(strict_threads=True)
    assert call(strict.base_url, "GET", "/conversations/conv_from_a_sheet").status == 404


def test_a_run_log_carries_responses_and_stored_completions_to_the_next_simulator(
    make_simulator: Make, clock: FakeClock, tmp_path: Any
) -> None:
    """What ``--simulate`` reruns rely on: the next process's simulator knows them."""
    log = str(tmp_path / "job.simulator.jsonl")
    first = make_simulator(clock=clock, run_seconds=1.0, run_log=log)
    background = {**HI, "background": True, "conversation": "conv_1"}
    response = call(first.base_url, "POST", "/responses", background).json
    call(first.base_url, "POST", "/responses", background)  # locked: not created, not logged
    stored = {**CHAT, "store": True, "metadata": {"batchrun_key": "k1"}}
    completion = call(first.base_url, "POST", "/chat/completions", stored).json
    call(first.base_url, "POST", "/chat/completions", CHAT)  # not stored: not logged
    first.stop()

    clock.advance(1.0)
    again = make_simulator(clock=clock, run_seconds=1.0, run_log=log)
    followed = call(again.base_url, "GET", f"/responses/{response['id']}").json
    found = call(again.base_url, "GET", "/chat/completions?metadata[batchrun_key]=k1").json
    items = call(again.base_url, "GET", "/conversations/conv_1/items").json
    assert (followed["status"], followed["created_at"]) == ("completed", response["created_at"])
    assert [c["id"] for c in found["data"]] == [completion["id"]]
    assert found["data"][0]["choices"] == completion["choices"]
    assert [item["role"] for item in items["data"]] == ["assistant", "user"]
    assert again.stats()["responses_created"] == 1


def test_a_reply_stops_at_the_requests_output_limit(make_simulator: Make) -> None:
    # Before: chat said completion_tokens 85 with finish_reason "stop" at
    # max_completion_tokens 1, and a response 36 output tokens "completed" at 16.
    sim = make_simulator(run_seconds=0)
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "n": 2}
    for limit in ("max_completion_tokens", "max_tokens"):
        answer = send(sim.base_url, "POST", "/chat/completions", {**chat, limit: 1}).json
        assert [choice["finish_reason"] for choice in answer["choices"]] == ["length"] * 2
        assert answer["usage"]["completion_tokens"] == 2
    body = {"model": "gpt-4o-mini", "input": "x"}
    assert send(sim.base_url, "POST", "/responses", body).json["usage"]["output_tokens"] > 16
    answer = send(sim.base_url, "POST", "/responses", {**body, "max_output_tokens": 16}).json
    assert (answer["status"], answer["incomplete_details"]) == (
        "incomplete",
        {"reason": "max_output_tokens"},
    )
    assert answer["usage"]["output_tokens"] == 16
    assert answer["usage"]["input_tokens_details"] == {"cached_tokens": 0, "cache_write_tokens": 0}
    roomy = send(sim.base_url, "POST", "/responses", {**body, "max_output_tokens": 500}).json
    assert roomy["status"] == "completed"


def test_a_large_body_is_read_and_one_past_the_limit_is_refused_in_the_envelope(
    make_simulator: Make,
) -> None:
    # Before: any body over aiohttp's 1 MiB was a plain-text 413 without rate-limit
    # headers, and a row of a long context failed against the simulator only.
    from batchrun.simulator.app import MAX_BODY

    sim = make_simulator(run_seconds=0)
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "y" * 3_000_000}]}
    assert send(sim.base_url, "POST", "/chat/completions", chat).status == 200
    chat["messages"][0]["content"] = "y" * MAX_BODY
    refused = send(sim.base_url, "POST", "/chat/completions", chat)
    assert refused.status == 413
    assert error_of(refused)["message"].startswith("The request body is too large")
    assert "x-ratelimit-limit-requests" in refused.headers
