"""Rows whose answer cannot be looked up (responses, chat without ``store``) are reserved a
block ahead, synced, and marked ``sending`` as they go, not synced: to a rerun on the same
boot of the machine a reserved row was never sent; on another boot (after a power cut,
which can lose what was not synced) it may have been."""

from __future__ import annotations

import asyncio
import csv
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from job_support import command, killed_once, read_rows, settings_for

from batchrun.jobs import run_file
from batchrun.report import RowResult
from batchrun.sending import boot as boot_module
from batchrun.sending.durability import JournalWrites, ReservedAhead
from batchrun.sending.journal import Journal
from batchrun.sending.states import RESERVED, SENDING, RowState, from_journal
from batchrun.simulator import RunningSimulator

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the boot id is read from /proc"
)

SetBoot = Callable[[str | None], None]


@pytest.fixture
def boot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[SetBoot]:
    """Set the boot id batchrun reads (None: the system does not say)."""

    def set_boot(value: str | None) -> None:
        path = tmp_path / "boot_id"
        if value is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(value + "\n", encoding="ascii")
        monkeypatch.setattr(boot_module, "LINUX_BOOT_ID", path)
        boot_module.boot_id.cache_clear()

    yield set_boot
    boot_module.boot_id.cache_clear()


def write_prompts(path: Path, count: int) -> Path:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["model", "input"])
        writer.writerows(["gpt-4o", f"prompt {n}"] for n in range(count))
    return path


def logged_states(path: Path) -> list[str]:
    """Every state the journal's log holds, in the order written."""
    import sqlite3

    db = sqlite3.connect(path)
    try:
        batches = db.execute("SELECT entries FROM log ORDER BY batch").fetchall()
    finally:
        db.close()
    return [state for (batch,) in batches for _, state, _ in orjson.loads(batch)]


def test_a_reservation_of_this_boot_is_no_entry_and_of_another_boot_is_unsure(
    tmp_path: Path, boot: SetBoot
) -> None:
    boot("first-boot")
    path = tmp_path / "in.batchrun.sqlite"
    journal = Journal(path, endpoint="http://sim/v1", source="in.csv")
    entry = {"next": "send", "attempts": 0, "boot": "first-boot"}
    journal.mark_sending([("never sent", entry), ("sent", entry)], word=RESERVED)
    journal.mark_sending([("sent", {"next": "send", "attempts": 0})], synced=False)
    found = journal.lookup(["never sent", "sent"])
    assert set(found) == {"sent"} and found["sent"].state == SENDING
    journal.close()

    boot("second-boot")  # a power cut may have lost the unsynced marks since
    journal = Journal(path, endpoint="http://sim/v1", source="in.csv")
    found = journal.lookup(["never sent", "sent"])
    journal.close()
    assert found["never sent"].state == RESERVED
    assert from_journal(found["never sent"].state, ambiguous=False) is RowState.UNSURE


def test_a_reservation_is_synced_and_the_mark_before_the_send_is_not(
    tmp_path: Path, boot: SetBoot
) -> None:
    boot("this-boot")
    path = tmp_path / "in.batchrun.sqlite"
    journal = Journal(path, endpoint="http://sim/v1", source="in.csv")
    statements: list[str] = []
    journal._db.set_trace_callback(statements.append)
    rows = [RowResult(n, key=f"k{n}") for n in range(3)]
    reserved = ReservedAhead(JournalWrites(journal, print), rows, lambda row: True, "this-boot")

    async def send_first_row() -> None:
        await reserved.mark(rows[0])
        reserved.commit_now()

    asyncio.run(send_first_row())
    journal.close()
    inserts = [n for n, text in enumerate(statements) if text.startswith("INSERT INTO log")]
    assert len(inserts) == 2  # the block's reservations, then the row's mark
    assert "PRAGMA synchronous=FULL" in statements[: inserts[0]]
    assert "PRAGMA synchronous=FULL" not in statements[inserts[0] + 1 : inserts[1]]
    assert logged_states(path) == [RESERVED, RESERVED, RESERVED, SENDING]
    # Rows 1 and 2 were reserved, never sent: on this boot they have no entry.
    journal = Journal(path, endpoint="http://sim/v1", source="in.csv")
    assert set(journal.lookup(["k0", "k1", "k2"])) == {"k0"}
    journal.close()


