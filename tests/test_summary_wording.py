"""The summary line's words: counts read as a person would say them."""

from __future__ import annotations

from batchrun.report import Summary


def _summary(**counts: object) -> Summary:
    base: dict[str, object] = {
        "rows": 1,
        "outcomes": {"ok": 1},
        "failed_statuses": {},
        "run_statuses": {},
        "reconciled": 0,
        "seconds": 0.5,
    }
    base.update(counts)
    return Summary(**base)  # type: ignore[arg-type]


def test_one_row_is_a_row_not_rows() -> None:
    assert _summary().line().startswith("1 row: 1 ok in 0.5 s")
    assert _summary(rows=2, outcomes={"ok": 2}).line().startswith("2 rows: 2 ok")
