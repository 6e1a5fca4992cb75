"""What one attempt at a row's create comes to (see :mod:`batchrun.sending.sender`).

A send, or a look for what an earlier send made, ends in a :data:`Step`: the row settled,
its lane busy, the row unsure for a while yet, or again (send, or look) after a delay.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LaneBusy:
    """The row's lane is busy: wait for ``holder`` (the answer holding it) to stop, or, when
    the server does not name it (None, a locked conversation), wait a while; then send."""

    holder: str | None


@dataclass(frozen=True, slots=True)
class Unsure:
    """A request of the row may have arrived, and the server may still be making what it
    asked until ``until`` (wall clock): not finding it proves nothing yet. Look again
    later; the row holds its lane meanwhile."""

    until: float


@dataclass(frozen=True, slots=True)
class Settled:
    """The row has its result: created, adopted, or failed with a reason."""


@dataclass(frozen=True, slots=True)
class Again:
    """Not settled yet: after ``delay`` seconds, look for the row's answer (``look``) or
    send it."""

    delay: float = 0.0
    look: bool = False


SETTLED = Settled()
SEND = Again()
# What one attempt (a send, or a look for what an earlier one made) comes to.
Step = Settled | LaneBusy | Unsure | Again


@dataclass(slots=True)
class Tries:
    """One create's counts, each in its own budget: failed attempts (--max-retries), 429s
    waited out (their own budget: waiting for speed is not a failure), and "busy" answers
    while the lane showed nothing active."""

    failures: int = 0
    throttled: int = 0
    busy_mismatches: int = 0
