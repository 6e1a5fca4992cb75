"""``batchrun run`` on a file: read the sheet, send its rows chunk by chunk, write the
output beside it (see :mod:`batchrun.jobs.files`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import itertools
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from batchrun.config import Settings
from batchrun.endpoints.body import RowPlan
from batchrun.endpoints.prepare import RowPreparer, make_plan
from batchrun.errors import InputError, OutputNotWritten, UsageError
from batchrun.job import Job
from batchrun.jobs.files import (
    JobReport,
    StreamedOutput,
    open_input,
    output_files,
    resolve_output,
    sheet_notes,
    silent,
    typed_output,
)
from batchrun.output import check_names, result_columns
from batchrun.report import RESUME, RowResult
from batchrun.sending.journal import Journal, default_journal_path
from batchrun.sheets import batched, sheet_format
from batchrun.sheets.reader import Sheet
from batchrun.sheets.writer import MAX_XLSX_DATA_ROWS
from batchrun.sheets.xlsx_writer import MAX_XLSX_COLUMNS

if TYPE_CHECKING:
    from batchrun.sending.runner import Progress

# Rows a run reads, prepares, sends and writes at a time: what its memory is bounded by.
RUN_CHUNK_ROWS = 10_000


def job_source(source: Path, journal: Path) -> str:
    """How the journal names the job of ``source``: the input's resolved path, relative to
    the journal's folder, so ``A/data.csv`` and ``B/data.csv`` are two jobs in one journal
    while a folder moved with its journal (the default, beside the input) stays one job.

    ``data.csv`` beside the journal is ``./data.csv``: the name always holds a ``/``, which
    tells it from the bare file names that named jobs before (see :class:`Journal`).
    """
    resolved, folder = source.resolve(), journal.resolve().parent
    try:
        name = Path(os.path.relpath(resolved, folder)).as_posix()
    except ValueError:  # another drive (Windows): no relative path
        return resolved.as_posix()
    return name if "/" in name else f"./{name}"


def run_file(
    source: Path,
    output: Path | None,
    settings: Settings,
    *,
    progress: Progress | None = None,
    handle_signals: bool = False,
    notice: Callable[[str], None] | None = None,
) -> JobReport:
    """``batchrun run``: send every valid row of ``source`` and write the output.

    ``notice`` hears the notes about the sheet (columns that are never sent) before
    anything is sent; they are in the summary's notes too.
    """
    settings.check_sending()
    sheet_format(source)  # an unreadable input is named before the output it implies
    target = resolve_output(source, output)
    _journal_apart(settings.journal or default_journal_path(source), source, target)
    with rare_collections():
        return _run_file(source, target, settings, progress, handle_signals, notice)


def _journal_apart(journal: Path, source: Path, target: Path) -> None:
    """Refuse a journal that is the input or a file the job writes: the output written
    over it would lose what was sent, and the next run would send it all again."""
    taken = {path.resolve(): f"the output file {path}" for path in output_files(target)}
    taken[source.resolve()] = "the input"
    clash = taken.get(journal.resolve())
    if clash is not None:
        raise UsageError(
            f"--journal {journal}: the journal would be {clash}; give it a name of its own"
        )


def _run_file(
    source: Path,
    target: Path,
    settings: Settings,
    progress: Progress | None,
    handle_signals: bool,
    notice: Callable[[str], None] | None,
) -> JobReport:
    # Lists of cells, not a DataFrame: sending starts without importing pandas (~0.15 s).
    job = Job.resolve(settings)
    sheet = open_input(source, settings)
    headers = sheet.headers
    check_names(headers, job, "run")
    columns = len(headers) + len(result_columns(job, "run"))
    if target.suffix.lower() == ".xlsx" and columns > MAX_XLSX_COLUMNS:
        raise UsageError(f"-o {target}: .xlsx holds at most {MAX_XLSX_COLUMNS:,} columns")
    counted = _scan(source, settings, sheet)
    if target.suffix.lower() == ".xlsx" and (counted or 0) > MAX_XLSX_DATA_ROWS:
        # Found out before sending, not after: Excel holds 1,048,575 data rows.
        raise UsageError(
            f"-o {target}: {counted:,} rows do not fit a worksheet; write .csv, .jsonl or .parquet"
        )
    plan = make_plan(headers, settings, sheet.source, sheet.preview, sheet.other_headers)
    preparer = RowPreparer(plan, settings, sheet.cell_problems)
    notes = sheet_notes(headers, job, plan)
    for note in notes:
        (notice or silent)(note)  # before sending: a user may stop the job and fix it
    journal_path = settings.journal or default_journal_path(source)
    try:
        journal = Journal(
            journal_path,
            endpoint=settings.destination,
            source=job_source(source, journal_path),
            fresh=settings.fresh,
            formerly=source.name,
        )
    except (sqlite3.Error, OSError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise UsageError(f"cannot open the journal {journal_path}: {reason}") from None
    job = job.recorded_in(journal)
    typed = typed_output(sheet, target)
    out = StreamedOutput(target, headers, job, source, typed=typed, handoff=sheet.handoff)
    try:
        # A journal failure mid-job (disk full) stops sending; the summary says so and the
        # output is still written. What was committed stays.
        if settings.batch:
            from batchrun.batch.run import run_batch_rows

            summary = run_batch_rows(
                sheet_passes(source, settings, plan, out),
                job,
                progress=progress,
                handle_signals=handle_signals,
                on_chunk=out.write,
            )
        else:
            # Imported here: the sending stack (aiohttp) is not ``validate``'s to load.
            from batchrun.sending.session import run_chunks

            summary = run_chunks(
                prepared_chunks(sheet, preparer, settings.limit, out),
                job,
                progress=progress,
                handle_signals=handle_signals,
                on_chunk=out.write,
            )
        if out.cost is not None:
            summary = dataclasses.replace(summary, cost_usd=round(out.cost, 12))
        summary = dataclasses.replace(summary, unpriced=out.unpriced)
        summary = dataclasses.replace(summary, fresh=settings.fresh)
        if notes:
            summary = dataclasses.replace(summary, notes=(*summary.notes, *notes))
        out.finish(summary)
    except (UsageError, OSError, InputError) as error:
        out.abort()
        if not out.handled:
            raise
        raise _not_written(error, target, journal_path, RESUME[settings.fresh]) from None
    except BaseException:
        out.abort()
        raise
    finally:
        preparer.close()
        with contextlib.suppress(sqlite3.Error):
            journal.close()
    return JobReport(summary, target)


def _not_written(error: Exception, target: Path, journal: Path, unless: str) -> OutputNotWritten:
    """The error of a job whose output failed after rows were sent: nothing is lost
    (``unless``: what to leave out of the command to resume, see ``RESUME``)."""
    if isinstance(error, InputError):
        # Found as the sheet streamed in, after earlier chunks were sent.
        return OutputNotWritten(
            f"{error}; the rows before it were handled and are in the journal {journal}: "
            f"fix the file and run the same command{unless} again (nothing is sent twice)"
        )
    # Checked before sending, yet it failed (a full disk, the folder removed meanwhile):
    # exit 2 would say nothing was sent.
    reason = str(error) if isinstance(error, UsageError) else f"{target}: {_strerror(error)}"
    return OutputNotWritten(
        f"{reason}; the results are in the journal {journal}: run the same command{unless} "
        "with another -o to write them (nothing is sent again)"
    )


def _strerror(error: Exception) -> object:
    return (error.strerror if isinstance(error, OSError) else None) or error


def _scan(source: Path, settings: Settings, sheet: Sheet) -> int | None:
    """The number of rows of a CSV/TSV input, read through once before anything is sent,
    so that a ragged row or an unclosed quote far down the file stops the job before its
    first request, as when the whole sheet was read first (about a second a million rows).
    Other formats are checked whole as they open (JSONL's keys are read from every line; an
    .xlsx sheet is read at once, and fits Excel): None."""
    if sheet.format.delimiter is None:
        return None
    return sum(1 for _ in itertools.islice(open_input(source, settings).rows, settings.limit))


def prepared_chunks(
    sheet: Sheet, preparer: RowPreparer, limit: int | None, out: StreamedOutput | None
) -> Iterator[list[RowResult]]:
    """The sheet's rows, prepared a chunk at a time; each chunk's input cells wait in
    ``out`` (when given) for the chunk's results."""
    values = itertools.islice(sheet.rows, limit)
    for chunk in batched(values, RUN_CHUNK_ROWS):
        # Text for assembly; the values as they came (numbers, dates, JSON) for the output.
        cells = list(sheet.text_rows(chunk)) if sheet.format.typed_cells else chunk
        if out is not None:
            out.inputs.append(chunk if out.typed else cells)
        yield preparer.prepare_rows(cells)


