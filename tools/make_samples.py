"""Write the binary and non-UTF-8 samples: samples/threads.xlsx from samples/threads.csv
(cells as text, header bold); samples/orders.xlsx, a workbook as people make one in
Excel; samples/kunden.csv, a CSV as Excel saves it in German (';', Windows-1252, CRLF).

python tools/make_samples.py
"""

from __future__ import annotations

import csv
import datetime
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


def orders() -> None:
    """A merged title above human headers, percent, euro and day-first date columns, a
    merged range, a hidden row, a VLOOKUP that found nothing, and a lookup sheet."""
    workbook = xlsxwriter.Workbook(
        str(ROOT / "samples" / "orders.xlsx"), {"strings_to_formulas": False}
    )
    sheet = workbook.add_worksheet("Orders")
    rates = workbook.add_worksheet("Rates")
    add = workbook.add_format
    title = add({"bold": True, "font_size": 14, "align": "center"})
    bold = add({"bold": True})
    percent, euro = add({"num_format": "0%"}), add({"num_format": '"€"#,##0.00'})
    day = add({"num_format": "dd/mm/yyyy"})
    sheet.merge_range("A1:H1", "Customer questions, week 12", title)
    header = ["Customer", "Model", "Question", "Discount", "Price", "Order date", "Region"]
    sheet.write_row(1, 0, [*header, "VAT rate"], bold)
    orders = [
        ("Müller GmbH", "Where is my order 4711?", 0.15, 1234.5, (2024, 3, 7), "DE"),
        ("Ace Ltd", "Can I pay by card?", 0.05, 99.5, (2024, 11, 2), "UK"),
        ("Søren ApS", "Please cancel order 815.", 0, 10, (2024, 1, 31), "DK"),
        ("Dupont SA", "Is the invoice ready?", 0.1, 2500, (2024, 2, 29), "FR"),
    ]
    for row, (who, question, discount, price, date, country) in enumerate(orders, start=2):
        sheet.write_string(row, 0, who)
        sheet.write_string(row, 1, "gpt-4o-mini")
        sheet.write_string(row, 2, question)
        sheet.write_number(row, 3, discount, percent)
        sheet.write_number(row, 4, price, euro)
        sheet.write_datetime(row, 5, datetime.datetime(*date), day)
        rate = {"DE": 0.19, "UK": 0.2, "FR": 0.2}.get(country)
        formula = f'=VLOOKUP("{country}",Rates!A:B,2,FALSE)'
        sheet.write_formula(row, 7, formula, percent, "#N/A" if rate is None else rate)
    sheet.merge_range("G3:G4", "North", None)
    sheet.write_string(4, 6, "North")
    sheet.write_string(5, 6, "South")
    sheet.set_row(4, None, None, {"hidden": True})
    sheet.set_column(0, 0, 14)
    sheet.set_column(2, 2, 28)
    rates.write_row(0, 0, ["Country", "VAT"], bold)
    for row, (country, rate) in enumerate([("DE", 0.19), ("UK", 0.2), ("FR", 0.2)], start=1):
        rates.write_string(row, 0, country)
        rates.write_number(row, 1, rate, percent)
    workbook.close()


def kunden() -> None:
    """A CSV as Excel on a German Windows saves it: ';', Windows-1252, CRLF, with a BOM
    (as some exports add)."""
    lines = [
        "Kunde;Modell;Frage;Rabatt;Bestelldatum",
        "Müller GmbH;gpt-4o-mini;Wo ist meine Bestellung 4711?;15%;07.03.2024",
        "Bäckerei Groß;gpt-4o-mini;Kann ich per Überweisung zahlen?;5%;02.11.2024",
        "Café Zürich;gpt-4o-mini;Bitte stornieren Sie Auftrag 815.;0%;31.01.2024",
    ]
    text = "".join(line + "\r\n" for line in lines)
    (ROOT / "samples" / "kunden.csv").write_bytes(b"\xef\xbb\xbf" + text.encode("cp1252"))


if __name__ == "__main__":
    main()
    orders()
    kunden()
