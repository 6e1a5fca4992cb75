"""A job's rows counted into its :class:`~batchrun.report.Summary`, chunk by chunk as each
chunk ends: a job of any size keeps its counts, never its rows."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from batchrun.report import Outcome, RowResult, Summary
from batchrun.sending.states import LEFT_STATES


class Tally:
    """Counts of a job's rows, added chunk by chunk as each chunk ends: a job of any size
    keeps its counts, never its rows."""

    __slots__ = (
        "failed",
        "ghosts",
        "left",
        "outcomes",
        "pending",
        "reconciled",
        "reconciled_now",
        "rows",
        "run_statuses",
        "sent",
        "unsure_before",
    )

    def __init__(self) -> None:
        self.rows = 0
        self.outcomes: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.run_statuses: Counter[str] = Counter()
        self.left = self.reconciled = self.reconciled_now = self.sent = self.ghosts = 0
        self.pending = self.unsure_before = 0

    def add(self, results: Sequence[RowResult], *, count_runs: bool = False) -> None:
        """Count ``results``, rows whose outcome is final."""
        self.rows += len(results)
        self.outcomes.update(r.outcome.value for r in results if r.outcome)
        self.failed.update(
            str(r.status) if r.status else "no answer"
            for r in results
            if r.outcome is Outcome.FAILED
        )
        if count_runs:
            self.run_statuses.update(r.run_status for r in results if r.run_status)
        self.left += sum(r.state in LEFT_STATES or r.outcome is Outcome.PENDING for r in results)
        self.pending += sum(r.outcome is Outcome.PENDING for r in results)
        self.unsure_before += sum(r.looked_unsure and not r.sent_now for r in results)
        self.reconciled += sum(r.reconciled for r in results)
        self.sent += sum(r.sent_now > 0 for r in results)
        self.reconciled_now += sum(r.reconciled and not r.reconciled_before for r in results)
        self.ghosts += sum(bool(r.ghost) for r in results)

    def summary(
        self,
        seconds: float,
        *,
        aborted: str | None = None,
        interrupted: bool = False,
        notes: tuple[str, ...] = (),
        from_journal: int = 0,
        followed: int = 0,
        answers: str = "runs",
        limits: str = "",
    ) -> Summary:
        """The summary of the rows counted so far."""
        outcomes = self.outcomes
        return Summary(
            rows=self.rows,
            outcomes={o.value: outcomes[o.value] for o in Outcome if outcomes[o.value]},
            failed_statuses=dict(self.failed),
            run_statuses=dict(self.run_statuses),
            reconciled=self.reconciled,
            seconds=seconds,
            aborted=aborted,
            interrupted=interrupted,
            notes=notes,
            sent=self.sent,
            from_journal=from_journal,
            followed=followed,
            left=self.left,
            pending=self.pending,
            unsure_before=self.unsure_before,
            reconciled_now=self.reconciled_now,
            collected=max(
                0, self.rows - outcomes[Outcome.INVALID.value] - from_journal - self.left
            ),
            ghosts=self.ghosts,
            answers=answers,
            limits=limits,
        )


def summarize(
    results: list[RowResult],
    seconds: float,
    *,
    aborted: str | None = None,
    interrupted: bool = False,
    notes: tuple[str, ...] = (),
    count_runs: bool = False,
    from_journal: int = 0,
    answers: str = "runs",
    limits: str = "",
) -> Summary:
    """Count the outcomes of a finished (or stopped) job."""
    tally = Tally()
    tally.add(results, count_runs=count_runs)
    return tally.summary(
        seconds,
        aborted=aborted,
        interrupted=interrupted,
        notes=notes,
        from_journal=from_journal,
        answers=answers,
        limits=limits,
    )
