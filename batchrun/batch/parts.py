"""Where a --batch run's rows are, on disk: the part each row is in, and part files.

A job of any size never holds its rows: the parts' keys stay in the ledger, and this run's
view of them is a :class:`PartIndex` in a temporary file (key -> part number, and the
rows this run found it cannot send, with why). Part files a run before recorded but this
run has not written are written again as the sheet streams by (:class:`PartFiles`), since
the part's rows come in input order, which is its lines' order.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

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


def file_lines(path: Path) -> Iterator[tuple[str, bytes, dict[str, Any]]]:
    """A part file's lines: each one's ``custom_id`` (the row key), the line, its body."""
    with path.open("rb") as lines:
        for line in lines:
            record = orjson.loads(line)
            yield str(record["custom_id"]), line, record["body"]


def file_tokens(path: Path) -> int:
    """What a part file's lines are charged in the batch queue."""
    return sum(charged_tokens(body) for _, _, body in file_lines(path))
