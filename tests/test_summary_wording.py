"""The summary line's words: counts read as a person would say them."""

from __future__ import annotations

from pathlib import Path

from batchrun.config import Settings, environment_settings
from batchrun.jobs import run_file
from batchrun.report import Outcome, RowResult, Summary
from batchrun.sending.states import Event
from batchrun.sending.tally import summarize


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


def test_a_batch_no_wait_line_says_what_was_submitted_and_what_is_pending(
    tmp_path: Path,
) -> None:
    source = tmp_path / "prompts.csv"
    source.write_text("model,input\ngpt-4o,Hi\ngpt-4o,Hello\n", encoding="utf-8")
    options = {"endpoint": "responses", "batch": True, "no_wait": True, "simulate": True}
    report = run_file(source, tmp_path / "out.csv", Settings(**environment_settings(options, {})))
    line = report.summary.line()
    assert "; this run: 2 submitted, 2 pending in batches; batch: 1 submitted (" in line
    assert "sent" not in line and "left for the next run" not in line


def test_rows_waiting_for_room_in_the_batch_queue_are_not_said_to_be_in_batches(
    tmp_path: Path,
) -> None:
    # Before: "this run: 1 submitted, 3 pending in batches" while two rows waited for a
    # part of their own, outside any batch.
    source = tmp_path / "prompts.csv"
    rows = "".join(f"gpt-4o-mini,Question {n},50\n" for n in range(3))
    source.write_text(f"model,input,max_output_tokens\n{rows}", encoding="utf-8")
    options = {
        "endpoint": "responses",
        "batch": True,
        "no_wait": True,
        "simulate": True,
        "batch_queue_tokens": 60,
    }
    report = run_file(source, tmp_path / "out.csv", Settings(**environment_settings(options, {})))
    assert report.summary.outcomes == {"pending": 1, "not sent": 2}
    assert "; this run: 1 submitted, 1 pending in batches, 2 left for the next run;" in (
        report.summary.line()
    )


def test_a_reconciled_rerun_says_what_this_run_did() -> None:
    earlier = RowResult(0, key="k0")  # reconciled by an earlier job, kept from the journal
    earlier.restore({"outcome": "ok", "status": 200, "reconciled": True, "next": "nothing"})
    adopted = RowResult(1, key="k1")  # left unsure by a crash, found by its tag now
    adopted.restore({"ambiguous": True})
    adopted.reconciled, adopted.outcome = True, Outcome.OK
    adopted.move(Event.FINISHED)
    summary = summarize([earlier, adopted], 1.0, from_journal=1)
    assert summary.line() == (
        "2 rows: 2 ok (2 reconciled) in 1.0 s; this run: 0 sent, 1 reconciled, 1 from the journal"
    )


def test_rows_an_earlier_run_made_and_this_one_followed_are_named() -> None:
    # A kill while replies were read: 2 rows sent now, 1 kept, 3 made before and followed.
    summary = _summary(rows=6, outcomes={"ok": 6}, sent=2, from_journal=1, followed=3)
    assert summary.line().endswith(
        "this run: 2 sent, 3 made earlier and followed, 1 from the journal"
    )


def test_the_summary_sheet_names_rows_collected_from_batches_only_for_a_batch_job() -> None:
    # A direct job that sent 14 rows: nothing was collected from a batch.
    direct = _summary(rows=14, outcomes={"ok": 14}, sent=14, collected=14)
    names = [name for rows in direct.sections({}).values() for name, _ in rows]
    assert "sent by this run" in names
    assert "collected from batches" not in names
    batch = _summary(rows=14, outcomes={"ok": 14}, collected=14, batch="1 completed")
    names = [name for rows in batch.sections({}).values() for name, _ in rows]
    assert "collected from batches" in names
