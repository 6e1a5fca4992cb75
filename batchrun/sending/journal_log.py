"""Reading the journal's log, and checkpointing it (see :mod:`batchrun.sending.journal`).

The log is a table of batches, each a JSON array of ``[key, state, result]``; replaying
them in order, the latest state of a key winning, gives the entries in force
(:func:`read_journal`). A journal from before the log keeps its rows in a table of its
own, read first. A job reads its rows' states through :class:`StateIndex`, a keyed copy of
the states in force in a temporary file; :class:`Checkpointer` copies the log into the
database file on a thread of its own.
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from batchrun.sending.boot import boot_id
from batchrun.sending.states import RESERVED

CHECKPOINT_SECONDS = 0.25
# Rows read from a table from before the log at once, and entries in one rewritten batch.
COMPACT_BATCH_ENTRIES = 5_000
FORGOTTEN = "forgotten"  # in the log only: the key has no entry any more
# Keys looked up in one query (SQLite's limit on parameters is far above this).
LOOKUP_KEYS = 500


@dataclass(frozen=True, slots=True)
class Entry:
    """What the journal knows about one row."""

    state: str
    result: dict[str, Any]

    @property
    def never_sent(self) -> bool:
        """A reservation made on this boot of the machine, its row never marked ``sending``
        after it: the row was never sent (see :mod:`batchrun.sending.boot`)."""
        if self.state != RESERVED:
            return False
        boot = self.result.get("boot")
        return boot is not None and boot == boot_id()


class Checkpointer:
    """Checkpoints a WAL database every CHECKPOINT_SECONDS on a thread of its own.

    SQLite releases the GIL while it copies and syncs, so commits on the job's thread do
    not wait for it. A failure stops the thread quietly: the journal's own connection then
    checkpoints at its backstop (and when it closes), and reports its errors.
    """

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="batchrun-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stopping.wait(CHECKPOINT_SECONDS):
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            pass
        finally:
            self._db.close()

    def stop(self) -> None:
        """Stop checkpointing (an ongoing checkpoint finishes first)."""
        self._stopping.set()
        self._thread.join()


class StateIndex:
    """The states in force of one job's log, by key, in a temporary file.

    Replaying the log batch by batch into a keyed table keeps memory to one batch, where a
    dict of every entry would grow with the job (about 1 KB a row). A forgotten key is kept
    as such, so the batches replay in one statement each, in order.
    """

    __slots__ = ("_db", "count", "last", "written")

    def __init__(self, journal: sqlite3.Connection, job_id: str) -> None:
        self._db: sqlite3.Connection | None = None
        self.count = self.written = 0
        self.last = 0  # the newest log batch replayed
        self._replay(_log_batches(journal, job_id))
        if self._db is not None:
            (self.count,) = self._db.execute(
                "SELECT count(*) FROM states WHERE state != ?", (FORGOTTEN,)
            ).fetchone()

    def catch_up(self, journal: sqlite3.Connection, job_id: str) -> None:
        """Replay the log's batches written since the index was built or last caught up."""
        self._replay(_log_batches(journal, job_id, after=self.last))

    def _replay(self, batches: Iterator[tuple[int, list[Any]]]) -> None:
        first = next(batches, None)
        if first is None:
            return  # nothing (new) to look up
        if self._db is None:
            # "": a private temporary file, removed when closed.
            self._db = sqlite3.connect("", isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=OFF")
            self._db.execute("PRAGMA synchronous=OFF")
            self._db.execute(
                "CREATE TABLE states (key TEXT PRIMARY KEY, state TEXT NOT NULL, result BLOB)"
            )
        db = self._db
        db.execute("BEGIN")
        upsert = (
            "INSERT INTO states VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE "
            "SET state = excluded.state, result = excluded.result"
        )
        dumps = orjson.dumps
        for number, batch in itertools.chain((first,), batches):
            self.written += len(batch)
            self.last = max(self.last, number)
            db.executemany(
                upsert,
                [
                    (key, state, None if state == FORGOTTEN else dumps(result))
                    for key, state, result in batch
                ],
            )
        db.execute("COMMIT")

    def batches(self, size: int) -> Iterator[bytes]:
        """The states in force as log batches of at most ``size`` entries."""
        if self._db is None:
            return
        rows = self._db.execute(
            "SELECT key, state, result FROM states WHERE state != ? ORDER BY rowid", (FORGOTTEN,)
        )
        while chunk := rows.fetchmany(size):
            yield orjson.dumps(
                [(key, state, orjson.Fragment(result)) for key, state, result in chunk]
            )

    def lookup(self, keys: Iterable[str]) -> dict[str, Entry]:
        """The states in force of ``keys`` (those that have one)."""
        found: dict[str, Entry] = {}
        if self._db is None:
            return found
        wanted = iter(keys)
        while chunk := list(itertools.islice(wanted, LOOKUP_KEYS)):
            marks = ",".join("?" * len(chunk))
            query = f"SELECT key, state, result FROM states WHERE key IN ({marks})"
            for key, state, result in self._db.execute(query, chunk):
                if state != FORGOTTEN:
                    entry = Entry(state, orjson.loads(result))
                    if not entry.never_sent:
                        found[key] = entry
        return found

    def close(self) -> None:
        """Remove the temporary file."""
        if self._db is not None:
            self._db.close()
            self._db = None


def _log_batches(
    db: sqlite3.Connection, job_id: str, after: int = 0
) -> Iterator[tuple[int, list[Any]]]:
    """``job_id``'s log as numbered lists of ``[key, state, result]`` entries, oldest
    first: the table of a journal from before the log first (numbered 0), then the log's
    batches numbered past ``after``."""
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if job_id == "" and after == 0:
        for legacy in ("rows", "rows_v1"):
            if legacy in tables:
                rows = db.execute(f"SELECT key, state, result FROM {legacy}")
                while chunk := rows.fetchmany(COMPACT_BATCH_ENTRIES):
                    yield 0, [[key, state, orjson.loads(result)] for key, state, result in chunk]
    if "log" in tables:
        columns = {row[1] for row in db.execute("PRAGMA table_info(log)")}
        if "job" in columns:
            batches = db.execute(
                "SELECT batch, entries FROM log WHERE job = ? AND batch > ? ORDER BY batch",
                (job_id, after),
            )
        else:
            batches = db.execute(
                "SELECT batch, entries FROM log WHERE batch > ? ORDER BY batch", (after,)
            )
        for number, batch in batches:
            yield number, orjson.loads(batch)


def read_journal(path: Path) -> dict[str, Entry]:
    """Every entry of the journal file at ``path`` (all its jobs), by key, read-only."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return _replay(db, None)[0]
    finally:
        db.close()


def _replay(db: sqlite3.Connection, job_id: str | None) -> tuple[dict[str, Entry], int]:
    """The entries in force for ``job_id`` (None: every job), and how many the file holds
    for it (a key's states all count)."""
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    entries: dict[str, Entry] = {}
    written = 0
    if job_id in ("", None):
        for legacy in ("rows", "rows_v1"):  # before the log: one row per key (v1, or renamed)
            if legacy in tables:
                for key, state, result in db.execute(f"SELECT key, state, result FROM {legacy}"):
                    entries[key] = Entry(state, orjson.loads(result))
                    written += 1
    if "log" in tables:
        columns = {row[1] for row in db.execute("PRAGMA table_info(log)")}
        if job_id is None or "job" not in columns:
            batches = db.execute("SELECT entries FROM log ORDER BY batch")
        else:
            batches = db.execute("SELECT entries FROM log WHERE job = ? ORDER BY batch", (job_id,))
        for (batch,) in batches:
            for key, state, result in orjson.loads(batch):
                written += 1
                if state == FORGOTTEN:
                    entries.pop(key, None)
                else:
                    entries[key] = Entry(state, result)
    return entries, written
