"""A row's life, by tables: its transitions, what the journal keeps of each state, and what
the next job does with it (batchrun.sending.states)."""

from __future__ import annotations

from typing import Any

import pytest

from batchrun.report import Outcome, RowResult
from batchrun.sending.journal import Entry
from batchrun.sending.plan import action_for, plan_job
from batchrun.sending.states import (
    CREATED,
    DONE,
    FAILED,
    IN_JOURNAL,
    NEXT_JOB,
    SENDING,
    TRANSITIONS,
    Action,
    Event,
    IllegalTransition,
    RowState,
    after,
    from_journal,
)

S, E = RowState, Event

TRANSITION_CASES = [
    pytest.param(S.UNSENT, E.MAYBE_ARRIVED, S.UNSURE, id="a-time-out-leaves-it-unsure"),
    pytest.param(S.UNSURE, E.FINISHED, S.DONE, id="adopted-and-final"),
    pytest.param(S.UNSURE, E.GOING, S.CREATED, id="adopted-and-going"),
    pytest.param(S.UNSENT, E.ANSWER_FAILED, S.FAILED, id="its-run-ended-failed"),
    pytest.param(S.UNSENT, E.REFUSED, S.FAILED, id="refused"),
    pytest.param(S.UNSURE, E.REFUSED, S.FAILED_UNSURE, id="failing-keeps-it-unsure"),
    pytest.param(S.CREATED, E.REFUSED, S.FAILED, id="a-bug-while-following"),
    pytest.param(S.FAILED, E.MAYBE_ARRIVED, S.FAILED_UNSURE, id="a-bug-may-hide-a-request"),
    pytest.param(S.UNSENT, E.LEFT, S.UNSENT, id="left-unsent-no-entry"),
    pytest.param(S.UNSURE, E.LEFT, S.UNSURE, id="left-unsure-looked-for-next-time"),
    pytest.param(S.FAILED_UNSURE, E.LEFT, S.UNSURE, id="a-failed-unsure-part-left"),
    pytest.param(S.UNSENT, E.INVALID, S.DONE, id="invalid-is-final"),
    pytest.param(S.FAILED, E.RESEND, S.UNSENT, id="retry-failed"),
    pytest.param(S.FAILED_UNSURE, E.RESEND, S.UNSURE, id="retry-failed-looks-first"),
    pytest.param(S.FAILED_UNSURE, E.RESEND_BLIND, S.UNSENT, id="retry-failed-cannot-look"),
    pytest.param(S.UNSURE, E.RESEND, S.UNSURE, id="caught-in-flight-looked-for"),
    pytest.param(S.DONE, E.NEW_ANSWER, S.UNSENT, id="a-failed-run-gets-a-new-one"),
]


@pytest.mark.parametrize(("state", "event", "target"), TRANSITION_CASES)
def test_the_transition_table(state: RowState, event: Event, target: RowState) -> None:
    assert after(state, event) is target
    row = RowResult(0, state=state)
    row.move(event)
    assert row.state is target


ILLEGAL_CASES = [
    pytest.param(S.DONE, E.MAYBE_ARRIVED, id="a-final-row-is-never-sent"),
    pytest.param(S.CREATED, E.RESEND, id="an-existing-answer-is-not-sent-again"),
    pytest.param(S.UNSENT, E.NEW_ANSWER, id="nothing-to-replace"),
    pytest.param(S.CREATED, E.INVALID, id="invalid-only-before-sending"),
    pytest.param(S.DONE, E.LEFT, id="a-final-row-is-not-left"),
]


@pytest.mark.parametrize(("state", "event"), ILLEGAL_CASES)
def test_an_illegal_transition_is_a_bug(state: RowState, event: Event) -> None:
    with pytest.raises(IllegalTransition, match=state.value):
        after(state, event)


def test_an_answer_that_exists_settles_a_row_in_any_state() -> None:
    for state in RowState:
        assert TRANSITIONS[state, E.GOING] is S.CREATED
        assert TRANSITIONS[state, E.FINISHED] is S.DONE
        assert TRANSITIONS[state, E.ANSWER_FAILED] is S.FAILED


JOURNAL_CASES = [
    pytest.param(S.UNSENT, None, id="unsent-no-entry"),
    pytest.param(S.UNSURE, SENDING, id="unsure-is-sending"),
    pytest.param(S.CREATED, CREATED, id="created"),
    pytest.param(S.DONE, DONE, id="done"),
    pytest.param(S.FAILED, FAILED, id="failed"),
    pytest.param(S.FAILED_UNSURE, FAILED, id="failed-unsure"),
]


@pytest.mark.parametrize(("state", "entry"), JOURNAL_CASES)
def test_the_journal_keeps_each_state(state: RowState, entry: str | None) -> None:
    assert IN_JOURNAL[state] == entry
    row = RowResult(0, state=state)
    if entry is not None:  # and the next job reads the same state back
        restored = RowResult(0)
        restored.restore(row.to_journal(), entry)
        assert restored.state is state
        words = RowResult(0)
        words.restore(row.to_journal())  # a result read without its entry
        assert words.state is state


