"""Job-wide state every worker consults, and the pure watchers that decide to stop a job.

:class:`Control` says whether the job is stopping and why. The watchers turn a stream of
answers into that decision, with no I/O, so tables of answers test them:

- :class:`RouteWatch` — answers that say the route itself is missing (a wrong base URL, or
  OpenAI's retired Assistants API), told apart from 404s about the row;
- :class:`ConnectWatch` — refused connections with no answer between them (a wrong port).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Route-missing answers in a row (with no answer from the route between them) that stop a job.
ROUTE_MISSING_LIMIT = 3
# Refused connections in a row that stop a job: few before the server ever answered (a
# wrong URL), more once it has (a server restarting).
CONNECT_LIMIT_UNSEEN, CONNECT_LIMIT_SEEN = 3, 8
RETIRED_HINT = (
    "OpenAI switched off its hosted Assistants API on 2026-08-26; "
    "point --base-url at a compatible server, or try --simulate"
)


class StopSending(Exception):
    """The job is stopping (systemic error or interrupt): send nothing more."""


class Control:
    """Whether the job is stopping, and why; notes for the summary."""

    __slots__ = ("limits", "notes", "reason", "systemic", "tags_seen")

    def __init__(self) -> None:
        self.reason: str | None = None
        # The rate limits in force when the job ended, and where they came from.
        self.limits = ""
        self.systemic = False
        self.notes: list[str] = []
        # The server was seen keeping run tags (in any answer of this job).
        self.tags_seen = False

    def abort(self, reason: str) -> None:
        """Stop the job on a systemic error; the first reason wins."""
        if self.reason is None:
            self.reason, self.systemic = reason, True

    def interrupt(self) -> None:
        """Stop dispatching because the user asked."""
        if self.reason is None:
            self.reason = "interrupted"

    def note(self, text: str) -> None:
        """Say something once in the summary."""
        if text not in self.notes:
            self.notes.append(text)

    def check(self) -> None:
        """Raise StopSending if the job is stopping."""
        if self.reason is not None:
            raise StopSending(self.reason)


def missing_route(status: int, data: Any, text: str) -> bool:
    """Whether an answer says the route is missing, rather than something the row names.

    A 405 or 501 is about the route. A 404 is only when it carries no API error of its
    own: an empty or HTML body, a framework's bare ``{"detail": "Not Found"}``, or
    OpenAI's ``Invalid URL (POST /v1/...)``. A 404 with an error envelope of any other
    wording ("Assistant not found", "No thread found with id ...") comes from the route
    and is about the row.
    """
    if status in (405, 501):
        return True
    if status != 404:
        return False
    if isinstance(data, Mapping):
        error = data.get("error")
        if isinstance(error, Mapping):
            return "invalid url" in str(error.get("message") or "").lower()
        if isinstance(error, str):
            return "invalid url" in error.lower() or error.strip().lower() == "not found"
        detail = data.get("detail")
        return isinstance(detail, str) and detail.strip().lower() == "not found"
    return data is None  # empty, HTML or plain text: a web server's own page, not the API


class RouteWatch:
    """Counts route-missing answers in a row; says when the job should stop."""

    __slots__ = ("misses",)

    def __init__(self) -> None:
        self.misses = 0

    def answered(self, status: int, data: Any, text: str) -> bool:
        """Take one answer from the create route; True when the route is surely missing."""
        if missing_route(status, data, text):
            self.misses += 1
        else:
            self.misses = 0
        return self.misses >= ROUTE_MISSING_LIMIT


def route_stop_reason(message: str, base_url: str) -> str:
    """The one line a job stopped on a missing route ends with."""
    if "api.openai.com" in base_url:
        return f"{message} ({RETIRED_HINT})"
    return (
        f"{message} (the server has no Assistants runs route at {base_url.rstrip('/')}: "
        "check --base-url, e.g. a path prefix such as /api/v1 or /openai/v1)"
    )


class ConnectWatch:
    """Counts refused connections in a row; says when the job should stop.

    Counting attempts, not rows, makes one row against a wrong port stop as quickly as a
    hundred: the decision depends on what the server did, not on the size of the sheet.
    """

    __slots__ = ("answered_once", "failures")

    def __init__(self) -> None:
        self.failures = 0
        self.answered_once = False

    def answered(self) -> None:
        """Any HTTP answer: the server is there."""
        self.failures = 0
        self.answered_once = True

    def refused(self) -> bool:
        """A connection was refused; True when the job should stop."""
        self.failures += 1
        limit = CONNECT_LIMIT_SEEN if self.answered_once else CONNECT_LIMIT_UNSEEN
        return self.failures >= limit
