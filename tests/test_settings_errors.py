"""Errors name what the user set: argument names in the library, keys in a config file,
variables in the environment; never a flag the user did not type."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

import batchrun
from batchrun.config_file import read_config_file
from batchrun.errors import InputError, UsageError


def frame() -> pd.DataFrame:
    return pd.DataFrame({"thread_id": ["thread_1"], "assistant_id": ["asst_1"]})


def test_run_frame_takes_set_and_column_as_their_flags_are_named() -> None:
    out = batchrun.validate_frame(frame(), set={"model": "gpt-4o"}, run_tag=False)
    assert out["request"].tolist() == ['{"model":"gpt-4o","assistant_id":"asst_1"}']
    renamed = frame().rename(columns={"assistant_id": "Bot"})
    out = batchrun.validate_frame(renamed, column={"assistant_id": "Bot"}, run_tag=False)
    assert out["outcome"].tolist() == ["ok"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"foo": 1}, "unknown argument foo=", id="unknown"),
        pytest.param({"prefx": "r_"}, "unknown argument prefx=; did you mean prefix=?", id="typo"),
        pytest.param({"concurrency": 0}, "concurrency= must be at least 1", id="concurrency"),
        pytest.param(
            {"limiter_url": "redis://localhost/0"},
            "limiter_url= shares the rpm=/tpm= budgets between jobs: set rpm= or tpm= too",
            id="two-arguments",
        ),
        pytest.param(
            {"set": {"bogus": "1"}},
            "set_values['bogus']: 'bogus' is not a field of the request body",
            id="set-key",
        ),
        pytest.param(
            {"no_wait": True}, "no_wait=True applies to batch=True jobs only", id="booleans"
        ),
        pytest.param({"prefix": 5}, "prefix= must be a str, not int", id="type-str"),
        pytest.param({"concurrency": "8"}, "concurrency= must be an int, not str", id="type-int"),
        pytest.param({"timeout": "3"}, "timeout= must be a float, not str", id="type-float"),
        pytest.param({"wait": 1}, "wait= must be True or False, not int", id="type-bool"),
        pytest.param(
            {"columns": ["thread_id"]}, "columns= must be a mapping, not list", id="type-map"
        ),
    ],
)
def test_library_errors_speak_in_argument_names(options: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError) as caught:
        batchrun.validate_frame(frame(), **options)
    assert str(caught.value) == message
    assert "--" not in str(caught.value)


def test_a_missing_key_and_a_missing_column_name_arguments_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(UsageError, match=r"\(or pass simulate=True to try"):
        batchrun.run_frame(frame())
    with pytest.raises(InputError) as caught:
        batchrun.validate_frame(frame().rename(columns={"thread_id": "Thread"}))
    assert str(caught.value).endswith("Did you mean 'Thread'? Pass columns={'thread_id': 'Thread'}")
    assert "--" not in str(caught.value)


def test_dir_of_batchrun_lists_its_public_functions() -> None:
    assert {"run_frame", "run_frame_async", "validate_frame"} <= set(dir(batchrun))


# --- the command line: config keys and environment variables ----------------------------------


def batchrun_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in REMOVED}
    return subprocess.run(
        [sys.executable, "-m", "batchrun", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**clean, **(env or {})},
        check=False,
    )


REMOVED = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "BATCHRUN_LIMITER_URL")


def sheet(folder: Path) -> Path:
    path = folder / "in.csv"
    path.write_text("thread_id,assistant_id\nthread_1,asst_1\n", encoding="utf-8")
    return path


def test_a_bad_sheet_in_the_config_file_names_the_config_key(tmp_path: Path) -> None:
    sheet(tmp_path)
    (tmp_path / "job.toml").write_text("sheet = 3\n", encoding="utf-8")
    done = batchrun_cli("validate", "in.csv", "--config", "job.toml", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("batchrun: job.toml: sheet applies to .xlsx/.xlsm input")
    assert "--sheet" not in done.stderr
    book = openpyxl.Workbook()
    assert book.active is not None
    book.active.title = "Jobs"
    book.active.append(["thread_id", "assistant_id"])
    book.save(tmp_path / "in.xlsx")
    done = batchrun_cli("validate", "in.xlsx", "--config", "job.toml", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("batchrun: in.xlsx: has no sheet 3 (job.toml: sheet); its")
    done = batchrun_cli("validate", "in.xlsx", "--sheet", "4", cwd=tmp_path)
    assert "has no sheet '4' (--sheet); its sheets are 0: 'Jobs'" in done.stderr


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        pytest.param(
            "OPENAI_BASE_URL",
            "ftp://example.com/v1",
            "batchrun: $OPENAI_BASE_URL 'ftp://example.com/v1' is not an http(s) URL",
            id="base-url",
        ),
        pytest.param(
            "BATCHRUN_LIMITER_URL",
            "http://localhost:6379",
            "batchrun: $BATCHRUN_LIMITER_URL http://localhost:6379: use redis://HOST:PORT/DB",
            id="limiter-url",
        ),
    ],
)
def test_a_bad_environment_variable_is_named_never_a_flag(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    sheet(tmp_path)
    done = batchrun_cli(
        "run",
        "in.csv",
        "--rpm",
        "60",
        cwd=tmp_path,
        env={variable: value, "OPENAI_API_KEY": "sk-test-0123456789abcdef"},
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(message), done.stderr
    assert "--base-url" not in done.stderr and "--limiter-url" not in done.stderr


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        pytest.param("no-run-tag = true\nrun_tag = true\n", "no-run-tag and run_tag", id="tag"),
        pytest.param(
            '[set]\nmodel = "a"\n[set_values]\nmodel = "b"\n', "set and set_values", id="set"
        ),
        pytest.param(
            "base-url = 'http://a'\nbase_url = 'http://b'\n", "base-url and base_url", id="url"
        ),
    ],
)
def test_conflicting_config_keys_are_an_error_not_last_one_wins(
    tmp_path: Path, text: str, keys: str
) -> None:
    path = tmp_path / "job.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UsageError) as caught:
        read_config_file(path)
    assert str(caught.value) == f"{path}: {keys} both set one option; keep one"


def test_a_job_stopped_at_a_base_url_from_the_environment_names_the_variable(
    tmp_path: Path,
) -> None:
    sheet(tmp_path)
    done = batchrun_cli(
        "run",
        "in.csv",
        "--no-progress",
        cwd=tmp_path,
        env={"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_API_KEY": "sk-test-01234567"},
    )
    assert done.returncode == 3, done.stderr
    assert "(check $OPENAI_BASE_URL and that the server runs)" in done.stderr, done.stderr
