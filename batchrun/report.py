"""Row outcomes as data, and the job summary built from them (counted, chunk by chunk, by
:mod:`batchrun.sending.tally`).

Every row ends with exactly one :class:`Outcome`; the exit code and the one-line summary
follow from the counts::

    1000 rows: 990 ok, 6 invalid, 4 failed (404) in 12.3 s -> out.xlsx
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from batchrun.errors import ExitCode
from batchrun.sending.states import (
    NEXT_WORD,
    UNSURE_STATES,
    Event,
    RowState,
    after,
    from_journal,
    from_words,
)
from batchrun.sheets.xlsx_summary import CHART_SECTION

TERMINAL_RUN_STATUSES = frozenset({"completed", "failed", "cancelled", "expired", "incomplete"})
# A run waiting for tool outputs: stopped, and only the user can move it on.
STOPPED_RUN_STATUSES = TERMINAL_RUN_STATUSES | {"requires_action"}


class Outcome(StrEnum):
    """How a row ended."""

    OK = "ok"  # run created (and, with --wait, completed)
    INVALID = "invalid"  # the body did not pass validation: never sent
    FAILED = "failed"  # the server refused it, or retries ran out
    RUN_FAILED = "run failed"  # created, but the run ended other than completed
    NOT_SENT = "not sent"  # stopped before sending (abort, interrupt, busy thread)
    PENDING = "pending"  # created, still running when --wait-timeout ran out


# What resumes a job: the same command, less a --fresh that would start it afresh again.
RESUME = {False: "", True: " without --fresh"}


@dataclass(slots=True)
class RowResult:
    """Everything known about one row; becomes the row's result cells."""

    index: int
    thread_id: str = ""
    body: dict[str, Any] | None = None
    key: str | None = None
    outcome: Outcome | None = None
    # Where the row is in its life: changed only by move() (see batchrun.sending.states).
    state: RowState = RowState.UNSENT
    status: int | None = None
    response: str = ""
    error: str = ""
    run_id: str = ""
    run_status: str = ""
    attempts: int = 0
    usage: dict[str, int] = field(default_factory=dict)
    last_error: str = ""
    reply: str = ""
    reconciled: bool = False
    # Wall-clock time of the first send: runs created before it cannot be this row's.
    sent_at: float = 0.0
    # Wall-clock time until which the server may still be making what an unanswered
    # request of the row asked: until then, not finding it proves nothing.
    unsure_until: float = 0.0
    # Runs this row had before and replaced (--retry-failed after a failed run): never
    # adopted again.
    superseded: list[str] = field(default_factory=list)
    # The answer of a create that failed although the run was made (found by its tag).
    ghost: str = ""
    # POSTs made by this job (``attempts`` counts every job's).
    sent_now: int = 0
    # This job looked for what a request of the row may have made, found nothing and
    # could not tell (the row fails "may exist"); not kept in the journal.
    looked_unsure: bool = False
    # Whether ``reconciled`` came from the journal (an earlier job reconciled the row).
    reconciled_before: bool = False
    # --retry-failed on a row that failed "may exist": if a look cannot settle it, the
    # user's word sends it (this job only: never in the journal).
    users_word: bool = False

    @property
    def unsure(self) -> bool:
        """Whether a request of the row may have reached the server unanswered, so sending
        again starts by looking for what it made."""
        return self.state in UNSURE_STATES

    def move(self, event: Event) -> None:
        """Take ``event``: the row's state follows the one transition table."""
        self.state = after(self.state, event)

    def fail(self, outcome: Outcome, error: str, event: Event = Event.REFUSED) -> None:
        """End the row without a run; ``event`` says why (REFUSED: --retry-failed sends it
        again; LEFT: the next job does; INVALID: never)."""
        self.outcome = outcome
        self.error = error
        self.move(event)

    def to_journal(self) -> dict[str, Any]:
        """The fields a rerun needs to rebuild this row's result.

        A field at its default is left out (:meth:`restore` puts the default back): a row's
        ``sending`` mark is a few fields instead of seventeen, and an answered row keeps
        its answer and what was read from it, with nothing empty beside them.
        """
        entry: dict[str, Any] = {"next": NEXT_WORD[self.state], "attempts": self.attempts}
        if self.status is not None:
            entry["status"] = self.status
        if self.outcome is not None:
            entry["outcome"] = self.outcome.value
        if self.sent_at:
            entry["sent_at"] = self.sent_at
        if self.response:
            entry["response"] = self.response
        if self.error:
            entry["error"] = self.error
        if self.run_id:
            entry["run_id"] = self.run_id
        if self.run_status:
            entry["run_status"] = self.run_status
        if self.usage:
            entry["usage"] = self.usage
        if self.reply:
            entry["reply"] = self.reply
        if self.last_error:
            entry["last_error"] = self.last_error
        if self.reconciled:
            entry["reconciled"] = True
        if self.state in UNSURE_STATES:
            entry["ambiguous"] = True
        if self.unsure_until:
            entry["unsure_until"] = self.unsure_until
        if self.superseded:
            entry["superseded"] = self.superseded
        if self.ghost:
            entry["ghost"] = self.ghost
        return entry

    def restore(self, saved: dict[str, Any], entry: str | None = None) -> None:
        """Take back a result from the journal (``entry``: its state there)."""
        self.status = saved.get("status")
        self.response = saved.get("response") or ""
        self.error = saved.get("error") or ""
        self.run_id = saved.get("run_id") or ""
        self.run_status = saved.get("run_status") or ""
        self.attempts = saved.get("attempts") or 0
        self.usage = dict(saved.get("usage") or {})
        self.last_error = saved.get("last_error") or ""
        self.reply = saved.get("reply") or ""
        self.reconciled = self.reconciled_before = bool(saved.get("reconciled"))
        self.sent_at = float(saved.get("sent_at") or 0.0)
        self.unsure_until = float(saved.get("unsure_until") or 0.0)
        self.outcome = Outcome(saved["outcome"]) if saved.get("outcome") else None
        self.superseded = list(saved.get("superseded") or [])
        self.ghost = saved.get("ghost") or ""
        ambiguous = bool(saved.get("ambiguous"))
        if entry is not None:
            self.state = from_journal(entry, ambiguous)
        elif saved.get("next"):
            self.state = from_words(saved["next"], ambiguous)


