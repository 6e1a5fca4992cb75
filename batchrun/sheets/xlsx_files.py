"""The workbook file of an .xlsx output: stored, with a failed write an ``OSError``, or
dropped unstored (xlsxwriter has a way to do neither)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any


def store_workbook(workbook: Any) -> None:
    """Close (write) an xlsxwriter ``workbook``; a full disk or a vanished folder raises
    its ``OSError``, which xlsxwriter wraps in ``FileCreateError`` (not an OSError): the
    job then says its results are in the journal (exit 3), not that batchrun failed."""
    from xlsxwriter.exceptions import FileCreateError

    try:
        workbook.close()
    except FileCreateError as error:
        cause = error.__cause__ or error.__context__
        raise (cause if isinstance(cause, OSError) else OSError(str(error))) from None


def discard_workbook(workbook: Any) -> None:
    """Drop a workbook unwritten: in constant_memory mode each sheet holds an open temp
    file of row XML that only close() removes."""
    for sheet in workbook.worksheets():
        handle = getattr(sheet, "row_data_fh", None)
        name = getattr(sheet, "row_data_filename", None)
        with contextlib.suppress(OSError):
            if handle is not None and not handle.closed:
                handle.close()
            if name:
                Path(name).unlink(missing_ok=True)
