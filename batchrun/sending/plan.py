"""What a job does with each row, from the journal: a pure decision per row.

The decision is :func:`batchrun.sending.states.plan_entry` (the states' table for the next
job); this module applies it to the rows of one job and says which rows it creates, follows
or keeps, as a :class:`JobPlan`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from batchrun.report import STOPPED_RUN_STATUSES, Outcome, RowResult
from batchrun.sending.journal import Entry
from batchrun.sending.states import Action, Event, RowState, from_journal, plan_entry


def action_for(entry: Entry, row: RowResult, *, retry_failed: bool, wait: bool) -> Action:
    """The action for a row whose journal entry is ``entry`` (``row`` restored from it)."""
    return plan_entry(
        from_journal(entry.state, bool(entry.result.get("ambiguous"))),
        retry_failed=retry_failed,
        wait=wait,
        answer_failed=row.outcome is Outcome.RUN_FAILED,
        going=row.run_status not in STOPPED_RUN_STATUSES,
        # A run still queued after a whole --wait-timeout, made although its create was
        # answered with an error, may never start.
        stalled=bool(row.ghost) and row.outcome is Outcome.PENDING and row.run_status == "queued",
    )


@dataclass
class JobPlan:
    """Rows of one job and what each still needs."""

    rows: list[RowResult]
    to_create: set[int] = field(default_factory=set)
    to_follow: set[int] = field(default_factory=set)
    look_once: set[int] = field(default_factory=set)
    from_journal: int = 0


def plan_job(
    rows: list[RowResult],
    entries: dict[str, Entry],
    *,
    retry_failed: bool,
    wait: bool,
    can_look: Callable[[RowResult], bool] = lambda row: True,
) -> JobPlan:
    """Decide per row, from the journal's ``entries``, what this job must do.

    ``can_look`` says whether what a row's request made can be looked up by its tag. Where
    it cannot, a row that may have arrived failed saying so, and ``--retry-failed`` is the
    user's word to send it again: it is sent without looking.
    """
    plan = JobPlan(rows)
    for row in rows:
        if row.outcome is Outcome.INVALID or row.key is None:
            continue
        entry = entries.get(row.key)
        if entry is None:
            plan.to_create.add(row.index)
            continue
        row.restore(entry.result, entry.state)
        action = action_for(entry, row, retry_failed=retry_failed, wait=wait)
        if action is Action.KEEP:
            plan.from_journal += 1
        elif action is Action.SEND:
            blind = row.state is RowState.FAILED_UNSURE and not can_look(row)
            # It failed saying its answer may exist, and the user asked to send it again.
            row.users_word = row.state is RowState.FAILED_UNSURE
            row.move(Event.RESEND_BLIND if blind else Event.RESEND)
            plan.to_create.add(row.index)
        elif action is Action.NEW_ANSWER:
            row.superseded.append(row.run_id)
            row.run_id = row.run_status = row.last_error = row.reply = row.ghost = ""
            row.usage = {}
            row.outcome, row.error = None, ""
            row.reconciled = False
            row.move(Event.NEW_ANSWER)
            plan.to_create.add(row.index)
        else:
            plan.to_follow.add(row.index)
            if action is Action.LOOK_ONCE:
                plan.look_once.add(row.index)
            row.outcome, row.error = Outcome.OK, ""  # "pending" last time: follow it again
    return plan
