"""The files of a job: the input sheet as the settings read it, the output checked before
any work and written beside it (a run's chunk by chunk, see :class:`StreamedOutput`), its
summary sheet and the settings passthrough.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchrun import __version__
from batchrun.atomic import StagedFile, check_writable
from batchrun.config import Settings, applied_settings
from batchrun.config_file import settings_toml
from batchrun.endpoints.body import RowPlan, hint_text, unsent_assistants_columns
from batchrun.errors import UsageError
from batchrun.job import Job
from batchrun.output import number_columns, result_cells, result_columns, total_cost
from batchrun.report import RowResult, Summary
from batchrun.sheets import columns_of
from batchrun.sheets.formats import default_output, input_format, output_format
from batchrun.sheets.handoff import HandOff
from batchrun.sheets.reader import Sheet, open_sheet
from batchrun.sheets.writer import SheetWriter
from batchrun.sheets.xlsx_writer import full_text_path


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


def silent(note: str) -> None:
    pass


def sheet_notes(headers: list[str], job: Job, plan: RowPlan) -> tuple[str, ...]:
    """What a user should know about the sheet's columns before rows are sent."""
    notes = [
        f"column {header!r} looks like the field {name} but is not sent: {hint_text(name, header)}"
        for name, header in plan.hints
    ]
    # Headers match fields ignoring case, so a numbering column "N" asks chat for N answers a
    # row, each one charged: said before sending, unless the header is the field's own name.
    notes += [
        f"column {headers[index].strip()!r} is sent as n, the number of answers each row asks "
        "for (each one charged): rename the column to keep it out of the request"
        for name, index, _ in plan.field_columns
        if name == "n" and headers[index].strip() != name and name not in job.settings.columns
    ]
    if unsent := unsent_assistants_columns(headers, job.schema):
        notes.append(
            f"column(s) {', '.join(unsent)} are Assistants fields, not fields of --endpoint "
            f"{job.endpoint.name}: carried to the output, never sent (see the README's "
            "migration table)"
        )
    return tuple(notes)


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
        # Rows written with usage whose model has no known price (not in ``cost``).
        self.unpriced = 0
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
        cost, unpriced = total_cost(rows, self.settings)
        if cost is not None:
            self.cost = (self.cost or 0.0) + cost
        self.unpriced += unpriced
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
