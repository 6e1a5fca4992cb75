"""The command line: a thin shell over the library, and the only module that prints.

Library errors become one line on stderr and an exit code (see :class:`ExitCode`).
Heavy modules (pandas, aiohttp) are imported inside the commands, so ``--help`` is quick.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from batchrun import __version__
from batchrun.config import (
    DEFAULT_API_KEY_ENV,
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    DEFAULT_WAIT_TIMEOUT,
)
from batchrun.errors import BatchrunError, ExitCode, UsageError

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


def sheet_options(command: F) -> F:
    """Options shared by ``run`` and ``validate``: input, columns, body, output."""
    for decorator in reversed(
        [
            click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path)),
            click.option(
                "-o",
                "--output",
                type=click.Path(path_type=Path),
                help="Output file (.csv/.tsv/.xlsx/.jsonl); default INPUT.out.EXT.",
            ),
            click.option(
                "--config",
                "config_file",
                type=click.Path(path_type=Path),
                help="TOML file of options, [columns] and [set]; flags win.",
            ),
            click.option("--sheet", help="Worksheet of an .xlsx input, by name or 0-based index."),
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
            click.option(
                "--api-version",
                type=click.Choice(["v1", "v2"]),
                default="v2",
                show_default=True,
                help="Assistants API version: schema and beta header.",
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
            click.option("-q", "--quiet", is_flag=True, help="No progress bar, no summary line."),
        ]
    ):
        command = decorator(command)
    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="batchrun")
def cli() -> None:
    """Send a spreadsheet of OpenAI Assistants "Create Run" requests, safely.

    Each row holds a thread id and Create Run fields; batchrun validates every row,
    sends the valid ones concurrently under a rate limit, never creates a run twice,
    and writes the sheet back with status, body and error for every row.
    """


@cli.command()
@sheet_options
@click.option(
    "--base-url", help="API base URL [env OPENAI_BASE_URL; default https://api.openai.com/v1]."
)
@click.option(
    "--api-key-env",
    default=DEFAULT_API_KEY_ENV,
    show_default=True,
    help="Environment variable holding the API key.",
)
@click.option("--beta-header", help="Send this OpenAI-Beta header value verbatim.")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    help="Requests in flight at once.",
)
@click.option(
    "--rpm",
    type=click.FloatRange(min=0, min_open=True),
    help="Run creations per minute (default: adapt to the server).",
)
@click.option(
    "--read-rpm",
    type=click.FloatRange(min=0, min_open=True),
    help="Polls and reconciling reads per minute.",
)
@click.option(
    "--limiter-url",
    metavar="redis://HOST:PORT/DB",
    help="Share --rpm/--read-rpm with every job naming this Redis and limit key "
    "[env BATCHRUN_LIMITER_URL].",
)
@click.option(
    "--limiter-key",
    metavar="NAME",
    help="Name of the shared budget (default: the base URL plus a hash of the API key).",
)
@click.option(
    "--max-retries",
    type=click.IntRange(min=0),
    default=DEFAULT_MAX_RETRIES,
    show_default=True,
    help="Retries per row after errors (rate-limit waits have their own budget).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Seconds per attempt.",
)
@click.option("--wait", is_flag=True, help="Poll each run until it ends.")
@click.option(
    "--wait-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_WAIT_TIMEOUT,
    show_default=True,
    help="Seconds to wait for a run to end.",
)
@click.option("--reply", is_flag=True, help="Also fetch the assistant's reply (implies --wait).")
@click.option("--simulate", is_flag=True, help="Send to a built-in local simulator.")
@click.option(
    "--journal",
    type=click.Path(path_type=Path),
    help="Journal file (default OUTPUT.journal.sqlite).",
)
@click.option("--fresh", is_flag=True, help="Ignore the journal and start over.")
@click.option("--retry-failed", is_flag=True, help="Send rows that failed last time again.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--allow-insecure-http", is_flag=True, help="Allow plain http:// to other hosts.")
def run(**options: Any) -> None:
    """Send every valid row of INPUT and write OUTPUT."""
    from batchrun.jobs import run_file

    ctx = click.get_current_context()
    source, output, quiet = options["input_path"], options["output"], options["quiet"]
    with _errors():
        settings = _settings(ctx, options)
        bar = None if quiet or options["no_progress"] else _progress_bar()
        try:
            report = run_file(source, output, settings, progress=bar, handle_signals=True)
        finally:
            if bar:
                bar.close()
        summary = report.summary
        if not quiet or summary.exit_code:
            click.echo(summary.line(report.output), err=True)
        if summary.aborted:
            click.echo(f"stopped: {summary.aborted}", err=True)
        for note in summary.notes:
            click.echo(f"note: {note}", err=True)
        raise JobDone(int(summary.exit_code))


@cli.command()
@sheet_options
def validate(**options: Any) -> None:
    """Assemble and check every row of INPUT; send nothing."""
    from batchrun.jobs import validate_file

    ctx = click.get_current_context()
    with _errors():
        settings = _settings(ctx, options)
        report = validate_file(options["input_path"], options["output"], settings)
        if not options["quiet"]:
            click.echo(report.summary.line(report.output), err=True)
        sys.exit(int(report.summary.exit_code))


@cli.command()
@click.option("--api-version", type=click.Choice(["v1", "v2"]), default="v2", show_default=True)
def schema(api_version: str) -> None:
    """Print the request-body JSON Schema in force."""
    import json

    from batchrun.schema import load_schema

    click.echo(json.dumps(load_schema(api_version), indent=2))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--api-key", help="Accept only this bearer key (default: any non-empty key).")
@click.option("--strict-threads", is_flag=True, help="Only threads created by POST /threads exist.")
@click.option(
    "--run-seconds",
    type=float,
    default=1.0,
    show_default=True,
    help="Seconds from queued to completed.",
)
@click.option("--rpm", type=float, help="Limit run creation to R per minute (429 beyond).")
@click.option("--read-rpm", type=float, help="Limit GETs to R per minute.")
@click.option("--burst", type=float, help="Token bucket size (default one second's worth).")
@click.option("--latency", "latency_ms", type=float, default=0.0, help="Added latency, ms.")
@click.option("--fail-rate", type=float, default=0.0, help="Share of 500/502/503 answers.")
@click.option("--hang-rate", type=float, default=0.0, help="Share of creates answered late.")
@click.option("--hang-seconds", type=float, default=30.0, show_default=True)
@click.option(
    "--reset-rate", type=float, default=0.0, help="Share of creates whose connection drops."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the fault draws.")
def serve(**options: Any) -> None:
    """Run the local Assistants API simulator in the foreground."""
    from batchrun.simulator import SimulatorConfig, serve_forever

    with _errors():
        try:
            config = SimulatorConfig(**options)
        except (TypeError, ValueError) as error:
            text = str(error)
            for name in options:  # the simulator speaks of fields; the user typed flags
                text = text.replace(name, "--" + name.replace("_", "-").removesuffix("-ms"))
            raise click.UsageError(text) from None
        try:
            serve_forever(config, announce=lambda line: click.echo(line, err=True))
        except OSError as error:
            where = f"{config.host}:{config.port}"
            raise UsageError(f"cannot listen on {where}: {error.strerror or error}") from None


def main(args: Sequence[str] | None = None, prog_name: str = "batchrun") -> None:
    """The ``batchrun`` command: click, with usage errors as one line and exit code 2."""
    code: int | str | None
    done = False
    try:
        code = cli.main(args=args, prog_name=prog_name, standalone_mode=False)
    except SystemExit as stop:  # the commands end with their exit code
        code, done = stop.code, isinstance(stop, JobDone)
    except click.exceptions.NoArgsIsHelpError as error:
        click.echo(error.ctx.get_help() if error.ctx else str(error))
        code = 0
    except click.UsageError as error:
        where = f" (see '{error.ctx.command_path} --help')" if error.ctx else ""
        click.echo(f"batchrun: {error.format_message().rstrip('.')}{where}", err=True)
        code = ExitCode.USAGE
    except click.ClickException as error:
        click.echo(f"batchrun: {error.format_message()}", err=True)
        code = error.exit_code
    except click.Abort:
        click.echo("batchrun: interrupted", err=True)
        code = ExitCode.INTERRUPTED
    if isinstance(code, str):
        click.echo(code, err=True)
        code = 1
    if done and args is None:
        _exit_now(int(code or 0))
    sys.exit(int(code or 0))


class JobDone(SystemExit):
    """A ``run`` job ended with this exit code, its output, journal and HTTP closed."""


def _exit_now(code: int) -> NoReturn:
    """End the process without the interpreter's teardown.

    Run from the command line, a finished ``run`` job has closed its output files, journal
    and connections, and started no other process; all that is left is freeing every row
    object one by one (0.14 s at 50,000 rows). Only the standard streams need flushing.
    (``validate`` exits normally: its worker pool cleans up at exit.)
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def _settings(ctx: click.Context, options: dict[str, Any]) -> Any:
    """One Settings object from flags, --config and the environment (flags win)."""
    from batchrun.config import Settings, environment_settings, read_config_file

    values = dict(options)
    config_file = values.pop("config_file", None)
    for name in ("input_path", "output", "quiet", "no_progress"):
        values.pop(name, None)
    if config_file is not None:
        for name, value in read_config_file(config_file).items():
            source = ctx.get_parameter_source(name)
            if name not in values or source in (None, click.core.ParameterSource.DEFAULT):
                values[name] = value
    if isinstance(values.get("sheet"), str) and values["sheet"].isdigit():
        values["sheet"] = int(values["sheet"])
    valid = set(Settings.__dataclass_fields__)
    return Settings(**environment_settings({k: v for k, v in values.items() if k in valid}))


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Translate library errors into one line and an exit code, once, here."""
    try:
        yield
    except BatchrunError as error:
        click.echo(f"batchrun: {error}", err=True)
        sys.exit(int(error.exit_code))
    except KeyboardInterrupt:
        click.echo("batchrun: interrupted", err=True)
        sys.exit(int(ExitCode.INTERRUPTED))
    except (SystemExit, click.ClickException):
        raise
    except Exception as error:
        from batchrun.config import mask_secrets

        text = mask_secrets(f"{type(error).__name__}: {error}")
        click.echo(f"batchrun: internal error ({text})", err=True)
        sys.exit(int(ExitCode.ROWS_FAILED))


def _progress_bar() -> Any:
    """A tqdm bar on stderr counting finished rows, or None when stderr is no terminal."""
    if not sys.stderr.isatty():
        return None
    from batchrun.progress import ProgressBar

    return ProgressBar()
