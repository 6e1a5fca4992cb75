"""Requests say exactly what the row says: rules beyond the schema, and the columns that
name both a body field and a shortcut."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

from conftest import send
from job_support import read_rows, settings_for

from batchrun.jobs import run_file
from batchrun.simulator import RunningSimulator

Make = Callable[..., RunningSimulator]


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def chat_posts(sim: RunningSimulator) -> int:
    return sum(sim.stats()["requests"].get("POST /v1/chat/completions", {}).values())


def test_a_chat_row_with_a_negative_token_maximum_is_invalid_and_never_sent(
    make_simulator: Make, tmp_path: Path
) -> None:
    sim = make_simulator(run_seconds=0)
    source = write_csv(
        tmp_path / "chat.csv",
        ["model", "user", "max_completion_tokens", "max_tokens"],
        [["gpt-4o", "Hi", "-5", ""], ["gpt-4o", "Hi", "", "0"], ["gpt-4o", "Hi", "5", ""]],
    )
    report = run_file(source, tmp_path / "out.csv", settings_for(sim.base_url, endpoint="chat"))
    rows = read_rows(tmp_path / "out.csv")
    assert [row["outcome"] for row in rows] == ["invalid", "invalid", "ok"]
    assert rows[0]["error"] == "max_completion_tokens: -5 is less than the minimum of 1"
    assert rows[1]["error"] == "max_tokens: 0 is less than the minimum of 1"
    assert chat_posts(sim) == 1
    assert report.summary.exit_code == 1
    # The simulator refuses such a body as the service does.
    answer = send(
        sim.base_url,
        "POST",
        "/chat/completions",
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": -1},
    )
    assert answer.status == 400
    assert answer.json["error"]["param"] == "max_tokens"
