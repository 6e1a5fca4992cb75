"""The one registry of sheet formats: which suffix reads and writes as what.

    >>> input_format(Path("jobs.XLSM")).name
    'xlsx'
    >>> output_format(Path("out.tsv")).delimiter
    '\\t'

Every "unknown extension" message comes from here, worded once for input and once for
output.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from batchrun.errors import InputError, UsageError

__all__ = ["FORMATS", "Format", "default_output", "input_format", "output_format"]


@dataclass(frozen=True, slots=True)
class Format:
    """One sheet format: its suffixes and what batchrun can do with it."""

    name: str
    suffixes: tuple[str, ...]  # the first is the one written
    # Input cells keep their type (number, date, boolean, JSON value) when written back.
    typed_cells: bool
    # Room for a summary sheet beside the results.
    summary_sheet: bool
    delimiter: str | None = None
    # Suffixes read but never written (macro workbooks are written as .xlsx).
    read_only_suffixes: tuple[str, ...] = ()


FORMATS: tuple[Format, ...] = (
    Format("csv", (".csv",), typed_cells=False, summary_sheet=False, delimiter=","),
    Format("tsv", (".tsv",), typed_cells=False, summary_sheet=False, delimiter="\t"),
    Format(
        "xlsx",
        (".xlsx", ".xlsm"),
        typed_cells=True,
        summary_sheet=True,
        read_only_suffixes=(".xlsm",),
    ),
    Format("jsonl", (".jsonl",), typed_cells=True, summary_sheet=False),
    # Typed both ways through Arrow (see batchrun.sheets.parquet).
    Format("parquet", (".parquet",), typed_cells=True, summary_sheet=False),
)
_BY_SUFFIX = {suffix: fmt for fmt in FORMATS for suffix in fmt.suffixes}


def _either(items: list[str]) -> str:
    return ", ".join(items[:-1]) + " or " + items[-1]


USE_INPUT = "use " + _either([suffix for fmt in FORMATS for suffix in fmt.suffixes])
USE_OUTPUT = "write " + _either(
    [s for fmt in FORMATS for s in fmt.suffixes if s not in fmt.read_only_suffixes]
)


def input_format(path: Path) -> Format:
    """The format of an input sheet, from its extension (InputError if none fits)."""
    suffix = path.suffix.lower()
    found = _BY_SUFFIX.get(suffix)
    if found is not None:
        return found
    if suffix == ".xls":
        raise InputError(path, "is an old .xls workbook; save it as .xlsx")
    if not suffix:
        raise InputError(path, f"has no extension; {USE_INPUT}")
    raise InputError(path, f"unknown extension {path.suffix!r}; {USE_INPUT}")


def output_format(path: Path) -> Format:
    """The format of an output file, from its extension (UsageError if none fits)."""
    suffix = path.suffix.lower()
    found = _BY_SUFFIX.get(suffix)
    if found is not None and suffix not in found.read_only_suffixes:
        return found
    if found is not None:
        raise UsageError(f"-o {path}: batchrun does not write macro workbooks; write .xlsx")
    raise UsageError(f"-o {path}: unknown output extension {path.suffix!r}; {USE_OUTPUT}")


def default_output(source: Path, tag: str = "out") -> Path:
    """``data/sheet.xlsx`` -> ``data/sheet.out.xlsx`` (``.xlsm`` gives ``.xlsx``)."""
    fmt = input_format(source)
    suffix = (
        source.suffix if source.suffix.lower() not in fmt.read_only_suffixes else fmt.suffixes[0]
    )
    return source.with_name(f"{source.stem}.{tag}{suffix}")
