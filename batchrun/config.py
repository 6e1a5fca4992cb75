"""Settings: one frozen object built in one place; the only module that reads env vars.

Precedence, highest first: command-line option, ``--config FILE.toml``, environment
(``OPENAI_BASE_URL``, ``BATCHRUN_LIMITER_URL``), built-in default. The API key is only ever
read from the environment (``OPENAI_API_KEY`` or the variable named by ``--api-key-env``)
and is kept out of ``repr``, the settings passthrough file and every message; so is the
password of a ``--limiter-url`` (shown masked).
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from batchrun.endpoints.schema import API_VERSIONS, DEFAULT_API_VERSION
from batchrun.errors import UsageError
from batchrun.masking import MIN_MASKED_KEY, mask_text
from batchrun.masking import mask_key as mask_key
from batchrun.report import human_value
from batchrun.sending.urls import check_base_url, check_limiter_url, mask_url

ENDPOINTS = ("runs", "responses", "chat")
DEFAULT_ENDPOINT = "runs"

DEFAULT_BASE_URL = "https://api.openai.com/v1"
OPENAI_HOST = "api.openai.com"
DEFAULT_CONCURRENCY = 16
DEFAULT_MAX_RETRIES = 6
DEFAULT_TIMEOUT = 60.0
# Creates that generate the answer in the request (chat, foreground responses) may take
# this long before they answer: their default --timeout, as the official SDK's.
GENERATION_TIMEOUT = 600.0
DEFAULT_WAIT_TIMEOUT = 600.0
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
SIMULATOR_KEY = "sk-batchrun-simulator"
SIMULATED_ENDPOINT = "simulator:"
LIMITER_URL_ENV = "BATCHRUN_LIMITER_URL"
# --delimiter takes a character, or the name of one that is awkward to type in a shell.
DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "semicolon": ";", "comma": ",", "pipe": "|"}


@dataclass(frozen=True)
class Settings:
    """Everything a job needs to know, validated; see DESIGN.md "Command line"."""

    endpoint: str = DEFAULT_ENDPOINT
    api_version: str = DEFAULT_API_VERSION
    beta_header: str | None = None
    base_url: str = DEFAULT_BASE_URL
    api_key: str | None = field(default=None, repr=False)
    api_key_env: str = DEFAULT_API_KEY_ENV
    organization: str | None = None
    project: str | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    rpm: float | None = None
    read_rpm: float | None = None
    # Tokens per minute (DESIGN.md "Account limits"); without rpm/tpm, the server's limits.
    tpm: float | None = None
    max_retries: int = DEFAULT_MAX_RETRIES
    # Seconds per attempt; None: the endpoint's default (see default_timeout).
    timeout: float | None = None
    wait: bool = False
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT
    reply: bool = False
    simulate: bool = False
    journal: Path | None = None
    fresh: bool = False
    retry_failed: bool = False
    limit: int | None = None
    prefix: str = ""
    run_tag: bool = True
    allow_insecure_http: bool = False
    escape_formulas: bool = True
    sheet: str | int | None = None
    # Reading a sheet made otherwise: a CSV's separator and encoding, a table's header row.
    delimiter: str | None = None
    encoding: str | None = None
    header_row: int | None = None
    columns: Mapping[str, str] = field(default_factory=dict)
    set_values: Mapping[str, str] = field(default_factory=dict)
    # Shared rate limit (DESIGN.md "Shared rate limit"); the URL may hold a password.
    limiter_url: str | None = field(default=None, repr=False)
    limiter_key: str | None = None
    # The Batch API (DESIGN.md "Batch API"): rows go as batch files; --no-wait checks once.
    batch: bool = False
    no_wait: bool = False
    # The Batch API's enqueued-token limit (DESIGN.md "Account limits").
    batch_queue_tokens: int | None = None
    # How the user set a value when not by its flag: name -> "$OPENAI_BASE_URL" (the
    # environment) or "job.toml: sheet" (a config key), so that a message names it.
    sources: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def named(self, name: str) -> str:
        """How the user set option ``name``: its flag, or the variable or key it came from."""
        return self.sources.get(name, "--" + name.replace("_", "-"))

    def column_named(self, key: str) -> str:
        """How the user set the column of body field ``key``: ``--column KEY``, or the
        config file's ``[columns]`` key."""
        return self.sources.get(f"columns.{key}", f"--column {key}")

    def __post_init__(self) -> None:
        if self.endpoint not in ENDPOINTS:
            raise UsageError(f"--endpoint {self.endpoint}: use one of {', '.join(ENDPOINTS)}")
        if self.timeout is None:
            object.__setattr__(self, "timeout", default_timeout(self.endpoint))
        if self.api_version not in API_VERSIONS:
            raise UsageError(f"--api-version {self.api_version}: use v1 or v2")
        for name in ("concurrency", "max_retries"):
            minimum = 1 if name == "concurrency" else 0
            if getattr(self, name) < minimum:
                raise UsageError(f"--{name.replace('_', '-')} must be at least {minimum}")
        for name in ("rpm", "read_rpm", "tpm", "timeout", "wait_timeout"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be greater than 0")
        if self.beta_header is not None:
            object.__setattr__(self, "beta_header", _header_safe("--beta-header", self.beta_header))
        if self.limit is not None and self.limit < 0:
            raise UsageError("--limit must be 0 or more")
        self._check_reading()
        self._check_batch()
        if self.reply and not self.wait:
            object.__setattr__(self, "wait", True)  # --reply implies --wait
        if self.limiter_url is not None:
            check_limiter_url(self.limiter_url, self.named("limiter_url"))
            if self.rpm is None and self.tpm is None:
                raise UsageError(
                    f"{self.named('limiter_url')} shares the --rpm/--tpm budgets between jobs:"
                    " set --rpm or --tpm too"
                )
        if self.limiter_key is not None and not self.limiter_key.strip():
            raise UsageError("--limiter-key must not be empty")

    def _check_reading(self) -> None:
        if self.delimiter is not None:
            named = DELIMITER_NAMES.get(self.delimiter.casefold(), self.delimiter)
            if len(named) != 1 or named in ('"', "\r", "\n"):
                raise UsageError(
                    f"--delimiter {self.delimiter!r}: give one character, such as ';' or tab"
                )
            object.__setattr__(self, "delimiter", named)
        if self.encoding is not None:
            import codecs

            try:
                codecs.lookup(self.encoding)
            except LookupError:
                raise UsageError(
                    f"--encoding {self.encoding!r} is not an encoding Python knows"
                    " (e.g. cp1252, latin-1, utf-16)"
                ) from None
        if self.header_row is not None and self.header_row < 1:
            raise UsageError("--header-row must be at least 1 (rows count from 1)")

    def _check_batch(self) -> None:
        if self.no_wait and not self.batch:
            raise UsageError("--no-wait applies to --batch jobs only")
        if self.batch_queue_tokens is not None:
            if not self.batch:
                raise UsageError("--batch-queue-tokens applies to --batch jobs only")
            if self.batch_queue_tokens < 1:
                raise UsageError("--batch-queue-tokens must be at least 1")
        if not self.batch:
            return
        if self.endpoint == "runs":
            raise UsageError(
                "--batch: the Batch API never takes Assistants runs; "
                "use --endpoint responses or --endpoint chat"
            )
        for name in ("wait", "reply"):
            if getattr(self, name):
                raise UsageError(
                    f"--{name} does not apply to --batch: a batch job follows its batches "
                    "until they end anyway (--no-wait checks once and exits)"
                )

    @property
    def attempt_timeout(self) -> float:
        """Seconds per attempt (``--timeout``, or the endpoint's default)."""
        return self.timeout or default_timeout(self.endpoint)

    @property
    def beta(self) -> str:
        """The ``OpenAI-Beta`` header value sent."""
        return self.beta_header or f"assistants={self.api_version}"

    @property
    def schema(self) -> str:
        """The name of the request-body schema in force: the Assistants version for ``runs``,
        else the endpoint's own (see :func:`batchrun.endpoints.schema.load_schema`)."""
        return self.api_version if self.endpoint == "runs" else self.endpoint

    @property
    def strict_fields(self) -> bool:
        """Whether the server refuses body fields OpenAI's schema does not name: OpenAI
        itself and the built-in simulator do; a compatible server may take its own
        (a gateway's ``top_k``), so elsewhere such fields are sent."""
        if self.simulate:
            return True
        host = urllib.parse.urlsplit(self.base_url).hostname or ""
        return host == OPENAI_HOST

    @property
    def destination(self) -> str:
        """What the journal remembers as "where rows were sent": the endpoint kind (for
        the live endpoints) and the base URL, or the simulator."""
        where = SIMULATED_ENDPOINT if self.simulate else _same_server(self.base_url)
        if self.batch:
            # Rows sent in batches are a job of their own: its rows wait in batches, which a
            # direct job of the same input must neither follow nor send again unasked.
            return f"{self.endpoint} batch {where}"
        return where if self.endpoint == "runs" else f"{self.endpoint} {where}"

    def masked(self, text: str) -> str:
        """``text`` with the job's API key masked wherever it occurs (see :func:`mask_text`)."""
        return mask_text(text, self.api_key)

    def check_sending(self) -> None:
        """Refuse to send without a key, or where the key could leak; called before any
        request."""
        if self.simulate:
            return
        if not self.api_key:
            raise UsageError(
                f"no API key: set the environment variable {self.api_key_env} "
                "(or pass --simulate to try the built-in simulator)"
            )
        check_base_url(
            self.base_url,
            allow_insecure_http=self.allow_insecure_http,
            label=self.named("base_url"),
        )

    def with_base_url(self, base_url: str) -> Settings:
        """A copy sending to ``base_url`` (used once the simulator's port is known)."""
        return replace(self, base_url=base_url)

    def public(self) -> dict[str, Any]:
        """The settings worth recording beside an output: everything but the key."""
        out: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name in ("api_key", "sources") or value is None:
                continue
            if item.name == "limiter_url":
                value = mask_url(value)
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            out[item.name] = value
        if self.simulate:
            out["base_url"] = "built-in simulator (--simulate)"
        return out


def applied_settings(
    settings: Settings, mode: str, *, csv_output: bool = False, xlsx_input: bool = False
) -> list[tuple[str, object]]:
    """The settings that shaped this job, as option names and human values, for the
    summary sheet: what did not apply (sending options for ``validate``, ``--wait-timeout``
    without ``--wait``, formula escaping outside CSV) is left out, and so is the key."""
    runs = settings.endpoint == "runs"
    rows: list[tuple[str, object]] = [("--endpoint", settings.endpoint)]
    if runs:
        rows.append(("--api-version", settings.api_version))
    if xlsx_input and settings.sheet is not None:
        rows.append(("--sheet", settings.sheet))
    rows += [("--delimiter", settings.delimiter), ("--encoding", settings.encoding)]
    rows += [("--header-row", settings.header_row)]
    rows += [("--column", settings.columns), ("--set", settings.set_values)]
    rows += [("--limit", settings.limit), ("--prefix", settings.prefix)]
    if not settings.run_tag:
        rows.append(("--no-run-tag", True))
    if csv_output and not settings.escape_formulas:
        rows.append(("--no-escape-formulas", True))
    if mode == "run":
        if settings.simulate:
            rows.append(("--simulate", True))
        else:
            rows += [("--base-url", settings.base_url), ("--api-key-env", settings.api_key_env)]
            rows += [("OpenAI-Organization", settings.organization)]
            rows += [("OpenAI-Project", settings.project)]
        if runs:
            rows += [("OpenAI-Beta", settings.beta)]
        rows += [("--concurrency", settings.concurrency), ("--rpm", settings.rpm)]
        rows += [("--tpm", settings.tpm)]
        rows += [("--read-rpm", settings.read_rpm), ("--max-retries", settings.max_retries)]
        rows += [("--timeout", settings.timeout)]
        if settings.wait:
            rows += [("--wait", True), ("--wait-timeout", settings.wait_timeout)]
            rows += [("--reply", settings.reply)]
        rows += [("--batch", settings.batch), ("--no-wait", settings.no_wait)]
        rows += [("--batch-queue-tokens", settings.batch_queue_tokens)]
        rows += [("--journal", settings.journal), ("--fresh", settings.fresh)]
        rows += [("--retry-failed", settings.retry_failed)]
        rows += [("--allow-insecure-http", settings.allow_insecure_http)]
    return [
        (name, human_value(value))
        for name, value in rows
        if value not in (None, "", False) and not (isinstance(value, Mapping) and not value)
    ]


def default_timeout(endpoint: str) -> float:
    """The default --timeout of ``endpoint``: long enough for a generation where the answer
    is made in the request (chat, responses in the foreground; a background response
    answers at once anyway), so a normal answer is never an ambiguous failure."""
    return DEFAULT_TIMEOUT if endpoint == "runs" else GENERATION_TIMEOUT


def environment_settings(
    options: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Fill what only the environment provides: key, base URL fallback, org and project."""
    env = os.environ if environ is None else environ
    merged = dict(options)
    sources = dict(merged.get("sources") or {})
    if merged.get("base_url") is None:
        merged["base_url"] = env.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        if env.get("OPENAI_BASE_URL"):
            sources["base_url"] = "$OPENAI_BASE_URL"
    key_env = merged.get("api_key_env") or DEFAULT_API_KEY_ENV
    _KEY_VARIABLES.add(key_env)
    if merged.get("simulate"):
        merged["api_key"] = SIMULATOR_KEY
    else:
        merged["api_key"] = _header_safe(key_env, env.get(key_env)) or None
    for name, variable in (("organization", "OPENAI_ORG_ID"), ("project", "OPENAI_PROJECT_ID")):
        if merged.get(name) is None:
            merged[name] = _header_safe(variable, env.get(variable)) or None
    if merged.get("limiter_url") is None:
        merged["limiter_url"] = env.get(LIMITER_URL_ENV, "").strip() or None
        if merged["limiter_url"] is not None:
            sources["limiter_url"] = f"${LIMITER_URL_ENV}"
    merged["sources"] = sources
    return merged


def _header_safe(variable: str, value: str | None) -> str | None:
    """A value that goes into an HTTP header: surrounding spaces trimmed, no control chars.

    A key pasted with a trailing newline is common; inside the value, a control character
    would corrupt the header, so it is refused naming the variable, never the value.
    """
    if value is None:
        return None
    value = value.strip()
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise UsageError(f"${variable} holds a control character (a line break?); fix its value")
    return value


# Variables a key was read from, so an unexpected error message can be scrubbed of it.
_KEY_VARIABLES: set[str] = {DEFAULT_API_KEY_ENV}


def _same_server(base_url: str) -> str:
    """``HTTP://Host:8000/v1/`` -> ``http://host:8000/v1``: a base URL as the journal
    knows it, the scheme and host in the case that does not matter (the path's does)."""
    scheme, sep, rest = base_url.rstrip("/").partition("://")
    if not sep:
        return base_url.rstrip("/")
    host, slash, path = rest.partition("/")
    return f"{scheme.lower()}://{host.lower()}{slash}{path}"


def mask_secrets(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``text`` with every API key from the environment masked."""
    env = os.environ if environ is None else environ
    for name, value in env.items():
        secret = name in _KEY_VARIABLES or name.upper().endswith(("API_KEY", "TOKEN", "SECRET"))
        if secret and len(value.strip()) >= MIN_MASKED_KEY and value.strip() in text:
            text = text.replace(value.strip(), "***")
    return text
