"""Where a --batch job keeps its parts: the ``batch_parts`` table of the job's journal.

A part is one input file and the one batch made of it. Each step is recorded (committed
and synced to disk) before it takes effect, so a crash at any point leaves a state the
next run can finish without sending a row twice::

    recorded  --upload answered-->  uploaded  --before POST /batches-->  creating
    creating  --POST answered, or adopted from GET /batches-->  submitted
    submitted --batch ended, every row's result in the log-->  joined
    (recorded, uploaded or creating)  --the server refused the file or batch-->  refused
    submitted --the batch failed token_limit_exceeded; rows put in new parts-->  requeued

``recorded`` holds the part's row keys: those rows go in no other part unless the part
ended (``joined`` or ``refused``), the row failed, and ``--retry-failed`` is given, or the
enqueued-token limit refused the part's batch (``requeued``: its rows go into new parts,
marked ``requeued`` themselves, which get no second chance). A
``creating`` part without a batch id may have a batch all the same (the answer was lost):
the next run looks for it by its metadata before creating one.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field

import orjson

from batchrun.sending.journal import Journal

RECORDED, UPLOADED, CREATING, SUBMITTED = "recorded", "uploaded", "creating", "submitted"
JOINED, REFUSED, REQUEUED = "joined", "refused", "requeued"
ENDED_PARTS = frozenset({JOINED, REFUSED, REQUEUED})
COLUMNS = "part, keys, state, file_id, batch_id, batch_status, creating_at, requeued"


@dataclass(slots=True)
class Part:
    """One part of a --batch job: how many rows it holds and how far it got (its rows'
    keys, in input order, stay in the ledger: see :meth:`PartLedger.keys`)."""

    number: int
    size: int
    state: str = RECORDED
    file_id: str | None = None
    batch_id: str | None = None
    batch_status: str | None = None
    # Wall-clock time creation first started: batches older than this are not its own.
    creating_at: float | None = None
    # Made of the rows of a part whose batch the enqueued-token limit refused: no more
    # second chances.
    requeued: bool = False
    # Not stored: the batch as last read, for the rows' messages.
    latest: dict[str, object] = field(default_factory=dict)

    @property
    def ended(self) -> bool:
        """Whether the part is done with: its rows have their results in the log."""
        return self.state in ENDED_PARTS


class PartLedger:
    """The parts of one job, read and written in the journal's database."""

    def __init__(self, journal: Journal) -> None:
        self._db = journal.connection
        self._job = journal.job_id

    def parts(self) -> list[Part]:
        """Every part of the job, by number (the keys of one part at a time are read)."""
        found = self._db.execute(
            f"SELECT {COLUMNS} FROM batch_parts WHERE job = ? ORDER BY part", (self._job,)
        )
        return [
            Part(
                number, len(orjson.loads(keys)), state, file_id, batch_id, status,
                creating_at, bool(requeued),
            )
            for number, keys, state, file_id, batch_id, status, creating_at, requeued in found
        ]  # fmt: skip

    def keys(self, number: int) -> list[str]:
        """The row keys of part ``number``, in the order of its input file's lines."""
        found = self._db.execute(
            "SELECT keys FROM batch_parts WHERE job = ? AND part = ?", (self._job, number)
        ).fetchone()
        return [] if found is None else list(orjson.loads(found[0]))

    def add(self, parts: list[tuple[Part, list[str]]]) -> None:
        """Record new parts with their row keys, all in one transaction."""
        self._write(
            "INSERT INTO batch_parts (job, part, keys, state, file_id, batch_id, batch_status,"
            " creating_at, updated_at, requeued) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    self._job,
                    part.number,
                    orjson.dumps(keys),
                    part.state,
                    part.file_id,
                    part.batch_id,
                    part.batch_status,
                    part.creating_at,
                    time.time(),
                    int(part.requeued),
                )
                for part, keys in parts
            ],
        )

    def queue_limit(self) -> int | None:
        """The enqueued-token limit a refusal stated for this job, if one did."""
        found = self._db.execute(
            "SELECT tokens FROM batch_queue WHERE job = ?", (self._job,)
        ).fetchone()
        return None if found is None else int(found[0])

    def save_queue_limit(self, tokens: int) -> None:
        """Keep the limit a refusal stated, for this job's next runs."""
        self._write(
            "INSERT INTO batch_queue (job, tokens) VALUES (?, ?)"
            " ON CONFLICT (job) DO UPDATE SET tokens = excluded.tokens",
            [(self._job, tokens)],
        )

    def save(self, part: Part) -> None:
        """Record a part's new state, ids and batch status."""
        self._write(
            "UPDATE batch_parts SET state = ?, file_id = ?, batch_id = ?, batch_status = ?,"
            " creating_at = ?, updated_at = ? WHERE job = ? AND part = ?",
            [
                (
                    part.state,
                    part.file_id,
                    part.batch_id,
                    part.batch_status,
                    part.creating_at,
                    time.time(),
                    self._job,
                    part.number,
                )
            ],
        )

    def _write(self, sql: str, rows: list[tuple[object, ...]]) -> None:
        # Synced to disk (FULL), as the journal's sending marks are: the next step (an
        # upload, a batch) must never happen without its record surviving a power cut.
        self._db.execute("PRAGMA synchronous=FULL")
        try:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(sql, rows)
            except sqlite3.Error:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        finally:
            self._db.execute("PRAGMA synchronous=NORMAL")
