"""A batch's output and error lines joined back to their rows, by ``custom_id``.

Pure: lines in, rows' results out. Each line is one of::

    {"custom_id", "response": {"status_code": 200, "body": {...}}, "error": null}  -> as direct
    {"custom_id", "response": {"status_code": 400, "body": {"error": ...}}, ...}   -> failed
    {"custom_id", "response": null, "error": {"code", "message"}}                 -> failed

Rows of the batch that no line answers (an expired or cancelled batch stops part way)
fail saying so, and ``--retry-failed`` sends them again; a batch that ``failed`` its
validation fails every row with the batch's own errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import orjson

from batchrun.endpoints import Endpoint
from batchrun.masking import masked_data
from batchrun.report import Outcome, RowResult

Mask = Callable[[str], str]


def answer_records(lines: Iterable[bytes]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each output or error line that is a JSON object with a ``custom_id``: the id and
    the line's object (other lines are skipped)."""
    for raw in lines:
        if not raw.strip():
            continue
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(key := record.get("custom_id"), str):
            yield key, record


def settle_line(row: RowResult, record: Mapping[str, Any], endpoint: Endpoint, mask: Mask) -> None:
    """Take one output or error line as ``row``'s result."""
    response, error = record.get("response"), record.get("error")
    body = response.get("body") if isinstance(response, Mapping) else None
    # The answer the row already holds (its part joined again after a crash before it
    # was marked joined) is not another attempt.
    if not (isinstance(body, Mapping) and row.run_id and body.get("id") == row.run_id):
        row.attempts += 1
    if isinstance(response, Mapping):
        status = response.get("status_code")
        body = response.get("body")
        row.status = status if isinstance(status, int) else None
        row.response = mask(orjson.dumps(body).decode()) if body is not None else ""
        if status == 200 and isinstance(body, Mapping) and endpoint.is_answer(body):
            # Settled from the masked values, as a direct answer is: an echoed key never
            # reaches the reply or any other column.
            endpoint.settle(row, masked_data(body, mask), wait=True)
            return
        row.fail(Outcome.FAILED, mask(f"HTTP {status}: {_message(body)}"))
        return
    row.status, row.response = None, ""
    if isinstance(error, Mapping):
        reason = f"{error.get('code') or 'error'}: {error.get('message') or '(no message)'}"
        row.fail(Outcome.FAILED, mask(reason))
        return
    row.fail(Outcome.FAILED, "the batch answered this row with neither a response nor an error")


def _message(body: Any) -> str:
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping) and error.get("message"):
            return str(error["message"])
    return " ".join(orjson.dumps(body).decode().split())[:200] if body is not None else "(empty)"


def fail_unanswered(rows: Iterable[RowResult], batch_id: str, status: str) -> None:
    """Rows a batch ended without answering: they go again on --retry-failed."""
    for row in rows:
        row.status, row.response = None, ""
        row.fail(
            Outcome.FAILED,
            f"not answered: the batch {batch_id} ended {status} before this row ran; "
            "--retry-failed sends it again",
        )


def fail_invalid_batch(
    rows: Mapping[str, RowResult], keys: Sequence[str], errors: Iterable[Any]
) -> None:
    """Fail every row of a batch that failed validation, with the batch's errors: a row
    its line's own (``line`` is 1-based in the part's input file), the others all of them."""
    own: dict[str, list[str]] = {}
    every: list[str] = []
    for error in errors:
        if not isinstance(error, Mapping):
            continue
        text = str(error.get("message") or error.get("code") or "invalid line")
        line = error.get("line")
        if isinstance(line, int) and 1 <= line <= len(keys):
            own.setdefault(keys[line - 1], []).append(text)
            every.append(f"line {line}: {text}")
        else:
            every.append(text)
    for key in keys:
        row = rows.get(key)
        if row is None:
            continue
        row.status, row.response = None, ""
        if key in own:
            reason = "the batch failed validation on this row: " + "; ".join(own[key])
        else:
            found = "; ".join(every) or "no reason given"
            reason = f"the batch failed validation ({found}); --retry-failed sends it again"
        row.fail(Outcome.FAILED, reason)
