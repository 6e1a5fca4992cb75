"""The Batch API's pure parts without HTTP: lines, splitting by lines and by bytes, and
joining output and error lines back to rows."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchrun.batch import lines
from batchrun.batch.join import answer_records, fail_invalid_batch, fail_unanswered, settle_line
from batchrun.batch.lines import (
    PartWriter,
    batch_line,
    batch_problem,
    fits,
    jsonl_part_path,
    too_large,
)
from batchrun.endpoints import Endpoint, endpoint_named
from batchrun.report import Outcome, RowResult
from batchrun.sending.states import RowState

KEY = "sk-test-0123456789abcdef"


def mask(text: str) -> str:
    return text.replace(KEY, "sk-t***ef")


def write(tmp_path: Path, items: list[tuple[str, bytes]]) -> list[lines.WrittenPart]:
    with PartWriter(lambda n: tmp_path / f"p{n}.jsonl") as writer:
        for key, line in items:
            writer.add(key, line)
    return writer.parts


# -- lines ----------------------------------------------------------------------------------


def test_a_batch_line_carries_key_url_and_body_without_background_or_stream() -> None:
    body = {"model": "gpt-4o", "input": "hi", "background": False, "stream": False}
    line = orjson.loads(batch_line("k-1", "/v1/responses", body))
    assert line == {
        "custom_id": "k-1",
        "method": "POST",
        "url": "/v1/responses",
        "body": {"model": "gpt-4o", "input": "hi"},
    }


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        pytest.param({"model": "m", "background": True}, "background: true", id="background"),
        pytest.param({"model": "m", "stream": True}, "stream: true", id="stream"),
        pytest.param({"model": "m", "background": False}, "", id="background-false"),
        pytest.param({"model": "m"}, "", id="plain"),
    ],
)
def test_rows_a_batch_cannot_carry_are_named(body: dict[str, Any], problem: str) -> None:
    found = batch_problem(body)
    assert found.startswith(problem) if problem else found == ""
    if problem:
        assert "--batch" in found


def test_parts_split_at_the_line_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lines, "MAX_LINES", 3)
    parts = write(tmp_path, [(f"k{n}", b"x\n") for n in range(7)])
    assert [part.keys for part in parts] == [["k0", "k1", "k2"], ["k3", "k4", "k5"], ["k6"]]
    assert [part.number for part in parts] == [1, 2, 3]
    assert (tmp_path / "p2.jsonl").read_bytes() == b"x\n" * 3


def test_parts_split_before_the_byte_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lines, "MAX_BYTES", 10)
    parts = write(tmp_path, [("a", b"1234\n"), ("b", b"1234\n"), ("c", b"1\n"), ("d", b"123\n")])
    assert [part.keys for part in parts] == [["a", "b"], ["c", "d"]]
    assert [part.size for part in parts] == [10, 6]
    assert too_large(b"x" * 11) and not too_large(b"x" * 10)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=9), max_size=40),
    max_lines=st.integers(min_value=1, max_value=6),
    max_bytes=st.integers(min_value=9, max_value=30),
)
def test_splitting_keeps_every_line_once_in_order_within_the_limits(
    sizes: list[int], max_lines: int, max_bytes: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp("parts")
    old = lines.MAX_LINES, lines.MAX_BYTES
    lines.MAX_LINES, lines.MAX_BYTES = max_lines, max_bytes
    try:
        items = [(f"k{n}", b"x" * (size - 1) + b"\n") for n, size in enumerate(sizes)]
        parts = write(folder, items)
        # A part was closed only because the next line would not fit.
        for part, following in itertools.pairwise(parts):
            first = sizes[int(following.keys[0][1:])]
            assert not fits(len(part.keys), part.size, first)
    finally:
        lines.MAX_LINES, lines.MAX_BYTES = old
    assert [key for part in parts for key in part.keys] == [key for key, _ in items]
    for part in parts:
        assert len(part.keys) <= max_lines and part.size <= max_bytes
        assert part.path.stat().st_size == part.size


def test_validate_parts_are_named_file_then_stem_n(tmp_path: Path) -> None:
    path_of = jsonl_part_path(tmp_path / "batch.jsonl")
    assert [path_of(n).name for n in (1, 2, 3)] == ["batch.jsonl", "batch.2.jsonl", "batch.3.jsonl"]


# -- join -----------------------------------------------------------------------------------


def response(text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": "resp_1",
        "object": "response",
        "status": status,
        "output": [{"type": "message", "content": [{"type": "output_text", "text": text}]}],
        "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5},
    }


def record(key: str, response: Any = None, error: Any = None) -> bytes:
    return orjson.dumps(
        {"id": "batch_req_1", "custom_id": key, "response": response, "error": error}
    )


def join_lines(
    rows: Mapping[str, RowResult],
    lines: Iterable[bytes],
    endpoint: Endpoint,
    mask: Callable[[str], str],
) -> set[str]:
    """Settle the row of every line naming one of ``rows``, as a --batch job does a slice
    at a time; the keys answered."""
    answered: set[str] = set()
    for key, line in answer_records(lines):
        if key in rows:
            settle_line(rows[key], line, endpoint, mask)
            answered.add(key)
    return answered


def rows_of(*keys: str) -> dict[str, RowResult]:
    return {key: RowResult(n, key=key) for n, key in enumerate(keys)}


def test_join_settles_answered_rows_as_a_direct_job_and_fails_the_rest_by_line() -> None:
    rows = rows_of("a", "b", "c", "d")
    refused = {"error": {"message": f"Bad model, key {KEY}", "type": "invalid_request_error"}}
    answered = join_lines(
        rows,
        [
            record("c", {"status_code": 400, "request_id": "r", "body": refused}),
            b"\n",
            b"not json\n",
            record("zz", {"status_code": 200, "body": response("nobody's")}),
            record("a", {"status_code": 200, "request_id": "r", "body": response("Hi!")}),
            record("b", error={"code": "server_error", "message": "The server had an error"}),
        ],
        endpoint_named("responses"),
        mask,
    )
    assert answered == {"a", "b", "c"}
    a, b, c, d = rows.values()
    assert (a.outcome, a.status, a.reply, a.run_id, a.attempts) == (
        Outcome.OK,
        200,
        "Hi!",
        "resp_1",
        1,
    )
    assert a.usage == {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}
    assert a.state is RowState.DONE and orjson.loads(a.response)["id"] == "resp_1"
    assert (b.outcome, b.status, b.error) == (
        Outcome.FAILED,
        None,
        "server_error: The server had an error",
    )
    assert c.outcome is Outcome.FAILED and c.status == 400 and c.state is RowState.FAILED
    assert c.error == "HTTP 400: Bad model, key sk-t***ef" and KEY not in c.response
    assert d.outcome is None


def test_an_answer_joined_again_after_a_crash_is_not_another_attempt() -> None:
    rows = rows_of("a")
    line = record("a", {"status_code": 200, "request_id": "r", "body": response("Hi!")})
    join_lines(rows, [line], endpoint_named("responses"), mask)
    again = RowResult(0, key="a")
    again.restore(rows["a"].to_journal(), "done")  # as the rerun finds it in the journal
    join_lines({"a": again}, [line], endpoint_named("responses"), mask)
    assert (again.attempts, again.outcome, again.run_id) == (1, Outcome.OK, "resp_1")
    retried = RowResult(0, key="a")
    retried.restore({**rows["a"].to_journal(), "run_id": "resp_0"}, "failed")
    join_lines({"a": retried}, [line], endpoint_named("responses"), mask)
    assert retried.attempts == 2  # a new answer after an earlier one: two attempts


def test_a_chat_line_fills_the_chat_columns() -> None:
    rows = rows_of("a")
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Yo"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5},
    }
    join_lines(
        rows, [record("a", {"status_code": 200, "body": body})], endpoint_named("chat"), mask
    )
    row = rows["a"]
    assert (row.outcome, row.run_id, row.run_status, row.reply) == (
        Outcome.OK,
        "chatcmpl-1",
        "stop",
        "Yo",
    )


def test_a_response_that_ended_failed_inside_a_batch_is_a_failed_run() -> None:
    rows = rows_of("a")
    join_lines(
        rows,
        [record("a", {"status_code": 200, "body": response("", status="incomplete")})],
        endpoint_named("responses"),
        mask,
    )
    assert rows["a"].outcome is Outcome.RUN_FAILED and rows["a"].state is RowState.FAILED


def test_unanswered_rows_say_the_batch_ended_and_that_retry_failed_sends_them() -> None:
    rows = rows_of("a")
    fail_unanswered(rows.values(), "batch_1", "expired")
    row = rows["a"]
    assert row.outcome is Outcome.FAILED and row.state is RowState.FAILED
    assert row.error == (
        "not answered: the batch batch_1 ended expired before this row ran; "
        "--retry-failed sends it again"
    )


def test_a_batch_that_failed_validation_fails_rows_with_their_lines_errors() -> None:
    rows = rows_of("a", "b")
    errors = [{"code": "invalid_json", "message": "Line is not JSON", "line": 2}, "junk"]
    fail_invalid_batch(rows, ["a", "b"], errors)
    assert rows["b"].error == "the batch failed validation on this row: Line is not JSON"
    assert rows["a"].error.startswith("the batch failed validation (line 2: Line is not JSON)")
    assert all(row.outcome is Outcome.FAILED for row in rows.values())


def test_a_key_echoed_in_a_batch_answer_is_masked_in_the_reply_too() -> None:
    rows = rows_of("a")
    line = record("a", {"status_code": 200, "body": response(f"your key is {KEY}")})
    join_lines(rows, [line], endpoint_named("responses"), mask)
    (row,) = rows.values()
    assert row.outcome is Outcome.OK
    assert row.reply == "your key is sk-t***ef"
    assert KEY not in row.response and KEY not in str(row.to_journal())
