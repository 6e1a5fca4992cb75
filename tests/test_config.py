"""--config and the settings passthrough file; the library entry points."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pytest

import batchrun
from batchrun.config import Settings
from batchrun.config_file import read_config_file, settings_toml
from batchrun.errors import UsageError

SHEET = "thread_id,Bot,temperature\nthread_1,,0.5\nthread_2,asst_cell,\n"


def validate(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    return subprocess.run(
        [sys.executable, "-m", "batchrun", "validate", "in.csv", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_config_file_fills_options_and_flags_win(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text(SHEET)
    (tmp_path / "job.toml").write_text(
        'api-version = "v1"\nprefix = "br_"\n\n[columns]\nassistant_id = "Bot"\n\n'
        '[set]\nassistant_id = "asst_default"\n'
    )
    # v1 from the file makes "temperature" a v2-only column: row 1 is invalid.
    result = validate(tmp_path, "--config", "job.toml", "-o", "v1.csv")
    assert result.returncode == 1, result.stderr
    rows = pd.read_csv(tmp_path / "v1.csv", dtype=str, keep_default_na=False)
    assert list(rows.columns)[-2:] == ["br_request", "br_error"]
    assert "Assistants v1" in rows["br_error"][0]
    assert '"assistant_id":"asst_cell"' in rows["br_request"][1]
    # The flag beats the file.
    result = validate(tmp_path, "--config", "job.toml", "--api-version", "v2", "-o", "v2.csv")
    assert result.returncode == 0, result.stderr
    rows = pd.read_csv(tmp_path / "v2.csv", dtype=str, keep_default_na=False)
    assert '"assistant_id":"asst_default"' in rows["br_request"][0]


def test_settings_file_beside_the_output_feeds_the_next_job(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text(SHEET)
    first = validate(
        tmp_path,
        "--column",
        "assistant_id=Bot",
        "--set",
        "model=gpt-4o",
        "--prefix",
        "x_",
        "-o",
        "first.csv",
    )
    assert first.returncode == 1, first.stderr  # row 1 has no assistant_id
    passthrough = tmp_path / "first.settings.toml"
    saved = tomllib.loads(passthrough.read_text())
    assert saved["columns"] == {"assistant_id": "Bot"} and saved["set"] == {"model": "gpt-4o"}
    second = validate(tmp_path, "--config", "first.settings.toml", "-o", "second.csv")
    assert second.returncode == 1, second.stderr
    assert (tmp_path / "first.csv").read_text() == (tmp_path / "second.csv").read_text()


def test_settings_file_never_holds_the_key() -> None:
    settings = Settings(api_key="sk-secret-value-123456", organization="org_1")
    text = settings_toml(settings)
    assert "sk-secret" not in text and "api_key =" not in text
    assert "sk-secret" not in repr(settings)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("concurrency = true\n", "concurrency must be int", id="bool-for-int"),
        pytest.param("nonsense = 1\n", "unknown setting", id="unknown-key"),
        pytest.param("columns = 3\n", "must be a table", id="columns-not-table"),
        pytest.param("limit = \n", "--config", id="not-toml"),
    ],
)
def test_bad_config_files_are_usage_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message):
        read_config_file(path)


def test_library_validate_frame_returns_request_and_error() -> None:
    frame = pd.DataFrame(
        {
            "thread_id": ["thread_1", "bad/id"],
            "assistant_id": ["asst_1", "a"],
            "temperature": [0.5, None],
        }
    )
    out = batchrun.validate_frame(frame)
    assert list(out.columns) == [
        *("thread_id", "assistant_id", "temperature"),
        *("outcome", "request", "error"),
    ]
    assert out["outcome"].tolist() == ["ok", "invalid"]
    assert '"temperature":0.5' in out["request"][0] and out["error"][0] == ""
    assert out["request"][1] == "" and out["error"][1].startswith("thread_id:")


def test_library_results_follow_the_callers_index() -> None:
    frame = pd.DataFrame(
        {"thread_id": ["thread_1", "bad/id"], "assistant_id": ["a", "b"]}, index=["x", "y"]
    )
    checked = batchrun.validate_frame(frame)
    assert checked.index.tolist() == ["x", "y"]
    assert checked.loc["x", "error"] == "" and checked.loc["y", "error"].startswith("thread_id:")
    sent = batchrun.run_frame(frame, simulate=True)
    assert sent.loc["x", "status"] == 200
    assert sent["status"].isna().tolist() == [False, True]  # nullable Int64: <NA> not sent
    assert sent.loc["y", "error"].startswith("thread_id:")


def test_library_run_frame_sends_and_never_prints(capsys: pytest.CaptureFixture[str]) -> None:
    frame = pd.DataFrame({"thread_id": ["thread_1", "thread_2"], "assistant_id": ["a", "b"]})
    out = batchrun.run_frame(frame, simulate=True, wait=True)
    assert out["status"].tolist() == [200, 200]
    assert out["run_status"].tolist() == ["completed", "completed"]
    assert capsys.readouterr() == ("", "")


def test_a_base_url_differing_only_in_the_case_of_scheme_or_host_is_the_same_job() -> None:
    def destination(base_url: str) -> str:
        return Settings(base_url=base_url, api_key="sk-test-0123456789").destination

    assert destination("HTTPS://API.Example.com/v1/") == destination("https://api.example.com/v1")
    assert destination("https://api.example.com/V1") != destination("https://api.example.com/v1")
