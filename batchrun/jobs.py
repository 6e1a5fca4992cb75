"""Whole jobs on files: read the sheet, validate or run it, write the output beside it.

The CLI calls :func:`run_file` and :func:`validate_file`; both return a :class:`JobReport`
and raise only :class:`~batchrun.errors.BatchrunError` for job-stopping problems.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import itertools
import os
import sqlite3
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchrun import __version__
from batchrun.atomic import StagedFile, check_writable
from batchrun.config import Settings, applied_settings
from batchrun.config_file import settings_toml
from batchrun.endpoints.body import RowPlan, hint_text, unsent_assistants_columns
from batchrun.endpoints.cost import Estimate
from batchrun.endpoints.prepare import RowPreparer, make_plan
from batchrun.endpoints.validation import checked_chunks
from batchrun.errors import InputError, OutputNotWritten, UsageError
from batchrun.job import Job
from batchrun.output import (
    VALIDATE_COLUMNS,
    check_names,
    number_columns,
    result_cells,
    result_columns,
    total_cost,
)
from batchrun.report import Outcome, RowResult, Summary
from batchrun.sending.journal import Journal, default_journal_path
from batchrun.sheets import batched, columns_of, sheet_format
from batchrun.sheets.formats import default_output, input_format, output_format
from batchrun.sheets.handoff import HandOff
from batchrun.sheets.reader import Sheet, open_sheet
from batchrun.sheets.writer import MAX_XLSX_DATA_ROWS, SheetWriter
from batchrun.sheets.xlsx_writer import MAX_XLSX_COLUMNS, full_text_path

if TYPE_CHECKING:
    from batchrun.sending.runner import Progress

VALIDATE_CHUNK_ROWS = 50_000
# Rows a run reads, prepares, sends and writes at a time: what its memory is bounded by.
RUN_CHUNK_ROWS = 10_000
OK, INVALID = Outcome.OK.value, Outcome.INVALID.value


@dataclass(frozen=True, slots=True)
class JobReport:
    """What a finished job tells its caller."""

    summary: Summary
    output: Path


def settings_path(output: Path) -> Path:
    """``out.xlsx`` -> ``out.settings.toml``, the settings passthrough beside the output."""
    return output.with_name(f"{output.stem}.settings.toml")


def resolve_output(source: Path, output: Path | None, tag: str = "out") -> Path:
    """The output path, checked before any work is done: by default ``<stem>.<tag>.<ext>``
    beside the input (``out`` for run, ``checked`` for validate).

    Each file the job will write is tried (a temp file made and removed beside it), so a
    folder in its place or a folder that cannot be written to is found before sending.
    """
    target = output or default_output(source, tag)
    output_format(target)
    if target.exists() and source.exists() and target.resolve() == source.resolve():
        raise UsageError(f"-o {target}: the output would overwrite the input")
    if not target.parent.is_dir():
        raise UsageError(f"-o {target}: folder {target.parent} does not exist")
    for path in output_files(target):
        check_writable(path)
    return target


def output_files(target: Path) -> list[Path]:
    """Every file a job may write for ``target``: the output, its settings passthrough and,
    for .xlsx, the file that keeps cells too long for Excel whole."""
    files = [target, settings_path(target)]
    if output_format(target).name == "xlsx":
        files.append(full_text_path(target))
    return files


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
    with rare_collections():
        return _run_file(source, target, settings, progress, handle_signals, notice)


def open_input(source: Path, settings: Settings) -> Sheet:
    """The input sheet, read as the settings say (worksheet, separator, encoding, header)."""
    return open_sheet(
        source,
        settings.sheet,
        delimiter=settings.delimiter,
        encoding=settings.encoding,
        header_row=settings.header_row,
    )


def typed_output(sheet: Sheet, target: Path) -> bool:
    """Whether input cells are written back as the values they came as (else as text).

    Parquet values keep their Arrow types only in a Parquet output; elsewhere they are
    written as their text (a tz-aware timestamp has no Excel type).
    """
    out = output_format(target)
    if sheet.format.name == "parquet":
        return out.name == "parquet"
    return sheet.format.typed_cells and out.typed_cells


def _silent(note: str) -> None:
    pass


def sheet_notes(headers: list[str], job: Job, plan: RowPlan) -> tuple[str, ...]:
    """What a user should know about the sheet's columns before rows are sent."""
    notes = [
        f"column {header!r} looks like the field {name} but is not sent: {hint_text(name, header)}"
        for name, header in plan.hints
    ]
    if unsent := unsent_assistants_columns(headers, job.schema):
        notes.append(
            f"column(s) {', '.join(unsent)} are Assistants fields, not fields of --endpoint "
            f"{job.endpoint.name}: carried to the output, never sent (see the README's "
            "migration table)"
        )
    return tuple(notes)


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
    plan = make_plan(headers, settings, sheet.source, sheet.preview)
    preparer = RowPreparer(plan, settings, sheet.cell_problems)
    notes = sheet_notes(headers, job, plan)
    for note in notes:
        (notice or _silent)(note)  # before sending: a user may stop the job and fix it
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
        chunks = prepared_chunks(sheet, preparer, settings.limit, out)
        # A journal failure mid-job (disk full) stops sending; the summary says so and the
        # output is still written. What was committed stays.
        if settings.batch:
            from batchrun.batch.run import run_batch_rows

            # A --batch job plans its parts over every row at once (see batch/job.py).
            rows = [row for chunk in chunks for row in chunk]
            summary = run_batch_rows(rows, job, progress=progress, handle_signals=handle_signals)
            out.write(rows)
        else:
            # Imported here: the sending stack (aiohttp) is not ``validate``'s to load.
            from batchrun.sending.session import run_chunks

            summary = run_chunks(
                chunks,
                job,
                progress=progress,
                handle_signals=handle_signals,
                on_chunk=out.write,
            )
        if out.cost is not None:
            summary = dataclasses.replace(summary, cost_usd=round(out.cost, 12))
        if notes:
            summary = dataclasses.replace(summary, notes=(*summary.notes, *notes))
        out.finish(summary)
    except (UsageError, OSError, InputError) as error:
        out.abort()
        if not out.handled:
            raise
        raise _not_written(error, target, journal_path) from None
    except BaseException:
        out.abort()
        raise
    finally:
        preparer.close()
        with contextlib.suppress(sqlite3.Error):
            journal.close()
    return JobReport(summary, target)


