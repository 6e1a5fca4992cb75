"""Reconciling a row by its run tag: what became of a create whose answer was lost.

Before anything is sent again after an answer that may hide a created run (timeout,
dropped connection, 5xx), and for rows a crash caught in flight, the lane's newest answers
(or the row's own, by its tag) are read and :func:`~batchrun.sending.judge.judge` says
what became of the create: adopt it, wait for the lane, send, or fail the row saying why.
:class:`Reconciling` is that part of :class:`~batchrun.sending.sender.RowSender`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from batchrun.config import Settings
from batchrun.endpoints import Endpoint
from batchrun.report import Outcome, RowResult
from batchrun.sending.client import ApiClient
from batchrun.sending.control import NO_LOOKUP, TAGS_KEPT, Control
from batchrun.sending.judge import Judgement, Verdict, judge, made_since, tag_of
from batchrun.sending.reads import Reader, Unread
from batchrun.sending.states import Event
from batchrun.sending.steps import SEND, SETTLED, LaneBusy, Step, Unsure

# Answers read back by themselves in one look, where the list left their metadata blank.
READ_BACK_BLANK = 3
# Said once in the summary when rows could not be settled because no answer showed a tag
# (left out when the job later sees the server keep its tags).
NO_METADATA_TAIL = "cannot be matched to rows; rows that may have been created were not re-sent"
NO_METADATA_NOTE = "the server does not return {word} metadata, so {answers} " + NO_METADATA_TAIL


def is_no_metadata_note(note: str) -> bool:
    """Whether ``note`` is :data:`NO_METADATA_NOTE`, in any endpoint's words."""
    return note.endswith(NO_METADATA_TAIL)


NO_LOOKUP_NOTE = (
    "the server cannot list {answers} (its lookup route answered 404, 405 or 501), so rows "
    "whose request may have arrived cannot be checked: they say so, and --retry-failed "
    "sends them"
)


