"""The terminal progress bar (a CLI concern; the library only reports events)."""

from __future__ import annotations

import sys

from tqdm import tqdm

from batchrun.report import Outcome, RowResult


class ProgressBar:
    """Rows done, ok and failed counts, created runs, rows waited for, rate and ETA, on
    stderr."""

    def __init__(self) -> None:
        self._bar: tqdm[None] | None = None
        self.ok = 0
        self.failed = 0
        self.created = 0
        # Rows whose answer may exist and is looked for again (a rerun after a kill may
        # wait minutes for them): shown, so a bar that stands still says why.
        self.waiting: set[int] = set()

    def start(self, total: int) -> None:
        """Open the bar for ``total`` rows, or add ``total`` more (the sheet's next chunk)."""
        if self._bar is not None:
            self._bar.total = (self._bar.total or 0) + total
            self._bar.refresh()
            return
        self._bar = tqdm(total=total, unit="row", file=sys.stderr, dynamic_ncols=True, leave=False)  # type: ignore[assignment]

    def update(self, event: str, row: RowResult) -> None:
        """Count one event."""
        if self._bar is None:
            return
        if event == "created":
            self.created += row.outcome is Outcome.OK
            return
        if event == "unsure":
            self.waiting.add(row.index)
            self._bar.set_postfix(self._counts(), refresh=True)
            return
        self.waiting.discard(row.index)
        if row.outcome is Outcome.OK:
            self.ok += 1
        else:
            self.failed += 1
        self._bar.set_postfix(self._counts(), refresh=False)
        self._bar.update(1)

    def _counts(self) -> dict[str, int]:
        counts = {"runs": self.created, "ok": self.ok, "failed": self.failed}
        if self.waiting:
            counts["looking"] = len(self.waiting)
        return counts

    def close(self) -> None:
        """Remove the bar (the summary line follows)."""
        if self._bar is not None:
            self._bar.close()
