"""Pure decisions of the sending core, by tables: the reconciliation judge and the watchers
that stop a job (a row's states and the plan: test_states.py)."""

from __future__ import annotations

from typing import Any

import pytest

from batchrun.sending.control import ConnectWatch, RefusalWatch, RouteWatch, missing_route
from batchrun.sending.judge import Verdict, judge

SENT_AT = 1_000.0


def run(
    run_id: str, status: str = "completed", tag: str | None = None, created: float = SENT_AT
) -> dict[str, Any]:
    found: dict[str, Any] = {"id": run_id, "status": status, "created_at": created}
    found["metadata"] = {"batchrun_key": tag} if tag else {}
    return found


def without_metadata(found: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in found.items() if key != "metadata"}


JUDGE_CASES = [
    pytest.param([], {}, Verdict.ABSENT, None, id="no-runs"),
    pytest.param([run("r1", tag="k.j")], {}, Verdict.ADOPT, "r1", id="own-tag"),
    pytest.param(
        [run("r2", "in_progress", tag="k.j"), run("r1", tag="k.j")],
        {"superseded": ["r2"]},
        Verdict.ADOPT,
        "r1",
        id="a-superseded-run-is-never-adopted-again",
    ),
    pytest.param([run("r1", tag="k.old")], {}, Verdict.ABSENT, None, id="another-jobs-tag"),
    pytest.param(
        [run("r1", "queued", tag="k.old")], {}, Verdict.BUSY, "r1", id="busy-with-another-run"
    ),
    pytest.param(
        [run("r1", "requires_action", tag="x")],
        {},
        Verdict.BLOCKED,
        "r1",
        id="requires-action-blocks",
    ),
    pytest.param(
        [without_metadata(run("r1"))],
        {},
        Verdict.UNSURE,
        "r1",
        id="no-metadata-and-made-since-sent",
    ),
    pytest.param(
        [without_metadata(run("r1", created=SENT_AT - 3600))],
        {},
        Verdict.ABSENT,
        None,
        id="no-metadata-but-made-long-before",
    ),
    pytest.param(
        [without_metadata(run("r1"))],
        {"unsure": False},
        Verdict.ABSENT,
        None,
        id="not-maybe-sent-never-unsure",
    ),
    pytest.param(
        [run("r1")], {"tags_seen": True}, Verdict.ABSENT, None, id="tags-seen-foreign-run"
    ),
    # Once the job has seen its tags kept, a run without the row's tag is someone else's,
    # however its metadata shows: null, absent or {} (issue 23).
    pytest.param(
        [without_metadata(run("r1"))],
        {"tags_seen": True},
        Verdict.ABSENT,
        None,
        id="tags-seen-a-run-without-metadata-is-another-clients",
    ),
    pytest.param(
        [{**run("r1"), "metadata": None}],
        {"tags_seen": True},
        Verdict.ABSENT,
        None,
        id="tags-seen-a-run-with-null-metadata-is-another-clients",
    ),
    pytest.param(
        [{**run("r1", "in_progress"), "metadata": None}],
        {"tags_seen": True},
        Verdict.BUSY,
        "r1",
        id="tags-seen-another-clients-active-run-is-waited-for",
    ),
    pytest.param(
        [{**run("r2"), "metadata": None}, run("r1", tag="k.old")],
        {},
        Verdict.ABSENT,
        None,
        id="a-listed-tag-shows-tags-are-kept",
    ),
    # Made before the row's first attempt, to the resolution the server shows.
    pytest.param(
        [without_metadata(run("r1", created=SENT_AT - 1))],
        {"sent_at": SENT_AT + 0.5, "clock_gap": 0.0},
        Verdict.ABSENT,
        None,
        id="whole-seconds-stamped-the-second-before-is-before",
    ),
    pytest.param(
        [without_metadata(run("r1", created=SENT_AT))],
        {"sent_at": SENT_AT + 0.5, "clock_gap": 0.0},
        Verdict.UNSURE,
        "r1",
        id="whole-seconds-stamped-the-same-second-may-be-its-own",
    ),
    pytest.param(
        [without_metadata(run("r1", created=SENT_AT + 0.2))],
        {"sent_at": SENT_AT + 0.5, "clock_gap": 0.0},
        Verdict.ABSENT,
        None,
        id="fractional-seconds-stamped-before-is-before",
    ),
    pytest.param(
        [without_metadata(run("r1", created=SENT_AT - 1))],
        {"sent_at": SENT_AT + 0.5, "clock_gap": 2.0},
        Verdict.UNSURE,
        "r1",
        id="a-server-clock-behind-ours-may-hide-its-own-run",
    ),
    pytest.param(
        [without_metadata(run("r1", created=SENT_AT - 59))],
        {},
        Verdict.UNSURE,
        "r1",
        id="unmeasured-clocks-may-differ-by-a-minute",
    ),
    pytest.param([run("r1")], {"tag": None}, Verdict.UNSURE, "r1", id="no-tag-maybe-sent"),
]


