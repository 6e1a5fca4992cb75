"""Errors name what the user set: argument names in the library, keys in a config file,
variables in the environment; never a flag the user did not type."""

from __future__ import annotations

import pandas as pd
import pytest

import batchrun
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
            "limiter_url= shares the rpm= budget between jobs: set rpm= too",
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
