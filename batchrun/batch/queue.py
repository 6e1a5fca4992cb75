"""The Batch API's enqueued-token limit: what a refusal says, and when a part has room.

An account may hold only so many tokens in unfinished batches. A batch beyond that is
created, then fails validation with ``token_limit_exceeded``::

    Enqueued token limit reached for gpt-4o-mini in organization org-... . Limit:
    2,000,000 enqueued tokens. Please try again once some in_progress batches have been
    completed.

Nothing of such a batch ran, so it is not a failure of its rows: they go again, once, in
parts cut to the limit the message states, each submitted when the job's unfinished parts
leave room for it. ``--batch-queue-tokens N`` gives the limit up front.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

QUEUE_REFUSED = "token_limit_exceeded"
_LIMIT = re.compile(r"Limit:?\s*([0-9][0-9,]*)\s*enqueued tokens", re.I)


def queue_refusal(batch: Mapping[str, Any]) -> str | None:
    """The message of a batch that failed for the enqueued-token limit, else None."""
    if batch.get("status") != "failed":
        return None
    errors = batch.get("errors")
    listed = errors.get("data") if isinstance(errors, Mapping) else None
    if not isinstance(listed, list):
        return None
    for error in listed:
        if isinstance(error, Mapping) and error.get("code") == QUEUE_REFUSED:
            return str(error.get("message") or QUEUE_REFUSED)
    return None


def stated_queue_limit(message: str) -> int | None:
    """The limit a refusal states ("Limit: 2,000,000 enqueued tokens"), in tokens."""
    match = _LIMIT.search(message)
    return None if match is None else int(match.group(1).replace(",", "")) or None


def has_room(tokens: int, enqueued: int, limit: int | None) -> bool:
    """Whether a part of ``tokens`` may be submitted while ``enqueued`` tokens of the job's
    parts are unfinished: always when nothing is (a part is cut to fit the limit)."""
    return limit is None or enqueued == 0 or enqueued + tokens <= limit


def over_queue(tokens: int, limit: int) -> str:
    """Why a row charged ``tokens`` can never go in a batch under ``limit``."""
    return (
        f"the row is charged {tokens:,} tokens, more than the batch queue holds "
        f"({limit:,} enqueued tokens): send it without --batch"
    )
