"""The reconciliation judge: from a thread's newest runs, what became of a row's create.

A pure function, tested by a table like :func:`batchrun.sending.retry.decide`::

    >>> judge([{"id": "run_1", "status": "queued", "metadata": {"batchrun_key": "k.j"}}],
    ...       tag="k.j", unsure=True, sent_at=0.0).verdict
    <Verdict.ADOPT: 'adopt'>

Verdicts, in the order they win:

- ``ADOPT`` — a run carries the row's tag (and is not one the row already replaced): it is
  the row's run, whatever the answer to the create said.
- ``UNSURE`` — the create may have arrived, and nothing can tell whether a run is its own
  (no run tag, or a server that may drop metadata and a run that may have started since
  the row was first sent). A second run costs money, so the row is not sent blindly.

What the job has seen decides what a run without the row's tag is:

- once the server was seen keeping run tags (in any answer of this job, or of the job
  before it: the journal keeps it), a run without the row's tag is someone else's, whatever
  its metadata shows (``null``, absent or ``{}``: how other clients' runs look);
- a run created before the row's first attempt is someone else's. ``created_at`` is read
  to the resolution the server shows (whole seconds: a run stamped 12 was made before 13),
  and the server's clock may be behind ours by ``clock_gap`` (measured from its ``Date``
  header, else :data:`CLOCK_SKEW`).
- ``BLOCKED`` — the thread's active run waits for tool outputs (``requires_action``): only
  the user can move it on, so nothing more is sent on that thread.
- ``BUSY`` — another run on the thread is still going: wait for it, then send.
- ``ABSENT`` — no run of this row exists and the thread is free: send.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from batchrun.rules import RUN_TAG_KEY

# How far the server's clock may be behind ours when nothing measured it.
CLOCK_SKEW = 60.0
ACTIVE_RUN_STATUSES = frozenset({"queued", "in_progress", "cancelling", "requires_action"})


class Verdict(StrEnum):
    """What the thread's runs say about a row's create."""

    ADOPT = "adopt"
    UNSURE = "unsure"
    BLOCKED = "blocked"
    BUSY = "busy"
    ABSENT = "absent"


@dataclass(frozen=True, slots=True)
class Judgement:
    """A verdict and the run it is about (the row's own, the suspect, or the active one)."""

    verdict: Verdict
    run: Mapping[str, Any] | None = None
    # UNSURE only: why the runs cannot settle it ("no tag" or "no metadata").
    reason: str = ""


def tag_of(run: Mapping[str, Any]) -> str | None:
    """The run tag a run carries, or None."""
    metadata = run.get("metadata")
    value = metadata.get(RUN_TAG_KEY) if isinstance(metadata, Mapping) else None
    return value if isinstance(value, str) else None


def created_at(run: Mapping[str, Any]) -> float:
    """A run's creation time (seconds since the epoch), or +inf when it has none."""
    value = run.get("created_at")
    return float(value) if isinstance(value, (int, float)) else float("inf")


def made_since(run: Mapping[str, Any], sent_at: float, clock_gap: float) -> bool:
    """Whether ``run`` may have been created at or after ``sent_at`` (our clock), its
    ``created_at`` read to the resolution it shows, the server's clock up to ``clock_gap``
    behind ours. A run without ``created_at`` may have been."""
    stamp = created_at(run)
    resolution = 1.0 if stamp.is_integer() else 0.0
    return stamp + resolution > sent_at - clock_gap


def judge(
    runs: Sequence[Mapping[str, Any]],
    *,
    tag: str | None,
    unsure: bool,
    sent_at: float,
    superseded: Collection[str] = (),
    tags_seen: bool = False,
    clock_gap: float = CLOCK_SKEW,
) -> Judgement:
    """Judge a row's create from ``runs`` (a thread's newest runs, newest first).

    ``tag`` is the row's run tag (None without one); ``unsure`` whether an earlier
    request of the row may have arrived; ``sent_at`` the wall-clock time of its first send;
    ``superseded`` run ids the row has already replaced (``--retry-failed`` after a failed
    run); ``tags_seen`` whether the job has seen the server keep run tags, in any answer;
    ``clock_gap`` how far the server's clock may be behind ours (seconds).
    """
    if tag is not None:
        for run in runs:
            if tag_of(run) == tag and run.get("id") not in superseded:
                return Judgement(Verdict.ADOPT, run)
    if unsure:
        if tag is None:
            return Judgement(Verdict.UNSURE, runs[0] if runs else None, reason="no tag")
        if not (tags_seen or any(tag_of(run) is not None for run in runs)):
            # Nothing shows that this server keeps tags: it may drop metadata, so a run
            # that may have been made since the row was first sent could be its own.
            suspects = [run for run in runs if made_since(run, sent_at, clock_gap)]
            if suspects:
                return Judgement(Verdict.UNSURE, suspects[0], reason="no metadata")
    for run in runs:
        status = run.get("status")
        if status == "requires_action":
            return Judgement(Verdict.BLOCKED, run)
        if status in ACTIVE_RUN_STATUSES:
            return Judgement(Verdict.BUSY, run)
    return Judgement(Verdict.ABSENT)