def test_every_state_has_a_next_job() -> None:
    assert set(NEXT_JOB) == set(RowState) == set(IN_JOURNAL)


def restored(outcome: Outcome | None, run_status: str = "", ghost: str = "") -> RowResult:
    return RowResult(0, outcome=outcome, run_status=run_status, ghost=ghost)


PLAN_CASES = [
    pytest.param(SENDING, restored(None), {}, Action.SEND, id="caught-in-flight"),
    pytest.param(FAILED, restored(Outcome.FAILED), {}, Action.KEEP, id="failed-kept"),
    pytest.param(
        FAILED, restored(Outcome.FAILED), {"retry_failed": True}, Action.SEND, id="retry-failed"
    ),
    pytest.param(
        DONE,
        restored(Outcome.RUN_FAILED, "failed"),
        {"retry_failed": True},
        Action.NEW_ANSWER,
        id="run-failed-gets-a-new-run",
    ),
    pytest.param(
        DONE, restored(Outcome.RUN_FAILED, "failed"), {}, Action.KEEP, id="run-failed-kept"
    ),
    pytest.param(
        CREATED, restored(Outcome.OK, "queued"), {"wait": True}, Action.FOLLOW, id="follow"
    ),
    pytest.param(CREATED, restored(Outcome.OK, "queued"), {}, Action.KEEP, id="no-wait-kept"),
    pytest.param(
        CREATED,
        restored(Outcome.PENDING, "queued", ghost="HTTP 500"),
        {"wait": True},
        Action.LOOK_ONCE,
        id="a-stalled-ghost-run-is-looked-at-once",
    ),
    pytest.param(DONE, restored(Outcome.OK, "completed"), {"wait": True}, Action.KEEP, id="done"),
    pytest.param(
        DONE,
        restored(Outcome.OK, "completed"),
        {"wait": True, "reply": True},
        Action.FOLLOW,
        id="a-completed-run-whose-reply-was-never-read-is-read",
    ),
    pytest.param(
        CREATED,
        restored(Outcome.OK, "completed"),
        {"wait": True, "reply": True},
        Action.FOLLOW,
        id="created-and-completed-its-reply-still-to-read",
    ),
]


@pytest.mark.parametrize(("entry", "row", "options", "action"), PLAN_CASES)
def test_the_plan(entry: str, row: RowResult, options: dict[str, Any], action: Action) -> None:
    flags = {"retry_failed": False, "wait": False, **options}
    assert action_for(Entry(entry, row.to_journal()), row, **flags) is action


def test_a_planned_row_starts_the_job_in_the_state_it_is_sent_from() -> None:
    failed = RowResult(0, key="a")
    failed.fail(Outcome.FAILED, "HTTP 500")
    unsure = RowResult(1, key="b")
    unsure.move(Event.MAYBE_ARRIVED)
    unsure.fail(Outcome.FAILED, "timed out")
    entries = {
        "a": Entry(FAILED, failed.to_journal()),
        "b": Entry(FAILED, unsure.to_journal()),
        "c": Entry(SENDING, RowResult(2).to_journal()),
    }
    rows = [RowResult(0, key="a"), RowResult(1, key="b"), RowResult(2, key="c")]
    plan = plan_job(rows, entries, retry_failed=True, wait=False)
    assert plan.to_create == {0, 1, 2}
    assert [row.state for row in rows] == [S.UNSENT, S.UNSURE, S.UNSURE]
    assert from_journal(SENDING, False) is S.UNSURE


def test_an_unresolved_row_holds_back_the_later_rows_of_its_lane_in_the_plan() -> None:
    unsure = RowResult(0, key="a", thread_id="t_1")
    unsure.move(Event.MAYBE_ARRIVED)
    unsure.fail(Outcome.FAILED, "timed out; a response may have been created")
    entries = {"a": Entry(FAILED, unsure.to_journal())}
    rows = [
        RowResult(0, key="a", thread_id="t_1"),
        RowResult(1, key="b", thread_id="t_1"),
        RowResult(2, key="c", thread_id="t_2"),
    ]
    plan = plan_job(rows, entries, retry_failed=False, wait=False, lane="conversation")
    assert plan.to_create == {2}
    assert rows[1].outcome is Outcome.NOT_SENT and rows[1].state is S.UNSENT
    assert rows[1].error.startswith("not sent: an earlier row on conversation t_1 is unresolved")
    rows = [RowResult(0, key="a", thread_id="t_1"), RowResult(1, key="b", thread_id="t_1")]
    plan = plan_job(rows, entries, retry_failed=True, wait=False)
    assert plan.to_create == {0, 1}  # --retry-failed: the first row again, then the second
