"""The options of each command, declared once (cli.py holds the commands)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from batchrun.config import (
    DEFAULT_API_KEY_ENV,
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    DEFAULT_WAIT_TIMEOUT,
    GENERATION_TIMEOUT,
)

F = TypeVar("F", bound=Callable[..., Any])


def _pairs(
    option: str,
) -> Callable[[click.Context, click.Parameter, tuple[str, ...]], dict[str, str]]:
    def parse(
        ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
    ) -> dict[str, str]:
        pairs = {}
        for value in values:
            name, sep, text = value.partition("=")
            if not sep or not name.strip():
                raise click.BadParameter(f"{value!r} is not {option}", ctx, param)
            pairs[name.strip()] = text
        return pairs

    return parse


def _remember_traceback(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[TRACEBACK_KEY] = True  # ctx.meta is shared by the group and its commands


TRACEBACK_KEY = "batchrun.traceback"
POSITIVE = click.FloatRange(min=0, min_open=True)
SHARE = click.FloatRange(0, 1)
traceback_option = click.option(
    "--traceback",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_remember_traceback,
    help="On an internal error (exit 4), also print the traceback.",
)


def sheet_options(command: F) -> F:
    """Options shared by ``run`` and ``validate``: input, columns, body, output."""
    for decorator in reversed(
        [
            click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path)),
            click.option(
                "-o",
                "--output",
                type=click.Path(path_type=Path),
                help="Output file (.csv/.tsv/.xlsx/.jsonl/.parquet); default INPUT.out.EXT"
                " (validate: INPUT.checked.EXT).",
            ),
            click.option(
                "--config",
                "config_file",
                type=click.Path(path_type=Path),
                help="TOML file of options, [columns] and [set]; flags win.",
            ),
            click.option("--sheet", help="Worksheet of an .xlsx input, by name or 0-based index."),
            click.option(
                "--header-row",
                type=click.IntRange(min=1),
                metavar="N",
                help="Row N holds the header (a title above the table); rows count from 1.",
            ),
            click.option(
                "--delimiter",
                metavar="CHAR",
                help="CSV/TSV separator, e.g. ';' or tab (default: ',' for .csv, tab for .tsv).",
            ),
            click.option(
                "--encoding",
                metavar="NAME",
                help="CSV/TSV encoding, e.g. cp1252 or latin-1 (default: UTF-8, BOM or not).",
            ),
            click.option(
                "--column",
                "columns",
                multiple=True,
                metavar="FIELD=HEADER",
                callback=_pairs("FIELD=HEADER"),
                help="Read FIELD from a differently named column (repeatable).",
            ),
            click.option(
                "--set",
                "set_values",
                multiple=True,
                metavar="FIELD=VALUE",
                callback=_pairs("FIELD=VALUE"),
                help="Value for rows whose cell is empty; JSON for JSON fields.",
            ),
            endpoint_option,
            click.option(
                "--api-version",
                type=click.Choice(["v1", "v2"]),
                default="v2",
                show_default=True,
                help="Assistants API version (--endpoint runs): schema and beta header.",
            ),
            click.option(
                "--limit", type=click.IntRange(min=0), help="Only the first N rows of the input."
            ),
            click.option("--prefix", default="", help="Prefix for the result column names."),
            click.option(
                "--no-run-tag",
                "run_tag",
                flag_value=False,
                default=True,
                help="Do not add metadata.batchrun_key (loses duplicate protection).",
            ),
            click.option(
                "--no-escape-formulas",
                "escape_formulas",
                flag_value=False,
                default=True,
                help="CSV: write cells verbatim, even those a spreadsheet runs.",
            ),
            click.option(
                "-q",
                "--quiet",
                is_flag=True,
                help="No progress bar; the summary line only when a row is not ok.",
            ),
            # validate shows no bar: taken there too, so one set of flags serves both.
            click.option("--no-progress", is_flag=True, help="No progress bar."),
            traceback_option,
        ]
    ):
        command = decorator(command)
    return command


endpoint_option = click.option(
    "--endpoint",
    type=click.Choice(["runs", "responses", "chat"]),
    default="runs",
    show_default=True,
    help="What a row is: an Assistants run (POST /threads/{id}/runs), a response"
    " (POST /responses) or a chat completion (POST /chat/completions).",
)


def _apply(command: F, decorators: list[Callable[[F], F]]) -> F:
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


def run_options(command: F) -> F:
    """The options only ``run`` has: where and how fast to send, following, resuming."""
    return _apply(
        command,
        [
            click.option(
                "--base-url",
                help="API base URL [env OPENAI_BASE_URL; default https://api.openai.com/v1].",
            ),
            click.option(
                "--api-key-env",
                default=DEFAULT_API_KEY_ENV,
                show_default=True,
                help="Environment variable holding the API key.",
            ),
            click.option("--beta-header", help="Send this OpenAI-Beta header value verbatim."),
            click.option(
                "--concurrency",
                type=click.IntRange(min=1),
                default=DEFAULT_CONCURRENCY,
                show_default=True,
                help="Requests in flight at once, creates and polls together.",
            ),
            click.option(
                "--rpm",
                type=click.FloatRange(min=0, min_open=True),
                help="Run creations per minute (default: adapt to the server).",
            ),
            click.option(
                "--read-rpm",
                type=click.FloatRange(min=0, min_open=True),
                help="Polls and reconciling reads per minute.",
            ),
            click.option(
                "--tpm",
                type=click.FloatRange(min=0, min_open=True),
                help="Tokens per minute: prompt tokens plus maximum output tokens of each "
                "create (default: the server's limits).",
            ),
            click.option(
                "--limiter-url",
                metavar="redis://HOST:PORT/DB",
                help="Share --rpm/--tpm/--read-rpm with every job naming this Redis and limit key "
                "[env BATCHRUN_LIMITER_URL].",
            ),
            click.option(
                "--limiter-key",
                metavar="NAME",
                help="Name of the shared budget (default: the base URL plus a hash of the "
                "API key).",
            ),
            click.option(
                "--max-retries",
                type=click.IntRange(min=0),
                default=DEFAULT_MAX_RETRIES,
                show_default=True,
                help="Retries per row after errors (rate-limit waits have their own budget).",
            ),
            click.option(
                "--timeout",
                type=click.FloatRange(min=0, min_open=True),
                default=None,
                help=f"Seconds per attempt [default: {DEFAULT_TIMEOUT:g} for runs; "
                f"{GENERATION_TIMEOUT:g} for chat and responses, which may generate the "
                "answer in the request].",
            ),
            click.option("--wait", is_flag=True, help="Poll each run until it ends."),
            click.option(
                "--wait-timeout",
                type=click.FloatRange(min=0, min_open=True),
                default=DEFAULT_WAIT_TIMEOUT,
                show_default=True,
                help="Seconds to wait for a run to end.",
            ),
            click.option(
                "--reply", is_flag=True, help="Also fetch the assistant's reply (implies --wait)."
            ),
            click.option("--simulate", is_flag=True, help="Send to a built-in local simulator."),
            click.option(
                "--batch",
                is_flag=True,
                help="Send the rows through the Batch API (responses, chat): half price,"
                " results within 24 h.",
            ),
            click.option(
                "--no-wait",
                is_flag=True,
                help="--batch: submit or check once and exit (75 while batches still run).",
            ),
            click.option(
                "--batch-queue-tokens",
                type=click.IntRange(min=1),
                metavar="N",
                help="--batch: the account's enqueued-token limit: parts cut to N tokens, "
                "the job's unfinished batches kept within N.",
            ),
            click.option(
                "--journal",
                type=click.Path(path_type=Path),
                help="Journal file (default INPUT_STEM.batchrun.sqlite beside the input).",
            ),
            click.option("--fresh", is_flag=True, help="Start a new job: send every row again."),
            click.option(
                "--retry-failed",
                is_flag=True,
                help="Send failed rows again (a new run where a run ended failed).",
            ),
            click.option(
                "--allow-insecure-http", is_flag=True, help="Allow plain http:// to other hosts."
            ),
        ],
    )


batch_jsonl_option = click.option(
    "--batch-jsonl",
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="Also write the valid rows as Batch API JSONL (--endpoint responses or chat),"
    " split as FILE, STEM.2.jsonl, ...",
)


def serve_options(command: F) -> F:
    """The simulator's options."""
    return _apply(
        command,
        [
            click.option("--host", default="127.0.0.1", show_default=True),
            click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True),
            click.option(
                "--api-key", help="Accept only this bearer key (default: any non-empty key)."
            ),
            click.option(
                "--strict-threads",
                is_flag=True,
                help="Only threads created by POST /threads exist.",
            ),
            click.option(
                "--quota-exhausted",
                is_flag=True,
                help="Answer every create 429 insufficient_quota (an account out of credit).",
            ),
            click.option(
                "--run-seconds",
                type=click.FloatRange(min=0),
                default=1.0,
                show_default=True,
                help="Seconds from queued to completed.",
            ),
            click.option(
                "--batch-seconds",
                type=click.FloatRange(min=0),
                default=2.0,
                show_default=True,
                help="Seconds from validating to completed for a batch.",
            ),
            click.option(
                "--batch-expire",
                is_flag=True,
                help="Every batch ends expired, only the first half of its lines answered.",
            ),
            click.option(
                "--batch-fail-lines",
                metavar="REGEX",
                help="Batch lines whose custom_id matches go to the error file (server_error).",
            ),
            click.option(
                "--rpm",
                type=POSITIVE,
                help="Limit creates (runs, responses, chat) to R per minute (429 beyond).",
            ),
            click.option("--read-rpm", type=POSITIVE, help="Limit GETs to R per minute."),
            click.option(
                "--tpm",
                type=POSITIVE,
                help="Limit the tokens creates are charged (characters/4 of the prompt plus "
                "the maximum output tokens) to N per minute (429 beyond).",
            ),
            click.option(
                "--burst", type=POSITIVE, help="Token bucket size (default one second's worth)."
            ),
            click.option(
                "--limit-headers/--no-limit-headers",
                default=True,
                show_default=True,
                help="State the limits in x-ratelimit-* headers (off: a server that states none).",
            ),
            click.option(
                "--batch-queue-tokens",
                type=click.IntRange(min=1),
                metavar="N",
                help="Fail a batch (token_limit_exceeded) whose tokens would take the "
                "unfinished batches' past N.",
            ),
            click.option(
                "--latency",
                "latency_ms",
                type=click.FloatRange(min=0),
                default=0.0,
                help="Added latency, ms.",
            ),
            click.option(
                "--fail-rate", type=SHARE, default=0.0, help="Share of 500/502/503 answers."
            ),
            click.option(
                "--hang-rate", type=SHARE, default=0.0, help="Share of creates answered late."
            ),
            click.option(
                "--hang-seconds", type=click.FloatRange(min=0), default=30.0, show_default=True
            ),
            click.option(
                "--reset-rate",
                type=SHARE,
                default=0.0,
                help="Share of creates whose connection drops.",
            ),
            click.option(
                "--seed",
                type=int,
                help="Seed of the fault draws and the ids: a seeded session repeats exactly "
                "(default: drawn afresh, so two sessions never share an id).",
            ),
            traceback_option,
        ],
    )
