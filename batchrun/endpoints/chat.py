"""Chat Completions: one row is one ``POST /chat/completions``, answered whole.

Rows are independent (no lane). With ``store: true`` a completion can be listed by its
metadata, so a request that may have arrived unanswered is looked up by its run tag
before it is sent again, as runs are; without it, it is never sent again blindly.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any

from batchrun.config import GENERATION_TIMEOUT
from batchrun.endpoints import Endpoint, usage_counts
from batchrun.endpoints.rules import RUN_TAG_KEY
from batchrun.report import Outcome, RowResult
from batchrun.sending.states import Event

NAME = "chat"
LOOK_PAGE = 20


def first_choice(completion: Mapping[str, Any]) -> Mapping[str, Any]:
    """The completion's first choice, or {}."""
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    return choice if isinstance(choice, Mapping) else {}


class Chat(Endpoint):
    """``POST /chat/completions``."""

    name = NAME
    answers = "completions"
    id_column, status_column = "completion_id", "finish_reason"
    has_last_error = False
    listed_when_made = True
    usage_columns = (
        ("usage_prompt_tokens", "prompt_tokens"),
        ("usage_completion_tokens", "completion_tokens"),
        ("usage_total_tokens", "total_tokens"),
    )

    def create_path(self, row: RowResult) -> str:
        return "/chat/completions"

    def is_answer(self, data: Any) -> bool:
        return (
            isinstance(data, dict)
            and isinstance(data.get("id"), str)
            and isinstance(data.get("choices"), list)
        )

    def settle(self, row: RowResult, answer: Mapping[str, Any], *, wait: bool) -> None:
        row.run_id = str(answer.get("id", ""))
        reason = first_choice(answer).get("finish_reason")
        row.run_status = reason if isinstance(reason, str) else ""
        if (usage := usage_counts(answer.get("usage"))) is not None:
            row.usage = usage
        row.reply = self.reply_text(answer, row)
        row.outcome, row.error = Outcome.OK, ""
        row.move(Event.FINISHED)

    def stopped(self, status: str) -> bool:
        return True  # a completion is answered whole

    def creating_for(self, timeout: float) -> float:
        # A completion is stored, and listed, only once it is generated.
        return max(GENERATION_TIMEOUT, timeout)

    def can_look(self, row: RowResult) -> bool:
        return (row.body or {}).get("store") is True

    def look_path(self, row: RowResult, tag: str) -> str:
        key = urllib.parse.quote(f"metadata[{RUN_TAG_KEY}]", safe="")
        return f"/chat/completions?{key}={urllib.parse.quote(tag, safe='')}&limit={LOOK_PAGE}"

    def follow_path(self, row: RowResult, answer_id: str) -> str:
        return f"/chat/completions/{urllib.parse.quote(answer_id, safe='')}"

    def reply_text(self, data: Any, row: RowResult) -> str:
        if not isinstance(data, Mapping):
            return ""
        message = first_choice(data).get("message")
        content = message.get("content") if isinstance(message, Mapping) else None
        return content if isinstance(content, str) else ""


ENDPOINT = Chat()