@dataclass(frozen=True, slots=True)
class Summary:
    """Counts of one job, for the summary line, the summary sheet and the exit code."""

    rows: int
    outcomes: dict[str, int]
    failed_statuses: dict[str, int]
    run_statuses: dict[str, int]
    reconciled: int
    seconds: float
    aborted: str | None = None
    interrupted: bool = False
    # The job was started with --fresh: the same command again would start afresh too.
    fresh: bool = False
    notes: tuple[str, ...] = ()
    # What this job itself did: rows it sent, rows whose result came from the journal, rows
    # left for the next job (which picks them up without --retry-failed).
    sent: int = 0
    from_journal: int = 0
    left: int = 0
    # Of ``left``, the rows in batches still running (--batch).
    pending: int = 0
    # Rows an earlier job may have sent (killed in flight) that this one looked for and
    # could not settle: neither sent now, nor from the journal, nor left.
    unsure_before: int = 0
    # Rows an earlier job made (a run, a background response) that this one followed to
    # their end or read the reply of.
    followed: int = 0
    # Rows this job found made and adopted; rows whose result it read from finished
    # batches (a --batch job).
    reconciled_now: int = 0
    collected: int = 0
    ghosts: int = 0
    # What the rows made, in words, for the counts by status: runs, responses, completions.
    answers: str = "runs"
    # A --batch job: what its batches did, in words, and how many are still running.
    batch: str = ""
    batches_running: int = 0
    # Wall-clock end of the job (seconds since the epoch); the start is this minus seconds.
    finished_at: float = field(default_factory=time.time)
    # The rate limits in force and where they came from (flags, the server's headers).
    limits: str = ""
    # What the rows' answers cost, in dollars (None: no row has a known price).
    cost_usd: float | None = None
    # Rows with usage whose model has no known price: not in ``cost_usd``.
    unpriced: int = 0
    # validate: the valid rows' tokens and the most they can cost.
    estimate: str = ""

    @property
    def exit_code(self) -> ExitCode:
        """0 all rows ok, 1 some not, 3 aborted on a systemic error, 75 batches still
        running (``--no-wait``), 130 interrupted."""
        if self.interrupted:
            return ExitCode.INTERRUPTED
        if self.aborted:
            return ExitCode.ABORTED
        if self.batches_running:
            return ExitCode.BATCH_RUNNING
        if self.outcomes.get(Outcome.OK.value, 0) == self.rows:
            return ExitCode.OK
        return ExitCode.ROWS_FAILED

    def line(self, output: object | None = None) -> str:
        """``1000 rows: 990 ok, 6 invalid, 4 failed (404) in 12.3 s -> out.xlsx``."""
        parts = []
        for outcome in Outcome:
            count = self.outcomes.get(outcome.value, 0)
            if not count and outcome is not Outcome.OK:
                continue
            text = f"{count} {outcome.value}"
            if outcome is Outcome.OK and self.reconciled:
                text += f" ({self.reconciled} reconciled)"
            if outcome is Outcome.FAILED and self.failed_statuses:
                text += " (" + ", ".join(sorted(self.failed_statuses)) + ")"
            parts.append(text)
        rows = "1 row" if self.rows == 1 else f"{self.rows} rows"
        line = f"{rows}: {', '.join(parts)} in {self.seconds:.1f} s"
        if self.run_statuses:
            runs = ", ".join(f"{n} {s}" for s, n in sorted(self.run_statuses.items()))
            line += f"; {self.answers}: {runs}"
        did = (self.sent, self.from_journal, self.left, self.reconciled_now, self.followed)
        if any(did) or self.batch:
            line += f"; this run: {', '.join(self._this_run())}"
        if self.batch:
            line += f"; batch: {self.batch}"
        if self.cost_usd is not None:
            from batchrun.endpoints.cost import dollars

            line += f"; cost {dollars(self.cost_usd)}"
            if self.unpriced:
                what = "row" if self.unpriced == 1 else "rows"
                line += f" ({self.unpriced:,} {what} of models with no known price not counted)"
        elif self.unpriced:
            line += "; cost unknown (no known price for the model(s))"
        if self.interrupted:
            line += f"; interrupted: rerun the same command{RESUME[self.fresh]} to resume"
        if output is not None:
            line += f" -> {output}"
        return line

    def _this_run(self) -> list[str]:
        """What this job itself did, beside the totals: ``3 sent, 2 reconciled, 5 from the
        journal``; a --batch job's rows are submitted, pending in batches, collected."""
        batch = bool(self.batch)
        parts = [f"{self.sent} submitted" if batch else f"{self.sent} sent"]
        if self.reconciled_now:
            parts.append(f"{self.reconciled_now} reconciled")
        if self.followed:
            parts.append(f"{self.followed} made earlier and followed")
        if batch and self.collected:
            parts.append(f"{self.collected} collected")
        if self.from_journal:
            parts.append(f"{self.from_journal} from the journal")
        if self.unsure_before:
            parts.append(f"{self.unsure_before} maybe sent by an earlier run (not found)")
        if batch and self.pending:
            parts.append(f"{self.pending} pending in batches")
        if waiting := self.left - (self.pending if batch else 0):
            parts.append(f"{waiting} left for the next run")
        return parts

    def sections(
        self,
        settings: Mapping[str, object] | Sequence[tuple[str, object]],
        *,
        job: Sequence[tuple[str, object]] = (),
    ) -> dict[str, list[tuple[str, object]]]:
        """The summary sheet: counts by outcome (and status), the job, the settings.

        Sections with nothing to count are left out; ``job`` rows (input file, batchrun
        version) come first in the "Job" section; settings are shown in human forms.
        """
        sections: dict[str, list[tuple[str, object]]] = {
            CHART_SECTION: [(k, v) for k, v in self.outcomes.items()],
        }
        if self.failed_statuses:
            sections["Failed rows by HTTP status"] = list(self.failed_statuses.items())
        if self.run_statuses:
            title = f"{self.answers.capitalize()} by final status"
            sections[title] = list(self.run_statuses.items())
        stopped = self.aborted or ("interrupted" if self.interrupted else "")
        sections["Job"] = [
            *job,
            ("rows", self.rows),
            *([("reconciled", self.reconciled)] if self.reconciled else []),
            *([("sent by this run", self.sent)] if self.sent else []),
            *([("taken from the journal", self.from_journal)] if self.from_journal else []),
            *([("made earlier, followed by this run", self.followed)] if self.followed else []),
            *([("left for the next run", self.left)] if self.left else []),
            *([("reconciled by this run", self.reconciled_now)] if self.reconciled_now else []),
            *(
                [("collected from batches", self.collected)]
                if self.batch and self.collected
                else []
            ),
            *([("runs made although their create failed", self.ghosts)] if self.ghosts else []),
            *([("batches", self.batch)] if self.batch else []),
            ("started", _iso(self.finished_at - self.seconds)),
            ("finished", _iso(self.finished_at)),
            ("seconds", round(self.seconds, 3)),
            *([("stopped", stopped)] if stopped else []),
            *([("limits in force", self.limits)] if self.limits else []),
            *([("cost (USD)", self.cost_usd)] if self.cost_usd is not None else []),
            *([("tokens and most cost", self.estimate)] if self.estimate else []),
            *[("note", note) for note in self.notes],
        ]
        items = settings.items() if isinstance(settings, Mapping) else settings
        sections["Settings"] = [(str(k), human_value(v)) for k, v in items]
        return sections


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, tz=UTC).isoformat(timespec="seconds")


def human_value(value: object) -> object:
    """A setting as a person reads it: ``yes``/``no``, ``FIELD=VALUE, ...``, numbers as
    numbers, anything else as its text."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        return ", ".join(f"{key}={text}" for key, text in value.items()) or "none"
    if isinstance(value, int | float):
        return int(value) if isinstance(value, float) and value.is_integer() else value
    return "" if value is None else str(value)
