"""How ``batchrun COMMAND --help`` reads: options grouped by purpose, an example, exit codes.

click lists options in one flat block; :class:`GroupedCommand` writes one block per group
instead (a small ``format_options`` of our own: the click-option-group library would add a
dependency for twenty lines, and its groups also change parsing, which we do not need).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

EXIT_CODES = """\b
Exit codes:
  0    every row ok (a header with no rows counts)
  1    some rows invalid or failed
  2    usage, input or config error; nothing sent
  3    job stopped on a systemic error (bad key, no quota, wrong URL)
  4    internal error (a bug): one line; --traceback shows where
  75   --batch --no-wait: batches still running; run the same command again
  130  interrupted: journal kept, partial output written"""

VALIDATE_EXIT_CODES = """\b
Exit codes:
  0    every row valid (a header with no rows counts)
  1    some rows invalid
  2    usage, input or config error
  4    internal error (a bug): one line; --traceback shows where
  130  interrupted"""

SHEET_EXAMPLE = """\b
Example sheet (threads.csv):
  thread_id,assistant_id,instructions,temperature,metadata.team
  thread_abc123,asst_1,Summarise the ticket.,0.2,ops
  thread_def456,asst_1,Answer in French.,,sales"""

RUN_EPILOG = f"""{SHEET_EXAMPLE}

\b
Examples:
  batchrun run threads.csv --simulate --wait        try it offline
  batchrun run prompts.csv --endpoint responses --simulate   a sheet of prompts
  batchrun run threads.xlsx --base-url https://gw.example.com/v1 --rpm 600 -o out.xlsx
  batchrun run prompts.csv --endpoint responses --batch --no-wait   hourly from cron

{EXIT_CODES}"""

VALIDATE_EPILOG = f"""{SHEET_EXAMPLE}

\b
Example:
  batchrun validate threads.csv          writes threads.checked.csv
  batchrun validate prompts.csv --endpoint responses --batch-jsonl batch.jsonl

{VALIDATE_EXIT_CODES}"""

SERVE_EPILOG = """\b
Example:
  batchrun serve --port 8000 --rpm 600 --fail-rate 0.05 --seed 1
  OPENAI_API_KEY=sk-local batchrun run threads.csv --base-url http://127.0.0.1:8000/v1

\b
Batch faults (for testing a Batch API client):
  --batch-expire                 every batch ends expired at --batch-seconds; the
                                 second half of its lines (input order) is in
                                 neither the output nor the error file
  --batch-fail-lines '[13579]$'  lines whose custom_id matches the regex (searched)
                                 are in the error file: error.code server_error;
                                 the batch still completes, request_counts.failed > 0

\b
Exit codes:
  0    stopped with Ctrl-C
  2    bad option, or the port cannot be used
  4    internal error (a bug): one line; --traceback shows where"""


# Option groups of each command's help, by parameter name.
RUN_GROUPS = (
    (
        "Input",
        ["sheet", "header_row", "delimiter", "encoding", "columns", "limit", "config_file"],
    ),
    ("Request body", ["endpoint", "set_values", "api_version", "run_tag"]),
    (
        "Where to send",
        ["base_url", "api_key_env", "beta_header", "simulate", "allow_insecure_http"],
    ),
    ("Pace and retries", ["concurrency", "rpm", "tpm", "read_rpm", "max_retries", "timeout"]),
    ("Shared rate limit", ["limiter_url", "limiter_key"]),
    ("Following runs", ["wait", "wait_timeout", "reply"]),
    ("Batch API", ["batch", "no_wait", "batch_queue_tokens", "batch_jsonl"]),
    ("Resume", ["journal", "fresh", "retry_failed"]),
    ("Output", ["output", "prefix", "escape_formulas"]),
    ("Messages", ["quiet", "no_progress", "traceback", "help"]),
)
SERVE_GROUPS = (
    ("Listening", ["host", "port", "api_key", "strict_threads"]),
    ("Runs", ["run_seconds"]),
    ("Batches", ["batch_seconds", "batch_expire", "batch_fail_lines", "batch_queue_tokens"]),
    ("Rate limits", ["rpm", "read_rpm", "tpm", "burst", "limit_headers"]),
    (
        "Faults",
        [
            "latency_ms",
            "fail_rate",
            "hang_rate",
            "hang_seconds",
            "reset_rate",
            "quota_exhausted",
            "seed",
        ],
    ),
    ("Messages", ["traceback", "help"]),
)


class GroupedCommand(click.Command):
    """A command whose --help shows its options in groups, in the order given.

    ``groups`` maps a heading to the parameter names (as in the function's signature)
    it holds; options in no group go under "Other options".
    """

    def __init__(
        self, *args: Any, groups: Sequence[tuple[str, Sequence[str]]] = (), **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.groups = [(title, list(names)) for title, names in groups]

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        records = {
            # click names its own --help option differently from version to version.
            "help" if param is self.get_help_option(ctx) else param.name: record
            for param in self.get_params(ctx)
            if isinstance(param, click.Option)
            and (record := param.get_help_record(ctx)) is not None
            and param.name
        }
        placed: set[str] = set()
        for title, names in self.groups:
            rows = [records[name] for name in names if name in records]
            placed.update(names)
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)
        rest = [record for name, record in records.items() if name not in placed]
        if rest:
            with formatter.section("Other options"):
                formatter.write_dl(rest)
