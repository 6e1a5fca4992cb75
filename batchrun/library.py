"""The library entry points: pandas in, pandas out, never printing, never exiting.

For notebooks and KNIME's Python Script node (whose tables are pandas DataFrames)::

    import batchrun
    checked = batchrun.validate_frame(df)
    results = batchrun.run_frame(df, base_url="http://127.0.0.1:8000/v1", wait=True)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from batchrun.config import Settings, environment_settings
from batchrun.sending.journal import Journal
from batchrun.sending.runner import run_rows

if TYPE_CHECKING:
    import pandas as pd


def settings_from(options: dict[str, Any]) -> Settings:
    """Settings for library calls: keyword options plus the environment."""
    return Settings(**environment_settings(options))


def run_frame(frame: pd.DataFrame, **options: Any) -> pd.DataFrame:
    """Send every valid row of ``frame``; the frame with result columns added.

    Options are the long option names of ``batchrun run`` with underscores
    (``base_url``, ``concurrency``, ``wait``, ...). Without ``journal=PATH`` the journal
    lives in memory. Never prints, never exits; a systemic error stops sending and the
    unsent rows say why in ``error``.
    """
    from batchrun.output import result_frame
    from batchrun.prepare import RowPreparer, make_plan

    settings = settings_from(options)
    settings.check_sending()
    rows = RowPreparer(make_plan(list(frame.columns), settings), settings).prepare(frame)
    journal = Journal(
        settings.journal, endpoint=settings.endpoint, source="frame", fresh=settings.fresh
    )
    try:
        run_rows(rows, settings, journal)
    finally:
        journal.close()
    return result_frame(frame, rows, settings, mode="run")


def validate_frame(frame: pd.DataFrame, **options: Any) -> pd.DataFrame:
    """Assemble and check every row of ``frame``; the frame with ``request`` and ``error``."""
    from batchrun.output import result_frame
    from batchrun.prepare import RowPreparer, make_plan

    settings = settings_from(options)
    rows = RowPreparer(make_plan(list(frame.columns), settings), settings).prepare(frame)
    return result_frame(frame, rows, settings, mode="validate")