def sheet_passes(
    source: Path, settings: Settings, plan: RowPlan, out: StreamedOutput
) -> Callable[[bool], Iterator[list[RowResult]]]:
    """The sheet's prepared rows, read afresh from ``source`` on each call (a --batch job
    puts them in parts, then writes them out); with True, their input cells wait in
    ``out`` for the results."""

    def chunks(written: bool) -> Iterator[list[RowResult]]:
        sheet = open_input(source, settings)
        preparer = RowPreparer(plan, settings, sheet.cell_problems)
        try:
            yield from prepared_chunks(sheet, preparer, settings.limit, out if written else None)
        finally:
            preparer.close()

    return chunks


@contextlib.contextmanager
def rare_collections() -> Iterator[None]:
    """Run the cyclic garbage collector rarely while a job holds its rows.

    A chunk's cells, bodies and results live until the chunk is written, and every full
    collection would walk them all again for nothing; sending makes next to no cyclic
    garbage (64 objects for 20,000 rows, measured). So what exists is frozen (left out of
    collections) and young objects are examined every 100,000 allocations instead of
    700. Both are undone on the way out (a caller's own frozen objects are left alone).
    Kept because it measured faster: 50,000 rows at zero latency, interleaved rounds
    (benchmarks' probe, this on and off), median CPU 16.2 s with it against 17.2 s
    without (wall 98 s against 112 s, on a loaded machine); at 20,000 rows no difference.
    """
    threshold = gc.get_threshold()
    freeze = gc.get_freeze_count() == 0
    if freeze:
        gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        if freeze:
            gc.unfreeze()
