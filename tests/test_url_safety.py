"""Nothing in a sheet can steer a request, and the key only travels where it is safe.

- A thread id goes into the URL path: any id that is not letters, digits, ``_`` and ``-``
  is a row error and never sent, while the valid rows of the same sheet are.
- Plain ``http://`` is refused to any host but this machine unless
  ``--allow-insecure-http``; the refusal is exit 2 before anything is attempted.
- TLS certificates are verified: a self-signed server stops the job (exit 3).
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
import yarl
from aiohttp import web
from loopback_server import RunStore, app_with, serve_app

from batchrun.config import Settings, environment_settings
from batchrun.endpoints.body import THREAD_ID_PATTERN
from batchrun.errors import ExitCode, UsageError
from batchrun.jobs import run_file, validate_file
from batchrun.sending.client import ApiClient
from batchrun.simulator import RunningSimulator

KEY = "sk-test-url-safety-0123456789"
MakeSimulator = Callable[..., RunningSimulator]
CREATE = "POST /v1/threads/{thread_id}/runs"

BAD_THREAD_IDS = [
    pytest.param("thread/../../assistants", id="slash-and-dot-dot"),
    pytest.param("a/b", id="slash"),
    pytest.param("..", id="dot-dot"),
    pytest.param(".", id="dot"),
    pytest.param("thread_1?limit=100", id="query"),
    pytest.param("thread_1#frag", id="fragment"),
    pytest.param("thread%2F..%2Fx", id="percent-encoded-slash"),
    pytest.param("%00", id="percent-encoded-nul"),
    pytest.param("thread 1", id="inner-space"),
    pytest.param("thread\t1", id="tab"),
    pytest.param("thread_1\nX-Injected: 1", id="newline-header-injection"),
    pytest.param("thread_1\r", id="carriage-return"),
    pytest.param("thread\x1b[31m", id="escape-control-character"),
    pytest.param("thread\x7f", id="delete-character"),
    pytest.param("thréad", id="non-ascii-letter"),
    pytest.param("thread_٣", id="non-ascii-digit"),
    pytest.param("ｔhread", id="fullwidth-letter"),
    pytest.param("thread\u200b1", id="zero-width-space"),
    pytest.param("thread\\1", id="backslash"),
    pytest.param("thread;1", id="semicolon"),
    pytest.param("thread:1", id="colon"),
    pytest.param("thread@host", id="at-sign"),
    pytest.param("thread+1", id="plus"),
    pytest.param("thread&x=1", id="ampersand"),
    pytest.param("=HYPERLINK(1)", id="formula"),
]


def settings_for(base_url: str, **options: object) -> Settings:
    return Settings(
        **environment_settings(
            {"base_url": base_url, "max_retries": 1, "timeout": 2.0, **options},
            {"OPENAI_API_KEY": KEY},
        )
    )


def write_rows(path: Path, threads: list[str]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["thread_id", "assistant_id"])
        writer.writerows([thread, "asst_1"] for thread in threads)
    return path


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


@pytest.mark.parametrize("thread_id", BAD_THREAD_IDS)
def test_a_thread_id_that_could_change_the_url_is_a_row_error_never_sent(
    tmp_path: Path, make_simulator: MakeSimulator, thread_id: str
) -> None:
    sim = make_simulator(run_seconds=0)
    source = write_rows(tmp_path / "in.csv", ["thread_a", thread_id, "thread_b"])
    validated = read_rows(validate_file(source, tmp_path / "checked.csv", settings_for("")).output)
    assert [bool(row["error"]) for row in validated] == [False, True, False]
    assert validated[1]["request"] == "" and "thread_id" in validated[1]["error"]

    report = run_file(source, tmp_path / "out.csv", settings_for(sim.base_url))
    rows = read_rows(report.output)
    assert [row["status"] for row in rows] == ["200", "", "200"]
    assert "thread_id" in rows[1]["error"] and rows[1]["attempts"] == ""
    stats = sim.stats()
    assert stats["requests"] == {CREATE: {"200": 2}}  # no other route was ever reached
    assert stats["runs_created"] == 2
    assert report.summary.exit_code is ExitCode.ROWS_FAILED


def test_surrounding_spaces_are_trimmed_and_the_id_is_sent(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(run_seconds=0)
    source = write_rows(tmp_path / "in.csv", ["  thread_a  "])
    report = run_file(source, tmp_path / "out.csv", settings_for(sim.base_url))
    assert report.summary.exit_code is ExitCode.OK
    assert read_rows(report.output)[0]["thread_id"] == "  thread_a  "  # input untouched


def test_a_base_url_no_parser_takes_is_refused_without_showing_its_password() -> None:
    with pytest.raises(UsageError, match="not a valid URL") as refused:
        settings_for("https://u:hunter2pass@host:99999/v1").check_sending()
    assert "hunter2pass" not in str(refused.value) and "u:***@host" in str(refused.value)


# --- where the key may go -----------------------------------------------------------------

REFUSED_URLS = [
    pytest.param("http://example.invalid/v1", id="plain-http-remote-host"),
    pytest.param("HTTP://EXAMPLE.INVALID/v1", id="upper-case-scheme"),
    pytest.param("http://0.0.0.0:8000/v1", id="wildcard-address"),
    pytest.param("http://10.0.0.1/v1", id="private-address"),
    pytest.param("http://127.0.0.1.nip.io/v1", id="loopback-lookalike-name"),
    pytest.param("http://localhost.example.com/v1", id="localhost-prefix-name"),
    pytest.param("http://[::ffff:8.8.8.8]/v1", id="ipv4-mapped-ipv6"),
]


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_plain_http_to_another_host_is_refused_before_anything_is_sent(url: str) -> None:
    with pytest.raises(UsageError, match="--allow-insecure-http"):
        settings_for(url).check_sending()
    settings_for(url, allow_insecure_http=True).check_sending()  # the flag lets it through


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://example.invalid#@localhost/v1", id="localhost-after-fragment"),
        pytest.param("https://gateway.example/v1?api-version=2024-05-01", id="query"),
    ],
)
def test_a_base_url_with_a_query_or_fragment_is_refused(url: str) -> None:
    """Request paths are appended to the base URL: a query or fragment would swallow them."""
    with pytest.raises(UsageError, match="query or fragment"):
        settings_for(url, allow_insecure_http=True).check_sending()


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://bob:hunter2pass@127.0.0.1:9/v1", id="user-and-password"),
        pytest.param("https://bob@gateway.example/v1", id="user"),
        pytest.param("https://:hunter2pass@gateway.example/v1", id="password"),
        # A loopback name as the user, the key's real destination behind it: refused too.
        pytest.param("http://localhost@example.invalid/v1", id="localhost-as-userinfo"),
    ],
)
def test_a_base_url_with_credentials_is_refused_without_showing_the_password(url: str) -> None:
    # Before, every row failed as an internal error (aiohttp refuses credentials in the URL
    # beside an Authorization header) and the password went to the settings file and journal.
    with pytest.raises(UsageError, match="cannot carry a user or password") as refused:
        settings_for(url).check_sending()
    assert "hunter2pass" not in str(refused.value)


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("ftp://example.invalid/v1", id="ftp"),
        pytest.param("file:///etc/passwd", id="file"),
        pytest.param("example.invalid/v1", id="no-scheme"),
        pytest.param("http:///v1", id="no-host"),
        pytest.param("", id="empty"),
    ],
)
def test_a_base_url_that_is_not_http_is_refused_even_with_the_flag(url: str) -> None:
    for allow in (False, True):
        with pytest.raises(UsageError, match="not an http"):
            settings_for(url, allow_insecure_http=allow).check_sending()


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://127.0.0.1:8000/v1", id="ipv4-loopback"),
        pytest.param("http://127.8.9.10/v1", id="other-ipv4-loopback"),
        pytest.param("http://localhost:8000/v1", id="localhost"),
        pytest.param("http://LocalHost/v1", id="localhost-any-case"),
        pytest.param("http://[::1]:8000/v1", id="ipv6-loopback"),
        pytest.param("https://example.invalid/v1", id="https-anywhere"),
    ],
)
def test_loopback_http_and_any_https_pass_the_check(url: str) -> None:
    settings_for(url).check_sending()


def test_a_base_url_the_http_client_cannot_parse_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        settings_for("http://example.invalid\\@localhost/v1").check_sending()


def cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    environ |= {"OPENAI_API_KEY": KEY, **env}
    return subprocess.run(
        [sys.executable, "-m", "batchrun", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "env", "config"),
    [
        pytest.param(["--base-url", "http://example.invalid/v1"], {}, "", id="flag"),
        pytest.param([], {"OPENAI_BASE_URL": "http://example.invalid/v1"}, "", id="environment"),
        pytest.param(
            ["--config", "job.toml"], {}, 'base_url = "http://example.invalid/v1"\n', id="config"
        ),
    ],
)
def test_the_cli_refuses_plain_http_with_exit_2_naming_the_flag(
    tmp_path: Path, args: list[str], env: dict[str, str], config: str
) -> None:
    write_rows(tmp_path / "in.csv", ["thread_a"])
    if config:
        (tmp_path / "job.toml").write_text(config, encoding="utf-8")
    before = sorted(p.name for p in tmp_path.iterdir())
    result = cli(["run", "in.csv", "--no-progress", *args], tmp_path, **env)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert "--allow-insecure-http" in line and "example.invalid" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, no journal


# --- TLS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1 that no authority signed."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a self-signed certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
    request += ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        [openssl, *request, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_a_self_signed_certificate_stops_the_job_with_exit_3_and_nothing_created(
    tmp_path: Path, self_signed: tuple[Path, Path]
) -> None:
    cert, key = self_signed
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    store = RunStore()

    async def create(request: web.Request) -> web.StreamResponse:
        thread = request.match_info["thread_id"]
        store.posts.append(thread)
        return web.json_response(store.create(thread, await request.json()))

    write_rows(tmp_path / "in.csv", [f"thread_{n}" for n in range(5)])
    with serve_app(app_with(create, store), ssl_context=context) as base_url:
        assert base_url.startswith("https://127.0.0.1:")
        refused = cli(["run", "in.csv", "-o", "refused.csv", "--base-url", base_url], tmp_path)
        # The same server is fine once its certificate is trusted: the refusal is the
        # certificate check, not a broken server.
        trusted = cli(
            ["run", "in.csv", "-o", "trusted.csv", "--base-url", base_url],
            tmp_path,
            SSL_CERT_FILE=str(cert),
        )
    assert refused.returncode == 3, refused.stderr
    assert "certificate" in refused.stderr and "Traceback" not in refused.stderr
    rows = read_rows(tmp_path / "refused.csv")
    assert all(row["status"] == "" and row["error"] for row in rows)
    assert any("certificate verify failed" in row["error"] for row in rows)
    assert trusted.returncode == 0, trusted.stderr
    assert sorted(store.posts) == [f"thread_{n}" for n in range(5)]  # all from the trusted job


@pytest.mark.parametrize(
    "base_url",
    [
        "http://127.0.0.1:8000/v1",
        "http://127.0.0.1:8000/v1/",
        "https://api.example.com",
        "https://api.example.com/",
        "http://[::1]:9/proxy/v1",
        "https://gateway.example/team%20a/v1",
        "https://bücher.example/v1",
    ],
)
@pytest.mark.parametrize(
    "path", ["/threads/thread_1/runs", "/threads/thread_1/runs/run_a-B_9", "/threads/t/messages"]
)
def test_plain_request_paths_are_joined_to_the_base_url_as_parsing_would(
    base_url: str, path: str
) -> None:
    """Plain paths are joined from parts, not parsed: the URL must be the parsed one."""

    async def url() -> yarl.URL | str:
        async with aiohttp.ClientSession() as session:
            return ApiClient(session, Settings(base_url=base_url))._url(path)

    joined = asyncio.run(url())
    assert isinstance(joined, yarl.URL)  # the joining path was taken
    assert joined == yarl.URL(base_url.rstrip("/") + path)


@pytest.mark.parametrize("conversation", BAD_THREAD_IDS)
def test_a_conversation_id_that_could_change_a_url_is_a_row_error_never_sent(
    tmp_path: Path, make_simulator: MakeSimulator, conversation: str
) -> None:
    sim = make_simulator(run_seconds=0)
    source = tmp_path / "in.csv"
    with source.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["conversation", "model", "input"])
        writer.writerows([["conv_a", "m", "x"], [conversation, "m", "y"], ["", "m", "z"]])
    responses = settings_for(sim.base_url, endpoint="responses")
    rows = read_rows(run_file(source, tmp_path / "out.csv", responses).output)
    trimmed = conversation.strip()
    if not trimmed or THREAD_ID_PATTERN.fullmatch(trimmed):
        # Only white space (not sent), or a plain id once trimmed (sent trimmed).
        assert [row["status"] for row in rows] == ["200", "200", "200"]
        sent = json.loads(rows[1]["body"]).get("conversation") or {}
        assert sent.get("id") == (trimmed or None)
        return
    assert [row["status"] for row in rows] == ["200", "", "200"]
    assert rows[1]["error"].startswith("conversation: ")
    assert sim.stats()["requests"] == {"POST /v1/responses": {"200": 2}}
