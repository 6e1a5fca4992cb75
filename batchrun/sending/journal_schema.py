"""The journal file's schema and a row's key in it (see :mod:`batchrun.sending.journal`).

A row is known by its key: a versioned hash of its operation, API version, thread and
canonical body (:func:`body_digest`), with its occurrence among identical rows
(:func:`row_key`). The schema grows by :data:`MIGRATIONS`, one version each.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

KEY_VERSION = "br1"

# Each entry upgrades the schema by one version; never edit a released one, append.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE rows (
        key TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        result BLOB NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
    # The log (see the module docstring). The old table is renamed so that a batchrun from
    # before the log fails to read this journal instead of finding it empty.
    """
    ALTER TABLE rows RENAME TO rows_v1;
    CREATE TABLE log (
        batch INTEGER PRIMARY KEY,
        entries BLOB NOT NULL,
        written_at REAL NOT NULL
    );
    """,
    # One job per input and endpoint, each with an id of its own (see Journal._claim for
    # the one job of an older journal).
    """
    CREATE TABLE jobs (
        endpoint TEXT NOT NULL,
        source TEXT NOT NULL,
        job_id TEXT NOT NULL,
        started_at REAL NOT NULL,
        PRIMARY KEY (endpoint, source)
    );
    ALTER TABLE log ADD COLUMN job TEXT NOT NULL DEFAULT '';
    """,
    # A --batch job's parts, one input file and one batch each (see batchrun.batch.ledger).
    """
    CREATE TABLE batch_parts (
        job TEXT NOT NULL,
        part INTEGER NOT NULL,
        keys BLOB NOT NULL,
        state TEXT NOT NULL,
        file_id TEXT,
        batch_id TEXT,
        batch_status TEXT,
        creating_at REAL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (job, part)
    );
    """,
    # The Batch API's enqueued-token limit (see batchrun.batch.queue): whether a part is the
    # one second chance of rows whose batch the queue refused, and the limit a refusal
    # stated, kept for the job's next runs.
    """
    ALTER TABLE batch_parts ADD COLUMN requeued INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE batch_queue (job TEXT PRIMARY KEY, tokens INTEGER NOT NULL);
    """,
    # No table changes: the log's entries may be ``reserved`` (see
    # batchrun.sending.durability.ReservedAhead), which a batchrun from before would read
    # as done; the version tells it to stop instead.
    """
    SELECT 1
    """,
)


def body_digest(schema_name: str, thread_id: str, body: dict[str, Any]) -> str:
    """A versioned hash of operation, API version, thread and canonical body."""
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    parts = b"createRun\n%s\n%s\n%s" % (schema_name.encode(), thread_id.encode(), canonical)
    return f"{KEY_VERSION}-{hashlib.sha256(parts).hexdigest()[:32]}"


def row_key(digest: str, occurrence: int) -> str:
    """A row's identity: its body digest and occurrence (1, 2, ...), since identical rows
    are meant as separate runs."""
    return f"{digest}-{occurrence}"