def _not_written(error: Exception, target: Path, journal: Path) -> OutputNotWritten:
    """The error of a job whose output failed after rows were sent: nothing is lost."""
    if isinstance(error, InputError):
        # Found as the sheet streamed in, after earlier chunks were sent.
        return OutputNotWritten(
            f"{error}; the rows before it were handled and are in the journal {journal}: "
            "fix the file and run the same command again (nothing is sent twice)"
        )
    # Checked before sending, yet it failed (a full disk, the folder removed meanwhile):
    # exit 2 would say nothing was sent.
    reason = str(error) if isinstance(error, UsageError) else f"{target}: {_strerror(error)}"
    return OutputNotWritten(
        f"{reason}; the results are in the journal {journal}: run the same command "
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
    sheet: Sheet, preparer: RowPreparer, limit: int | None, out: StreamedOutput
) -> Iterator[list[RowResult]]:
    """The sheet's rows, prepared a chunk at a time; each chunk's input cells wait in
    ``out`` for the chunk's results."""
    values = itertools.islice(sheet.rows, limit)
    for chunk in batched(values, RUN_CHUNK_ROWS):
        # Text for assembly; the values as they came (numbers, dates, JSON) for the output.
        cells = list(sheet.text_rows(chunk)) if sheet.format.typed_cells else chunk
        out.inputs.append(chunk if out.typed else cells)
        yield preparer.prepare_rows(cells)


class StreamedOutput:
    """A run's output, written chunk by chunk in input order as each chunk ends: each
    chunk's input cells beside its rows' results; committed (renamed into place) by
    :meth:`finish`, so a job stopped before leaves the target as it was, and a rerun writes
    it whole from the journal."""

    def __init__(
        self,
        target: Path,
        headers: list[str],
        job: Job,
        source: Path,
        *,
        typed: bool,
        handoff: HandOff,
    ) -> None:
        settings = job.settings
        self.target, self.headers, self.job, self.source = target, headers, job, source
        self.settings = settings
        self.typed = typed
        # Input cells of the chunks read and not yet written, oldest first.
        self.inputs: deque[list[list[Any]]] = deque()
        # Whether a written row has a result (sent now, or taken from the journal).
        self.handled = False
        # What the rows written so far cost (None: no row has a known price).
        self.cost: float | None = None
        names = [settings.prefix + name for name in result_columns(job, "run")]
        self._writer = SheetWriter(
            target,
            [*headers, *names],
            escape_formulas=settings.escape_formulas,
            number_columns=number_columns(job),
            typed_columns=frozenset(headers) if typed else frozenset(),
            handoff=handoff,
        )

    def write(self, rows: list[RowResult]) -> None:
        """Write the finished rows of the oldest chunk read (or of every chunk read)."""
        cells: list[list[Any]] = []
        while len(cells) < len(rows):
            cells.extend(self.inputs.popleft())
        self.handled = self.handled or any(row.status is not None for row in rows)
        if (cost := total_cost(rows, self.settings)) is not None:
            self.cost = (self.cost or 0.0) + cost
        self._writer.write_columns(
            [
                *columns_of(cells, len(self.headers)),
                *result_cells(rows, self.job, "run"),
            ]
        )

    def finish(self, summary: Summary) -> None:
        """Commit the output (with its summary sheet) and the settings passthrough."""
        self._writer.close(sheet_summary(summary, self.settings, "run", self.source, self.target))
        write_text_atomic(settings_path(self.target), settings_toml(self.settings))

    def abort(self) -> None:
        """Remove what was written; an earlier output stays as it was."""
        self._writer.abort()


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


