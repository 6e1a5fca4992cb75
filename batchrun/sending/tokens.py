"""What a create is charged against a tokens-per-minute budget, counted before it is sent.

    charged_tokens({"model": "gpt-4o-mini", "messages": [...], "max_completion_tokens": 1000})

The service charges a request at admission its prompt tokens plus its maximum output
tokens (``max_output_tokens``, ``max_completion_tokens`` or ``max_tokens``; nothing when it
names none). The prompt is the text in ``messages``, ``input``, ``instructions``,
``additional_instructions`` and ``additional_messages`` (roles and types are not text).

Prompt tokens are counted with the model's tokenizer (tiktoken) when its encoding file is
already in tiktoken's cache (``TIKTOKEN_CACHE_DIR``, else tiktoken's default folder) and
matches the published hash; batchrun never downloads one, so a job never waits on, or
fails for, a download. Otherwise, and for models tiktoken does not know (an Assistants run
names no model), the count is characters/4, rounded up: what OpenAI's own estimate uses.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

if TYPE_CHECKING:
    from tiktoken import Encoding

PROMPT_FIELDS = (
    "messages",
    "input",
    "instructions",
    "additional_instructions",
    "additional_messages",
)
MAX_OUTPUT_FIELDS = ("max_output_tokens", "max_completion_tokens", "max_tokens")
# Keys whose values say what an item is, not what it says.
NOT_TEXT = frozenset({"role", "type"})
CHARACTERS = "characters/4"
# Where tiktoken keeps each encoding's file, and the SHA-256 it must have: tiktoken's own
# published values (a test checks them against the installed tiktoken).
_BLOBS = "https://openaipublic.blob.core.windows.net/encodings/"
ENCODING_FILES = {
    "o200k_base": (
        _BLOBS + "o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
    "cl100k_base": (
        _BLOBS + "cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
    "p50k_base": (
        _BLOBS + "p50k_base.tiktoken",
        "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069",
    ),
    "r50k_base": (
        _BLOBS + "r50k_base.tiktoken",
        "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
    ),
}

LoadEncoding = Callable[[str], "Encoding | None"]


def prompt_texts(body: Mapping[str, Any]) -> list[str]:
    """The pieces of text of a request's prompt, in order."""
    pieces: list[str] = []
    for name in PROMPT_FIELDS:
        _collect(body.get(name), pieces)
    return pieces


def _collect(value: Any, pieces: list[str]) -> None:
    # Exact types first: isinstance() against an ABC costs a microsecond a call, and this
    # runs for every row sent.
    kind = type(value)
    if kind is str:
        pieces.append(value)
    elif kind is dict or (kind is not list and isinstance(value, Mapping)):
        for key, item in value.items():
            if key not in NOT_TEXT:
                _collect(item, pieces)
    elif kind is list:
        for item in value:
            _collect(item, pieces)
    elif isinstance(value, str):
        pieces.append(value)


def max_output_tokens(body: Mapping[str, Any]) -> int:
    """The most output tokens a request asks for, over all its answers (chat's ``n``: the
    maximum counts once an answer, as OpenAI charges it); 0 when it names no maximum."""
    for name in MAX_OUTPUT_FIELDS:
        value = body.get(name)
        if _positive(value):
            answers = body.get("n")
            return value * answers if _positive(answers) else value
    return 0


def _positive(value: object) -> TypeGuard[int]:
    return type(value) is int and value > 0


def tiktoken_cache() -> Path | None:
    """The folder tiktoken caches encoding files in (None: caching turned off)."""
    for name in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if name in os.environ:
            return Path(os.environ[name]) if os.environ[name] else None
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def cached_encoding(name: str) -> Encoding | None:
    """The encoding ``name`` if its file is in tiktoken's cache with the published hash;
    None otherwise (nothing is downloaded)."""
    known = ENCODING_FILES.get(name)
    folder = tiktoken_cache()
    if known is None or folder is None:
        return None
    url, sha256 = known
    try:
        data = (folder / hashlib.sha1(url.encode()).hexdigest()).read_bytes()
    except OSError:
        return None
    if hashlib.sha256(data).hexdigest() != sha256:
        return None  # tiktoken would fetch it again: leave it to characters/4
    import tiktoken

    return tiktoken.get_encoding(name)


def encoding_name(model: str) -> str | None:
    """The tiktoken encoding of ``model``, or None for a model tiktoken does not know."""
    import tiktoken

    try:
        return tiktoken.encoding_name_for_model(model)
    except KeyError:
        return None


class TokenCounter:
    """Counts requests' tokens, each model's tokenizer loaded once (or found missing)."""

    __slots__ = ("_by_model", "_by_name", "_load")

    def __init__(self, load: LoadEncoding = cached_encoding) -> None:
        self._load = load
        self._by_model: dict[str, Encoding | None] = {}
        self._by_name: dict[str, Encoding | None] = {}

    def encoding(self, model: object) -> Encoding | None:
        """The tokenizer of ``model``, or None where characters/4 counts."""
        if not isinstance(model, str) or not model:
            return None
        if model not in self._by_model:
            name = encoding_name(model)
            if name is not None and name not in self._by_name:
                self._by_name[name] = self._load(name)
            self._by_model[model] = None if name is None else self._by_name[name]
        return self._by_model[model]

    def counted_by(self, model: object) -> str:
        """How ``model``'s prompts are counted: ``tiktoken o200k_base`` or ``characters/4``."""
        encoding = self.encoding(model)
        return CHARACTERS if encoding is None else f"tiktoken {encoding.name}"

    def prompt_tokens(self, body: Mapping[str, Any]) -> int:
        """The prompt tokens of a request's body."""
        pieces = prompt_texts(body)
        model = body.get("model")
        encoding = self._by_model.get(model) if type(model) is str else None
        if encoding is None and model not in self._by_model:
            encoding = self.encoding(model)
        if encoding is None:
            return -(-sum(map(len, pieces)) // 4)
        return sum(len(encoding.encode_ordinary(piece)) for piece in pieces)

    def charge(self, body: Mapping[str, Any]) -> int:
        """What the request is charged at admission: prompt plus maximum output tokens."""
        return self.prompt_tokens(body) + max_output_tokens(body)


_COUNTER = TokenCounter()


def charged_tokens(body: Mapping[str, Any]) -> int:
    """What a request is charged at admission, by the process's :class:`TokenCounter`."""
    return _COUNTER.charge(body)


def prompt_tokens(body: Mapping[str, Any]) -> int:
    """A request's prompt tokens, by the process's :class:`TokenCounter`."""
    return _COUNTER.prompt_tokens(body)
