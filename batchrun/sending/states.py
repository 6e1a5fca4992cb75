"""A row's life: one enum of states, one table of transitions, one table for the next job.

The rule of this file: everything that decides what state a row is in lives here, as much
as possible in the tables; every other module (the sender, the reads, the runner, the
journal, the plan, the endpoints' ``settle``) reports an :class:`Event` and asks. A row's
:class:`RowState` changes only through :func:`after` (``RowResult.move``).

States, and what the journal keeps of each (the journal's word for it)::

    UNSENT         nothing left that could have arrived; the next job sends it   (no entry)
    UNSURE         a request may have arrived unanswered, and nothing was found;
                   whoever sends it next looks for its answer first              (sending)
    CREATED        its answer exists and may still change: follow it (--wait)    (created)
    DONE           final: never sent again                                       (done)
    FAILED         failed; sent again only with --retry-failed                   (failed)
    FAILED_UNSURE  failed after a request that may have arrived: --retry-failed
                   looks for its answer first (where it can be looked up)        (failed)

A row is marked ``sending`` in the journal before its first request leaves: on disk, a
marked row is UNSURE until its state is recorded. A row whose answer cannot be looked up
may be ``reserved`` first (see :class:`batchrun.sending.durability.ReservedAhead`): to a
rerun on the same boot of the machine a reserved row was never sent (no entry); on
another boot it may have been, and is UNSURE.

Events, from every state they may happen in (:data:`TRANSITIONS`)::

    MAYBE_ARRIVED  an answer that may hide a created object (time-out, reset, 5xx),
                   or a request cut off in flight
    GOING          its answer exists and is still going       (created, adopted, followed)
    FINISHED       its answer is final and completed
    ANSWER_FAILED  its answer ended other than completed: a new one on --retry-failed
    REFUSED        the row failed (refused, retries ran out, a bug): --retry-failed
    LEFT           not sent, or not settled: left for the next job, which sends it
    INVALID        the body is invalid: never sent
    RESEND         this job sends it again (looking first where it is unsure)
    RESEND_BLIND   --retry-failed where nothing can be looked up: the user's word
    NEW_ANSWER     its answer ended failed: --retry-failed makes a new one
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

# The journal's words for its entries (see batchrun.sending.journal).
SENDING, CREATED, DONE, FAILED = "sending", "created", "done", "failed"
RESERVED = "reserved"


class RowState(StrEnum):
    """Where a row is in its life (see the module docstring)."""

    UNSENT = "unsent"
    UNSURE = "unsure"
    CREATED = "created"
    DONE = "done"
    FAILED = "failed"
    FAILED_UNSURE = "failed unsure"


class Event(StrEnum):
    """What happened to a row (see the module docstring)."""

    MAYBE_ARRIVED = "maybe arrived"
    GOING = "going"
    FINISHED = "finished"
    ANSWER_FAILED = "answer failed"
    REFUSED = "refused"
    LEFT = "left"
    INVALID = "invalid"
    RESEND = "resend"
    RESEND_BLIND = "resend blind"
    NEW_ANSWER = "new answer"


class IllegalTransition(RuntimeError):
    """An event that cannot happen to a row in its state: a bug."""


_S, _E = RowState, Event
_EVERY = tuple(RowState)
# An answer that exists settles the row, whatever was known before.
_ANSWERED = {
    (state, event): target
    for state in _EVERY
    for event, target in (
        (_E.GOING, _S.CREATED),
        (_E.FINISHED, _S.DONE),
        (_E.ANSWER_FAILED, _S.FAILED),
    )
}

# (state, event) -> state. A pair missing here is an illegal transition.
TRANSITIONS: Mapping[tuple[RowState, Event], RowState] = {
    **_ANSWERED,
    (_S.UNSENT, _E.MAYBE_ARRIVED): _S.UNSURE,
    (_S.UNSURE, _E.MAYBE_ARRIVED): _S.UNSURE,
    (_S.FAILED, _E.MAYBE_ARRIVED): _S.FAILED_UNSURE,
    (_S.FAILED_UNSURE, _E.MAYBE_ARRIVED): _S.FAILED_UNSURE,
    # Failing keeps what is known of a request that may have arrived.
    (_S.UNSENT, _E.REFUSED): _S.FAILED,
    (_S.UNSURE, _E.REFUSED): _S.FAILED_UNSURE,
    (_S.CREATED, _E.REFUSED): _S.FAILED,
    (_S.DONE, _E.REFUSED): _S.FAILED,
    (_S.FAILED, _E.REFUSED): _S.FAILED,
    (_S.FAILED_UNSURE, _E.REFUSED): _S.FAILED_UNSURE,
    # Left for the next job: it sends the row, looking first if it may have arrived.
    (_S.UNSENT, _E.LEFT): _S.UNSENT,
    (_S.UNSURE, _E.LEFT): _S.UNSURE,
    (_S.FAILED, _E.LEFT): _S.UNSENT,
    (_S.FAILED_UNSURE, _E.LEFT): _S.UNSURE,
    (_S.UNSENT, _E.INVALID): _S.DONE,
    # The next job's plan (see NEXT_JOB).
    (_S.UNSURE, _E.RESEND): _S.UNSURE,
    (_S.FAILED, _E.RESEND): _S.UNSENT,
    (_S.FAILED_UNSURE, _E.RESEND): _S.UNSURE,
    (_S.FAILED, _E.RESEND_BLIND): _S.UNSENT,
    (_S.FAILED_UNSURE, _E.RESEND_BLIND): _S.UNSENT,
    (_S.DONE, _E.NEW_ANSWER): _S.UNSENT,
    (_S.FAILED, _E.NEW_ANSWER): _S.UNSENT,
    (_S.FAILED_UNSURE, _E.NEW_ANSWER): _S.UNSENT,
}


def after(state: RowState, event: Event) -> RowState:
    """The state a row in ``state`` is in after ``event``."""
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        raise IllegalTransition(f"a row {state.value} cannot be {event.value}") from None


# What the journal keeps of each state (None: no entry), and what a row's result says of
# it (``next``, ``ambiguous``: the words of journals written before this table).
IN_JOURNAL: Mapping[RowState, str | None] = {
    _S.UNSENT: None,
    _S.UNSURE: SENDING,
    _S.CREATED: CREATED,
    _S.DONE: DONE,
    _S.FAILED: FAILED,
    _S.FAILED_UNSURE: FAILED,
}
NEXT_WORD: Mapping[RowState, str] = {
    _S.UNSENT: "send",
    _S.UNSURE: "send",
    _S.CREATED: "follow",
    _S.DONE: "nothing",
    _S.FAILED: "retry",
    _S.FAILED_UNSURE: "retry",
}
UNSURE_STATES = frozenset({_S.UNSURE, _S.FAILED_UNSURE})
# Left for the next job, which sends it without being asked.
LEFT_STATES = frozenset({_S.UNSENT, _S.UNSURE})
# Only a row in one of these may be marked ``sending`` ahead of its send: a mark over a
# final state would make the next job look for (or send) a row that is settled.
MARKABLE = frozenset({_S.UNSENT, _S.UNSURE})
# A row in one of these, its create over (or kept from the journal by the plan: on every
# rerun), holds back the later rows of its lane.
HOLDS_LANE = frozenset({_S.UNSENT, _S.UNSURE, _S.FAILED_UNSURE})


def from_journal(entry: str, ambiguous: bool) -> RowState:
    """The state of a row whose journal entry is ``entry`` (its result ``ambiguous``)."""
    if entry in (SENDING, RESERVED):  # reserved on another boot: it may have been sent
        return _S.UNSURE
    if entry == CREATED:
        return _S.CREATED
    if entry == FAILED:
        return _S.FAILED_UNSURE if ambiguous else _S.FAILED
    return _S.DONE


def from_words(next_word: str, ambiguous: bool) -> RowState:
    """The state a row's saved result describes (for results read without their entry)."""
    for state, word in NEXT_WORD.items():
        if word == next_word and (state in UNSURE_STATES) == ambiguous:
            return state
    return {"follow": _S.CREATED, "nothing": _S.DONE}.get(next_word, _S.UNSENT)