@pytest.mark.parametrize(("machine_boot", "reserves"), [("this-boot", True), (None, False)])
def test_rows_are_reserved_only_where_the_boot_can_be_told_apart(
    make_simulator: Callable[..., RunningSimulator],
    tmp_path: Path,
    boot: SetBoot,
    machine_boot: str | None,
    reserves: bool,
) -> None:
    boot(machine_boot)
    sim = make_simulator(run_seconds=0)
    source = write_prompts(tmp_path / "p.csv", 20)
    settings = settings_for(sim.base_url, endpoint="responses", concurrency=4)
    report = run_file(source, tmp_path / "out.csv", settings)
    assert report.summary.exit_code == 0
    states = logged_states(tmp_path / "p.batchrun.sqlite")
    assert (RESERVED in states) is reserves
    assert states.count(SENDING) == 20  # each row marked before it was sent, either way
    assert sim.stats()["responses_created"] == 20


def test_after_a_reboot_the_rows_a_killed_job_reserved_may_exist_and_none_is_sent_twice(
    make_simulator: Callable[..., RunningSimulator], tmp_path: Path, boot: SetBoot
) -> None:
    sim = make_simulator(run_seconds=0, latency_ms=20)
    source = write_prompts(tmp_path / "p.csv", 300)
    args = command(
        source, tmp_path / "out.csv", sim.base_url, "--endpoint", "responses", "--concurrency", "4"
    )
    created = killed_once(sim, args, "responses_created", 40)
    assert 40 <= created < 300

    boot("a-later-boot")  # as after a power cut: unsynced marks may be gone
    settings = settings_for(sim.base_url, endpoint="responses", concurrency=4)
    report = run_file(source, tmp_path / "out.csv", settings)
    out = read_rows(tmp_path / "out.csv")
    maybe = [row for row in out if "may have been created" in row["error"]]
    # Every row the killed job reserved and did not finish may exist (its mark was not
    # synced): more than the requests in flight, and never sent again.
    assert len(maybe) > 4
    assert all(row["outcome"] == "ok" for row in out if row not in maybe)
    stats = sim.stats()
    assert stats["duplicate_responses"] == 0
    assert stats["responses_created"] == created + report.summary.sent
    # What this run did adds up to the rows (before, the rows left "may have been
    # created" were in none of its parts).
    summary = report.summary
    assert summary.unsure_before == len(maybe)
    done = summary.sent + summary.from_journal + summary.left + summary.reconciled_now
    assert done + summary.unsure_before == 300
    assert f"{len(maybe)} maybe sent by an earlier run (not found)" in summary.line()
    # Their error says what happened: the killed job, not the server (before: "no answer").
    assert all(
        row["error"].startswith("an earlier run stopped while this row's request may have")
        for row in maybe
    ), maybe[0]["error"]


def test_a_row_a_killed_job_may_have_sent_is_never_reserved_again(
    make_simulator: Callable[..., RunningSimulator], tmp_path: Path
) -> None:
    # Every answer is held back after its response is made: a job is killed while its one
    # worker waits for one.
    sim = make_simulator(run_seconds=0, hang_rate=1.0, hang_seconds=2)
    source = tmp_path / "p.csv"
    args = command(
        source, tmp_path / "out.csv", sim.base_url, "--endpoint", "responses", "--concurrency", "1"
    )

    def killed_while_in_flight(prompts: list[str], created: int) -> None:
        with source.open("w", newline="", encoding="utf-8") as out:
            csv.writer(out).writerows([["model", "input"], *(["gpt-4o", p] for p in prompts)])
        assert killed_once(sim, args, "responses_created", created) == created

    killed_while_in_flight(["p1", "p2", "p3"], created=1)  # p1 may have been sent
    # A row added first: the block reserved for it takes the next rows due. p1 must keep
    # its entry: a reservation over it would read as "never sent" on this boot.
    killed_while_in_flight(["p0", "p1", "p2", "p3"], created=2)
    settings = settings_for(sim.base_url, endpoint="responses", concurrency=2)
    run_file(source, tmp_path / "out.csv", settings)
    out = {row["input"]: row for row in read_rows(tmp_path / "out.csv")}
    assert "may have been created" in out["p0"]["error"]
    assert "may have been created" in out["p1"]["error"]  # before: sent a second time
    assert (out["p2"]["outcome"], out["p3"]["outcome"]) == ("ok", "ok")
    assert sim.stats()["duplicate_responses"] == 0
    assert sim.stats()["responses_created"] == 4


def test_only_rows_without_an_entry_may_be_reserved() -> None:
    from batchrun.sending.journal import Entry
    from batchrun.sending.plan import plan_job

    rows = [RowResult(n, key=f"k{n}", body={"model": "m"}) for n in range(3)]
    entries = {
        "k1": Entry(SENDING, {"next": "send", "attempts": 1}),
        "k2": Entry("failed", {"next": "retry", "attempts": 1, "outcome": "failed"}),
    }
    plan = plan_job(rows, entries, retry_failed=True, wait=False, can_look=lambda row: False)
    assert plan.to_create == {0, 1, 2}
    assert plan.no_entry == {0}