@pytest.mark.parametrize(("runs", "options", "verdict", "run_id"), JUDGE_CASES)
def test_the_judge(
    runs: list[dict[str, Any]], options: dict[str, Any], verdict: Verdict, run_id: str | None
) -> None:
    arguments: dict[str, Any] = {"tag": "k.j", "unsure": True, "sent_at": SENT_AT}
    judged = judge(runs, **{**arguments, **options})
    assert judged.verdict is verdict
    if run_id is not None:
        assert judged.run is not None and judged.run["id"] == run_id


ROUTE_CASES = [
    pytest.param(404, None, True, id="empty-or-html-404"),
    pytest.param(404, {"detail": "Not Found"}, True, id="fastapi-bare-404"),
    pytest.param(404, {"error": {"message": "Invalid URL (POST /v1/x)"}}, True, id="openai"),
    pytest.param(404, {"error": {"message": "Assistant not found"}}, False, id="about-the-row"),
    pytest.param(404, {"error": {"message": None}}, False, id="null-message"),
    pytest.param(404, {"detail": "Thread not found"}, False, id="fastapi-about-the-row"),
    pytest.param(405, {"detail": "Method Not Allowed"}, True, id="405"),
    pytest.param(501, None, True, id="501"),
    pytest.param(400, None, False, id="400"),
]


@pytest.mark.parametrize(("status", "data", "missing"), ROUTE_CASES)
def test_what_says_the_route_is_missing(status: int, data: Any, missing: bool) -> None:
    assert missing_route(status, data, "") is missing


def test_three_route_misses_in_a_row_stop_and_an_answer_between_resets() -> None:
    watch = RouteWatch()
    assert not watch.answered(404, None, "") and not watch.answered(404, None, "")
    assert not watch.answered(200, {"id": "r"}, "")
    assert not watch.answered(404, None, "") and not watch.answered(404, None, "")
    assert watch.answered(404, None, "")


def test_refused_connections_stop_sooner_before_the_server_ever_answered() -> None:
    unseen = ConnectWatch()
    assert [unseen.refused() for _ in range(3)] == [False, False, True]
    seen = ConnectWatch()
    seen.answered()
    assert [seen.refused() for _ in range(8)] == [False] * 7 + [True]


NO_DB = (400, {"message": "No connected db.", "type": "no_db_connection"}, "No connected db.")
OTHER = (400, {"message": "Bad value", "type": "invalid_request_error"}, "Bad value")
FIELD = (400, {"message": "Bad", "type": "invalid_request_error", "param": "temperature"}, "Bad")
ABOUT_ROW = (404, {"message": "Assistant not found", "type": "invalid_request_error"}, "x")

REFUSAL_CASES = [
    pytest.param([NO_DB, NO_DB, NO_DB], [False, False, True], id="same-400-thrice-stops"),
    pytest.param(
        [NO_DB, NO_DB, NO_DB, NO_DB], [False, False, True, True], id="and-every-one-after"
    ),
    pytest.param(["ok", NO_DB, NO_DB, NO_DB], [False] * 3, id="a-row-ok-first-never"),
    pytest.param([NO_DB, "ok", NO_DB, NO_DB], [False] * 3, id="a-row-ok-between-never"),
    pytest.param([NO_DB, OTHER, NO_DB, NO_DB], [False] * 4, id="different-refusals-never"),
    pytest.param([FIELD, FIELD, FIELD], [False] * 3, id="naming-a-field-is-the-rows"),
    pytest.param([ABOUT_ROW] * 3, [False] * 3, id="a-404-about-the-row-is-the-rows"),
]


@pytest.mark.parametrize(("answers", "stops"), REFUSAL_CASES)
def test_the_same_refusal_on_the_first_rows_with_nothing_ok_is_systemic(
    answers: list[Any], stops: list[bool]
) -> None:
    watch = RefusalWatch()
    said = []
    for answer in answers:
        if answer == "ok":
            watch.answered_ok()
        else:
            said.append(watch.refused(*answer))
    assert said == stops