class Action(StrEnum):
    """What the next job does with one row that has a journal entry."""

    KEEP = "keep"  # its result comes from the journal
    SEND = "send"  # sent (looking first for its answer if it is unsure)
    NEW_ANSWER = "new answer"  # its answer ended failed: a new one (--retry-failed)
    FOLLOW = "follow"  # its answer may still be going: follow it (--wait)
    LOOK_ONCE = "look once"  # an answer this job gave up on before: read it, no waiting


# state -> (action of a plain rerun, action with --retry-failed). Refined by plan_entry:
# an answer that ended failed gets a new one; with --wait, a going answer is followed.
NEXT_JOB: Mapping[RowState, tuple[Action, Action]] = {
    _S.UNSENT: (Action.SEND, Action.SEND),
    _S.UNSURE: (Action.SEND, Action.SEND),
    _S.CREATED: (Action.KEEP, Action.KEEP),
    _S.DONE: (Action.KEEP, Action.KEEP),
    _S.FAILED: (Action.KEEP, Action.SEND),
    _S.FAILED_UNSURE: (Action.KEEP, Action.SEND),
}


def plan_entry(
    state: RowState,
    *,
    retry_failed: bool,
    wait: bool,
    answer_failed: bool = False,
    going: bool = False,
    stalled: bool = False,
    owes_reply: bool = False,
) -> Action:
    """What the next job does with a row in ``state``.

    ``answer_failed``: its answer ended other than completed; ``going``: its answer may
    still change; ``stalled``: it was made although its create failed and stayed queued
    for a whole --wait-timeout (it may never start: look at it once, do not wait again);
    ``owes_reply``: --reply, and its answer completed but its reply was never read (a row
    is done only when everything asked of it is in the journal).
    """
    if answer_failed and state in (_S.DONE, _S.FAILED, _S.FAILED_UNSURE):
        return Action.NEW_ANSWER if retry_failed else Action.KEEP
    if state is _S.CREATED and wait and going:
        return Action.LOOK_ONCE if stalled else Action.FOLLOW
    if state in (_S.CREATED, _S.DONE) and wait and owes_reply:
        return Action.FOLLOW
    return NEXT_JOB[state][retry_failed]
