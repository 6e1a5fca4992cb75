"""Settings: one frozen object built in one place; the only module that reads env vars.

Precedence, highest first: command-line option, ``--config FILE.toml``, environment
(``OPENAI_BASE_URL``, ``BATCHRUN_LIMITER_URL``), built-in default. The API key is only ever
read from the environment (``OPENAI_API_KEY`` or the variable named by ``--api-key-env``)
and is kept out of ``repr``, the settings passthrough file and every message; so is the
password of a ``--limiter-url`` (shown masked).
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from batchrun.errors import UsageError
from batchrun.schema import API_VERSIONS, DEFAULT_API_VERSION

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_CONCURRENCY = 16
DEFAULT_MAX_RETRIES = 6
DEFAULT_TIMEOUT = 60.0
DEFAULT_WAIT_TIMEOUT = 600.0
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
SIMULATOR_KEY = "sk-batchrun-simulator"
SIMULATED_ENDPOINT = "simulator:"
LIMITER_URL_ENV = "BATCHRUN_LIMITER_URL"
LIMITER_SCHEMES = ("redis", "rediss", "unix")


@dataclass(frozen=True)
class Settings:
    """Everything a job needs to know, validated; see DESIGN.md "Command line"."""

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
    max_retries: int = DEFAULT_MAX_RETRIES
    timeout: float = DEFAULT_TIMEOUT
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
    columns: Mapping[str, str] = field(default_factory=dict)
    set_values: Mapping[str, str] = field(default_factory=dict)
    # Shared rate limit (DESIGN.md "Shared rate limit"); the URL may hold a password.
    limiter_url: str | None = field(default=None, repr=False)
    limiter_key: str | None = None

    def __post_init__(self) -> None:
        if self.api_version not in API_VERSIONS:
            raise UsageError(f"--api-version {self.api_version}: use v1 or v2")
        for name in ("concurrency", "max_retries"):
            minimum = 1 if name == "concurrency" else 0
            if getattr(self, name) < minimum:
                raise UsageError(f"--{name.replace('_', '-')} must be at least {minimum}")
        for name in ("rpm", "read_rpm", "timeout", "wait_timeout"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be greater than 0")
        if self.beta_header is not None:
            object.__setattr__(self, "beta_header", _header_safe("--beta-header", self.beta_header))
        if self.limit is not None and self.limit < 0:
            raise UsageError("--limit must be 0 or more")
        if self.reply and not self.wait:
            object.__setattr__(self, "wait", True)  # --reply implies --wait
        if self.limiter_url is not None:
            check_limiter_url(self.limiter_url)
            if self.rpm is None:
                raise UsageError(
                    "--limiter-url shares the --rpm budget between jobs: set --rpm too"
                )
        if self.limiter_key is not None and not self.limiter_key.strip():
            raise UsageError("--limiter-key must not be empty")

    @property
    def beta(self) -> str:
        """The ``OpenAI-Beta`` header value sent."""
        return self.beta_header or f"assistants={self.api_version}"

    @property
    def endpoint(self) -> str:
        """What the journal remembers as "where rows were sent"."""
        return SIMULATED_ENDPOINT if self.simulate else self.base_url.rstrip("/")

    def check_sending(self) -> None:
        """Refuse to send where the key could leak; called before any request."""
        if not self.simulate:
            check_base_url(self.base_url, allow_insecure_http=self.allow_insecure_http)

    def with_base_url(self, base_url: str) -> Settings:
        """A copy sending to ``base_url`` (used once the simulator's port is known)."""
        return replace(self, base_url=base_url)

    def public(self) -> dict[str, Any]:
        """The settings worth recording beside an output: everything but the key."""
        out: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "api_key" or value is None:
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


def check_base_url(url: str, *, allow_insecure_http: bool) -> None:
    """Refuse URLs that would leak the key: plain http to a non-loopback host.

    Parsed with yarl, the parser aiohttp sends with, so the host checked here is the host
    the key would go to.
    """
    from yarl import URL

    try:
        parts = URL(url)
    except (ValueError, TypeError):
        raise UsageError(f"--base-url {url!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.host:
        raise UsageError(f"--base-url {url!r} is not an http(s) URL")
    if parts.scheme == "http" and not allow_insecure_http and not is_loopback(parts.host):
        raise UsageError(
            f"--base-url {url}: plain http would send the API key unencrypted to "
            f"{parts.host}; use https, or pass --allow-insecure-http"
        )
    if parts.raw_query_string or parts.raw_fragment:
        raise UsageError(
            f"--base-url {url!r}: a base URL cannot carry a query or fragment "
            "(request paths are appended to it)"
        )


def check_limiter_url(url: str) -> None:
    """Refuse a ``--limiter-url`` that is not a Redis URL (messages never show a password)."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in LIMITER_SCHEMES:
        raise UsageError(
            f"--limiter-url {mask_url(url)}: use redis://HOST:PORT/DB "
            "(or rediss:// for TLS, unix:///path/to/socket)"
        )


def mask_url(url: str) -> str:
    """``url`` with its password, if any, shown as ``***``."""
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:
        return "(unparsable URL)"
    if not password:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine (localhost or a loopback address)."""
    if host.casefold() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def environment_settings(
    options: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Fill what only the environment provides: key, base URL fallback, org and project."""
    env = os.environ if environ is None else environ
    merged = dict(options)
    if merged.get("base_url") is None:
        merged["base_url"] = env.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
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


def mask_secrets(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``text`` with every API key from the environment masked."""
    env = os.environ if environ is None else environ
    for name, value in env.items():
        secret = name in _KEY_VARIABLES or name.upper().endswith(("API_KEY", "TOKEN", "SECRET"))
        if secret and len(value.strip()) >= 8 and value.strip() in text:
            text = text.replace(value.strip(), "***")
    return text


def read_config_file(path: Path) -> dict[str, Any]:
    """Options from a TOML file: option names as keys (dashes or underscores), plus
    ``[columns]`` and ``[set]`` tables. Unknown keys are an error, not a silent no-op."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--config {path}: no such file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise UsageError(f"--config {path}: {error}") from None
    known = {item.name for item in fields(Settings)} - {"api_key"}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = {"set": "set_values"}.get(key, key.replace("-", "_"))
        if name not in known:
            raise UsageError(f"--config {path}: unknown setting {key!r}")
        expected = CONFIG_TYPES.get(name)
        if expected and not _is_a(value, expected):
            wanted = " or ".join(t.__name__.replace("str", "text") for t in expected)
            raise UsageError(f"--config {path}: {key} must be {wanted}, not {value!r}")
        if name in ("columns", "set_values"):
            if not isinstance(value, dict):
                raise UsageError(f"--config {path}: [{key}] must be a table")
            value = {str(k): _toml_text(v) for k, v in value.items()}
        elif name == "journal":
            value = Path(value)
        out[name] = value
    return out


# What each --config key must hold (TOML types); tables are checked where they are read.
CONFIG_TYPES: dict[str, tuple[type, ...]] = {
    "api_version": (str,),
    "beta_header": (str,),
    "base_url": (str,),
    "api_key_env": (str,),
    "organization": (str,),
    "project": (str,),
    "concurrency": (int,),
    "rpm": (int, float),
    "read_rpm": (int, float),
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
    "limiter_url": (str,),
    "limiter_key": (str,),
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
    # Job-specific or environment-sourced values would surprise the next job.
    for name in ("fresh", "journal", "limit", "organization", "project"):
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
