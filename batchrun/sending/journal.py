"""The crash-safe journal: what was sent, what came back, so a rerun resumes.

A SQLite database (WAL) beside the input, ``<input stem>.batchrun.sqlite``: a job is its
input and its endpoint, never its output name, so ``-o other.xlsx`` resumes the same job.
The file holds one job per input and endpoint (``jobs``), each with its own id
(``sheet.csv`` and ``sheet.xlsx`` beside each other share the file, not a job; so do
``A/data.csv`` and ``B/data.csv`` given one ``--journal``); ``--fresh`` starts a new job.
The job id goes into every run tag, so a run is adopted only by the job that created it.
Two processes never work one journal at once (see :class:`~batchrun.sending.lock.JournalLock`).

Each row is known by its key (see :func:`row_key`); its entry keeps the row's state (see
:data:`batchrun.sending.states.IN_JOURNAL`) and moves through::

    (none) --mark_sending--> sending --record--> created --record--> done
                                    \\--record--> failed

``sending`` is written (and committed, synced to disk) before the request leaves, so a
crash at any point, power cut included,
leaves either nothing (never sent) or ``sending`` (maybe sent: reconcile before re-sending).
Rows whose answer cannot be looked up are ``reserved`` first, synced, a block ahead, and
then marked ``sending`` without a sync (see :class:`~batchrun.sending.durability.ReservedAhead`).
Rows are marked ``sending`` a block ahead, in one transaction, and later states are
committed in batches; either way a crash can only leave rows ``sending``, never lose one.
``created`` means the run exists (its id is known) but was not followed to its end;
``done`` and ``failed`` are final. Rows stopped before sending have no entry.

The file is a log: each commit appends one batch (a JSON array of ``[key, state, result]``)
and reading replays the batches in order, the latest state of a key winning. One insert
per batch costs a few microseconds a row, where an upsert per row cost about ten.
Journals from before the log keep their ``rows`` table (renamed ``rows_v1``), read first.
When the log holds several entries per row (after reruns), loading rewrites it as the
states in force. A job reads its rows' entries chunk by chunk through :meth:`Journal.lookup`,
from an index of the states in force in a temporary file, so a job of any size never holds
its log in memory.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from batchrun.errors import JournalMismatch
from batchrun.sending.journal_log import (
    COMPACT_BATCH_ENTRIES,
    FORGOTTEN,
    Checkpointer,
    StateIndex,
)
from batchrun.sending.journal_log import Entry as Entry
from batchrun.sending.journal_log import read_journal as read_journal
from batchrun.sending.journal_schema import MIGRATIONS
from batchrun.sending.lock import JournalLock
from batchrun.sending.states import SENDING

# Final states are committed in batches: per-row commits cost more than the HTTP request.
FLUSH_ROWS = 500
FLUSH_SECONDS = 0.2
BACKSTOP_CHECKPOINT_PAGES = 50_000  # 200 MB of log
# Loading rewrites the log when it holds more than this many entries and over three per key.
COMPACT_AFTER_ENTRIES = 10_000


class Journal:
    """One job's journal; ``path=None`` keeps it in memory (library calls without a file)."""

    def __init__(
        self,
        path: Path | None,
        *,
        endpoint: str,
        source: str,
        fresh: bool = False,
        formerly: str | None = None,
    ) -> None:
        """``source`` names the job's input; ``formerly`` is the name an older batchrun
        gave the same job (see :meth:`_claim`)."""
        self.path = path
        self._lock = None if path is None else JournalLock(path)
        try:
            # One thread at a time, but not always the caller's (see session.run_rows).
            self._db = sqlite3.connect(
                ":memory:" if path is None else path,
                isolation_level=None,
                check_same_thread=False,
            )
        except BaseException:
            self._release()
            raise
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a process crash (the OS has the log); a power cut
            # can lose the last commits, so the ``sending`` marks are committed with FULL.
            self._db.execute("PRAGMA synchronous=NORMAL")
            # Checkpoints (copying the log into the file, with its fsyncs) run on their own
            # thread; the commit that crosses this many pages does one itself only if that
            # thread has stopped.
            self._db.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_CHECKPOINT_PAGES}")
            self._migrate()
            self.job_id = self._claim(endpoint, source, fresh, formerly)
            self._checkpointer = None if path is None else Checkpointer(path)
        except BaseException:
            self._db.close()
            self._release()
            raise
        self._pending: list[tuple[str, str, dict[str, Any] | None]] = []
        self._flushed_at = time.monotonic()
        # Writes may come from a committer thread (see durability, as_sent) as well as the
        # job's: one at a time, each taking the entries buffered so far.
        self._writing = threading.RLock()
        # The states in force when the job began, by key (see lookup): built on first use.
        self._index: StateIndex | None = None

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise JournalMismatch(
                f"the journal {self.path} was written by a newer batchrun: upgrade "
                "batchrun, or give --journal another file to start over"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            self._db.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")

    def _claim(self, endpoint: str, source: str, fresh: bool, formerly: str | None) -> str:
        """The job id of ``source`` on ``endpoint``: its existing job, or a new one
        (``fresh``: always new).

        Earlier versions named a job by its input's bare file name; when ``source`` has no
        job yet, a job under ``formerly`` (that name) is taken over and renamed, so a rerun
        after an upgrade resumes it. Input names of today always hold a ``/`` (see
        :func:`batchrun.jobs.job_source`), so the two never meet. Through a journal shared
        by inputs of one file name, the first of them to run takes it: the one the old job
        was for, unless the journal was shared then too (when the old version mixed them up
        already).
        """
        self._adopt_legacy_job()
        select = "SELECT job_id FROM jobs WHERE endpoint = ? AND source = ?"
        found = self._db.execute(select, (endpoint, source)).fetchone()
        if found is None and formerly is not None:
            found = self._db.execute(select, (endpoint, formerly)).fetchone()
            if found is not None:
                self._db.execute(
                    "UPDATE jobs SET source = ? WHERE endpoint = ? AND source = ?",
                    (source, endpoint, formerly),
                )
        if found is not None and not fresh:
            return str(found[0])
        job_id = uuid.uuid4().hex[:12]
        self._db.execute("BEGIN")
        if found is not None:
            self._db.execute("DELETE FROM log WHERE job = ?", (found[0],))
            self._db.execute("DELETE FROM batch_parts WHERE job = ?", (found[0],))
            self._db.execute("DELETE FROM batch_queue WHERE job = ?", (found[0],))
            if found[0] == "":
                self._db.execute("DELETE FROM rows_v1")
        self._db.execute(
            "INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?)",
            (endpoint, source, job_id, time.time()),
        )
        self._db.execute("COMMIT")
        return job_id

    def _adopt_legacy_job(self) -> None:
        """A journal from before job ids held one job, described in ``meta``: it keeps the
        empty id (its runs were tagged with the bare row key)."""
        meta = dict(self._db.execute("SELECT name, value FROM meta").fetchall())
        if "endpoint" in meta and "adopted" not in meta:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT OR IGNORE INTO jobs VALUES (?, ?, '', 0)",
                (meta["endpoint"], Path(meta.get("source", "")).name),
            )
            self._db.execute("INSERT INTO meta VALUES ('adopted', '1')")
            self._db.execute("COMMIT")

    @property
    def connection(self) -> sqlite3.Connection:
        """The database, for the tables of a --batch job (:mod:`batchrun.batch.ledger`)."""
        return self._db

    def lookup(self, keys: Iterable[str]) -> dict[str, Entry]:
        """The entries of ``keys`` as they were when the job began (keys without one are
        left out).

        Read through an index of the states in force, built on the first call in a
        temporary file (its memory does not grow with the journal); entries recorded since
        are not in it, which is why a job looks up each row once, before handling it.
        """
        if self._index is None:
            with self._writing:
                self._index = self._indexed()
        return self._index.lookup(keys)

    def refresh(self) -> None:
        """Let :meth:`lookup` see the states in force now, entries recorded since the job
        began included: for a job that reads its rows' results back once it has handled
        them (a --batch job writing its output). Only the log's newer batches are read."""
        with self._writing:
            self.flush()
            if self._index is not None:
                self._index.catch_up(self._db, self.job_id)

    def _indexed(self) -> StateIndex:
        """The index of the states in force, the log compacted from it when it is due."""
        self.flush()
        index = StateIndex(self._db, self.job_id)
        if worth_compacting(index.written, index.count):
            self._db.execute("BEGIN")
            try:
                self._db.execute("DELETE FROM log WHERE job = ?", (self.job_id,))
                if self.job_id == "":
                    self._db.execute("DELETE FROM rows_v1")
                for batch in index.batches(COMPACT_BATCH_ENTRIES):
                    self._insert(batch)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            # The log's batches are numbered anew: the index holds every one of them.
            (newest,) = self._db.execute(
                "SELECT max(batch) FROM log WHERE job = ?", (self.job_id,)
            ).fetchone()
            index.last = newest or 0
        return index

    def _insert(self, batch: bytes) -> None:
        self._db.execute(
            "INSERT INTO log (entries, written_at, job) VALUES (?, ?, ?)",
            (batch, time.time(), self.job_id),
        )

    def facts(self) -> set[str]:
        """What this job has learnt about its server so far (see :meth:`remember`)."""
        prefix = f"fact:{self.job_id}:"
        found = self._db.execute(
            "SELECT name FROM meta WHERE substr(name, 1, ?) = ?", (len(prefix), prefix)
        )
        return {name.removeprefix(prefix) for (name,) in found}

    def remember(self, fact: str) -> None:
        """Keep ``fact`` about the server (such as "tags kept") for the reruns of this job;
        committed at once (a kill right after must not lose it)."""
        with self._writing:
            self._db.execute(
                "INSERT OR IGNORE INTO meta VALUES (?, '1')", (f"fact:{self.job_id}:{fact}",)
            )

    def mark_sending(
        self,
        entries: Iterable[tuple[str, dict[str, Any]]],
        *,
        word: str = SENDING,
        synced: bool = True,
    ) -> None:
        """Record, at once, that these rows are about to be sent (``word`` RESERVED: that
        they may be, see :class:`batchrun.sending.durability.ReservedAhead`).

        Synced to disk (FULL) even though later states are not: a mark lost in a power
        cut would let a rerun send a row again without looking for its run first. Not
        synced (``synced`` False) only where the row's reservation is, which stands in
        for the mark after a power cut.
        """
        marks = [(key, word, result) for key, result in entries]
        with self._writing:
            self._pending.extend(marks)
            if not synced:
                self._flush()
                return
            self._db.execute("PRAGMA synchronous=FULL")
            try:
                self.flush()
            finally:
                self._db.execute("PRAGMA synchronous=NORMAL")

    def record(self, key: str, state: str | None, result: dict[str, Any]) -> None:
        """Store a row's new state (None: drop its entry); committed with the next batch
        (at most FLUSH_SECONDS later).

        Losing the batch in a crash is safe: the row is still ``sending`` in the file, so a
        rerun reconciles it against the server instead of sending it again.

        ``result`` must not be changed afterwards: it is encoded when the batch is written.
        """
        self._pending.append((key, state or FORGOTTEN, None if state is None else result))
        if len(self._pending) >= FLUSH_ROWS or time.monotonic() - self._flushed_at >= FLUSH_SECONDS:
            self.flush()

    @property
    def pending(self) -> bool:
        """Whether states wait in the buffer for the next commit."""
        return bool(self._pending)

    def forget(self, keys: Iterable[str]) -> None:
        """Drop entries, e.g. rows a stopped job never got to send."""
        self._pending.extend((key, FORGOTTEN, None) for key in keys)
        self.flush()

    def flush(self) -> None:
        """Commit every buffered state: one batch, one insert, one WAL append."""
        with self._writing:
            self._flush()

    def _flush(self) -> None:
        self._flushed_at = time.monotonic()
        if not self._pending:
            return
        # Taken before encoding: entries another thread buffers meanwhile go to the next.
        pending, self._pending = self._pending, []
        try:
            self._insert(orjson.dumps(pending))
        except BaseException:
            self._pending[:0] = pending  # a failed commit keeps them for the next
            raise

    def close(self) -> None:
        """Commit what is buffered and close the database."""
        if self._checkpointer is not None:
            self._checkpointer.stop()
        if self._index is not None:
            self._index.close()
        try:
            self.flush()
        finally:
            self._db.close()
            self._release()


def worth_compacting(written: int, states: int) -> bool:
    """Whether a log of ``written`` entries holding ``states`` states in force should be
    rewritten as those states."""
    return written > COMPACT_AFTER_ENTRIES and written > 3 * states


def default_journal_path(source: Path) -> Path:
    """``data/sheet.xlsx`` -> ``data/sheet.batchrun.sqlite``, beside the input."""
    return source.with_name(f"{source.stem}.batchrun.sqlite")
