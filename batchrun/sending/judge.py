"""The reconciliation judge: from a thread's newest runs, what became of a row's create.

A pure function, tested by a table like :func:`batchrun.sending.retry.decide`::

    >>> judge([{"id": "run_1", "status": "queued", "metadata": {"batchrun_key": "k.j"}}],
    ...       tag="k.j", unsure=True, sent_at=0.0).verdict
    <Verdict.ADOPT: 'adopt'>

Verdicts, in the order they win:

- ``ADOPT`` — a run carries the row's tag (and is not one the row already replaced): it is
  the row's run, whatever the answer to the create said.
- ``UNSURE`` — the create may have arrived, and nothing can tell whether a run is its own
  (no run tag, or a server that drops metadata and a run started since the row was sent).
  A second run costs money, so the row is not sent blindly.
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

from batchrun.schema import RUN_TAG_KEY

# Runs created this long before a row was first sent cannot be its own, even across clocks.
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


def judge(
    runs: Sequence[Mapping[str, Any]],
    *,
    tag: str | None,
    unsure: bool,
    sent_at: float,
    superseded: Collection[str] = (),
    tags_seen: bool = False,
) -> Judgement:
    """Judge a row's create from ``runs`` (a thread's newest runs, newest first).

    ``tag`` is the row's run tag (None without one); ``unsure`` whether an earlier
    request of the row may have arrived; ``sent_at`` the wall-clock time of its first send;
    ``superseded`` run ids the row has already replaced (``--retry-failed`` after a failed
    run); ``tags_seen`` whether this job has seen the server keep run tags, in any answer.
    """
    if tag is not None:
        for run in runs:
            if tag_of(run) == tag and run.get("id") not in superseded:
                return Judgement(Verdict.ADOPT, run)
    if unsure:
        if tag is None:
            return Judgement(Verdict.UNSURE, runs[0] if runs else None, reason="no tag")
        if not any(tag_of(run) is not None for run in runs):
            # No run here carries a tag: this server may drop metadata, so a run created
            # since the row was first sent could be its own. Only a run that shows its
            # metadata, on a server this job has seen keep tags, is surely another's.
            suspects = [
                run
                for run in runs
                if created_at(run) >= sent_at - CLOCK_SKEW
                and not (tags_seen and isinstance(run.get("metadata"), Mapping))
            ]
            if suspects:
                return Judgement(Verdict.UNSURE, suspects[0], reason="no metadata")
    for run in runs:
        status = run.get("status")
        if status == "requires_action":
            return Judgement(Verdict.BLOCKED, run)
        if status in ACTIVE_RUN_STATUSES:
            return Judgement(Verdict.BUSY, run)
    return Judgement(Verdict.ABSENT)
