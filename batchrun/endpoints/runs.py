"""The Assistants Create Run endpoint: paths, what a run answer means, the reply text.

One row is one ``POST /threads/{thread_id}/runs``; rows that share a thread go in input
order. A run answer becomes the row's ``run_id``, ``run_status``, usage and last error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batchrun.endpoints import LOOK, Endpoint, usage_counts
from batchrun.report import STOPPED_RUN_STATUSES, Outcome, RowResult
from batchrun.sending.states import Event

NAME = "runs"
RECONCILE_PAGE = 20
# A thread busy with another run answers 400 with this in its message.
ACTIVE_RUN = "already has an active run"


def create_path(thread_id: str) -> str:
    """Where a row's run is created."""
    return f"/threads/{thread_id}/runs"


def newest_runs_path(thread_id: str) -> str:
    """The thread's newest runs, newest first, as reconciliation reads them."""
    return f"/threads/{thread_id}/runs?limit={RECONCILE_PAGE}&order=desc"


def run_path(thread_id: str, run_id: str) -> str:
    """One run, as following reads it."""
    return f"/threads/{thread_id}/runs/{run_id}"


def messages_path(thread_id: str, run_id: str) -> str:
    """The messages a run added, oldest first."""
    return f"/threads/{thread_id}/messages?order=asc&limit=100&run_id={run_id}"


def blocked_reason(run_id: object, thread_id: str) -> str:
    """Why a row is not sent while its thread's run waits for tool outputs."""
    return f"not sent: run {run_id} on thread {thread_id} waits for tool outputs (requires_action)"


def busy_reason(run_id: object, thread_id: str) -> str:
    """Why a row is not sent while its thread is still busy after --wait-timeout."""
    return (
        f"not sent: thread {thread_id} still busy with run {run_id} after --wait-timeout; "
        "rerun to send it"
    )


def is_run(data: Any) -> bool:
    """Whether a JSON answer looks like a run object."""
    return isinstance(data, dict) and isinstance(data.get("id"), str) and "status" in data


def settle(row: RowResult, run: Mapping[str, Any], *, wait: bool) -> None:
    """Take ``run`` (created, adopted or followed) as the row's result, judged by its status.

    A run that ended other than ``completed`` is ``run failed`` whether this job created,
    adopted or followed it; one still going is ``ok`` (created) without ``--wait`` and
    ``pending`` with it.
    """
    row.run_id = str(run.get("id", ""))
    row.run_status = str(run.get("status", ""))
    if (usage := usage_counts(run.get("usage"))) is not None:
        row.usage = usage
    last_error = run.get("last_error")
    if isinstance(last_error, Mapping):
        row.last_error = f"{last_error.get('code')}: {last_error.get('message')}"
    if row.run_status not in STOPPED_RUN_STATUSES:
        row.outcome, row.error = Outcome.OK, ""
        row.move(Event.GOING)
        return
    if row.run_status == "completed":
        row.outcome, row.error = Outcome.OK, ""
        row.move(Event.FINISHED)
        return
    row.outcome = Outcome.RUN_FAILED
    row.error = f"run ended {row.run_status}" + (f" ({row.last_error})" if row.last_error else "")
    # A new run on --retry-failed; the failed one is never adopted again.
    row.move(Event.ANSWER_FAILED)


def reply_text(messages: Any, run_id: str) -> str:
    """The assistant's text in a messages list answer, for ``run_id``."""
    data = messages.get("data") if isinstance(messages, dict) else None
    texts = []
    for message in data if isinstance(data, list) else []:
        if not isinstance(message, dict) or message.get("role") != "assistant":
            continue
        if message.get("run_id") not in (None, run_id):
            continue
        for part in message.get("content") or []:
            text = part.get("text") if isinstance(part, dict) else None
            if isinstance(text, dict) and isinstance(text.get("value"), str):
                texts.append(text["value"])
    return "\n\n".join(texts)


class Runs(Endpoint):
    """``POST /threads/{thread_id}/runs``: rows of a thread go one run at a time."""

    name = NAME
    lane = "thread"
    answers = "runs"
    id_column, status_column = "run_id", "run_status"
    usage_columns = (
        ("usage_prompt_tokens", "prompt_tokens"),
        ("usage_completion_tokens", "completion_tokens"),
        ("usage_total_tokens", "total_tokens"),
    )
    usage_at_once = reply_at_once = False  # a run is created queued: --wait, --reply
    has_active = True

    def create_path(self, row: RowResult) -> str:
        return create_path(row.thread_id)

    def is_answer(self, data: Any) -> bool:
        return is_run(data)

    def settle(self, row: RowResult, answer: Mapping[str, Any], *, wait: bool) -> None:
        settle(row, answer, wait=wait)

    def can_look(self, row: RowResult) -> bool:
        return True

    def look_path(self, row: RowResult, tag: str) -> str:
        return newest_runs_path(row.thread_id)

    def follow_path(self, row: RowResult, answer_id: str) -> str:
        return run_path(row.thread_id, answer_id)

    def reply_path(self, row: RowResult) -> str | None:
        return messages_path(row.thread_id, row.run_id)

    def reply_text(self, data: Any, row: RowResult) -> str:
        return reply_text(data, row.run_id)

    def busy(self, status: int, code: object, message: str) -> str | None:
        return LOOK if status == 400 and ACTIVE_RUN in message else None

    def blocked_reason(self, answer_id: object, lane_id: str) -> str:
        return blocked_reason(answer_id, lane_id)

    def busy_reason(self, answer_id: object, lane_id: str) -> str:
        return busy_reason(answer_id, lane_id)


ENDPOINT = Runs()
