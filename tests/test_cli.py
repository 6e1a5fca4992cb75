"""The command line as users and scripts meet it: help, version, schema, usage errors.

Every command runs in a real subprocess (``python -m batchrun``), as a scheduler would.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from importlib.metadata import version
from pathlib import Path

import pytest
from conftest import send

import batchrun

RUN_OPTIONS = [  # DESIGN.md "Command line", README "Options", and -o / --no-escape-formulas
    "--output",
    "--sheet",
    "--column",
    "--set",
    "--api-version",
    "--beta-header",
    "--base-url",
    "--api-key-env",
    "--concurrency",
    "--rpm",
    "--read-rpm",
    "--max-retries",
    "--timeout",
    "--wait",
    "--wait-timeout",
    "--reply",
    "--simulate",
    "--journal",
    "--fresh",
    "--retry-failed",
    "--limit",
    "--quiet",
    "--no-progress",
    "--prefix",
    "--no-run-tag",
    "--no-escape-formulas",
    "--allow-insecure-http",
    "--config",
]
VALIDATE_OPTIONS = [
    "--output",
    "--sheet",
    "--column",
    "--set",
    "--api-version",
    "--limit",
    "--prefix",
    "--no-run-tag",
    "--no-escape-formulas",
    "--quiet",
    "--no-progress",  # validate shows no bar, but takes the flag: one set serves both
    "--config",
]
SERVE_OPTIONS = [
    "--host",
    "--port",
    "--api-key",
    "--strict-threads",
    "--run-seconds",
    "--rpm",
    "--read-rpm",
    "--burst",
    "--seed",
    "--latency",
    "--fail-rate",
    "--hang-rate",
    "--hang-seconds",
    "--reset-rate",
    "--quota-exhausted",
]
CLICK_BANNER = ("Usage:", "Try '")


def batchrun_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env["OPENAI_API_KEY"] = "sk-test-cli-0123456789abcdef"
    return subprocess.run(
        [sys.executable, "-m", "batchrun", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def options_in(help_text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", help_text))


@pytest.mark.parametrize(
    ("command", "documented"),
    [
        pytest.param([], ["--version", "--help"], id="group"),
        pytest.param(["run"], RUN_OPTIONS, id="run"),
        pytest.param(["validate"], VALIDATE_OPTIONS, id="validate"),
        pytest.param(["serve"], SERVE_OPTIONS, id="serve"),
        pytest.param(["schema"], ["--api-version"], id="schema"),
    ],
)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_has_help_listing_its_documented_options(
    command: list[str], documented: list[str], flag: str
) -> None:
    result = batchrun_cli(*command, flag)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith("Usage: ")
    missing = sorted(set(documented) - options_in(result.stdout))
    assert missing == []


def test_validate_help_lists_only_the_exit_codes_validate_can_give() -> None:
    codes = batchrun_cli("validate", "--help").stdout.split("Exit codes:", 1)[1]
    assert [line.split()[0] for line in codes.strip().splitlines()] == ["0", "1", "2", "4", "130"]


def test_the_group_help_lists_every_command() -> None:
    text = batchrun_cli("--help").stdout
    commands = text.split("Commands:", 1)[1]
    assert {line.split()[0] for line in commands.strip().splitlines()} == {
        "run",
        "validate",
        "serve",
        "schema",
    }


def test_run_help_states_the_documented_defaults() -> None:
    text = " ".join(batchrun_cli("run", "--help").stdout.split())
    for name, default in [
        ("--api-version", "v2"),
        ("--concurrency", "16"),
        ("--max-retries", "6"),
        ("--timeout", "60 for runs"),
        ("--wait-timeout", "600.0"),
        ("--api-key-env", "OPENAI_API_KEY"),
    ]:
        assert re.search(rf"{name} .*?\[default: {re.escape(default)}[;\]]", text), name
    assert "https://api.openai.com/v1" in text  # where --base-url defaults to


def test_run_has_no_option_taking_the_key_itself() -> None:
    """The key comes from the environment only, never from a flag value (shell history)."""
    flags = options_in(batchrun_cli("run", "--help").stdout)
    assert "--api-key" not in flags and "--key" not in flags


def test_help_does_not_import_the_heavy_modules() -> None:
    code = (
        "import sys\n"
        "from batchrun.cli.commands import main\n"
        "for args in (['--help'], ['run', '--help'], ['validate', '--help']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = ('pandas', 'numpy', 'aiohttp', 'openpyxl', 'xlsxwriter', 'jsonschema')\n"
        "sys.stderr.write(repr(sorted(m for m in heavy if m in sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stderr == "[]"


@pytest.mark.parametrize(
    ("sample", "output"), [("threads.csv", "out.csv"), ("threads.xlsx", "out.xlsx")]
)
def test_run_works_without_importing_pandas(tmp_path: Path, sample: str, output: str) -> None:
    """pandas (~0.15 s to import) is for library callers; a CLI job starts sending without it."""
    code = (
        "import sys\n"
        "from batchrun.cli.commands import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit as stop:\n"
        "    sys.stderr.write(f'exit {stop.code} ')\n"
        "sys.stderr.write(repr(sorted(m for m in ('pandas', 'numpy') if m in sys.modules)))\n"
    )
    source = Path(__file__).parents[1] / "samples" / sample
    args = ["run", str(source), "--simulate", "--quiet", "-o", str(tmp_path / output)]
    args += ["--journal", str(tmp_path / "journal.sqlite")]  # not beside the samples
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "OPENAI_API_KEY": ""},
    )
    assert result.stderr.endswith("exit 1 []"), result.stderr  # 1: the samples' invalid rows
    assert (tmp_path / output).stat().st_size > 0


def test_version_is_the_package_version() -> None:
    result = batchrun_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"batchrun, version {batchrun.__version__}"
    assert batchrun.__version__ == version("batchrun")


@pytest.mark.parametrize("api_version", ["v1", "v2"])
def test_schema_prints_the_corrected_schema_in_force(api_version: str) -> None:
    result = batchrun_cli("schema", "--api-version", api_version)
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema["required"] == ["assistant_id"]  # the seed's thread_id bug, corrected
    assert schema["additionalProperties"] is False
    assert "thread_id" not in schema["properties"]
    assert "assistant_id" in schema["properties"]
    assert ("temperature" in schema["properties"]) is (api_version == "v2")


def test_schema_defaults_to_v2() -> None:
    assert batchrun_cli("schema").stdout == batchrun_cli("schema", "--api-version", "v2").stdout


USAGE_ERRORS = [
    pytest.param(["nope"], "No such command 'nope'", id="unknown-command"),
    pytest.param(["run"], "Missing argument 'INPUT'", id="run-without-input"),
    pytest.param(["validate"], "Missing argument 'INPUT'", id="validate-without-input"),
    pytest.param(["run", "in.csv", "--bogus"], "--bogus", id="unknown-option"),
    pytest.param(
        ["validate", "in.csv", "--base-url", "http://x"],
        "--base-url",
        id="run-option-on-validate",
    ),
    pytest.param(["run", "in.csv", "--api-version", "v3"], "'v3'", id="bad-api-version"),
    pytest.param(["run", "in.csv", "--concurrency", "0"], "--concurrency", id="zero-concurrency"),
    pytest.param(["run", "in.csv", "--concurrency", "many"], "--concurrency", id="text-number"),
    pytest.param(["run", "in.csv", "--timeout", "-1"], "--timeout", id="negative-timeout"),
    pytest.param(["run", "in.csv", "--timeout", "0"], "--timeout", id="zero-timeout"),
    pytest.param(["run", "in.csv", "--rpm", "0"], "--rpm", id="zero-rpm"),
    pytest.param(["run", "in.csv", "--wait-timeout", "0"], "--wait-timeout", id="zero-wait"),
    pytest.param(["run", "in.csv", "--max-retries", "-1"], "--max-retries", id="negative-retries"),
    pytest.param(["validate", "in.csv", "--limit", "-1"], "--limit", id="negative-limit"),
    pytest.param(["validate", "in.csv", "--column", "x"], "--column", id="column-without-equals"),
    pytest.param(["validate", "in.csv", "--set", "=1"], "--set", id="set-without-field"),
    pytest.param(["run", "in.csv", "--sheet"], "--sheet", id="option-without-value"),
    pytest.param(["schema", "--api-version", "v9"], "'v9'", id="schema-bad-version"),
    pytest.param(["serve", "--port", "http"], "--port", id="serve-text-port"),
    pytest.param(["serve", "--port", "99999"], "port", id="serve-port-out-of-range"),
    pytest.param(["serve", "--fail-rate", "2"], "--fail-rate", id="serve-rate-over-1"),
    pytest.param(
        ["run", "in.csv", "--base-url", "ftp://example.invalid"],
        "is not an http(s) URL",
        id="base-url-not-http",
    ),
]


@pytest.mark.parametrize(("args", "problem"), USAGE_ERRORS)
def test_a_usage_error_exits_2_with_one_error_line_and_no_traceback(
    tmp_path: Path, args: list[str], problem: str
) -> None:
    (tmp_path / "in.csv").write_text("thread_id,assistant_id\nthread_1,asst_1\n", encoding="utf-8")
    result = batchrun_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    lines = [
        line
        for line in result.stderr.splitlines()
        if line.strip() and not line.startswith(CLICK_BANNER)
    ]
    assert len(lines) == 1, result.stderr
    assert problem in lines[0]
    assert result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]  # nothing written


def test_serve_on_a_port_in_use_is_one_line_exit_2() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = batchrun_cli("serve", "--port", str(port))
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert "cannot listen on" in line and str(port) in line


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["schema", "--endpoint", "responses", "--api-version", "v1"], "--api-version applies"),
        (["serve", "--burst", "5"], "--burst sizes the --rpm and --read-rpm buckets"),
    ],
)
def test_an_option_that_would_do_nothing_is_a_usage_error(args: list[str], said: str) -> None:
    # Before, both were taken and ignored: the responses schema printed, a bucketless serve.
    result = batchrun_cli(*args)
    assert result.returncode == 2 and said in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def first_run_id(*flags: str) -> str:
    """The id of the first run a fresh ``batchrun serve FLAGS`` makes."""
    process = subprocess.Popen(
        [sys.executable, "-m", "batchrun", "serve", "--port", "0", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        found = re.search(r"(http://127\.0\.0\.1:\d+/v1)", process.stderr.readline())
        assert found
        request = urllib.request.Request(
            f"{found.group(1)}/threads/thread_1/runs",
            data=json.dumps({"assistant_id": "asst_1"}).encode(),
            headers={
                "Authorization": "Bearer sk-test",
                "OpenAI-Beta": "assistants=v2",
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return str(json.load(answer)["id"])
    finally:
        process.terminate()
        process.communicate(timeout=10)


def test_two_serve_sessions_share_no_ids_unless_seeded_alike() -> None:
    # Before, every session drew its ids from seed 0: a restarted simulator handed out the
    # ids of the one before, so a rerun's journal could name another row's run.
    assert first_run_id() != first_run_id()
    assert first_run_id("--seed", "3") == first_run_id("--seed", "3")


def test_serve_announces_its_address_answers_and_stops_cleanly_on_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "batchrun", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        banner = process.stderr.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/v1", banner)
        assert found, banner
        stats_url = f"http://127.0.0.1:{found.group(1)}/_simulator/stats"
        with urllib.request.urlopen(stats_url, timeout=10) as answer:
            stats = json.load(answer)
        assert {"requests", "runs_created", "duplicate_runs", "rate_limited"} <= set(stats)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "Traceback" not in err


def test_serve_quota_exhausted_answers_every_create_as_an_account_out_of_credit() -> None:
    # README names the simulator's quota switch; before, no serve flag reached it.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "batchrun", "serve", "--port", str(port), "--quota-exhausted"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base_url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 30
        while True:
            try:
                reply = send(base_url, "POST", "/responses", {"model": "m", "input": "hi"})
                break
            except OSError:
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.1)
        assert reply.status == 429
        assert reply.json["error"]["code"] == "insufficient_quota"
    finally:
        server.terminate()
        server.wait(timeout=30)
