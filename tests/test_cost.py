"""What rows cost: the cost_usd column and the summary's total, direct and through the
Batch API, and validate's tokens and most cost, priced by genai-prices."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from genai_prices import Usage, calc_price
from job_support import TEST_KEY, read_rows, settings_for

from batchrun.batch import job
from batchrun.endpoints.cost import Estimate, Prices, dollars
from batchrun.jobs import run_file
from batchrun.simulator import RunningSimulator

Make = Callable[..., RunningSimulator]


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(job, "POLL_FIRST", 0.05)


def library_price(model: str, tokens_in: int, tokens_out: int, *, batch: bool = False) -> float:
    found = calc_price(
        Usage(input_tokens=tokens_in, output_tokens=tokens_out),
        model,
        provider_id="openai",
        price_context={"processing": "batch"} if batch else None,
    )
    return float(found.total_price)


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini"])
@pytest.mark.parametrize("usage", [(17, 77), (1, 0), (123_456, 7_890)])
@pytest.mark.parametrize("batch", [False, True], ids=["direct", "batch"])
def test_a_cost_is_the_price_librarys_own(model: str, usage: tuple[int, int], batch: bool) -> None:
    cost = Prices(batch=batch).cost(model, *usage)
    assert cost == pytest.approx(library_price(model, *usage, batch=batch), rel=1e-9)


def test_the_batch_price_is_half_the_direct_one() -> None:
    direct = Prices().cost("gpt-4o-mini", 1_000, 1_000)
    assert direct is not None
    assert Prices(batch=True).cost("gpt-4o-mini", 1_000, 1_000) == pytest.approx(direct / 2)


@pytest.mark.parametrize("model", ["someones-own-model", "", None, 42])
def test_a_model_with_no_known_price_has_no_cost(model: object) -> None:
    assert Prices().cost(model, 100, 100) is None


def test_a_row_cost_reads_the_usage_of_chat_and_responses() -> None:
    prices, body = Prices(), {"model": "gpt-4o-mini"}
    chat = prices.row_cost(body, {"prompt_tokens": 10, "completion_tokens": 5})
    responses = prices.row_cost(body, {"input_tokens": 10, "output_tokens": 5})
    assert chat == responses == pytest.approx(library_price("gpt-4o-mini", 10, 5))
    assert prices.row_cost(body, {}) is None
    assert prices.row_cost(None, {"input_tokens": 10, "output_tokens": 5}) is None


@pytest.mark.parametrize(
    ("amount", "text"),
    [(0.0, "$0"), (0.00004875, "$0.00004875"), (0.5, "$0.50"), (1234.567, "$1,234.57")],
)
def test_dollars_read_as_a_person_writes_them(amount: float, text: str) -> None:
    assert dollars(amount) == text


def test_the_estimate_is_prompt_plus_maximum_output_at_the_price() -> None:
    estimate = Estimate()
    estimate.add("gpt-4o-mini", 100, 1_000)
    estimate.add("gpt-4o-mini", 100, 1_000)
    estimate.add("someones-own-model", 50, 0)
    most = library_price("gpt-4o-mini", 200, 2_000)
    assert estimate.text() == (
        f"250 prompt tokens + at most 2,000 output tokens; at most {dollars(most)} "
        "(1 row of models with no known price not counted) "
        "(1 row names no maximum output: its output is not counted)"
    )


def test_every_row_naming_no_maximum_is_counted_beside_rows_of_its_model_that_do() -> None:
    # Before, a model's rows were said to name no maximum only when none of them did:
    # three rows, one with a maximum, read as a bound with no note.
    estimate = Estimate()
    estimate.add("gpt-4o-mini", 1, 16)
    estimate.add("gpt-4o-mini", 1, 0)
    other = Estimate()
    other.add("gpt-4o-mini", 1, 0)
    estimate.merge(other.by_model)
    most = library_price("gpt-4o-mini", 3, 16)
    assert estimate.text() == (
        f"3 prompt tokens + at most 16 output tokens; at most {dollars(most)} "
        "(2 rows name no maximum output: their output is not counted)"
    )


@pytest.mark.parametrize("batch", [False, True], ids=["direct", "batch"])
@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-4.1", "gpt-5"])
def test_cached_input_tokens_are_priced_at_the_cached_input_price(model: str, batch: bool) -> None:
    # Before: every input token at the full input price (gpt-4.1 with 90% cached: 3x).
    from batchrun.endpoints import usage_counts

    usage = usage_counts(
        {
            "input_tokens": 1_000_000,
            "input_tokens_details": {"cached_tokens": 900_000},
            "output_tokens": 1_000,
            "total_tokens": 1_001_000,
        }
    )
    assert usage is not None and usage["cached_tokens"] == 900_000
    context = {"processing": "batch"} if batch else None
    billed = calc_price(
        Usage(input_tokens=1_000_000, cache_read_tokens=900_000, output_tokens=1_000),
        model,
        provider_id="openai",
        price_context=context,
    )
    cost = Prices(batch=batch).row_cost({"model": model}, usage)
    assert cost == pytest.approx(float(billed.total_price))
    assert cost <= Prices(batch=batch).cost(model, 1_000_000, 1_000)  # never dearer


def test_one_token_and_one_row_are_worded_in_the_singular() -> None:
    estimate = Estimate()
    estimate.add("someones-own-model", 1, 1)
    assert estimate.text() == (
        "1 prompt token + at most 1 output token; no known price for the model(s)"
    )


# -- whole jobs ---------------------------------------------------------------------------------


def chat_sheet(path: Path, models: list[str]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["model", "user", "max_completion_tokens"])
        for n, model in enumerate(models):
            writer.writerow([model, f"Question {n}", "100"])
    return path


@pytest.mark.parametrize("batch", [False, True], ids=["direct", "batch"])
def test_cost_usd_holds_each_rows_cost_and_the_summary_the_total(
    make_simulator: Make, tmp_path: Path, batch: bool
) -> None:
    sim = make_simulator(run_seconds=0, batch_seconds=0.3)
    source = chat_sheet(tmp_path / "chat.csv", ["gpt-4o-mini", "gpt-4o", "someones-own-model"])
    out = tmp_path / "out.csv"
    report = run_file(source, out, settings_for(sim.base_url, endpoint="chat", batch=batch))
    rows = read_rows(out)
    assert [row["outcome"] for row in rows] == ["ok"] * 3
    costs = []
    for row in rows[:2]:
        tokens = int(row["usage_prompt_tokens"]), int(row["usage_completion_tokens"])
        expected = library_price(row["model"], *tokens, batch=batch)
        assert Decimal(row["cost_usd"]) == pytest.approx(Decimal(repr(expected)))
        assert "e" not in row["cost_usd"]  # plain decimals, no exponent
        costs.append(expected)
    assert rows[2]["cost_usd"] == ""  # no known price: empty, never a guess
    assert report.summary.cost_usd == pytest.approx(sum(costs))
    # Before: the total left the third row out without saying so.
    assert (
        f"; cost {dollars(sum(costs))} (1 row of models with no known price not counted)"
        in report.summary.line()
    )


def test_validate_prints_the_tokens_and_the_most_the_valid_rows_can_cost(tmp_path: Path) -> None:
    source = chat_sheet(tmp_path / "chat.csv", ["gpt-4o-mini"] * 4)
    with source.open("a", encoding="utf-8") as stream:
        stream.write(",no model,100\n")  # invalid: not counted
    result = subprocess.run(
        [sys.executable, "-m", "batchrun", "validate", str(source), "--endpoint", "chat"],
        capture_output=True,
        text=True,
        env={**os.environ, "OPENAI_API_KEY": TEST_KEY},
        check=False,
    )
    assert result.returncode == 1, result.stderr  # the invalid row
    prompt = 4 * 3  # "Question N": 10 characters, 3 tokens each (characters/4, rounded up)
    most = library_price("gpt-4o-mini", prompt, 400)
    *_, tokens, summary = result.stderr.splitlines()  # the summary line last
    assert tokens == (
        f"tokens: {prompt} prompt tokens + at most 400 output tokens; at most {dollars(most)}"
    )
    assert summary.startswith("5 rows: 4 ok, 1 invalid"), summary


def test_the_summary_sheet_holds_the_cost_the_limits_and_the_estimate() -> None:
    from batchrun.report import Summary

    summary = Summary(
        rows=2,
        outcomes={"ok": 2},
        failed_statuses={},
        run_statuses={},
        reconciled=0,
        seconds=1.0,
        limits="600,000 tokens/min (--tpm)",
        cost_usd=0.25,
        estimate="10 prompt tokens + at most 20 output tokens; at most $0.00001",
    )
    job_rows = dict(summary.sections({})["Job"])
    assert job_rows["limits in force"] == "600,000 tokens/min (--tpm)"
    assert job_rows["cost (USD)"] == 0.25
    assert job_rows["tokens and most cost"].startswith("10 prompt tokens")
    assert summary.line().endswith("in 1.0 s; cost $0.25")


def test_each_models_rates_are_learnt_once_a_process(monkeypatch: pytest.MonkeyPatch) -> None:
    from batchrun.endpoints import cost
    from batchrun.output import total_cost
    from batchrun.report import RowResult

    asked: list[str] = []
    learn = cost.Prices._learn

    def counted(self: cost.Prices, model: str) -> tuple[float, float] | str | None:
        asked.append(model)
        return learn(self, model)

    monkeypatch.setattr(cost.Prices, "_learn", counted)
    settings = settings_for("http://127.0.0.1:9/v1", endpoint="chat")
    usage = {"prompt_tokens": 10, "completion_tokens": 5}
    for _ in range(3):  # three chunks of rows
        rows = [RowResult(n, body={"model": "gpt-4o-mini"}, usage=usage) for n in range(4)]
        cost, unpriced = total_cost(rows, settings)
        assert (cost, unpriced) == (pytest.approx(4 * library_price("gpt-4o-mini", 10, 5)), 0)
    assert len(asked) <= 1  # none when an earlier test of this process learnt them


def test_an_xlsx_cost_cell_shows_a_plain_decimal_never_an_exponent(
    make_simulator: Make, tmp_path: Path
) -> None:
    import openpyxl

    sim = make_simulator(run_seconds=0)
    source = chat_sheet(tmp_path / "chat.csv", ["gpt-4o-mini"])
    out = tmp_path / "out.xlsx"
    run_file(source, out, settings_for(sim.base_url, endpoint="chat"))
    book = openpyxl.load_workbook(out)
    sheet = book.worksheets[0]
    header = [cell.value for cell in sheet[1]]
    cost = sheet.cell(row=2, column=header.index("cost_usd") + 1)
    assert isinstance(cost.value, float) and 0 < cost.value < 0.001
    # General would show 3.27E-05; this shows 0.0000327.
    assert cost.number_format == "#,##0.00##########"
    # The summary sheet's total too (before: General).
    (total,) = (row[1] for row in book["summary"].iter_rows() if row[0].value == "cost (USD)")
    assert (total.value, total.number_format) == (cost.value, "#,##0.00##########")


def test_a_run_naming_no_model_is_said_to_be_left_out_of_the_total_as_validate_says(
    make_simulator: Make, tmp_path: Path
) -> None:
    # Before: the run's total left it out without a word, while validate counted it.
    sim = make_simulator(run_seconds=0.05)
    source = tmp_path / "runs.csv"
    source.write_text(
        "thread_id,assistant_id,model\nt_1,asst_1,gpt-4o-mini\nt_2,asst_1,\n", encoding="utf-8"
    )
    report = run_file(source, tmp_path / "out.csv", settings_for(sim.base_url, wait=True))
    assert report.summary.outcomes == {"ok": 2}
    assert "(1 row of models with no known price not counted)" in report.summary.line()
