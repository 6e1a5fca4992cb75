"""``batchrun validate`` on a file: assemble and check every row, send nothing."""

from __future__ import annotations

import itertools
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from batchrun.config import Settings
from batchrun.config_file import settings_toml
from batchrun.endpoints.cost import Estimate
from batchrun.endpoints.prepare import make_plan
from batchrun.endpoints.validation import checked_chunks
from batchrun.errors import BatchrunError, UsageError
from batchrun.job import Job
from batchrun.jobs.files import (
    JobReport,
    open_input,
    resolve_output,
    settings_path,
    sheet_notes,
    sheet_summary,
    silent,
    typed_output,
    write_text_atomic,
)
from batchrun.output import VALIDATE_COLUMNS, check_names
from batchrun.report import Outcome, Summary
from batchrun.sheets import batched, columns_of, sheet_format
from batchrun.sheets.reader import Sheet, open_sheet
from batchrun.sheets.writer import SheetWriter

VALIDATE_CHUNK_ROWS = 50_000
OK, INVALID = Outcome.OK.value, Outcome.INVALID.value


def _not_over_a_run(target: Path) -> None:
    """Refuse to write over a ``run`` output (DESIGN: never over one): its results are
    what was sent, and a checked sheet in their place would lose them."""
    if not target.exists():
        return
    try:
        headers = set(open_sheet(target, None).headers)
    except (BatchrunError, OSError):
        return  # not a sheet batchrun reads: not a run output either
    for header in headers:
        prefix = header.removesuffix("attempts")
        if prefix != header and {f"{prefix}status", f"{prefix}body"} <= headers:
            raise UsageError(
                f"-o {target}: it holds a run's results (columns {prefix}status, "
                f"{prefix}body, {prefix}attempts); validate never writes over them: "
                "give another -o"
            )


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
    _not_over_a_run(target)
    jsonl = None
    if batch_jsonl is not None:
        from batchrun.batch.jsonl import BatchJsonl

        jsonl = BatchJsonl(batch_jsonl, settings, source, target)
    job = Job.resolve(settings)
    sheet = open_input(source, settings)
    header = sheet.headers
    check_names(header, job, "validate")
    plan = make_plan(header, settings, sheet.source, sheet.preview, sheet.other_headers)
    notes = sheet_notes(header, job, plan)
    for note in notes:
        (notice or silent)(note)
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