class Reconciling:
    """Looks for a row's answer by its tag and acts on the verdict (part of RowSender)."""

    # Set by RowSender.__init__.
    client: ApiClient
    settings: Settings
    endpoint: Endpoint
    control: Control
    reader: Reader
    job_id: str
    clock: Callable[[], float]
    # How long after a request left the server may still be making what it asked for.
    _creating_for: float
    # An answer made by this job (or one before it) whose create answer showed its tag:
    # read back, once, when a look needs to know whether the server keeps tags.
    tagged: tuple[RowResult, str] | None
    _read_back: bool

    def tag(self, row: RowResult) -> str | None:
        """The row's run tag: its key and this job's id (None with --no-run-tag)."""
        if not (self.settings.run_tag and row.key):
            return None
        return f"{row.key}.{self.job_id}" if self.job_id else row.key

    async def look(self, row: RowResult) -> Step:
        """Read the lane's answers (or the row's, by its tag) and act on the judge's
        verdict: settled (adopted, or failed with a reason), busy, or :data:`SEND`."""
        tag = self.tag(row)
        # A row sent again on the user's word (--retry-failed after "may exist"): its own
        # answer is still adopted if found, but what cannot be told no longer stops it.
        unsure = row.unsure and not row.users_word
        if row.users_word and tag is None and not self.endpoint.has_active:
            return SEND  # nothing to look for, and no lane to wait for
        if unsure and tag is None:
            # Without a tag no run can be told to be this row's: nothing to read.
            return self._apply(row, Judgement(Verdict.UNSURE, reason="no tag"))
        if not self.can_look(row):
            if row.users_word:
                return SEND
            if not row.unsure:  # a "busy" answer, and the lane cannot be read: wait
                return LaneBusy(None)
            return self._apply(row, Judgement(Verdict.UNSURE, reason="no list"))
        # A row that may have arrived looks back to its first attempt, page after page.
        since = row.sent_at if row.unsure and tag is not None else None
        found = await self.reader.listing(self.endpoint.look_path(row, tag or ""), since=since)
        if isinstance(found, Unread) and not self.can_look(row):  # no lookup route
            return await self.look(row)
        if isinstance(found, Unread):
            word = self.endpoint.answer_word
            why = (
                f"not sent again: a {word} may have been created and the {word}s could not "
                f"be read to check ({found.reason}); rerun to look for it again (it is "
                "never sent twice)"
                if row.unsure
                else f"not sent: could not read the {word}s to check for a {word} already "
                f"created ({found.reason}); rerun later (nothing was sent twice)"
            )
            row.fail(Outcome.NOT_SENT, why, Event.LEFT)
            return SETTLED
        self._observe_tags(found)
        judgement = self._judge(row, found, tag, unsure)
        if judgement.reason == "no metadata" and await self._tags_kept():
            judgement = self._judge(row, found, tag, unsure)
        if unsure and tag is not None and judgement.verdict is not Verdict.ADOPT:
            read = await self._read_back_blank(row, found)
            if read is not found:
                judgement = self._judge(row, read, tag, unsure)
        return self._apply(row, judgement)

    def _judge(
        self, row: RowResult, found: list[dict[str, Any]], tag: str | None, unsure: bool
    ) -> Judgement:
        return judge(
            found,
            tag=tag,
            unsure=unsure,
            sent_at=row.sent_at,
            superseded=row.superseded,
            tags_seen=self.control.tags_seen,
            clock_gap=self.reader.clock_gap,
        )

    def can_look(self, row: RowResult) -> bool:
        """Whether what the row's request made can be looked up: by its endpoint, on a
        server not seen to lack the lookup route (then rows are as ``store: false`` ones)."""
        return self.endpoint.can_look(row) and NO_LOOKUP not in self.control.facts

    def _apply(self, row: RowResult, judgement: Judgement) -> Step:
        run = judgement.run or {}
        verdict = judgement.verdict
        if verdict is Verdict.ADOPT:
            self._take(row, dict(run), reconciled=True)
            return SETTLED
        if verdict is Verdict.UNSURE:
            row.looked_unsure = True
            row.fail(Outcome.FAILED, self._unsure_reason(row, judgement))
            return SETTLED
        if verdict is Verdict.BLOCKED:
            reason = self.endpoint.blocked_reason(run.get("id"), row.thread_id)
            row.fail(Outcome.NOT_SENT, reason, Event.LEFT)
            return SETTLED
        if verdict is Verdict.BUSY:
            return LaneBusy(str(run.get("id")))
        if row.unsure and self.clock() < (until := self._unsure_until(row)):
            return Unsure(until)  # absent, so far: the server may still be at it
        return SEND

    def _unsure_until(self, row: RowResult) -> float:
        """Until when an unsure row's request may still be making its answer: as this job
        saw it leave; or, for a row a killed job left in flight (marked, never answered)
        on an endpoint that lists an answer only once it is made, from when that job sent
        it. (Elsewhere such a row is looked for once: the server made what it was asked
        as it took the request.)"""
        if row.unsure_until or not row.sent_at or not self.endpoint.listed_when_made:
            return row.unsure_until
        return row.sent_at + self._creating_for

    def _unsure_reason(self, row: RowResult, judgement: Judgement) -> str:
        if row.error or row.status:
            before = row.error or f"HTTP {row.status}"
        elif row.sent_now:
            before = "no answer"
        else:  # marked by a job that stopped (killed): not the server's silence
            before = "an earlier run stopped while this row's request may have been going out"
        if judgement.reason == "no list":
            if NO_LOOKUP in self.control.facts:
                self.control.note(NO_LOOKUP_NOTE.format(answers=self.endpoint.answers))
            return self.endpoint.unsure_reason(before)
        endpoint = self.endpoint
        word = endpoint.answer_word
        where = f"the {endpoint.lane}" if endpoint.lane else f"the server's {endpoint.answers}"
        if judgement.reason == "no tag":
            return (
                f"{before}; a {word} may have been created and without the run tag it cannot "
                f"be found: check {where}, then rerun with --retry-failed"
            )
        self.control.note(NO_METADATA_NOTE.format(word=word, answers=endpoint.answers))
        return (
            f"a {word} may have been created ({(judgement.run or {}).get('id')}) and no "
            f"{word} read so far shows metadata to tell whose it is; check {where}, then "
            "rerun with --retry-failed"
        )

    def _observe_tags(self, found: Sequence[Mapping[str, Any]]) -> None:
        """Runs as read back (listed, or retrieved): a tag among them is a tag kept."""
        if not self.control.tags_seen and any(tag_of(run) is not None for run in found):
            self.control.learn(TAGS_KEPT)

    async def _read_back_blank(
        self, row: RowResult, found: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """``found`` with each answer that may be the row's and whose listed metadata is
        blank (absent, null, ``{}``) read back by itself: a server may leave metadata out
        of its list but keep it on the answer, and a blank listed tag proves nothing of
        whose the answer is. Only once the server is known to keep tags (before, such
        answers leave the row unsure anyway). At most READ_BACK_BLANK reads a look."""
        if not self.control.tags_seen:
            return found
        blank = [
            index
            for index, answer in enumerate(found)
            if not answer.get("metadata")
            and isinstance(answer.get("id"), str)
            and made_since(answer, row.sent_at, self.reader.clock_gap)
        ][:READ_BACK_BLANK]
        if not blank:
            return found
        found = list(found)
        for index in blank:
            read = await self.reader.read(self.endpoint.follow_path(row, found[index]["id"]))
            if read is not None and read.status == 200 and isinstance(read.data, dict):
                found[index] = read.data
        return found

    async def _tags_kept(self) -> bool:
        """Whether the server keeps run tags: known, or learnt now by reading back, once a
        job, an answer whose create answer showed its tag (a create answer alone may only
        echo the request's metadata)."""
        if self.control.tags_seen or self.tagged is None or self._read_back:
            return self.control.tags_seen
        self._read_back = True
        made, answer_id = self.tagged
        answer = await self.reader.read(self.endpoint.follow_path(made, answer_id))
        if answer is not None and answer.status == 200 and isinstance(answer.data, dict):
            self._observe_tags([answer.data])
        return self.control.tags_seen

    def _take(self, row: RowResult, run: dict[str, Any], *, reconciled: bool = False) -> None:
        """The row's run exists: take it as the row's result, judged like any run."""
        if reconciled:
            self._observe_tags([run])  # read back, not an answer that may echo the request
        failed_answer = row.status if row.status is not None and row.status >= 500 else None
        self.endpoint.settle(row, run, wait=self.settings.wait)  # settles the row's state
        if reconciled:
            row.reconciled = True
            # Found, so a create went out, whichever job's (a killed job marked the row
            # before its attempt was counted).
            row.attempts = max(row.attempts, 1)
            row.status = 200
            row.response = self.client.mask(orjson.dumps(run).decode())
            if failed_answer is not None:
                row.ghost = (
                    f"the create answered HTTP {failed_answer}, but the run was made "
                    "(found by its run tag)"
                )
        if row.ghost:
            row.error = "; ".join(part for part in (row.error, row.ghost) if part)
