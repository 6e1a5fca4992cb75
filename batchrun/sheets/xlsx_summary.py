"""The summary sheet of an .xlsx output: its sections as two columns of names and values,
the outcome counts charted beside them (a native Excel bar chart)."""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from batchrun.sheets.xlsx_cells import (
    EXCEL_CELL_LIMIT,
    MAX_COLUMN_WIDTH,
    excel_text,
    fit_excel_cell,
)

Summary = Mapping[str, Sequence[tuple[str, object]]]
# The summary section charted beside its counts, and the one added for cut cells.
CHART_SECTION = "Rows by outcome"
CUT_SECTION = "Cut cells"


def write_summary_sheet(
    workbook: Any,
    summary: Summary,
    *,
    bold: Any,
    money: Any,
    cut_cells: int,
    full_text_name: str,
) -> None:
    """Add the summary sheet to ``workbook`` (an xlsxwriter Workbook), named ``summary``
    unless the input had a sheet of that name; ``cut_cells`` cells went whole to the file
    ``full_text_name``; dollars (a key ending ``(USD)``) in the ``money`` format."""
    taken = {sheet.get_name().casefold() for sheet in workbook.worksheets()}
    name = next(
        name
        for name in (
            "summary",
            "batchrun summary",
            *(f"batchrun summary {n}" for n in range(2, 99)),
        )
        if name.casefold() not in taken
    )
    sheet = workbook.add_worksheet(name)
    sections = dict(summary)
    if cut_cells:
        sections[CUT_SECTION] = [
            (f"cells cut to {EXCEL_CELL_LIMIT:,} characters", cut_cells),
            ("full text in", full_text_name),
        ]
    row = 0
    widths = [8, 8]
    for title, items in sections.items():
        sheet.write_string(row, 0, _summary_text(title), bold)
        row += 1
        if title == CHART_SECTION and items:
            _chart_outcomes(workbook, sheet, sheet.get_name(), row, len(items))
        for key, value in items:
            key_text = _summary_text(key)
            sheet.write_string(row, 0, key_text)
            widths[0] = max(widths[0], len(key_text) + 1)
            if isinstance(value, bool):
                sheet.write_boolean(row, 1, value)
            elif isinstance(value, int | float) and math.isfinite(value):
                sheet.write_number(row, 1, value, money if key_text.endswith("(USD)") else None)
            elif value is not None:
                text = _summary_text(value)
                sheet.write_string(row, 1, text)
                widths[1] = max(widths[1], len(text) + 1)
            row += 1
        row += 1  # a blank row between sections
    for col, width in enumerate(widths):
        sheet.set_column(col, col, min(MAX_COLUMN_WIDTH, width))


def _chart_outcomes(workbook: Any, sheet: Any, name: str, first: int, count: int) -> None:
    """A native Excel bar chart of the outcome counts, beside them (columns D to K)."""
    chart = workbook.add_chart({"type": "bar"})
    last = first + count - 1
    quoted = "'" + name.replace("'", "''") + "'"
    chart.add_series(
        {
            "name": "rows",
            "categories": f"={quoted}!$A${first + 1}:$A${last + 1}",
            "values": f"={quoted}!$B${first + 1}:$B${last + 1}",
            "data_labels": {"value": True},
        }
    )
    chart.set_title({"name": CHART_SECTION})
    chart.set_legend({"none": True})
    chart.set_y_axis({"reverse": True})  # the first outcome on top, as in the table
    sheet.insert_chart(0, 3, chart, {"x_scale": 1.0, "y_scale": 0.8})


def _summary_text(value: object) -> str:
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        text = value.isoformat()
    elif isinstance(value, datetime.timedelta):
        text = f"{value.total_seconds():g} s"
    elif isinstance(value, Mapping | list | tuple | set | frozenset):
        text = json.dumps(
            value, ensure_ascii=False, default=str, sort_keys=isinstance(value, Mapping)
        )
    else:
        text = str(value)
    text = excel_text(text)
    return fit_excel_cell(text) or text
