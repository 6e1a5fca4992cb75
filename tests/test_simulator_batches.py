"""The simulator's Batch API over real HTTP on loopback: files and batches through the
official SDK, their lifecycle on a fake clock, the faults, the limits and the run log."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import TEST_KEY, FakeClock, error_of, send
from openai import OpenAI

from batchrun.simulator import RunningSimulator

Make = Callable[..., RunningSimulator]
HEADERS = {"Authorization": f"Bearer {TEST_KEY}", "Content-Type": "application/json"}
SECONDS = 10.0  # batch_seconds: validating to 1 s, lines over 1-9 s, finalizing to 10 s


def sdk(sim: RunningSimulator) -> OpenAI:
    return OpenAI(base_url=sim.base_url, api_key=TEST_KEY, max_retries=0)


def call(base_url: str, method: str, path: str, body: Any = None) -> Any:
    return send(base_url, method, path, body, headers=HEADERS)


def line(custom_id: str, body: dict[str, Any], url: str = "/v1/responses") -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(item) + "\n" for item in lines).encode()


def ask(text: str) -> dict[str, Any]:
    return {"model": "gpt-4o", "input": text}


def submit(
    client: OpenAI,
    lines: list[dict[str, Any]],
    endpoint: str = "/v1/responses",
    metadata: dict[str, str] | None = None,
) -> Any:
    """Upload ``lines`` and create a batch of them; the batch as created."""
    uploaded = client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
    return client.batches.create(
        input_file_id=uploaded.id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window="24h",
        metadata=metadata,
    )


def records(client: OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    """The lines of an output or error file ([] when the batch wrote none)."""
    if file_id is None:
        return []
    return [json.loads(text) for text in client.files.content(file_id).text.splitlines()]


def by_custom_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["custom_id"]: row for row in rows}


# -- files --------------------------------------------------------------------------------


def test_sdk_uploads_reads_lists_and_deletes_a_file(make_simulator: Make) -> None:
    sim = make_simulator()
    data = jsonl([line("r1", ask("hi"))])
    with sdk(sim) as client:
        uploaded = client.files.create(file=("rows.jsonl", data), purpose="batch")
        other = client.files.create(file=("notes.txt", b"x"), purpose="user_data")
        read = client.files.retrieve(uploaded.id)
        content = client.files.content(uploaded.id)
        batch_files = client.files.list(purpose="batch")
        every = client.files.list()
        deleted = client.files.delete(uploaded.id)
        with pytest.raises(openai.NotFoundError) as gone:
            client.files.retrieve(uploaded.id)
        left = client.files.list()

    assert uploaded.id.startswith("file-") and uploaded.object == "file"
    assert (uploaded.bytes, uploaded.filename, uploaded.purpose, uploaded.status) == (
        len(data), "rows.jsonl", "batch", "processed",
    )  # fmt: skip
    assert uploaded.expires_at is None and read == uploaded
    assert content.read() == data
    assert [f.id for f in batch_files.data] == [uploaded.id]
    assert [f.id for f in every.data] == [other.id, uploaded.id]  # newest first
    assert (deleted.id, deleted.deleted) == (uploaded.id, True)
    assert gone.value.message.endswith(f"No such File object: {uploaded.id}")
    assert [f.id for f in left.data] == [other.id]
    assert sim.stats()["requests"]["POST /v1/files"] == {"200": 2}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({"purpose": "batch"}, {"param": "file", "code": "missing_required_parameter"},
                     id="no-file"),
        pytest.param({"file": b"x"}, {"param": "purpose", "code": "missing_required_parameter"},
                     id="no-purpose"),
        pytest.param({"file": b"x", "purpose": "training"},
                     {"param": "purpose", "code": "invalid_value",
                      "message": "Invalid value: 'training'. Supported values are: "
                      "'assistants', 'batch', 'fine-tune', 'vision', 'user_data', and 'evals'."},
                     id="unknown-purpose"),
    ],
)  # fmt: skip
def test_a_bad_upload_is_a_400_in_openais_envelope(
    make_simulator: Make, fields: dict[str, Any], expected: dict[str, Any]
) -> None:
    sim = make_simulator()
    boundary = "b0undary"
    parts = []
    for name, value in fields.items():
        filename = '; filename="in.jsonl"' if name == "file" else ""
        text = value.decode() if isinstance(value, bytes) else value
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{filename}\r\n\r\n'
            f"{text}\r\n"
        )
    body = ("".join(parts) + f"--{boundary}--\r\n").encode()
    headers = {**HEADERS, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    reply = send(sim.base_url, "POST", "/files", body, headers=headers)
    assert reply.status == 400
    error = error_of(reply)
    assert {key: error[key] for key in expected} == expected
    assert sim.stats()["files_uploaded"] == 0


def test_an_upload_that_is_not_multipart_and_unknown_ids_are_refused(make_simulator: Make) -> None:
    sim = make_simulator()
    not_multipart = call(sim.base_url, "POST", "/files", {"purpose": "batch"})
    unknown = call(sim.base_url, "GET", "/files/file-nope/content")
    deleted = call(sim.base_url, "DELETE", "/files/file-nope")
    assert (not_multipart.status, error_of(not_multipart)["code"]) == (400, "invalid_content_type")
    assert (unknown.status, error_of(unknown)["message"]) == (404, "No such File object: file-nope")
    assert deleted.status == 404


# -- the lifecycle and the answers --------------------------------------------------------


def test_sdk_batch_moves_with_the_clock_and_answers_as_direct_posts_would(
    make_simulator: Make, clock: FakeClock
) -> None:
    sim = make_simulator(clock=clock, batch_seconds=SECONDS, run_seconds=0)
    questions = {f"row-{n}": f"question {n}" for n in range(4)}
    with sdk(sim) as client:
        created = submit(
            client,
            [line(key, ask(text)) for key, text in questions.items()],
            metadata={"job": "q3"},
        )
        seen = [(created.status, created.request_counts.total)]  # type: ignore[union-attr]
        for step in (1.0, 4.0, 4.5, 0.5):
            clock.advance(step)
            polled = client.batches.retrieve(created.id)
            counts = polled.request_counts
            assert counts is not None
            seen.append((polled.status, counts.completed))
        output = by_custom_id(records(client, polled.output_file_id))
        direct = {key: client.responses.create(**ask(text)) for key, text in questions.items()}

    assert created.id.startswith("batch_") and created.object == "batch"
    assert (created.endpoint, created.completion_window, created.metadata) == (
        "/v1/responses", "24h", {"job": "q3"},
    )  # fmt: skip
    assert created.output_file_id is None and created.in_progress_at is None
    # Line i of 4 is answered at 1 + 2 (i + 1) seconds: two by 5 s, all four by 9 s.
    assert seen == [
        ("validating", 0), ("in_progress", 0), ("in_progress", 2), ("finalizing", 4),
        ("completed", 4),
    ]  # fmt: skip
    start = int(clock.now - SECONDS)
    assert (polled.in_progress_at, polled.finalizing_at, polled.completed_at) == (
        start + 1, start + 9, start + 10,
    )  # fmt: skip
    assert polled.error_file_id is None and polled.errors is None
    assert polled.expires_at == start + 24 * 3600
    assert set(output) == set(questions)
    for key, response in direct.items():
        record = output[key]
        assert record["id"].startswith("batch_req_") and record["error"] is None
        answer = record["response"]
        assert answer["status_code"] == 200 and answer["request_id"]
        body = answer["body"]
        assert body["object"] == "response" and body["status"] == "completed"
        assert body["output"][0]["content"][0]["text"] == response.output_text
        assert response.usage is not None
        assert body["usage"] == response.usage.model_dump(exclude_unset=True)
    usage = polled.usage
    assert usage is not None
    assert usage.output_tokens == sum(r.usage.output_tokens for r in direct.values() if r.usage)


def test_a_chat_batch_answers_as_chat_completions_would(
    make_simulator: Make, clock: FakeClock
) -> None:
    sim = make_simulator(clock=clock, batch_seconds=SECONDS)
    chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}], "n": 2}
    with sdk(sim) as client:
        batch = submit(
            client, [line("c1", chat, "/v1/chat/completions")], endpoint="/v1/chat/completions"
        )
        clock.advance(SECONDS)
        done = client.batches.retrieve(batch.id)
        (record,) = records(client, done.output_file_id)
        direct = client.chat.completions.create(**chat)
    body = record["response"]["body"]
    assert (done.status, body["object"]) == ("completed", "chat.completion")
    assert [c["message"]["content"] for c in body["choices"]] == [
        c.message.content for c in direct.choices
    ]
    assert direct.usage is not None and body["usage"] == direct.usage.model_dump(exclude_unset=True)


def test_output_lines_are_not_in_input_order(make_simulator: Make, clock: FakeClock) -> None:
    sim = make_simulator(clock=clock, batch_seconds=0)
    keys = [f"k{n:02d}" for n in range(20)]
    with sdk(sim) as client:
        batch = submit(client, [line(key, ask(key)) for key in keys])
        done = client.batches.retrieve(batch.id)
        order = [row["custom_id"] for row in records(client, done.output_file_id)]
        again = [row["custom_id"] for row in records(client, done.output_file_id)]
    assert sorted(order) == keys and order != keys
    assert again == order  # shuffled once, when the batch ended
    assert done.request_counts is not None and done.request_counts.completed == 20


def test_lines_the_endpoint_refuses_go_to_the_error_file_with_its_answer(
    make_simulator: Make, clock: FakeClock
) -> None:
    sim = make_simulator(clock=clock, batch_seconds=0)
    lines = [
        line("good", ask("hi")),
        line("hot", {**ask("hi"), "temperature": 9}),
        line("no-model", {"input": "hi"}),
    ]
    with sdk(sim) as client:
        mixed = client.batches.retrieve(submit(client, lines).id)
        errors = by_custom_id(records(client, mixed.error_file_id))
        output = by_custom_id(records(client, mixed.output_file_id))
        refused = client.batches.retrieve(submit(client, lines[1:]).id)

    assert mixed.status == "completed" and set(output) == {"good"}
    assert mixed.request_counts is not None
    assert (mixed.request_counts.completed, mixed.request_counts.failed) == (1, 2)
    hot = errors["hot"]
    assert hot["error"] is None and hot["response"]["status_code"] == 400
    assert hot["response"]["body"]["error"]["code"] == "decimal_above_max_value"
    assert errors["no-model"]["response"]["body"]["error"]["param"] == "model"
    # Completed, every line failed, no output file.
    assert (refused.status, refused.output_file_id) == ("completed", None)
    assert refused.error_file_id is not None
    assert sim.stats()["responses_created"] == 1


def test_an_endpoint_the_simulator_does_not_serve_answers_each_line_404(
    make_simulator: Make,
) -> None:
    sim = make_simulator(batch_seconds=0)
    body = {"model": "text-embedding-3-small", "input": "hi"}
    with sdk(sim) as client:
        batch = submit(client, [line("e1", body, "/v1/embeddings")], endpoint="/v1/embeddings")
        done = client.batches.retrieve(batch.id)
        (record,) = records(client, done.error_file_id)
    assert done.status == "completed" and done.output_file_id is None
    assert record["response"]["status_code"] == 404
    assert record["response"]["body"]["error"]["message"] == "Invalid URL (POST /v1/embeddings)"


def test_a_line_joining_a_conversation_adds_its_items_without_the_batch_being_read(
    make_simulator: Make, clock: FakeClock
) -> None:
    sim = make_simulator(clock=clock, batch_seconds=SECONDS)
    with sdk(sim) as client:
        submit(client, [line("t1", {**ask("remember this"), "conversation": "conv_1"})])
        before = client.conversations.items.list("conv_1")
        clock.advance(SECONDS)
        after = client.conversations.items.list("conv_1", order="asc")
    assert before.data == []
    assert [item.role for item in after.data] == ["user", "assistant"]  # type: ignore[union-attr]


# -- refused batches ----------------------------------------------------------------------


def test_bad_lines_fail_the_batch_with_their_line_numbers(
    make_simulator: Make, clock: FakeClock
) -> None:
    sim = make_simulator(clock=clock, batch_seconds=SECONDS)
    data = (
        jsonl(
            [
                line("a", ask("1")),
                line("b", ask("2"), url="/v1/chat/completions"),
                line("a", ask("3")),
                {"custom_id": "c", "method": "GET", "url": "/v1/responses", "body": {}},
                {"custom_id": "d", "method": "POST", "url": "/v1/responses"},
            ]
        )
        + b"{not json\n"
    )
    with sdk(sim) as client:
        uploaded = client.files.create(file=("in.jsonl", data), purpose="batch")
        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/responses", completion_window="24h"
        )
        validating = client.batches.retrieve(batch.id).status
        clock.advance(1.0)
        failed = client.batches.retrieve(batch.id)

    assert (validating, failed.status, failed.failed_at) == (
        "validating", "failed", int(clock.now),
    )  # fmt: skip
    assert failed.in_progress_at is None and failed.output_file_id is None
    assert failed.errors is not None and failed.errors.data is not None
    found = [(e.line, e.code, e.param) for e in failed.errors.data]
    assert found == [
        (2, "invalid_url", "url"),
        (3, "duplicate_custom_id", "custom_id"),
        (4, "invalid_value", "method"),
        (5, "missing_required_parameter", "body"),
        (6, "invalid_json_line", None),
    ]
    assert failed.request_counts is not None and failed.request_counts.total == 0
    assert sim.stats()["responses_created"] == 0


@pytest.mark.parametrize(
    ("change", "status", "expected"),
    [
        pytest.param({"endpoint": "/v1/assistants"}, 400,
                     {"param": "endpoint", "code": "invalid_value"}, id="endpoint"),
        pytest.param({"completion_window": "48h"}, 400,
                     {"param": "completion_window", "code": "invalid_value",
                      "message": "Invalid value: '48h'. Supported values are: '24h'."},
                     id="window"),
        pytest.param({"input_file_id": "file-nope"}, 404,
                     {"param": "input_file_id", "message": "No such File object: file-nope"},
                     id="unknown-file"),
        pytest.param({"input_file_id": None}, 400,
                     {"param": "input_file_id", "code": "missing_required_parameter"},
                     id="file-required"),
        pytest.param({"priority": "high"}, 400,
                     {"param": "priority", "code": "unknown_parameter"}, id="unknown-field"),
        pytest.param({"metadata": {"k": "v" * 513}}, 400,
                     {"param": "metadata.k", "code": "string_above_max_length"},
                     id="metadata-too-long"),
    ],
)  # fmt: skip
def test_a_bad_create_batch_request_is_refused(
    make_simulator: Make, change: dict[str, Any], status: int, expected: dict[str, Any]
) -> None:
    sim = make_simulator()
    with sdk(sim) as client:
        uploaded = client.files.create(
            file=("in.jsonl", jsonl([line("a", ask("1"))])), purpose="batch"
        )
    request = {
        "input_file_id": uploaded.id,
        "endpoint": "/v1/responses",
        "completion_window": "24h",
    }
    request = {key: value for key, value in {**request, **change}.items() if value is not None}
    reply = call(sim.base_url, "POST", "/batches", request)
    assert reply.status == status
    error = error_of(reply)
    assert {key: error[key] for key in expected} == expected
    assert sim.stats()["batches_created"] == 0


def test_a_file_not_uploaded_for_batch_is_refused(make_simulator: Make) -> None:
    sim = make_simulator()
    with sdk(sim) as client:
        uploaded = client.files.create(file=("in.jsonl", b"{}"), purpose="user_data")
        with pytest.raises(openai.BadRequestError) as refused:
            client.batches.create(
                input_file_id=uploaded.id, endpoint="/v1/responses", completion_window="24h"
            )
    assert refused.value.param == "input_file_id"
    assert "purpose 'user_data'" in refused.value.message


def test_at_most_50000_lines_a_batch(make_simulator: Make, clock: FakeClock) -> None:
    sim = make_simulator(clock=clock, batch_seconds=SECONDS)
    template = line("r00000", {"model": "m", "input": "x"}, "/v1/embeddings")
    with sdk(sim) as client:
        made = []
        for count in (50_000, 50_001):
            lines = [{**template, "custom_id": f"r{n:05d}"} for n in range(count)]
            made.append(submit(client, lines, endpoint="/v1/embeddings"))
        clock.advance(1.0)  # validated; no line due yet
        fits, too_many = (client.batches.retrieve(batch.id) for batch in made)
    assert fits.status == "in_progress"
    assert fits.request_counts is not None and fits.request_counts.total == 50_000
    assert too_many.status == "failed"
    assert too_many.errors is not None and too_many.errors.data is not None
    (error,) = too_many.errors.data
    assert error.code == "too_many_requests" and "50,000" in (error.message or "")


# -- faults and cancel --------------------------------------------------------------------


def test_fail_lines_puts_matching_lines_in_the_error_file_as_server_errors(
    make_simulator: Make, clock: FakeClock
) -> None:
    sim = make_simulator(clock=clock, batch_seconds=SECONDS, batch_fail_lines="[13579]$")
    keys = [f"row-{n}" for n in range(6)]
    with sdk(sim) as client:
        batch = submit(client, [line(key, ask(key)) for key in keys])
        clock.advance(SECONDS)
        done = client.batches.retrieve(batch.id)
        output = by_custom_id(records(client, done.output_file_id))
        errors = by_custom_id(records(client, done.error_file_id))
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (3, 3)
    assert set(output) == {"row-0", "row-2", "row-4"}
    assert set(errors) == {"row-1", "row-3", "row-5"}
    assert all(row["response"] is None for row in errors.values())
    assert {row["error"]["code"] for row in errors.values()} == {"server_error"}
    assert sim.stats()["responses_created"] == 3  # the failed lines were never sent


def test_expire_answers_the_first_half_and_leaves_the_rest_in_neither_file(
    make_simulator: Make, clock: FakeClock
) -> None:
    sim = make_simulator(clock=clock, batch_seconds=SECONDS, batch_expire=True)
    keys = [f"row-{n}" for n in range(5)]
    with sdk(sim) as client:
        batch = submit(client, [line(key, ask(key)) for key in keys])
        clock.advance(SECONDS - 0.5)
        running = client.batches.retrieve(batch.id)
        clock.advance(0.5)
        expired = client.batches.retrieve(batch.id)
        output = by_custom_id(records(client, expired.output_file_id))
    assert running.status == "in_progress"
    assert (expired.status, expired.expired_at, expired.completed_at) == (
        "expired", int(clock.now), None,
    )  # fmt: skip
    assert expired.expires_at == int(clock.now)
    assert set(output) == {"row-0", "row-1"} and expired.error_file_id is None
    assert expired.request_counts is not None
    assert (expired.request_counts.total, expired.request_counts.completed) == (5, 2)


def test_cancel_keeps_the_lines_answered_so_far(make_simulator: Make, clock: FakeClock) -> None:
    sim = make_simulator(clock=clock, batch_seconds=SECONDS)
    start = int(clock.now)
    keys = [f"row-{n}" for n in range(8)]
    with sdk(sim) as client:
        batch = submit(client, [line(key, ask(key)) for key in keys])
        clock.advance(5.0)  # half the in-progress stretch: four lines answered
        cancelling = client.batches.cancel(batch.id)
        clock.advance(0.5)
        still = client.batches.retrieve(batch.id)
        clock.advance(0.5)
        cancelled = client.batches.cancel(batch.id)  # a second cancel changes nothing
        output = by_custom_id(records(client, cancelled.output_file_id))
        other = submit(client, [line("x", ask("x"))])
        clock.advance(SECONDS)
        with pytest.raises(openai.BadRequestError) as late:
            client.batches.cancel(other.id)
    assert (cancelling.status, cancelling.cancelling_at) == ("cancelling", start + 5)
    assert still.status == "cancelling"
    assert (cancelled.status, cancelled.cancelled_at) == ("cancelled", start + 6)
    assert cancelled.completed_at is None and cancelled.error_file_id is None
    assert set(output) == {"row-0", "row-1", "row-2", "row-3"}
    assert cancelled.request_counts is not None
    assert (cancelled.request_counts.total, cancelled.request_counts.completed) == (8, 4)
    assert late.value.message.endswith("Cannot cancel a batch with status 'completed'.")


def test_list_pages_batches_newest_first(make_simulator: Make) -> None:
    sim = make_simulator()
    with sdk(sim) as client:
        ids = [submit(client, [line("a", ask(str(n)))]).id for n in range(3)]
        first = client.batches.list(limit=2)
        rest = client.batches.list(limit=2, after=first.data[-1].id)
        every = [batch.id for batch in client.batches.list(limit=1)]  # auto-paging
    assert ([b.id for b in first.data], first.has_more) == (ids[:0:-1], True)
    assert ([b.id for b in rest.data], rest.has_more) == ([ids[0]], False)
    assert every == ids[::-1]
    assert sim.stats()["batches_created"] == 3


def test_batch_and_file_creates_do_not_draw_from_rpm_and_reads_do_from_read_rpm(
    make_simulator: Make, clock: FakeClock
) -> None:
    sim = make_simulator(clock=clock, run_seconds=0, rpm=60, read_rpm=60, burst=1)
    assert call(sim.base_url, "POST", "/responses", ask("hi")).status == 200
    with sdk(sim) as client:
        batch = submit(client, [line("a", ask("a"))])  # the rpm bucket is empty: still 200
        client.batches.retrieve(batch.id)
        with pytest.raises(openai.RateLimitError):
            client.files.list()
    stats = sim.stats()
    assert stats["requests"]["POST /v1/batches"] == {"200": 1}
    assert stats["requests"]["GET /v1/files"] == {"429": 1}


# -- the run log --------------------------------------------------------------------------


def test_a_rerun_replays_files_batches_and_cancels_from_the_log(
    make_simulator: Make, clock: FakeClock, tmp_path: Path
) -> None:
    """What ``--simulate`` reruns rely on: a batch created by one process completes in the
    next, with the same output, and an upload's bytes live beside the log, not in it."""
    log = tmp_path / "job.simulator.jsonl"
    config = {"clock": clock, "batch_seconds": SECONDS, "run_log": str(log)}
    data = jsonl([line(f"row-{n}", ask(str(n)) | {"input": "x" * 500}) for n in range(4)])
    first = make_simulator(**config)
    with sdk(first) as client:
        uploaded = client.files.create(file=("in.jsonl", data), purpose="batch")
        kept = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/responses", completion_window="24h"
        )
        stopped = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/responses", completion_window="24h"
        )
        clock.advance(5.0)
        client.batches.cancel(stopped.id)
    first.stop()
    assert (tmp_path / "job.simulator.jsonl.files" / uploaded.id).read_bytes() == data
    assert log.stat().st_size < len(data)

    clock.advance(SECONDS)
    outputs = []
    for _ in range(2):
        again = make_simulator(**config)
        with sdk(again) as client:
            assert client.files.retrieve(uploaded.id).created_at == uploaded.created_at
            assert client.files.content(uploaded.id).read() == data
            done = client.batches.retrieve(kept.id)
            cancelled = client.batches.retrieve(stopped.id)
            outputs.append(client.files.content(done.output_file_id or "").read())
            cancelled_rows = records(client, cancelled.output_file_id)
        again.stop()
        assert (done.status, done.created_at) == ("completed", kept.created_at)
        assert cancelled.status == "cancelled"
        assert len(cancelled_rows) == 2
    assert outputs[0] == outputs[1]  # the same ids and replies, replay after replay
    assert {row["custom_id"] for row in records_of(outputs[0])} == {f"row-{n}" for n in range(4)}


def records_of(content: bytes) -> list[dict[str, Any]]:
    return [json.loads(text) for text in content.splitlines()]
