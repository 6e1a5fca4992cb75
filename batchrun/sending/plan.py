"""What a job does with each row, from the journal: a pure decision per row.

entry state  + what the row needs       -> action
(no entry)                              -> send
sending      (caught in flight)         -> send, looking for its run first
failed       with --retry-failed        -> send (looking first if it may have arrived)
failed/done  run ended failed, --retry-failed -> a new run (the old one never adopted)
created      with --wait, run going     -> follow it
anything else                           -> keep the result from the journal
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from batchrun.report import STOPPED_RUN_STATUSES, Outcome, RowResult
from batchrun.sending.journal import CREATED, DONE, FAILED, SENDING, Entry


class Action(StrEnum):
    """What this job does with one row."""

    KEEP = "keep"  # its result comes from the journal
    SEND = "send"
    NEW_RUN = "new run"  # its run ended failed: a new one (--retry-failed)
    FOLLOW = "follow"  # its run may still be going: follow it (--wait)
    LOOK_ONCE = "look once"  # a run this job gave up on before: read it, do not wait again


def plan_entry(state: str, row: RowResult, *, retry_failed: bool, wait: bool) -> Action:
    """The action for a row whose journal entry is ``state`` (``row`` restored from it)."""
    if state == SENDING:
        return Action.SEND
    run_failed = row.outcome is Outcome.RUN_FAILED
    if state in (FAILED, DONE) and run_failed:
        return Action.NEW_RUN if retry_failed else Action.KEEP
    if state == FAILED:
        return Action.SEND if retry_failed else Action.KEEP
    if state == CREATED and wait and row.run_status not in STOPPED_RUN_STATUSES:
        # A run still queued after a whole --wait-timeout, made although its create was
        # answered with an error, may never start: look at it once, do not wait again.
        stalled = row.ghost and row.outcome is Outcome.PENDING and row.run_status == "queued"
        return Action.LOOK_ONCE if stalled else Action.FOLLOW
    return Action.KEEP


@dataclass
class Batch:
    """Rows of one job and what each still needs."""

    rows: list[RowResult]
    to_create: set[int] = field(default_factory=set)
    to_follow: set[int] = field(default_factory=set)
    look_once: set[int] = field(default_factory=set)
    from_journal: int = 0


def plan_batch(
    rows: list[RowResult],
    entries: dict[str, Entry],
    *,
    retry_failed: bool,
    wait: bool,
    can_look: Callable[[RowResult], bool] = lambda row: True,
) -> Batch:
    """Decide per row, from the journal's ``entries``, what this job must do.

    ``can_look`` says whether what a row's request made can be looked up by its tag. Where
    it cannot, a row that may have arrived failed saying so, and ``--retry-failed`` is the
    user's word to send it again: it is sent without looking.
    """
    batch = Batch(rows)
    for row in rows:
        if row.outcome is Outcome.INVALID or row.key is None:
            continue
        entry = entries.get(row.key)
        if entry is None:
            batch.to_create.add(row.index)
            continue
        row.restore(entry.result)
        action = plan_entry(entry.state, row, retry_failed=retry_failed, wait=wait)
        if action is Action.KEEP:
            batch.from_journal += 1
        elif action is Action.SEND:
            row.maybe_sent = row.maybe_sent or entry.state == SENDING
            if entry.state == FAILED and not can_look(row):
                row.maybe_sent = False
            batch.to_create.add(row.index)
        elif action is Action.NEW_RUN:
            row.superseded.append(row.run_id)
            row.run_id = row.run_status = row.last_error = row.reply = row.ghost = ""
            row.usage = {}
            row.outcome, row.error = None, ""
            row.reconciled = row.maybe_sent = False
            batch.to_create.add(row.index)
        else:
            batch.to_follow.add(row.index)
            if action is Action.LOOK_ONCE:
                batch.look_once.add(row.index)
            row.outcome, row.error = Outcome.OK, ""  # "pending" last time: follow it again
    return batch
