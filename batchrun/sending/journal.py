"""The crash-safe journal: what was sent, what came back, so a rerun resumes.

A SQLite database (WAL) beside the output, ``<OUTPUT>.journal.sqlite``. Each row is
known by its key (see :func:`row_key`); its entry moves through::

    (none) --mark_sending--> sending --record--> created --record--> done
                                    \\--record--> failed

``sending`` is written (and committed) before the request leaves, so a crash at any point
leaves either nothing (never sent) or ``sending`` (maybe sent: reconcile before re-sending).
Rows are marked ``sending`` a block ahead, in one transaction, and later states are
committed in batches; either way a crash can only leave rows ``sending``, never lose one.
``created`` means the run exists (its id is known) but was not followed to its end;
``done`` and ``failed`` are final. Rows stopped before sending have no entry.

The file is a log: each commit appends one batch (a JSON array of ``[key, state, result]``)
and reading replays the batches in order, the latest state of a key winning. One insert
per batch costs a few microseconds a row, where an upsert per row cost about ten.
Journals from before the log keep their ``rows`` table (renamed ``rows_v1``), read first.
When the log holds several entries per row (after reruns), loading rewrites it as the
states in force.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from batchrun.errors import JournalMismatch

KEY_VERSION = "br1"
# Final states are committed in batches: per-row commits cost more than the HTTP request.
FLUSH_ROWS = 500
FLUSH_SECONDS = 0.2
CHECKPOINT_SECONDS = 0.25
BACKSTOP_CHECKPOINT_PAGES = 50_000  # 200 MB of log
# Loading rewrites the log when it holds more than this many entries and over three per key.
COMPACT_AFTER_ENTRIES = 10_000
COMPACT_BATCH_ENTRIES = 5_000
SENDING, CREATED, DONE, FAILED = "sending", "created", "done", "failed"
FORGOTTEN = "forgotten"  # in the log only: the key has no entry any more

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
)


def body_digest(api_version: str, thread_id: str, body: dict[str, Any]) -> str:
    """A versioned hash of operation, API version, thread and canonical body."""
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    parts = b"createRun\n%s\n%s\n%s" % (api_version.encode(), thread_id.encode(), canonical)
    return f"{KEY_VERSION}-{hashlib.sha256(parts).hexdigest()[:32]}"


def row_key(digest: str, occurrence: int) -> str:
    """A row's identity: its body digest and occurrence (1, 2, ...), since identical rows
    are meant as separate runs."""
    return f"{digest}-{occurrence}"


@dataclass(frozen=True, slots=True)
class Entry:
    """What the journal knows about one row."""

    state: str
    result: dict[str, Any]


class Journal:
    """One job's journal; ``path=None`` keeps it in memory (library calls without a file)."""

    def __init__(
        self, path: Path | None, *, endpoint: str, source: str, fresh: bool = False
    ) -> None:
        self.path = path
        if path is not None and fresh:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        self._db = sqlite3.connect(":memory:" if path is None else path, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a process crash (the OS has the log); only a power
            # cut can lose the last commits, which a rerun reconciles like in-flight rows.
            self._db.execute("PRAGMA synchronous=NORMAL")
            # Checkpoints (copying the log into the file, with its fsyncs) run on their own
            # thread; the commit that crosses this many pages does one itself only if that
            # thread has stopped.
            self._db.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_CHECKPOINT_PAGES}")
            self._migrate()
            self._claim(endpoint, source)
            self._checkpointer = None if path is None else Checkpointer(path)
        except BaseException:
            self._db.close()
            raise
        self._pending: list[tuple[str, str, dict[str, Any] | None]] = []
        self._flushed_at = time.monotonic()

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise JournalMismatch(
                f"the journal {self.path} was written by a newer batchrun; upgrade, "
                "or pass --fresh to start over (or choose another output)"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            self._db.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")

    def _claim(self, endpoint: str, source: str) -> None:
        meta = dict(self._db.execute("SELECT name, value FROM meta").fetchall())
        if not meta:
            self._db.executemany(
                "INSERT INTO meta VALUES (?, ?)",
                [("endpoint", endpoint), ("source", source), ("created_at", str(time.time()))],
            )
            return
        moved = meta.get("endpoint") != endpoint or meta.get("source") != source
        if moved and not _replay(self._db)[0]:
            # Nothing was ever sent from it (a mistyped URL stopped the first job):
            # nothing can mix, so the journal simply moves to the new endpoint.
            self._db.executemany(
                "UPDATE meta SET value = ? WHERE name = ?",
                [(endpoint, "endpoint"), (source, "source")],
            )
            return
        where = f"the journal {self.path}"
        if meta.get("endpoint") != endpoint:
            raise JournalMismatch(
                f"{where} records rows sent to {meta.get('endpoint')}, not {endpoint}; "
                "pass --fresh to start over (or choose another output)"
            )
        if meta.get("source") != source:
            raise JournalMismatch(
                f"{where} belongs to input {meta.get('source')}, not {source}; "
                "pass --fresh to start over (or choose another output)"
            )

    def load(self) -> dict[str, Entry]:
        """Every entry, by key."""
        self.flush()
        entries, written = _replay(self._db)
        if written > COMPACT_AFTER_ENTRIES and written > 3 * len(entries):
            self._compact(entries)
        return entries

    def _compact(self, entries: dict[str, Entry]) -> None:
        """Rewrite the log as ``entries``, in one transaction."""
        items = [(key, entry.state, entry.result) for key, entry in entries.items()]
        self._db.execute("BEGIN")
        try:
            self._db.execute("DELETE FROM log")
            self._db.execute("DELETE FROM rows_v1")
            for start in range(0, len(items), COMPACT_BATCH_ENTRIES):
                batch = orjson.dumps(items[start : start + COMPACT_BATCH_ENTRIES])
                self._db.execute(
                    "INSERT INTO log (entries, written_at) VALUES (?, ?)", (batch, time.time())
                )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def mark_sending(self, entries: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Record, durably and at once, that these rows are about to be sent."""
        self._pending.extend((key, SENDING, result) for key, result in entries)
        self.flush()

    def record(self, key: str, state: str, result: dict[str, Any]) -> None:
        """Store a row's new state; committed with the next batch (at most FLUSH_SECONDS).

        Losing the batch in a crash is safe: the row is still ``sending`` in the file, so a
        rerun reconciles it against the server instead of sending it again.

        ``result`` must not be changed afterwards: it is encoded when the batch is written.
        """
        self._pending.append((key, state, result))
        if len(self._pending) >= FLUSH_ROWS or time.monotonic() - self._flushed_at >= FLUSH_SECONDS:
            self.flush()

    def forget(self, keys: Iterable[str]) -> None:
        """Drop entries, e.g. rows a stopped job never got to send."""
        self._pending.extend((key, FORGOTTEN, None) for key in keys)
        self.flush()

    def flush(self) -> None:
        """Commit every buffered state: one batch, one insert, one WAL append."""
        self._flushed_at = time.monotonic()
        if not self._pending:
            return
        batch = orjson.dumps(self._pending)
        self._db.execute(
            "INSERT INTO log (entries, written_at) VALUES (?, ?)", (batch, time.time())
        )
        self._pending = []  # only once written: a failed commit keeps them for the next

    def close(self) -> None:
        """Commit what is buffered and close the database."""
        if self._checkpointer is not None:
            self._checkpointer.stop()
        try:
            self.flush()
        finally:
            self._db.close()


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


def read_journal(path: Path) -> dict[str, Entry]:
    """Every entry of the journal file at ``path``, by key, without taking it over."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return _replay(db)[0]
    finally:
        db.close()


def _replay(db: sqlite3.Connection) -> tuple[dict[str, Entry], int]:
    """The entries in force, and how many the file holds (a key's states all count)."""
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    entries: dict[str, Entry] = {}
    written = 0
    for legacy in ("rows", "rows_v1"):  # before the log: one row per key (v1, or renamed)
        if legacy in tables:
            for key, state, result in db.execute(f"SELECT key, state, result FROM {legacy}"):
                entries[key] = Entry(state, orjson.loads(result))
                written += 1
    if "log" in tables:
        for (batch,) in db.execute("SELECT entries FROM log ORDER BY batch"):
            for key, state, result in orjson.loads(batch):
                written += 1
                if state == FORGOTTEN:
                    entries.pop(key, None)
                else:
                    entries[key] = Entry(state, result)
    return entries, written


def default_journal_path(output: Path) -> Path:
    """``out.xlsx`` -> ``out.xlsx.journal.sqlite``."""
    return output.with_name(output.name + ".journal.sqlite")
