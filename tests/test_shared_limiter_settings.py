"""--limiter-url and --limiter-key as settings: sources, checks, and the password kept out."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchrun.cli import cli
from batchrun.config import Settings, environment_settings
from batchrun.config_file import read_config_file, settings_toml
from batchrun.errors import UsageError
from batchrun.sending.urls import mask_url

URL = "redis://127.0.0.1:6379/0"
SECRET_URL = "redis://ops:hunter2secret@redis.internal:6380/2"


def test_the_environment_gives_the_limiter_url_and_options_win() -> None:
    env = {"BATCHRUN_LIMITER_URL": f" {URL} ", "OPENAI_API_KEY": "sk-x"}
    assert environment_settings({}, env)["limiter_url"] == URL
    chosen = "redis://10.0.0.5:6379/1"
    assert environment_settings({"limiter_url": chosen}, env)["limiter_url"] == chosen
    assert environment_settings({}, {"OPENAI_API_KEY": "sk-x"})["limiter_url"] is None


def test_the_config_file_takes_limiter_url_and_limiter_key(tmp_path: Path) -> None:
    path = tmp_path / "job.toml"
    path.write_text(f'limiter-url = "{URL}"\nlimiter_key = "team-a"\nrpm = 600\n')
    assert read_config_file(path) == {"limiter_url": URL, "limiter_key": "team-a", "rpm": 600}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"limiter_url": URL}, "set --rpm or --tpm too", id="no-rpm"),
        pytest.param(
            {"limiter_url": "http://:pw@host/0", "rpm": 60}, "use redis://", id="not-redis"
        ),
        pytest.param({"limiter_key": " ", "rpm": 60}, "must not be empty", id="empty-key"),
    ],
)
def test_unusable_limiter_settings_are_usage_errors(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        Settings(**options)  # type: ignore[arg-type]
    assert ":pw@" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        pytest.param(URL, URL, id="no-password"),
        pytest.param(SECRET_URL, "redis://ops:***@redis.internal:6380/2", id="user-password"),
        pytest.param("redis://:pw@h:1/0", "redis://:***@h:1/0", id="password-only"),
        pytest.param("unix:///run/redis.sock?db=1", "unix:///run/redis.sock?db=1", id="socket"),
    ],
)
def test_mask_url_hides_only_the_password(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_the_password_never_reaches_the_settings_file_summary_or_repr() -> None:
    settings = Settings(rpm=600, limiter_url=SECRET_URL, limiter_key="team-a")
    text = settings_toml(settings)
    assert "hunter2secret" not in text and "limiter_url =" not in text
    assert "BATCHRUN_LIMITER_URL" in text
    assert tomllib.loads(text)["limiter_key"] == "team-a"
    assert settings.public()["limiter_url"] == "redis://ops:***@redis.internal:6380/2"
    assert "hunter2secret" not in repr(settings)


def test_a_url_without_password_is_passed_through_for_the_next_job() -> None:
    text = settings_toml(Settings(rpm=600, limiter_url=URL))
    assert tomllib.loads(text)["limiter_url"] == URL


def test_run_help_lists_the_shared_limit_options() -> None:
    result = CliRunner().invoke(cli, ["run", "--help"])
    assert result.exit_code == 0
    assert "--limiter-url" in result.output and "--limiter-key" in result.output
    assert "BATCHRUN_LIMITER_URL" in result.output
