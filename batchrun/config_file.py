"""The ``--config FILE.toml`` input port and the ``<output stem>.settings.toml``
passthrough port: settings as a file, read and written.

Keys are the long option names (dashes or underscores, or the negative flags such as
``no-run-tag``), plus ``[columns]`` and ``[set]`` tables. A problem names the key as written
and the file, never a flag.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

from batchrun.config import LIMITER_URL_ENV, Settings
from batchrun.errors import UsageError

# Options that describe one run rather than the job: never in the settings passthrough.
ONE_SHOT_SETTINGS = ("fresh", "retry_failed", "limit", "journal", "simulate")


def read_config_file(path: Path, spelled: dict[str, str] | None = None) -> dict[str, Any]:
    """Options from a TOML file: option names as keys (dashes or underscores), plus
    ``[columns]`` and ``[set]`` tables. Keys spelled as the flags (``no-run-tag = true``)
    work too; ``quiet`` and ``no-progress`` are kept for the command line. Unknown keys
    and bad values are errors naming the key and the file, never a flag; so are two keys
    that set one option (``no-run-tag`` and ``run_tag``). ``spelled`` receives each
    option's key as written."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--config {path}: no such file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise UsageError(f"--config {path}: {error}") from None
    known = {item.name for item in fields(Settings)} - {"api_key", "sources"}
    out: dict[str, Any] = {}
    keys: dict[str, str] = {} if spelled is None else spelled
    for key, value in data.items():
        name = {"set": "set_values", "column": "columns", "set_values": "set_values"}.get(
            key, key.replace("-", "_")
        )
        if name in NEGATED_FLAGS:  # no-run-tag = true means run_tag = false
            if not isinstance(value, bool):
                raise UsageError(f"{path}: {key} must be true or false, not {value!r}")
            name, value = NEGATED_FLAGS[name], not value
        if name in keys:
            raise UsageError(f"{path}: {keys[name]} and {key} both set one option; keep one")
        keys[name] = key
        if name in CLI_ONLY_SETTINGS:
            if not isinstance(value, bool):
                raise UsageError(f"{path}: {key} must be true or false, not {value!r}")
            out[name] = value
            continue
        if name not in known:
            names = sorted({*known, *NEGATED_FLAGS, *CLI_ONLY_SETTINGS} - {"set_values"})
            close = difflib.get_close_matches(name, [*names, "set"], n=1)
            hint = f"; did you mean {close[0].replace('_', '-')!r}?" if close else ""
            raise UsageError(f"{path}: unknown setting {key!r}{hint}")
        expected = CONFIG_TYPES.get(name)
        if expected and not _is_a(value, expected):
            wanted = " or ".join(t.__name__.replace("str", "text") for t in expected)
            raise UsageError(f"{path}: {key} must be {wanted}, not {value!r}")
        if name in ("columns", "set_values"):
            if not isinstance(value, dict):
                raise UsageError(f"{path}: [{key}] must be a table")
            value = {str(k): _toml_text(v) for k, v in value.items()}
        elif name == "journal":
            value = Path(value)
        out[name] = value
    _check_values(path, out, {key.replace("-", "_"): key for key in data})
    return out


def _check_values(path: Path, values: dict[str, Any], spelled: dict[str, str]) -> None:
    """Refuse bad values (``concurrency = 0``) naming the key as written in the file."""
    try:
        Settings(**{k: v for k, v in values.items() if k not in CLI_ONLY_SETTINGS})
    except UsageError as error:
        text = str(error)
        for name in values:
            flag = "--" + name.replace("_", "-")
            key = spelled.get(name, name.replace("_", "-"))
            text = re.sub(re.escape(flag) + r"\b(?!-)", key, text)
        raise UsageError(f"{path}: {text}") from None


# Keys spelled as the negative flags, and what they set to the opposite value.
NEGATED_FLAGS = {"no_run_tag": "run_tag", "no_escape_formulas": "escape_formulas"}
# Command-line presentation options a config file may hold; the CLI reads them itself.
CLI_ONLY_SETTINGS = ("quiet", "no_progress")


# What each --config key must hold (TOML types); tables are checked where they are read.
CONFIG_TYPES: dict[str, tuple[type, ...]] = {
    "endpoint": (str,),
    "api_version": (str,),
    "beta_header": (str,),
    "base_url": (str,),
    "api_key_env": (str,),
    "organization": (str,),
    "project": (str,),
    "concurrency": (int,),
    "rpm": (int, float),
    "read_rpm": (int, float),
    "tpm": (int, float),
    "max_retries": (int,),
    "timeout": (int, float),
    "wait": (bool,),
    "wait_timeout": (int, float),
    "reply": (bool,),
    "simulate": (bool,),
    "journal": (str,),
    "fresh": (bool,),
    "retry_failed": (bool,),
    "limit": (int,),
    "prefix": (str,),
    "run_tag": (bool,),
    "allow_insecure_http": (bool,),
    "escape_formulas": (bool,),
    "sheet": (str, int),
    "delimiter": (str,),
    "encoding": (str,),
    "header_row": (int,),
    "limiter_url": (str,),
    "limiter_key": (str,),
    "batch": (bool,),
    "no_wait": (bool,),
    "batch_queue_tokens": (int,),
}


def _is_a(value: Any, expected: tuple[type, ...]) -> bool:
    # bool is an int in Python, but `concurrency = true` is not a number in a config file.
    if isinstance(value, bool):
        return bool in expected
    return isinstance(value, expected)


def _toml_text(value: Any) -> str:
    """``[set]`` values are cell text: TOML numbers and booleans become their text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        import orjson

        return orjson.dumps(value).decode()
    return str(value)


def settings_toml(settings: Settings) -> str:
    """The ``<output stem>.settings.toml`` passthrough: feed it back with ``--config``."""
    import tomli_w

    public = settings.public()
    # One-shot and test options (and environment-sourced values) describe this run, not
    # the job: fed back with --config they would surprise the next one.
    for name in (*ONE_SHOT_SETTINGS, "organization", "project"):
        public.pop(name, None)
    if settings.simulate:
        public.pop("base_url", None)
    header = "# Settings of this batchrun job (never the API key). Reuse: --config THIS_FILE\n"
    if settings.limiter_url is not None and public.get("limiter_url") != settings.limiter_url:
        # A masked password would not connect: leave the URL to the environment instead.
        public.pop("limiter_url")
        header += f"# limiter_url holds a password: set ${LIMITER_URL_ENV} for the next job\n"
    columns = public.pop("columns", {})
    set_values = public.pop("set_values", {})
    document: dict[str, Any] = dict(public)
    if columns:
        document["columns"] = columns
    if set_values:
        document["set"] = set_values
    return header + tomli_w.dumps(document)
