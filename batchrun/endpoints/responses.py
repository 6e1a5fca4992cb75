"""The Responses API: one row is one ``POST /responses``.

Rows that share a ``conversation`` go in input order, one at a time: a conversation takes
one request at a time, and a ``conversation_locked`` answer is waited out. With ``--wait``
a row is sent with ``background: true`` (unless it says otherwise) and followed with
``GET /responses/{id}``. There is no way to list responses, so a request that may have
arrived unanswered is never sent again blindly (see :meth:`Endpoint.unsure_reason`).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any

from batchrun.config import GENERATION_TIMEOUT
from batchrun.endpoints import WAIT, Endpoint, usage_counts
from batchrun.report import Outcome, RowResult
from batchrun.sending.states import Event

NAME = "responses"
LOCKED = "conversation_locked"
GOING = frozenset({"queued", "in_progress"})


def conversation_id(value: Any) -> str:
    """The id a body's ``conversation`` names (a string, or ``{"id": ...}``), or ""."""
    if isinstance(value, Mapping):
        value = value.get("id")
    return value.strip() if isinstance(value, str) else ""


def output_text(response: Mapping[str, Any]) -> str:
    """The response's text, as the SDK's ``output_text``: every ``output_text`` part of
    every output message, joined."""
    texts = []
    output = response.get("output")
    for item in output if isinstance(output, list) else []:
        content = item.get("content") if isinstance(item, Mapping) else None
        for part in content if isinstance(content, list) else []:
            if isinstance(part, Mapping) and part.get("type") == "output_text":
                text = part.get("text")
                if isinstance(text, str):
                    texts.append(text)
    return "".join(texts)


class Responses(Endpoint):
    """``POST /responses``, the Assistants API's successor."""

    name = NAME
    lane = "conversation"
    answers = "responses"
    id_column, status_column = "response_id", "response_status"
    usage_columns = (
        ("usage_input_tokens", "input_tokens"),
        ("usage_output_tokens", "output_tokens"),
        ("usage_total_tokens", "total_tokens"),
    )

    def create_path(self, row: RowResult) -> str:
        return "/responses"

    def wire_body(self, body: dict[str, Any], *, wait: bool) -> dict[str, Any]:
        # Background mode answers at once and is polled; it needs the response stored.
        if wait and "background" not in body and body.get("store") is not False:
            body["background"] = True
        return body

    def is_answer(self, data: Any) -> bool:
        return (
            isinstance(data, dict)
            and isinstance(data.get("id"), str)
            and ("status" in data or "output" in data)
        )

    def settle(self, row: RowResult, answer: Mapping[str, Any], *, wait: bool) -> None:
        row.run_id = str(answer.get("id", ""))
        status = answer.get("status")
        row.run_status = status if isinstance(status, str) else "completed"
        if (usage := usage_counts(answer.get("usage"))) is not None:
            row.usage = usage
        row.last_error = _why_not_completed(answer)
        row.reply = output_text(answer)
        if row.run_status in GOING:
            row.outcome, row.error = Outcome.OK, ""
            row.move(Event.GOING)
        elif row.run_status == "completed":
            row.outcome, row.error = Outcome.OK, ""
            row.move(Event.FINISHED)
        else:
            row.outcome = Outcome.RUN_FAILED
            row.error = f"response ended {row.run_status}" + (
                f" ({row.last_error})" if row.last_error else ""
            )
            row.move(Event.ANSWER_FAILED)

    def creating_for(self, timeout: float) -> float:
        # In the foreground, a response is made as it is generated.
        return max(GENERATION_TIMEOUT, timeout)

    def follow_path(self, row: RowResult, answer_id: str) -> str:
        return f"/responses/{urllib.parse.quote(answer_id, safe='')}"

    def reply_text(self, data: Any, row: RowResult) -> str:
        return output_text(data) if isinstance(data, Mapping) else ""

    def busy(self, status: int, code: object, message: str) -> str | None:
        # OpenAI's code, or a compatible server's own words: a 409 about the conversation,
        # or a message that it is locked. Nothing was made: wait, then send.
        if status not in (400, 409):
            return None
        words = message.casefold()
        if code == LOCKED or ("conversation" in words and (status == 409 or "lock" in words)):
            return WAIT
        return None


def _why_not_completed(response: Mapping[str, Any]) -> str:
    error = response.get("error")
    if isinstance(error, Mapping):
        return f"{error.get('code')}: {error.get('message')}"
    details = response.get("incomplete_details")
    if isinstance(details, Mapping) and details.get("reason"):
        return str(details["reason"])
    return ""


ENDPOINT = Responses()
