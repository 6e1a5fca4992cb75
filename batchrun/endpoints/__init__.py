"""What one row is, per endpoint: its request, the ids that order rows, its result columns.

- :mod:`~batchrun.endpoints.runs` — the seed's Create Run (``POST /threads/{id}/runs``).
- :mod:`~batchrun.endpoints.responses` — the Responses API (``POST /responses``).
- :mod:`~batchrun.endpoints.chat` — Chat Completions (``POST /chat/completions``).

Everything else (reading, validation, limiter, retries, journal, output) is shared; the
sending core asks the row's :class:`Endpoint` what is particular to it.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, ClassVar

from batchrun.report import STOPPED_RUN_STATUSES, RowResult

# How a "busy" answer is handled: read the lane's answers and wait for the active one
# ("look"), or wait and try again ("wait": the holder cannot be named).
LOOK, WAIT = "look", "wait"
# How long after a create was sent a server may still be making what it asked, where the
# answer does not wait for a generation (a run, a file, a batch): a slow compatible server
# may list a run late; a client's time-out cancels nothing on the server.
LATE_CREATE_SECONDS = 120.0


# Where an answer's usage says how many input tokens were read from the prompt cache.
CACHE_DETAILS = ("prompt_tokens_details", "input_tokens_details")
CACHED = "cached_tokens"


def usage_counts(usage: Any) -> dict[str, int] | None:
    """An answer's ``usage`` as the row keeps it: its whole-number counts, and the input
    tokens read from the prompt cache (``cached_tokens``, priced lower); None when the
    answer has none."""
    if not isinstance(usage, Mapping):
        return None
    counts = {key: value for key, value in usage.items() if type(value) is int}
    for name in CACHE_DETAILS:
        details = usage.get(name)
        if isinstance(details, Mapping) and type(cached := details.get(CACHED)) is int:
            counts[CACHED] = cached
    return counts


class Endpoint(abc.ABC):
    """One kind of row; subclasses say what differs from endpoint to endpoint.

    ``lane`` names the id that orders rows ("thread", "conversation"): rows that share one
    go in input order, one at a time. Rows without one are independent.
    """

    name: ClassVar[str]
    lane: ClassVar[str] = ""
    # Result column names for the answer's id and status.
    id_column: ClassVar[str]
    status_column: ClassVar[str]
    # (result column, usage key) in column order.
    usage_columns: ClassVar[tuple[tuple[str, str], ...]]
    # Whether usage_* columns are written without --wait (the answer carries them).
    usage_at_once: ClassVar[bool] = True
    # Whether a reply column is written without --reply (the answer carries the text).
    reply_at_once: ClassVar[bool] = True
    # Whether a lane's active answer can be read (runs: the thread's runs).
    has_active: ClassVar[bool] = False
    # What rows make, in words, plural: "runs", "responses", "completions".
    answers: ClassVar[str]
    # Whether the answer can say why it did not complete (a last_error column).
    has_last_error: ClassVar[bool] = True
    # Whether what a create asked for is listed only once it is made whole (a chat
    # completion, once generated): a row a killed job left in flight is then looked for
    # until it may have been made, not once (see Reconciling._unsure_until).
    listed_when_made: ClassVar[bool] = False

    @abc.abstractmethod
    def create_path(self, row: RowResult) -> str:
        """Where a row's request goes."""

    def wire_body(self, body: dict[str, Any], *, wait: bool) -> dict[str, Any]:
        """The body as sent, given the job's options (``body`` may be changed in place)."""
        return body

    def is_answer(self, data: Any) -> bool:
        """Whether a 2xx answer is the object this endpoint creates."""
        return isinstance(data, dict) and isinstance(data.get("id"), str)

    @abc.abstractmethod
    def settle(self, row: RowResult, answer: Mapping[str, Any], *, wait: bool) -> None:
        """Take ``answer`` (created, adopted or followed) as the row's result."""

    def stopped(self, status: str) -> bool:
        """Whether an answer of ``status`` will not change any more by itself."""
        return status in STOPPED_RUN_STATUSES

    def can_look(self, row: RowResult) -> bool:
        """Whether what a row's request created can be found again by its run tag."""
        return False

    def creating_for(self, timeout: float) -> float:
        """How long after a create was sent the server may still be making what it asked
        (``timeout``: --timeout): until then, not finding it proves nothing."""
        return LATE_CREATE_SECONDS

    def look_path(self, row: RowResult, tag: str) -> str:
        """The read that lists answers a row's request may have created (when
        :meth:`can_look`), or the lane's newest answers (when ``has_active``)."""
        raise LookupError(f"{self.name}: what a request created cannot be looked up")

    @abc.abstractmethod
    def follow_path(self, row: RowResult, answer_id: str) -> str:
        """The read of one answer (the row's, or another on its lane), as following
        polls it."""

    def reply_path(self, row: RowResult) -> str | None:
        """A read that fetches the reply text (None: the answer itself holds it)."""
        return None

    def reply_text(self, data: Any, row: RowResult) -> str:
        """The reply text in ``data`` (the answer itself, or what reply_path read)."""
        return ""

    def busy(self, status: int, code: object, message: str) -> str | None:
        """LOOK or WAIT when an answer (its status, error code and one-line message, however
        the server words it) says the row's lane is busy, else None."""
        return None

    def blocked_reason(self, answer_id: object, lane_id: str) -> str:
        """Why a row is not sent while its lane waits for the user."""
        return f"not sent: {answer_id} on {self.lane} {lane_id} waits for the user"

    def busy_reason(self, answer_id: object, lane_id: str) -> str:
        """Why a row is not sent while its lane is still busy after --wait-timeout."""
        holder = f" with {answer_id}" if answer_id else ""
        return (
            f"not sent: {self.lane} {lane_id} still busy{holder} after --wait-timeout; "
            "rerun to send it"
        )

    def unsure_reason(self, before: str) -> str:
        """Why a row whose request may have arrived is not sent again blindly."""
        return (
            f"{before}; a {self.answer_word} may have been created and cannot be looked up: "
            "check, then rerun with --retry-failed to send it again"
        )

    @property
    def answer_word(self) -> str:
        """What a row's request creates, in words ("run", "response")."""
        return self.id_column.removesuffix("_id")


def endpoint_named(name: str) -> Endpoint:
    """The endpoint of ``--endpoint NAME``."""
    from batchrun.endpoints import chat, responses, runs

    endpoints: dict[str, Endpoint] = {
        "runs": runs.ENDPOINT,
        "responses": responses.ENDPOINT,
        "chat": chat.ENDPOINT,
    }
    return endpoints[name]
