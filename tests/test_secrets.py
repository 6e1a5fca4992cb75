"""The API key never leaves the request header: a canary key is hunted for everywhere.

Every file a job leaves behind (output in each format, with its zip members read raw,
the settings passthrough, the full-text sidecar, the journal and its WAL), stdout and
stderr of the CLI (with and without a progress bar), and every error message, including
when every request fails and when a hostile server echoes the Authorization header back.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import time
import urllib.parse
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web
from loopback_server import CREATE_ROUTE, RUN_ROUTE, RunStore, serve_app

from batchrun.config import Settings, environment_settings, mask_key, mask_secrets
from batchrun.config_file import settings_toml
from batchrun.jobs import run_file, validate_file
from batchrun.masking import holds_key, mask_text
from batchrun.report import Summary
from batchrun.simulator import RunningSimulator

MakeSimulator = Callable[..., RunningSimulator]
LONG_NOTE = "n" * 40_000  # over Excel's cell limit: an .xlsx output gets a sidecar


@pytest.fixture
def canary() -> str:
    return "sk-canary-" + uuid.uuid4().hex


def write_sheet(path: Path, threads: list[str]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["thread_id", "assistant_id", "note"])
        writer.writerows([thread, "asst_1", LONG_NOTE] for thread in threads)
    return path


def places_holding(folder: Path, secret: str) -> list[str]:
    """Every file under ``folder`` (and every member of every zip) whose bytes hold it."""
    needle = secret.encode()
    found = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if needle in data:
            found.append(str(path))
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                found += [
                    f"{path}!{name}" for name in archive.namelist() if needle in archive.read(name)
                ]
    return found


def cli_env(key_env: str, key: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env[key_env] = key
    return env


class Cli:
    """A running ``python -m batchrun ARGS``; with ``tty`` its stderr is a terminal."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, *, tty: bool) -> None:
        command = [sys.executable, "-m", "batchrun", *args]
        self._terminal: int | None = None
        stderr: int = subprocess.PIPE
        if tty:
            self._terminal, stderr = pty.openpty()
            # 24 x 100: a terminal of no size would give the progress bar no room to draw.
            fcntl.ioctl(stderr, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
        try:
            self.process = subprocess.Popen(
                command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=stderr
            )
        finally:
            if tty:
                os.close(stderr)

    def __enter__(self) -> Cli:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()
        if self._terminal is not None:
            os.close(self._terminal)
            self._terminal = None

    def finish(self) -> tuple[bytes, bytes, int]:
        """Wait for the end: stdout, stderr (what the terminal showed) and the exit code."""
        if self._terminal is None:
            out, err = self.process.communicate(timeout=60)
            return out, err, self.process.returncode
        shown = []
        while True:
            try:
                data = os.read(self._terminal, 1 << 16)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            shown.append(data)
        out, _ = self.process.communicate(timeout=60)
        return out, b"".join(shown), self.process.returncode


def output_text(path: Path) -> str:
    """An output's text, .xlsx members included."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return "".join(
                archive.read(name).decode("utf-8", "replace") for name in archive.namelist()
            )
    return path.read_text(encoding="utf-8")


# (flags, stderr is a terminal): default, no bar, quiet, and a live progress bar.
STREAM_VARIANTS: list[tuple[list[str], bool]] = [
    ([], False),
    (["--no-progress"], False),
    (["-q"], False),
    ([], True),
]


@pytest.mark.parametrize("suffix", [".csv", ".xlsx", ".jsonl"])
@pytest.mark.parametrize("key_env", ["OPENAI_API_KEY", "MY_GATEWAY_TOKEN"])
def test_a_rejected_key_is_nowhere_in_files_streams_or_errors(
    tmp_path: Path, make_simulator: MakeSimulator, canary: str, suffix: str, key_env: str
) -> None:
    sim = make_simulator(api_key="sk-other-0123456789abcdef")
    source = write_sheet(tmp_path / "in.csv", [f"thread_{n}" for n in range(5)])
    env = cli_env(key_env, canary)
    command = ["run", source.name, "--base-url", sim.base_url, "--api-key-env", key_env]
    command += ["--concurrency", "2"]
    with contextlib.ExitStack() as stack:
        running = [
            stack.enter_context(
                Cli(
                    [*command, "-o", f"out_{n}{suffix}", "--journal", f"job_{n}.sqlite", *flags],
                    env,
                    tmp_path,
                    tty=tty,
                )
            )
            for n, (flags, tty) in enumerate(STREAM_VARIANTS)
        ]
        results = [cli.finish() for cli in running]
    for (_, tty), (out, err, code) in zip(STREAM_VARIANTS, results, strict=True):
        assert code == 3, err
        assert canary.encode() not in out + err
        assert b"401" in err  # the abort was reported, the key was not
        assert (b"row/s]" in err) is tty  # the progress bar was drawn on the terminal only
    assert places_holding(tmp_path, canary) == []
    # Not vacuous: the server's 401 (with its own masked echo of the key) was recorded.
    (first,) = tmp_path.glob(f"out_0{suffix}")
    assert "Incorrect API key" in output_text(first)
    assert (tmp_path / "job_0.sqlite").exists()
    assert (tmp_path / "out_0.settings.toml").exists()
    if suffix == ".xlsx":
        assert (tmp_path / "out_0.full.jsonl").exists()


def test_a_journal_cut_off_mid_job_holds_no_key_in_its_wal(
    tmp_path: Path, make_simulator: MakeSimulator, canary: str
) -> None:
    """SIGKILL leaves the WAL unfolded: its raw pages are what a crash hands on."""
    sim = make_simulator(latency_ms=200, run_seconds=0)
    source = write_sheet(tmp_path / "in.csv", [f"thread_{n}" for n in range(200)])
    wal = tmp_path / "in.batchrun.sqlite-wal"
    command = ["run", source.name, "-o", "out.csv", "--base-url", sim.base_url]
    with Cli(
        [*command, "--concurrency", "4"], cli_env("OPENAI_API_KEY", canary), tmp_path, tty=False
    ) as cli:
        deadline = time.monotonic() + 20
        while sim.stats()["runs_created"] < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        created = sim.stats()["runs_created"]
        cli.process.send_signal(signal.SIGKILL)
        _, err, code = cli.finish()
    assert code == -signal.SIGKILL and 4 <= created < 200, err
    assert wal.exists() and wal.stat().st_size > 0
    assert places_holding(tmp_path, canary) == []


# --- a server that echoes the Authorization header ----------------------------------------


def echo_app(store: RunStore) -> web.Application:
    """Echoes ``Authorization`` into 200 bodies, error messages, run lists, runs and replies."""

    def auth(request: web.Request) -> str:
        return request.headers.get("Authorization", "")

    async def create(request: web.Request) -> web.StreamResponse:
        thread = request.match_info["thread_id"]
        store.posts.append(thread)
        body = await request.json()
        echo = f"you sent {auth(request)}"
        if thread == "echo_400":
            error = {"message": f"Bad header: {auth(request)}", "type": "invalid_request_error"}
            return web.json_response({"error": {**error, "param": None, "code": None}}, status=400)
        run = store.create(thread, body, instructions=echo + " " + "." * 40_000)
        if thread == "echo_500":  # created, then an error: batchrun reads the list back
            return web.json_response({"error": {"message": echo}}, status=500)
        return web.json_response(run)

    async def get_run(request: web.Request) -> web.StreamResponse:
        thread, run_id = request.match_info["thread_id"], request.match_info["run_id"]
        run = next(r for r in store.runs[thread] if r["id"] == run_id)
        if thread == "echo_failed":
            error = {"code": "server_error", "message": f"failed with {auth(request)}"}
            return web.json_response({**run, "status": "failed", "last_error": error})
        return web.json_response({**run, "status": "completed"})

    async def messages(request: web.Request) -> web.StreamResponse:
        text = {"value": f"The header was {auth(request)}", "annotations": []}
        message = {
            "id": "msg_1",
            "object": "thread.message",
            "role": "assistant",
            "run_id": request.query.get("run_id"),
            "content": [{"type": "text", "text": text}],
        }
        return web.json_response({"object": "list", "data": [message], "has_more": False})

    app = web.Application()
    app.add_routes(
        [
            web.post(CREATE_ROUTE, create),
            web.get(CREATE_ROUTE, store.list_runs),
            web.get(RUN_ROUTE, get_run),
            web.get("/v1/threads/{thread_id}/messages", messages),
        ]
    )
    return app


ECHO_THREADS = ["echo_ok", "echo_400", "echo_500", "echo_failed"]


@pytest.mark.parametrize("suffix", [".csv", ".xlsx", ".jsonl"])
def test_a_server_echoing_the_key_gets_it_masked_in_every_column_and_file(
    tmp_path: Path, canary: str, suffix: str
) -> None:
    store = RunStore()
    source = write_sheet(tmp_path / "in.csv", ECHO_THREADS)
    output = tmp_path / f"out{suffix}"
    with serve_app(echo_app(store)) as base_url:
        args = ["run", source.name, "-o", output.name, "--base-url", base_url, "--reply"]
        with Cli(
            [*args, "--wait-timeout", "5", "--max-retries", "1", "--timeout", "5"],
            cli_env("OPENAI_API_KEY", canary),
            tmp_path,
            tty=False,
        ) as cli:
            out, err, code = cli.finish()
    assert code == 1, err
    assert canary.encode() not in out + err
    assert places_holding(tmp_path, canary) == []
    # Not vacuous: every echo arrived, masked, in the column it belongs to.
    masked = mask_key(canary)
    assert canary not in masked and masked in output_text(output)
    assert len(store.posts) == len(ECHO_THREADS)  # the 500 was reconciled, not re-sent
    if suffix == ".csv":
        with output.open(newline="", encoding="utf-8") as stream:
            rows = {row["thread_id"]: row for row in csv.DictReader(stream)}
        assert masked in rows["echo_ok"]["body"] and masked in rows["echo_ok"]["reply"]
        assert masked in rows["echo_400"]["error"] and rows["echo_400"]["status"] == "400"
        assert masked in rows["echo_500"]["body"] and rows["echo_500"]["status"] == "200"
        assert masked in rows["echo_failed"]["last_error"]
    if suffix == ".xlsx":  # the 40,000-character echoed bodies went whole to the sidecar
        sidecar = (tmp_path / "out.full.jsonl").read_text(encoding="utf-8")
        assert masked in sidecar


def percent_lower(text: str) -> str:
    """``text`` percent-encoded, with lower-case hex digits as some servers write them."""
    return re.sub("%[0-9A-F]{2}", lambda code: code[0].lower(), urllib.parse.quote(text, safe=""))


# The key as other servers echo it: form-decoded ("+" read as a space), HTML-escaped.
ECHOES: dict[str, Callable[[str], str]] = {
    "esc_form": lambda key: key.replace("+", " "),
    "esc_html": lambda key: key.replace("/", "&#x2F;").replace("+", "&#43;").replace("=", "&#x3D;"),
    "esc_named": lambda key: key.replace("/", "&sol;").replace("+", "&plus;"),
}


def escaped_echo_app(store: RunStore) -> web.Application:
    """Echoes the bearer key as other servers write it: JSON-escaped (``\\/`` and
    ``\\u002d``, as PHP's json_encode or an escaping serializer does) and percent-encoded
    (a URL in an error message), never as written."""

    def key(request: web.Request) -> str:
        return request.headers.get("Authorization", "").removeprefix("Bearer ")

    def json_escaped(text: str) -> str:
        return text.replace("/", "\\/").replace("-", "\\u002d")

    async def create(request: web.Request) -> web.StreamResponse:
        thread = request.match_info["thread_id"]
        store.posts.append(thread)
        body = await request.json()
        if thread == "esc_url":
            link = f"https://gateway.example/keys?k={percent_lower(key(request))}"
            error = {"message": f"Key refused, see {link}", "type": "invalid_request_error"}
            return web.json_response({"error": error}, status=400)
        if thread in ECHOES:
            error = {"message": f"Invalid key {ECHOES[thread](key(request))}"}
            return web.json_response({"error": error}, status=400)
        run = store.create(thread, body, instructions="KEY")
        text = json.dumps(run).replace('"KEY"', f'"you sent {json_escaped(key(request))}"')
        status = 400 if thread == "esc_400" else 200
        if status == 400:
            text = json.dumps({"error": {"message": "Bad key KEY"}})
            text = text.replace("KEY", json_escaped(key(request)))
        return web.Response(text=text, status=status, content_type="application/json")

    app = web.Application()
    app.add_routes([web.post(CREATE_ROUTE, create), web.get(CREATE_ROUTE, store.list_runs)])
    return app


def test_a_key_echoed_escaped_encoded_or_decoded_is_masked_too(tmp_path: Path) -> None:
    key = f"sk-proj/{uuid.uuid4().hex}+Zz=="  # a gateway's key: '/', '+' and '=' in it
    forms = [key, urllib.parse.quote(key, safe=""), percent_lower(key)]
    forms += [key.replace("/", "\\/"), key.replace("/", "\\/").replace("-", "\\u002d")]
    store = RunStore()
    forms += [echo(key) for echo in ECHOES.values()]
    threads = ["esc_ok", "esc_400", "esc_url", *ECHOES]
    source = write_sheet(tmp_path / "in.csv", threads)
    with serve_app(escaped_echo_app(store)) as base_url:
        args = ["run", source.name, "-o", "out.csv", "--base-url", base_url, "--max-retries", "1"]
        with Cli(args, cli_env("OPENAI_API_KEY", key), tmp_path, tty=False) as cli:
            out, err, code = cli.finish()
    assert code == 1, err
    for form in forms:
        assert form.encode() not in out + err
        assert places_holding(tmp_path, form) == [], form
    with (tmp_path / "out.csv").open(newline="", encoding="utf-8") as stream:
        rows = {row["thread_id"]: row for row in csv.DictReader(stream)}
    masked = mask_key(key)  # not vacuous: each echo arrived, masked where it belongs
    assert rows["esc_ok"]["outcome"] == "ok" and masked in rows["esc_ok"]["body"]
    assert masked in rows["esc_400"]["error"] and masked in rows["esc_url"]["error"]
    assert all(masked in rows[thread]["error"] for thread in ECHOES)


@pytest.mark.parametrize("key", ["key", "test", "0"])
def test_a_short_placeholder_key_is_not_masked_into_the_answers(
    tmp_path: Path, make_simulator: MakeSimulator, key: str
) -> None:
    # A local server's placeholder key is no secret; masking it cut "batchrun_key" and
    # words out of every answer: rows failed as "not a run", a killed job's run went
    # unfound and --retry-failed made it again.
    sim = make_simulator(run_seconds=0)
    source = tmp_path / "in.csv"
    source.write_text(
        "thread_id,assistant_id,instructions\nthread_1,asst_1,run the latest test suite 0\n"
    )
    settings = Settings(**environment_settings({"base_url": sim.base_url}, {"OPENAI_API_KEY": key}))
    run_file(source, tmp_path / "out.csv", settings)
    with (tmp_path / "out.csv").open(newline="", encoding="utf-8") as stream:
        (row,) = csv.DictReader(stream)
    assert row["outcome"] == "ok", row
    assert "run the latest test suite 0" in row["body"] and "batchrun_key" in row["body"]


GATEWAY_KEY = "sk-proj_ab/xy+ef=gh.ij~kl-mnopqrst12"  # no hex digit after a "/" or "="


def every_char_percent(text: str, hex_case: Callable[[str], str] = str.upper) -> str:
    return "".join(
        char if char.isalnum() else "".join(hex_case(f"%{b:02X}") for b in char.encode())
        for char in text
    )


@pytest.mark.parametrize(
    "echo",
    [
        pytest.param(lambda key: key, id="as-written"),
        pytest.param(lambda key: urllib.parse.quote(key, safe=""), id="quote"),
        pytest.param(lambda key: urllib.parse.quote_plus(key), id="quote-plus"),
        pytest.param(every_char_percent, id="every-char-percent"),
        pytest.param(lambda key: every_char_percent(key, str.lower), id="lower-percent"),
        pytest.param(lambda key: key.replace("/", "\\/"), id="json-slash"),
        pytest.param(lambda key: key.replace("-", "\\u002D"), id="json-unicode"),
        pytest.param(lambda key: key.replace("/", "&#x2F;").replace("+", "&#43;"), id="html"),
        pytest.param(lambda key: key.replace("/", "&#x2f").replace("=", "&#61"), id="html-no-semi"),
        pytest.param(lambda key: key.replace("/", "&sol;").replace("_", "&lowbar;"), id="named"),
        pytest.param(lambda key: key.replace("+", " "), id="form-decoded"),
    ],
)
def test_every_echo_of_the_key_is_masked_and_nothing_else_is_touched(
    echo: Callable[[str], str],
) -> None:
    text = f'{{"message": "bad key {echo(GATEWAY_KEY)} (see docs)", "n": 12345678}}'
    masked = mask_text(text, GATEWAY_KEY)
    assert echo(GATEWAY_KEY) not in masked and not holds_key(masked, GATEWAY_KEY)
    assert masked == text.replace(echo(GATEWAY_KEY), mask_key(GATEWAY_KEY))


def test_an_answer_is_parsed_before_it_is_masked(tmp_path: Path) -> None:
    # A key of 8 to 12 characters is masked as "***": masked in the raw answer, a number
    # holding its digits broke the JSON, and the created run read as "not a run".
    key = "12345678"
    store = RunStore()

    async def create(request: web.Request) -> web.StreamResponse:
        run = store.create(request.match_info["thread_id"], await request.json())
        return web.json_response({**run, "created_at": 1712345678, "note": f"key {key}"})

    app = web.Application()
    app.add_routes([web.post(CREATE_ROUTE, create), web.get(CREATE_ROUTE, store.list_runs)])
    source = write_sheet(tmp_path / "in.csv", ["thread_1"])
    with serve_app(app) as base_url:
        settings = Settings(**environment_settings({"base_url": base_url}, {"OPENAI_API_KEY": key}))
        run_file(source, tmp_path / "out.csv", settings)
    with (tmp_path / "out.csv").open(newline="", encoding="utf-8") as stream:
        (row,) = csv.DictReader(stream)
    assert row["outcome"] == "ok" and row["run_id"] == "run_thread_1_1", row["error"]
    assert key not in row["body"]


def test_a_redirect_never_carries_the_key_to_another_server(tmp_path: Path, canary: str) -> None:
    seen: list[str] = []

    async def elsewhere(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response({"id": "run_x", "status": "queued"})

    target = web.Application()
    target.add_routes([web.post("/{tail:.*}", elsewhere)])
    with serve_app(target) as other:

        async def redirect(request: web.Request) -> web.StreamResponse:
            raise web.HTTPTemporaryRedirect(other + "/threads/t/runs")

        source = web.Application()
        source.add_routes([web.post(CREATE_ROUTE, redirect)])
        with serve_app(source) as base_url:
            settings = Settings(
                **environment_settings(
                    {"base_url": base_url, "max_retries": 1, "timeout": 2.0},
                    {"OPENAI_API_KEY": canary},
                )
            )
            report = run_file(
                write_sheet(tmp_path / "in.csv", ["thread_1"]), tmp_path / "out.csv", settings
            )
    assert seen == []
    with report.output.open(newline="", encoding="utf-8") as stream:
        (row,) = csv.DictReader(stream)
    assert row["status"] == "307" and "307" in row["error"]
    assert places_holding(tmp_path, canary) == []


def test_settings_never_show_the_key(canary: str) -> None:
    settings = Settings(
        **environment_settings(
            {"base_url": "https://api.example.com/v1"}, {"OPENAI_API_KEY": canary}
        )
    )
    assert settings.api_key == canary
    summary = Summary(
        rows=0, outcomes={}, failed_statuses={}, run_statuses={}, reconciled=0, seconds=0
    )
    for text in (
        repr(settings),
        str(settings),
        str(settings.public()),
        settings_toml(settings),
        str(summary.sections(settings.public())),
    ):
        assert canary not in text
    assert canary not in mask_secrets(f"boom: {canary}", {"OPENAI_API_KEY": canary})


def test_internal_errors_mask_a_key_held_under_another_name(canary: str) -> None:
    assert canary not in mask_secrets(f"boom: {canary}", {"MY_GATEWAY_TOKEN": canary})


HEADER_BREAKERS = {  # name -> (environment, extra flags)
    "key with a trailing newline": ({"OPENAI_API_KEY": "{key}\n"}, []),
    "key with a trailing carriage return": ({"OPENAI_API_KEY": "{key}\r"}, []),
    "org id with CRLF": ({"OPENAI_API_KEY": "{key}", "OPENAI_ORG_ID": "org-1\r\n"}, []),
    "beta header with CRLF": ({"OPENAI_API_KEY": "{key}"}, ["--beta-header", "assistants=v2\r\n"]),
}


def test_header_values_with_line_breaks_are_refused_or_cleaned_and_never_hang(
    tmp_path: Path, make_simulator: MakeSimulator, canary: str
) -> None:
    """A key read from a file often ends in a line break; the job must not hang on it."""
    sim = make_simulator()
    source = write_sheet(tmp_path / "in.csv", ["thread_1", "thread_2"])
    base = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    with contextlib.ExitStack() as stack:
        running = {}
        for n, (name, (variables, extra)) in enumerate(HEADER_BREAKERS.items()):
            env = base | {k: v.format(key=canary) for k, v in variables.items()}
            command = ["run", source.name, "-o", f"out_{n}.csv", "--base-url", sim.base_url]
            running[name] = stack.enter_context(
                Cli([*command, "--no-progress", *extra], env, tmp_path, tty=False)
            )
        # A refusal or a tiny job takes about a second alone; a hang never ends. The margin
        # is for a loaded machine starting every one of these processes at once.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(
            cli.process.poll() is None for cli in running.values()
        ):
            time.sleep(0.05)
        hung = [name for name, cli in running.items() if cli.process.poll() is None]
        assert hung == [], f"hung: {hung}"
        for name, cli in running.items():
            out, err, code = cli.finish()
            assert code in (0, 2), (name, err)
            assert b"Traceback" not in err and canary.encode() not in out + err, name


@pytest.mark.parametrize("endpoint", ["responses", "chat"])
def test_a_live_endpoint_echoing_the_key_gets_it_masked_in_body_reply_and_files(
    tmp_path: Path, canary: str, endpoint: str
) -> None:
    async def echo(request: web.Request) -> web.Response:
        key = request.headers["Authorization"].removeprefix("Bearer ")
        said = f"your key is {key}"
        if endpoint == "chat":
            return web.json_response(
                {
                    "id": "chatcmpl_1",
                    "object": "chat.completion",
                    "choices": [
                        {"index": 0, "finish_reason": "stop", "message": {"content": said}}
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
                }
            )
        part = {"type": "output_text", "text": said}
        return web.json_response(
            {
                "id": "resp_1",
                "object": "response",
                "status": "completed",
                "output": [{"type": "message", "role": "assistant", "content": [part]}],
                "usage": {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3},
            }
        )

    app = web.Application()
    app.router.add_post(
        "/v1/responses" if endpoint == "responses" else "/v1/chat/completions", echo
    )
    source = tmp_path / "in.csv"
    header = "model,input" if endpoint == "responses" else "model,user"
    source.write_text(f"{header}\ngpt-4o,hello\n", encoding="utf-8")
    settings = Settings(
        **environment_settings({"base_url": "", "endpoint": endpoint}, {"OPENAI_API_KEY": canary})
    )
    with serve_app(app) as base_url:
        report = run_file(source, tmp_path / "out.csv", settings.with_base_url(base_url))
    assert report.summary.outcomes == {"ok": 1}
    assert places_holding(tmp_path, canary) == []
    with (tmp_path / "out.csv").open(newline="", encoding="utf-8") as stream:
        (row,) = list(csv.DictReader(stream))
    masked = mask_key(canary)
    assert row["reply"] == f"your key is {masked}" and masked in row["body"]


def test_a_cell_holding_the_key_is_masked_in_validates_request_column(
    tmp_path: Path, canary: str
) -> None:
    source = tmp_path / "in.csv"
    source.write_text(
        f"thread_id,assistant_id,instructions\nthread_a,asst_1,my key is {canary}\n",
        encoding="utf-8",
    )
    settings = Settings(**environment_settings({}, {"OPENAI_API_KEY": canary}))
    validate_file(source, tmp_path / "checked.csv", settings)
    text = (tmp_path / "checked.csv").read_text(encoding="utf-8")
    assert f"my key is {mask_key(canary)}" in text  # the request column, masked
    # The input's own cell comes back as it was written (the user's own text).
    with (tmp_path / "checked.csv").open(newline="", encoding="utf-8") as stream:
        (row,) = csv.DictReader(stream)
    assert canary not in row["request"] and row["outcome"] == "ok"