def validate_file(
    source: Path,
    output: Path | None,
    settings: Settings,
    *,
    batch_jsonl: Path | None = None,
    notice: Callable[[str], None] | None = None,
) -> JobReport:
    """``batchrun validate``: assemble and check every row; send nothing.

    Streams the sheet in chunks, so a million-row CSV needs little memory. ``batch_jsonl``:
    also write the valid rows as Batch API input files (``FILE``, ``STEM.2.jsonl``, ...).
    """
    started = time.monotonic()
    sheet_format(source)
    target = resolve_output(source, output, "checked")
    jsonl = None
    if batch_jsonl is not None:
        from batchrun.batch.jsonl import BatchJsonl

        jsonl = BatchJsonl(batch_jsonl, settings, source, target)
    job = Job.resolve(settings)
    sheet = open_input(source, settings)
    header = sheet.headers
    check_names(header, job, "validate")
    plan = make_plan(header, settings, sheet.source, sheet.preview)
    notes = sheet_notes(header, job, plan)
    for note in notes:
        (notice or _silent)(note)
    result_names = [settings.prefix + name for name in VALIDATE_COLUMNS]
    typed = typed_output(sheet, target)
    writer = SheetWriter(
        target,
        [*header, *result_names],
        escape_formulas=settings.escape_formulas,
        typed_columns=frozenset(header) if typed else frozenset(),
        handoff=sheet.handoff,
    )
    outcomes: Counter[str] = Counter()
    estimate = Estimate()
    total = 0
    chunks = batched(itertools.islice(sheet.rows, settings.limit), VALIDATE_CHUNK_ROWS)
    # Typed sheets are checked as text and written back as the values they came as.
    originals: deque[list[list[Any]]] = deque()
    if sheet.format.typed_cells:
        chunks = _keeping(chunks, originals, sheet)
    try:
        for chunk, checked in checked_chunks(chunks, plan, settings, sheet.cell_problems):
            if jsonl is not None:
                jsonl.add(checked)
            invalid = checked.invalid
            outcomes[Outcome.INVALID.value] += invalid
            outcomes[Outcome.OK.value] += len(chunk) - invalid
            estimate.merge(checked.tokens)
            total += len(chunk)
            written = originals.popleft() if originals else chunk
            writer.write_columns(
                [
                    *columns_of(written if typed else chunk, len(header)),
                    [INVALID if error else OK for error in checked.errors],
                    checked.requests,
                    checked.errors,
                ]
            )
        summary = Summary(
            rows=total,
            outcomes=dict(outcomes),
            failed_statuses={},
            run_statuses={},
            reconciled=0,
            seconds=time.monotonic() - started,
            notes=notes,
            batch=jsonl.close() if jsonl is not None else "",
            estimate=estimate.text(batch=settings.batch),
        )
        writer.close(sheet_summary(summary, settings, "validate", source, target))
    except BaseException:
        writer.abort()
        if jsonl is not None:
            jsonl.close()
        raise
    write_text_atomic(settings_path(target), settings_toml(settings))
    return JobReport(summary, target)


def _keeping(
    chunks: Iterator[list[list[Any]]], originals: deque[list[list[Any]]], sheet: Sheet
) -> Iterator[list[list[str]]]:
    """Each chunk as text, its values kept (in order) for the writer."""
    for chunk in chunks:
        originals.append(chunk)
        yield list(sheet.text_rows(chunk))


def sheet_summary(
    summary: Summary, settings: Settings, mode: str, source: Path, target: Path
) -> dict[str, list[tuple[str, object]]]:
    """The summary sheet's sections: counts, the job (input file, batchrun version) and
    the settings that applied."""
    applied = applied_settings(
        settings,
        mode,
        csv_output=output_format(target).delimiter is not None,
        xlsx_input=input_format(source).name == "xlsx",
    )
    return summary.sections(applied, job=[("input", source.name), ("batchrun", __version__)])


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file beside it and a rename."""
    staged = StagedFile(path)
    try:
        staged.temp.write_text(text, encoding="utf-8")
        staged.commit()
    except BaseException:
        staged.discard()
        raise
