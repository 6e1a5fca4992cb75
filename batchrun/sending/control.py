"""Job-wide state every worker consults, and the pure watchers that decide to stop a job.

:class:`Control` says whether the job is stopping and why. The watchers turn a stream of
answers into that decision, with no I/O, so tables of answers test them:

- :class:`RouteWatch` — answers that say the route itself is missing (a wrong base URL, or
  OpenAI's retired Assistants API), told apart from 404s about the row;
- :class:`ConnectWatch` — refused connections with no answer between them (a wrong port);
- :class:`RefusalWatch` — the same refusal on the first rows of a job, nothing ok before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

# Route-missing answers in a row (with no answer from the route between them) that stop a job.
ROUTE_MISSING_LIMIT = 3
# Rows refused with the same answer, none ok before, that stop a job (the server's own
# "everything fails", such as a 400 "No connected db." for a wrong key).
SAME_REFUSAL_LIMIT = 3
# Refusals that are about the row itself (its ids, its size, its fields): never systemic.
ROW_REFUSALS = frozenset({404, 413, 422})
# Refused connections in a row that stop a job: few before the server ever answered (a
# wrong URL), more once it has (a server restarting).
CONNECT_LIMIT_UNSEEN, CONNECT_LIMIT_SEEN = 3, 8
RETIRED_HINT = (
    "OpenAI switched off its hosted Assistants API on 2026-08-26; "
    "point --base-url at a compatible server, or try --simulate"
)


# What a job learns about its server, kept in the journal for the jobs after it.
TAGS_KEPT = "tags kept"  # an answer showed a run tag: the server keeps run metadata
NO_LOOKUP = "no lookup"  # the lookup route answered 404/405/501: nothing can be looked up


class StopSending(Exception):
    """The job is stopping (systemic error or interrupt): send nothing more."""


class Control:
    """Whether the job is stopping, and why; notes for the summary; what the job has
    learnt about its server (``facts``, such as :data:`TAGS_KEPT`)."""

    __slots__ = ("facts", "limits", "notes", "on_learnt", "reason", "systemic")

    def __init__(self) -> None:
        self.reason: str | None = None
        # The rate limits in force when the job ended, and where they came from.
        self.limits = ""
        self.systemic = False
        self.notes: list[str] = []
        self.facts: set[str] = set()
        # Called once per fact first learnt (the journal keeps it for the next job).
        self.on_learnt: Callable[[str], None] | None = None

    @property
    def tags_seen(self) -> bool:
        """Whether the server was seen keeping run tags (by this job or one before it)."""
        return TAGS_KEPT in self.facts

    def learn(self, fact: str) -> None:
        """The job has seen ``fact`` hold of its server."""
        if fact not in self.facts:
            self.facts.add(fact)
            if self.on_learnt is not None:
                self.on_learnt(fact)

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


def route_stop_reason(message: str, base_url: str, route: str = "Assistants runs") -> str:
    """The one line a job stopped on a missing route ends with (``route``: which one)."""
    if "api.openai.com" in base_url and route == "Assistants runs":
        return f"{message} ({RETIRED_HINT})"
    return (
        f"{message} (the server has no {route} route at {base_url.rstrip('/')}: "
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


class RefusalWatch:
    """Says when the first rows of a job are all refused with the same answer (status,
    type and message), none ok before: the server's own error, not the rows'.

    A refusal that names a field of the row (``param``) or is about the row (404, 413,
    422), a different refusal, or any answer ok, shows that not everything fails: the
    watch then never stops the job.
    """

    __slots__ = ("count", "disarmed", "signature")

    def __init__(self) -> None:
        self.signature: tuple[int, str, str] | None = None
        self.count = 0
        self.disarmed = False

    def answered_ok(self) -> None:
        """A row's request succeeded: whatever fails next is the row's."""
        self.disarmed = True

    def refused(self, status: int, error: Mapping[str, Any], message: str) -> bool:
        """A row refused for good with ``status``; True when every row so far was refused
        this same way, at least SAME_REFUSAL_LIMIT of them (and for each one after)."""
        if self.disarmed:
            return False
        signature = (status, str(error.get("type") or ""), message)
        if (
            status in ROW_REFUSALS
            or error.get("param")
            or (self.signature is not None and signature != self.signature)
        ):
            self.disarmed = True
            return False
        self.signature = signature
        self.count += 1
        return self.count >= SAME_REFUSAL_LIMIT
