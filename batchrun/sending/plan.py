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
from batchrun.sending.states import HOLDS_LANE, Action, Event, RowState, from_journal, plan_entry


def action_for(
    entry: Entry, row: RowResult, *, retry_failed: bool, wait: bool, reply: bool = False
) -> Action:
    """The action for a row whose journal entry is ``entry`` (``row`` restored from it);
    ``reply``: --reply, where the reply is read apart from the answer (runs)."""
    return plan_entry(
        from_journal(entry.state, bool(entry.result.get("ambiguous"))),
        retry_failed=retry_failed,
        wait=wait,
        answer_failed=row.outcome is Outcome.RUN_FAILED,
        going=row.run_status not in STOPPED_RUN_STATUSES,
        # A run still queued after a whole --wait-timeout, made although its create was
        # answered with an error, may never start.
        stalled=bool(row.ghost) and row.outcome is Outcome.PENDING and row.run_status == "queued",
        owes_reply=reply
        and row.outcome is Outcome.OK
        and row.run_status == "completed"
        and not row.reply,
    )


@dataclass
class JobPlan:
    """Rows of one job and what each still needs."""

    rows: list[RowResult]
    to_create: set[int] = field(default_factory=set)
    to_follow: set[int] = field(default_factory=set)
    look_once: set[int] = field(default_factory=set)
    # Rows to create that have no journal entry: the only ones that may be reserved (see
    # batchrun.sending.durability.ReservedAhead), as a reservation replaces the entry.
    no_entry: set[int] = field(default_factory=set)
    # Rows to create behind a run kept from the journal that stopped for tool outputs
    # (requires_action): its thread may still be held, so they read the thread first.
    look_first: set[int] = field(default_factory=set)
    from_journal: int = 0


def plan_job(
    rows: list[RowResult],
    entries: dict[str, Entry],
    *,
    retry_failed: bool,
    wait: bool,
    can_look: Callable[[RowResult], bool] = lambda row: True,
    reads_reply: Callable[[RowResult], bool] = lambda row: False,
    lane: str = "thread",
) -> JobPlan:
    """Decide per row, from the journal's ``entries``, what this job must do.

    ``can_look`` says whether what a row's request made can be looked up by its tag. Where
    it cannot, a row that may have arrived failed saying so, and ``--retry-failed`` is the
    user's word to send it again: it is sent without looking. ``reads_reply`` says whether
    a row's reply is read apart from its answer (--reply on runs): a row whose reply was
    never read is followed again to read it.

    Rows of one lane (``lane`` names it: thread, conversation) keep their order across
    jobs: a row kept from the journal unresolved (failed after a request that may have
    arrived) holds back the later rows of its lane, which say why, until it is resolved.
    """
    plan = JobPlan(rows)
    holding: dict[str, RowResult] = {}  # lane id -> the unresolved row holding it
    paused: set[str] = set()  # lanes whose kept run waits for tool outputs
    for row in rows:
        _plan_row(plan, row, entries, retry_failed, wait, can_look, reads_reply)
        if not row.thread_id:
            continue
        held_by = holding.get(row.thread_id)
        if held_by is not None and row.index in plan.to_create:
            plan.to_create.discard(row.index)
            row.fail(Outcome.NOT_SENT, held_reason(held_by, lane), Event.LEFT)
        elif held_by is None and _unresolved(plan, row):
            holding[row.thread_id] = row
        elif row.thread_id in paused and row.index in plan.to_create:
            plan.look_first.add(row.index)
            paused.discard(row.thread_id)  # once read, the lane knows
        elif row.run_status == "requires_action" and row.index not in plan.to_follow:
            paused.add(row.thread_id)
    return plan


def _unresolved(plan: JobPlan, row: RowResult) -> bool:
    """Whether ``row`` is left as it was, unresolved, so its lane's later rows must wait."""
    handled = row.index in plan.to_create or row.index in plan.to_follow
    return row.key is not None and not handled and row.state in HOLDS_LANE


def held_reason(held_by: RowResult, lane: str) -> str:
    """Why a row waits for an unresolved earlier row of its lane."""
    return (
        f"not sent: an earlier row on {lane} {held_by.thread_id} is unresolved "
        f"({held_by.error or 'not sent'}); once it is (--retry-failed sends it again), "
        "the rows after it go in order"
    )


def _plan_row(
    plan: JobPlan,
    row: RowResult,
    entries: dict[str, Entry],
    retry_failed: bool,
    wait: bool,
    can_look: Callable[[RowResult], bool],
    reads_reply: Callable[[RowResult], bool],
) -> None:
    """Decide what this job does with ``row``, from its journal entry."""
    if row.outcome is Outcome.INVALID or row.key is None:
        return
    entry = entries.get(row.key)
    if entry is None:
        plan.to_create.add(row.index)
        plan.no_entry.add(row.index)
        return
    row.restore(entry.result, entry.state)
    action = action_for(entry, row, retry_failed=retry_failed, wait=wait, reply=reads_reply(row))
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
        if row.state is RowState.DONE:
            row.move(Event.GOING)  # its reply is still to be read
