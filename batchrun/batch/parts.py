"""A --batch run's parts, on disk: the part each row is in, and the parts' files.

:class:`PartBook` goes through the sheet once (:meth:`PartBook.plan`), a chunk at a time:
rows that need sending are written into new part files, each part recorded in the ledger
as its file is done. A job of any size never holds its rows: the parts' keys stay in the
ledger, and this run's view of them is a :class:`PartIndex` in a temporary file (key ->
part number, and the rows that go in no batch, with why). The files of parts a run before
recorded and did not finish are written again as the sheet streams by
(:class:`PartFiles`): a part's rows come in input order, which is its lines' order.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from batchrun.atomic import HOST, process_ended
from batchrun.batch.ledger import Part, PartLedger
from batchrun.batch.lines import (
    ConversationTurns,
    PartWriter,
    WrittenPart,
    batch_line,
    batch_url,
    mark_unbatchable,
    too_large,
)
from batchrun.batch.queue import over_queue
from batchrun.config import Settings
from batchrun.endpoints.prepare import sent_body
from batchrun.report import RowResult
from batchrun.sending.journal import Journal
from batchrun.sending.states import FAILED
from batchrun.sending.tokens import charged_tokens

# Keys looked up in one query.
LOOKUP_KEYS = 500


class PartIndex:
    """This run's rows by key: the part each is in (the latest, when a row moved to a new
    part), and why a row is in none (it cannot be sent in a batch). In a temporary file,
    so its memory does not grow with the job."""

    __slots__ = ("_db",)

    def __init__(self) -> None:
        # "": a private temporary file, removed when closed.
        self._db = sqlite3.connect("", isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("CREATE TABLE places (key TEXT PRIMARY KEY, part INTEGER NOT NULL)")
        self._db.execute("CREATE TABLE refused (key TEXT PRIMARY KEY, reason TEXT NOT NULL)")

    def add(self, number: int, keys: Iterable[str]) -> None:
        """Part ``number`` holds ``keys`` (each key's part from now on)."""
        self._db.executemany(
            "INSERT INTO places VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET part = excluded.part",
            ((key, number) for key in keys),
        )

    def refuse(self, key: str, reason: str) -> None:
        """The row of ``key`` goes in no batch, for ``reason``."""
        self._db.execute("INSERT OR REPLACE INTO refused VALUES (?, ?)", (key, reason))

    def parts_of(self, keys: Iterable[str]) -> dict[str, int]:
        """The part of each of ``keys`` that is in one."""
        return dict(self._select("SELECT key, part FROM places", keys))

    def refused(self, keys: Iterable[str]) -> dict[str, str]:
        """Why each of ``keys`` that goes in no batch does not."""
        return dict(self._select("SELECT key, reason FROM refused", keys))

    def _select(self, query: str, keys: Iterable[str]) -> Iterator[tuple[Any, Any]]:
        wanted = iter(keys)
        while chunk := list(itertools.islice(wanted, LOOKUP_KEYS)):
            marks = ",".join("?" * len(chunk))
            yield from self._db.execute(f"{query} WHERE key IN ({marks})", chunk)

    def close(self) -> None:
        """Remove the temporary file."""
        self._db.close()


class PartFiles:
    """The input files of parts a run before recorded, written again line by line as
    their rows stream by (opened, appended to and closed per chunk: any number of parts
    holds no file open), with the tokens their lines are charged."""

    __slots__ = ("_pending", "paths", "tokens")

    def __init__(self, paths: dict[int, Path]) -> None:
        self.paths = paths
        self.tokens = dict.fromkeys(paths, 0)
        self._pending: dict[int, list[bytes]] = {}
        for path in paths.values():
            path.write_bytes(b"")

    def add(self, number: int, line: bytes, tokens: int) -> None:
        """One more line of part ``number``, charged ``tokens``."""
        self._pending.setdefault(number, []).append(line)
        self.tokens[number] += tokens

    def flush(self) -> None:
        """Append the lines added since the last flush to their files."""
        for number, lines in self._pending.items():
            with self.paths[number].open("ab") as stream:
                stream.writelines(lines)
        self._pending.clear()


SCRATCH_PREFIX = "batchrun-batch-"


def scratch_folder() -> Path:
    """A temporary folder for a run's part files and downloads, named for its process;
    the folders that runs of this host left when they were killed go first (a run
    removes its own as it ends, a kill cannot)."""
    root = Path(tempfile.gettempdir())
    with contextlib.suppress(OSError):
        for folder in root.glob(f"{SCRATCH_PREFIX}*-{HOST}-*"):
            pid = folder.name.removeprefix(SCRATCH_PREFIX).partition("-")[0]
            if pid.isdigit() and process_ended(int(pid)):
                shutil.rmtree(folder, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-{HOST}-"))


def file_lines(path: Path) -> Iterator[tuple[str, bytes, dict[str, Any]]]:
    """A part file's lines: each one's ``custom_id`` (the row key), the line, its body."""
    with path.open("rb") as lines:
        for line in lines:
            record = orjson.loads(line)
            yield str(record["custom_id"]), line, record["body"]


def file_tokens(path: Path) -> int:
    """What a part file's lines are charged in the batch queue."""
    return sum(charged_tokens(body) for _, _, body in file_lines(path))


class PartBook:
    """A run's parts of a --batch job: those the ledger holds and those the run cuts,
    their input files (in a temporary folder, written by this run), what each holds in
    the batch queue, and where each row is (:attr:`index`)."""

    def __init__(self, settings: Settings, journal: Journal) -> None:
        self.settings = settings
        self.journal = journal
        self.ledger = PartLedger(journal)
        self.index = PartIndex()
        self.url = batch_url(settings.endpoint)
        self.parts: list[Part] = []
        self.files: dict[int, Path] = {}
        self.tokens: dict[int, int] = {}  # part -> the tokens it holds in the queue
        self.folder = scratch_folder()
        # The enqueued-token limit: the flag's, or the one a refusal stated (the lower).
        self.queue_limit = settings.batch_queue_tokens
        self.from_journal = 0  # rows whose result the journal has
        self.handled = 0  # rows in parts this run submits, follows or collects

    async def plan(self, chunks: Iterable[list[RowResult]], stop: Callable[[], bool]) -> None:
        """Go through the sheet once: rows that need sending go into new part files (each
        part recorded as its file is done, before any upload), rows of parts a run before
        recorded and not finished go into those parts' files again, and results already
        in the journal are counted. Between chunks the event loop runs (a Ctrl-C is
        heard), and once ``stop()`` says so the rest of the sheet is left for the next
        run (the parts written so far are recorded)."""
        self.parts = self.ledger.parts()
        stated = self.ledger.queue_limit()
        if stated is not None:
            self.queue_limit = min(stated, self.queue_limit or stated)
        earlier: dict[int, Path] = {}
        for part in self.parts:
            if not part.ended:
                earlier[part.number] = self.path(part.number)
                self.index.add(part.number, self.ledger.keys(part.number))
        again = PartFiles(earlier)
        self.files.update(earlier)
        first = max((part.number for part in self.parts), default=0) + 1
        turns = ConversationTurns()
        with PartWriter(self.path, first, self.queue_limit) as writer:
            for rows in chunks:
                mark_unbatchable(rows, turns)
                valid = [row for row in rows if row.key is not None and row.outcome is None]
                keys = [str(row.key) for row in valid]
                entries = self.journal.lookup(keys)
                places = self.index.parts_of(keys)
                for row, key in zip(valid, keys, strict=True):
                    entry = entries.get(key)
                    if entry is not None:
                        row.restore(entry.result, entry.state)
                    if (place := places.get(key)) is not None:
                        again.add(place, *self.line(row))
                        self.handled += 1
                    elif entry is None or (entry.state == FAILED and self.settings.retry_failed):
                        self.write_row(writer, row)
                    else:
                        self.from_journal += 1
                again.flush()
                self.record(writer.take_closed())
                await asyncio.sleep(0)
                if stop():
                    break
            writer.close()
            self.record(writer.take_closed())
        if self.queue_limit is not None:
            self.tokens.update(again.tokens)

    def line(self, row: RowResult) -> tuple[bytes, int]:
        """The row's batch line, and what it is charged in the queue (when limited)."""
        key = str(row.key)
        # The run tag: the row's key and the job's id (as a direct job tags).
        tag = f"{key}.{self.journal.job_id}" if self.settings.run_tag else None
        body = sent_body(row, self.settings, tag)
        tokens = charged_tokens(body) if self.queue_limit is not None else 0
        return batch_line(key, self.url, body), tokens

    def write_row(self, writer: PartWriter, row: RowResult) -> None:
        """Add the row to the new parts, unless a batch can never carry it."""
        key = str(row.key)
        line, tokens = self.line(row)
        limit = self.queue_limit
        if problem := too_large(line):
            self.index.refuse(key, problem)
        elif limit is not None and tokens > limit:
            self.index.refuse(key, over_queue(tokens, limit))
        else:
            writer.add(key, line, tokens)
            self.handled += 1

    def record(self, written: list[WrittenPart], *, requeued: bool = False) -> list[Part]:
        """Record parts as their files are done (before any upload); the parts."""
        new = [(Part(part.number, len(part.keys), requeued=requeued), part) for part in written]
        self.ledger.add([(part, done.keys) for part, done in new])
        for part, done in new:
            self.index.add(part.number, done.keys)
            self.files[part.number] = done.path
            if self.queue_limit is not None:
                self.tokens[part.number] = done.tokens
            self.parts.append(part)
        return [part for part, _ in new]

    def cut_again(self, part: Part) -> tuple[list[Part], list[tuple[str, str]]]:
        """The part's lines in new parts, recorded and cut to the queue limit as it is
        now (its rows' one second chance); the rows that alone exceed it, with why."""
        limit = self.queue_limit
        first = max(other.number for other in self.parts) + 1
        refused: list[tuple[str, str]] = []
        with PartWriter(self.path, first, limit) as writer:
            for key, line, body in file_lines(self.files[part.number]):
                tokens = charged_tokens(body) if limit is not None else 0
                if limit is not None and tokens > limit:
                    refused.append((key, over_queue(tokens, limit)))
                else:
                    writer.add(key, line, tokens)
        return self.record(writer.close(), requeued=True), refused

    def part_tokens(self, part: Part) -> int:
        """What the part's lines are charged in the queue (counted once per run)."""
        if part.number not in self.tokens:
            self.tokens[part.number] = file_tokens(self.files[part.number])
        return self.tokens[part.number]

    def path(self, number: int) -> Path:
        """Where part ``number``'s input file is written."""
        return self.folder / f"part-{number}.jsonl"

    def close(self) -> None:
        """Remove the part files, downloads and index (a rerun writes them again)."""
        self.index.close()
        shutil.rmtree(self.folder, ignore_errors=True)
