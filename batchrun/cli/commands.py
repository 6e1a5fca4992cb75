"""The command line: a thin shell over the library, and the only module that prints.

Library errors become one line on stderr and an exit code (see :class:`ExitCode`).
Heavy modules (pandas, aiohttp) are imported inside the commands, so ``--help`` is quick.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import click

from batchrun import __version__
from batchrun.cli.help import (
    RUN_EPILOG,
    RUN_GROUPS,
    SERVE_EPILOG,
    SERVE_GROUPS,
    VALIDATE_EPILOG,
    GroupedCommand,
)
from batchrun.cli.options import (
    TRACEBACK_KEY,
    batch_jsonl_option,
    endpoint_option,
    run_options,
    serve_options,
    sheet_options,
    traceback_option,
)
from batchrun.errors import BatchrunError, ExitCode, UsageError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="batchrun")
@traceback_option
def cli() -> None:
    """Send a spreadsheet of OpenAI Assistants "Create Run" requests, safely.

    Each row holds a thread id and Create Run fields; batchrun validates every row,
    sends the valid ones concurrently under a rate limit, never creates a run twice,
    and writes the sheet back with status, body and error for every row.
    """


@cli.command(cls=GroupedCommand, groups=RUN_GROUPS, epilog=RUN_EPILOG)
@sheet_options
@run_options
def run(**options: Any) -> None:
    """Send every valid row of INPUT and write OUTPUT."""
    from batchrun.jobs import run_file

    ctx = click.get_current_context()
    source, output = options["input_path"], options["output"]
    with _errors():
        settings = _settings(ctx, options)
        quiet = options["quiet"]
        bar = None if quiet or options["no_progress"] else _progress_bar()
        told: list[str] = []
        try:
            report = run_file(
                source,
                output,
                settings,
                progress=bar,
                handle_signals=True,
                notice=_notice(told),
            )
        finally:
            if bar:
                bar.close()
        summary = report.summary
        # The summary line comes last (DESIGN: "one summary line on stderr at the end"),
        # what explains it just before.
        if summary.aborted:
            click.echo(f"stopped: {_as_set(summary.aborted)}", err=True)
        for note in summary.notes:
            if note not in told:
                click.echo(f"note: {note}", err=True)
        if summary.limits and summary.sent and not quiet:  # what paced this run's sends
            click.echo(f"limits: {summary.limits}", err=True)
        if not quiet or summary.exit_code:
            click.echo(summary.line(report.output), err=True)
        raise SystemExit(int(summary.exit_code))


@cli.command(cls=GroupedCommand, groups=RUN_GROUPS, epilog=VALIDATE_EPILOG)
@sheet_options
@batch_jsonl_option
def validate(**options: Any) -> None:
    """Assemble and check every row of INPUT; send nothing."""
    from batchrun.jobs import validate_file

    ctx = click.get_current_context()
    with _errors():
        batch_jsonl = options.pop("batch_jsonl")
        settings = _settings(ctx, options)
        report = validate_file(
            options["input_path"],
            options["output"],
            settings,
            batch_jsonl=batch_jsonl,
            notice=_notice([]),
        )
        if report.summary.estimate and not options["quiet"]:
            click.echo(f"tokens: {report.summary.estimate}", err=True)
        if not options["quiet"] or report.summary.exit_code:  # the summary line last
            click.echo(report.summary.line(report.output), err=True)
        sys.exit(int(report.summary.exit_code))


@cli.command()
@endpoint_option
@click.option(
    "--api-version", type=click.Choice(["v1", "v2"]), help="Of --endpoint runs.  [default: v2]"
)
def schema(endpoint: str, api_version: str | None) -> None:
    """Print the request-body JSON Schema in force (of --endpoint; for runs, --api-version)."""
    import json

    from batchrun.endpoints.schema import load_schema

    if endpoint != "runs" and api_version is not None:
        raise click.UsageError(
            f"--api-version applies to --endpoint runs (the Assistants API), not {endpoint}"
        )
    name = (api_version or "v2") if endpoint == "runs" else endpoint
    click.echo(json.dumps(load_schema(name), indent=2))


@cli.command(cls=GroupedCommand, groups=SERVE_GROUPS, epilog=SERVE_EPILOG)
@serve_options
def serve(**options: Any) -> None:
    """Run the local OpenAI API simulator (Assistants, Responses, Chat, Batch) in the foreground."""
    from batchrun.simulator import SimulatorConfig, serve_forever

    with _errors():
        try:
            config = SimulatorConfig(**options)
        except (TypeError, ValueError) as error:
            raise click.UsageError(_flag_words(str(error), options)) from None
        try:
            serve_forever(config, announce=lambda line: click.echo(line, err=True))
        except OSError as error:
            where = f"{config.host}:{config.port}"
            raise UsageError(f"cannot listen on {where}: {error.strerror or error}") from None


def _flag_words(text: str, options: dict[str, Any]) -> str:
    """A simulator message, speaking of fields (``read_rpm``), in the flags the user typed
    (``--read-rpm``). Whole words only, so ``rpm`` never rewrites ``read_rpm``."""
    flags = {name: "--" + name.replace("_", "-").removesuffix("-ms") for name in options}
    pattern = re.compile(
        r"\b(" + "|".join(sorted(map(re.escape, flags), key=len, reverse=True)) + r")\b"
    )
    return pattern.sub(lambda match: flags[match.group(1)], text)


def main(args: Sequence[str] | None = None, prog_name: str = "batchrun") -> None:
    """The ``batchrun`` command: click, with usage errors as one line and exit code 2."""
    code: int | str | None
    try:
        code = cli.main(args=args, prog_name=prog_name, standalone_mode=False)
    except SystemExit as stop:  # the commands end with their exit code
        code = stop.code
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
    sys.exit(int(code or 0))


def _settings(ctx: click.Context, options: dict[str, Any]) -> Any:
    """One Settings object from flags, --config and the environment (flags win).

    ``[columns]`` and ``[set]`` merge with ``--column``/``--set`` key by key; ``quiet`` and
    ``no-progress`` from the file are written back into ``options`` for the command.
    """
    from batchrun.config import Settings, environment_settings
    from batchrun.config_file import CLI_ONLY_SETTINGS, read_config_file

    values = dict(options)
    config_file = values.pop("config_file", None)
    for name in ("input_path", "output", "quiet", "no_progress"):
        values.pop(name, None)
    sources: dict[str, str] = {}
    if config_file is not None:
        spelled: dict[str, str] = {}
        for name, value in read_config_file(config_file, spelled).items():
            source = ctx.get_parameter_source(name)
            given = source not in (None, click.core.ParameterSource.DEFAULT)
            if name in ("columns", "set_values"):
                flagged = values.get(name) or {}
                values[name] = {**value, **flagged}
                if name == "columns":
                    for key in value.keys() - flagged.keys():
                        sources[f"columns.{key}"] = f"{config_file}: [columns] {key}"
            elif name in CLI_ONLY_SETTINGS:
                if not given:
                    options[name] = value
            elif not given or name not in values:
                values[name] = value
                sources[name] = f"{config_file}: {spelled[name]}"
    valid = set(Settings.__dataclass_fields__) - {"sources"}
    chosen = {k: v for k, v in values.items() if k in valid}
    settings = Settings(**environment_settings({**chosen, "sources": sources}))
    # Later messages (the sheet, the server) name a value set in the file or the
    # environment as the user set it, not by a flag they did not type.
    ctx.meta[SOURCES_KEY] = settings.sources
    return settings


SOURCES_KEY = "batchrun.sources"


def _as_set(text: str) -> str:
    """``text`` with the flags of options the user set elsewhere named as they were set."""
    ctx = click.get_current_context(silent=True)
    sources: dict[str, str] = ctx.meta.get(SOURCES_KEY, {}) if ctx is not None else {}
    for name, label in sources.items():
        flag = "--" + name.replace("_", "-")
        text = re.sub(re.escape(flag) + r"\b(?!-)", label.replace("\\", r"\\"), text)
    return text


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Translate library errors into one line and an exit code, once, here."""
    try:
        yield
    except BatchrunError as error:
        click.echo(f"batchrun: {_as_set(str(error))}", err=True)
        sys.exit(int(error.exit_code))
    except KeyboardInterrupt:
        click.echo("batchrun: interrupted", err=True)
        sys.exit(int(ExitCode.INTERRUPTED))
    except (SystemExit, click.ClickException):
        raise
    except Exception as error:
        from batchrun.config import mask_secrets

        text = mask_secrets(f"{type(error).__name__}: {error}")
        ctx = click.get_current_context(silent=True)
        if ctx is not None and ctx.meta.get(TRACEBACK_KEY):
            import traceback

            click.echo(mask_secrets("".join(traceback.format_exc())).rstrip(), err=True)
        else:
            text += "; --traceback shows where"
        click.echo(f"batchrun: internal error ({text})", err=True)
        sys.exit(int(ExitCode.INTERNAL))


def _notice(told: list[str]) -> Callable[[str], None]:
    """Print a note about the sheet as soon as the job has one (before sending), and
    remember it so that it is not printed again before the summary line."""

    def notice(note: str) -> None:
        told.append(note)
        click.echo(f"note: {note}", err=True)

    return notice


def _progress_bar() -> Any:
    """A tqdm bar on stderr counting finished rows, or None when stderr is no terminal."""
    if not sys.stderr.isatty():
        return None
    from batchrun.cli.progress import ProgressBar

    return ProgressBar()
