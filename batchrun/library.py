"""The library entry points: pandas in, pandas out, never printing, never exiting.

For notebooks and KNIME's Python Script node (whose tables are pandas DataFrames)::

    import batchrun
    checked = batchrun.validate_frame(df)
    results = batchrun.run_frame(df, base_url="http://127.0.0.1:8000/v1", wait=True)

``run_frame`` works inside a running event loop too (a notebook cell); code that has a
loop of its own can ``await batchrun.run_frame_async(df, ...)`` instead.

Exactly once holds across calls: without ``journal=PATH`` the journal is a file in the
user's cache folder (``$BATCHRUN_CACHE_DIR``, else platformdirs' user cache folder), one
per job, named by a hash of the endpoint and the frame's row keys. Running the cell again,
or again after a kernel restart, finds every row done and sends nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import hashlib
import os
import re
import sqlite3
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchrun.config import Settings, environment_settings
from batchrun.errors import InputError, UsageError
from batchrun.job import Job
from batchrun.report import RowResult
from batchrun.sending.journal import Journal
from batchrun.sending.session import run_rows, run_rows_async

if TYPE_CHECKING:
    import pandas as pd

CACHE_DIR_VARIABLE = "BATCHRUN_CACHE_DIR"


def settings_from(options: dict[str, Any]) -> Settings:
    """Settings for library calls: keyword options plus the environment.

    ``set=`` and ``column=`` stand for ``set_values=`` and ``columns=``; an unknown
    argument is a UsageError naming it, never a raw TypeError.
    """
    given = {ARGUMENT_ALIASES.get(name, name): value for name, value in options.items()}
    known = set(Settings.__dataclass_fields__) - {"api_key", "sources"}
    for name in given:
        if name not in known:
            close = difflib.get_close_matches(name, [*known, *ARGUMENT_ALIASES], n=1)
            hint = f"; did you mean {close[0]}=?" if close else ""
            raise UsageError(f"unknown argument {name}={hint}")
        if (problem := _type_problem(name, given[name])) is not None:
            raise UsageError(problem)
    with argument_words():
        return Settings(**environment_settings(given))


# How an argument's type is worded when a value is not of it.
_TYPE_WORDS = {bool: "True or False", int: "an int", float: "a float", str: "a str", Path: "a path"}


def _type_problem(name: str, value: object) -> str | None:
    """Why ``value`` is not of the type the Settings field ``name`` declares (None: it is,
    or that type is not checked here): a wrong type is a UsageError, never a TypeError
    from deep inside the job."""
    hint = _settings_types()[name]
    union = typing.get_origin(hint) in (types.UnionType, typing.Union)
    kinds = list(typing.get_args(hint) if union else (hint,))
    if value is None and (type(None) in kinds or not kinds):
        return None
    words = []
    for kind in kinds:
        if kind is type(None):
            continue
        if kind is bool:
            fits = isinstance(value, bool)
        elif kind in (int, float):
            numbers = (int,) if kind is int else (int, float)
            fits = isinstance(value, numbers) and not isinstance(value, bool)
        elif kind is str:
            fits = isinstance(value, str)
        elif kind is Path:
            fits = isinstance(value, (str, os.PathLike))
        elif typing.get_origin(kind) is Mapping:
            fits, kind = isinstance(value, Mapping), Mapping
        else:
            return None  # not a type checked here
        if fits:
            return None
        words.append(_TYPE_WORDS.get(kind, "a mapping"))
    return f"{name}= must be {' or '.join(words)}, not {type(value).__name__}"


@functools.cache
def _settings_types() -> dict[str, Any]:
    return typing.get_type_hints(Settings)


# Argument names a caller may write as the flag's name.
ARGUMENT_ALIASES = {"set": "set_values", "column": "columns"}
_FLAG = re.compile(
    r'--(set|column) (?:"([^"=]+)=([^"]*)"|([^=\s]+)=(\.\.\.|[^\s:;,)]*))|--([a-z][a-z-]*)'
)


@contextlib.contextmanager
def argument_words() -> Iterator[None]:
    """Re-raise a UsageError worded in flags (``--concurrency``) in argument names
    (``concurrency=``): library errors speak in argument names."""
    try:
        yield
    except UsageError as error:
        raise UsageError(_FLAG.sub(_argument, str(error))) from None
    except InputError as error:
        raise InputError(error.path, _FLAG.sub(_argument, error.problem)) from None


def _argument(match: re.Match[str]) -> str:
    if match.group(1):  # --set model=...: a key of a mapping argument, or a pair
        argument = ARGUMENT_ALIASES[match.group(1)]
        key = match.group(2) or match.group(4)
        value = match.group(3) if match.group(2) else match.group(5)
        return f"{argument}[{key!r}]" if value == "..." else f"{argument}={{{key!r}: {value!r}}}"
    flag = match.group(6)
    negated = NEGATED_ARGUMENTS.get(flag)
    if negated is not None:
        return negated
    name = flag.replace("-", "_")
    field = Settings.__dataclass_fields__.get(name)
    if field is None:
        return match.group(0)  # not an option of the library (e.g. --batch-jsonl)
    return f"{name}=True" if field.default is False else f"{name}="


NEGATED_ARGUMENTS = {"no-run-tag": "run_tag=False", "no-escape-formulas": "escape_formulas=False"}


def run_frame(frame: pd.DataFrame, **options: Any) -> pd.DataFrame:
    """Send every valid row of ``frame``; the frame with result columns added.

    Options are the long option names of ``batchrun run`` with underscores
    (``base_url``, ``concurrency``, ``wait``, ...). Without ``journal=PATH`` the journal
    lives in the user's cache folder (see :func:`frame_journal_path`), so calling again
    with the same frame sends nothing and returns the same ids; ``fresh=True`` sends every
    row again. Never prints, never exits; a systemic error stops sending and the
    unsent rows say why in ``error``. Inside a running event loop (Jupyter) the job runs
    on a thread of its own. ``batch=True`` sends through the Batch API (with
    ``no_wait=True`` rows of batches still running come back ``pending``).
    """
    job, rows = _prepare_run(frame, options)
    try:
        if job.settings.batch:
            from batchrun.batch.run import run_batch_rows

            done: list[RowResult] = []
            run_batch_rows(_passes(rows), job, on_chunk=done.extend)
            rows = done
        else:
            run_rows(rows, job)
    finally:
        job.sending_journal.close()
    return _results(frame, rows, job)


async def run_frame_async(frame: pd.DataFrame, **options: Any) -> pd.DataFrame:
    """:func:`run_frame` for code that runs an event loop: ``await run_frame_async(df)``."""
    job, rows = _prepare_run(frame, options)
    try:
        if job.settings.batch:
            from batchrun.batch.run import run_batch_rows_async

            done: list[RowResult] = []
            await run_batch_rows_async(_passes(rows), job, on_chunk=done.extend)
            rows = done
        else:
            await run_rows_async(rows, job)
    finally:
        job.sending_journal.close()
    return _results(frame, rows, job)


def _passes(rows: list[RowResult]) -> Callable[[bool], Iterator[list[RowResult]]]:
    """The frame's prepared rows for each pass of a --batch job, copied afresh each time
    (a pass changes its rows)."""

    def chunks(written: bool) -> Iterator[list[RowResult]]:
        yield [dataclasses.replace(row) for row in rows]

    return chunks


def _prepare_run(frame: pd.DataFrame, options: dict[str, Any]) -> tuple[Job, list[RowResult]]:
    """The job of a frame (its journal open) and its rows, prepared."""
    from batchrun.endpoints.prepare import RowPreparer, make_plan

    settings = settings_from(options)
    with argument_words():
        settings.check_sending()
        rows = RowPreparer(make_plan(list(frame.columns), settings), settings).prepare(frame)
    path = settings.journal or frame_journal_path(rows, settings.destination)
    try:
        if settings.journal is None:
            path.parent.mkdir(parents=True, exist_ok=True)
        journal = Journal(path, endpoint=settings.destination, source="frame", fresh=settings.fresh)
    except (sqlite3.Error, OSError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        where = "" if settings.journal else "; pass journal=PATH to keep it elsewhere"
        raise UsageError(f"cannot open the journal {path}: {reason}{where}") from None
    return Job.resolve(settings, journal), rows


def frame_journal_path(rows: list[RowResult], destination: str) -> Path:
    """The journal of a frame's job in the cache folder: ``frames/<hash>.sqlite``.

    A job is its endpoint and the keys of its rows (a hash of each row's request and its
    occurrence), in any order: the same rows sent to the same place again are the same job,
    and a frame with a row changed, added or removed is another one.
    """
    digest = hashlib.sha256(destination.encode())
    for key in sorted(row.key for row in rows if row.key):
        digest.update(b"\n" + key.encode())
    return cache_folder() / "frames" / f"{digest.hexdigest()[:32]}.sqlite"


def cache_folder() -> Path:
    """``$BATCHRUN_CACHE_DIR``, else the user's cache folder for batchrun (platformdirs:
    ``~/.cache/batchrun`` on Linux, ``~/Library/Caches/batchrun`` on macOS,
    ``%LOCALAPPDATA%\\batchrun\\Cache`` on Windows)."""
    configured = os.environ.get(CACHE_DIR_VARIABLE)
    if configured:
        return Path(configured)
    import platformdirs

    return platformdirs.user_cache_path("batchrun", appauthor=False)


def _results(frame: pd.DataFrame, rows: list[RowResult], job: Job) -> pd.DataFrame:
    from batchrun.output import result_frame

    return result_frame(frame, rows, job, mode="run")


def validate_frame(frame: pd.DataFrame, **options: Any) -> pd.DataFrame:
    """Assemble and check every row of ``frame``; the frame with ``request`` and ``error``."""
    from batchrun.endpoints.prepare import RowPreparer, make_plan
    from batchrun.output import result_frame

    settings = settings_from(options)
    with argument_words():
        rows = RowPreparer(make_plan(list(frame.columns), settings), settings).prepare(frame)
        return result_frame(frame, rows, Job.resolve(settings), mode="validate")
