"""Write samples/threads.xlsx from samples/threads.csv (cells as text, header bold).

python tools/make_samples.py
"""

from __future__ import annotations

import csv
from pathlib import Path

import xlsxwriter

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    with (ROOT / "samples" / "threads.csv").open(encoding="utf-8", newline="") as stream:
        rows = list(csv.reader(stream))
    workbook = xlsxwriter.Workbook(
        str(ROOT / "samples" / "threads.xlsx"), {"strings_to_formulas": False}
    )
    sheet = workbook.add_worksheet("threads")
    bold = workbook.add_format({"bold": True})
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            if cell:
                sheet.write_string(r, c, cell, bold if r == 0 else None)
    sheet.freeze_panes(1, 0)
    workbook.close()


if __name__ == "__main__":
    main()
