"""What the simulated model says on the live endpoints, and the items a conversation holds.

A reply is a function of the request alone: a SHA-256 of its model, instructions and input
picks eight words and a token count, so the same request always gets the same answer, on
any machine, seeded or not. Markers in the instructions or the input pick other outcomes, as
they do for runs: ``[sim:fail]`` (the response fails), ``[sim:incomplete]`` (it stops at
``max_output_tokens``) and ``[sim:slow]`` (it takes ten times longer).

Input comes as a string or as a list of items; :func:`input_items` turns it into the items a
conversation lists (``{"type": "message", "id", "status", "role", "content": [...]}``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from batchrun.simulator.state import REPLY_WORDS

SLOW_FACTOR = 10.0
FAILURE = {"code": "server_error", "message": "Simulated failure."}
OUTCOME_MARKERS = (("[sim:fail]", "failed"), ("[sim:incomplete]", "incomplete"))

NewId = Callable[[str], str]


def reply(*parts: Any) -> tuple[str, int]:
    """The deterministic reply text and its output token count for a request's ``parts``."""
    digest = hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()
    words = " ".join(REPLY_WORDS[int(char, 16)] for char in digest[:8])
    return f"Simulated reply: {words}.", 10 + int(digest[8:10], 16) % 90


def estimate_tokens(chars: int) -> int:
    """A plausible prompt size: a fixed overhead and about four characters a token."""
    return 10 + chars // 4


def outcome(text: str) -> str:
    """``completed``, or what a marker in ``text`` asks for (``[sim:fail]`` first)."""
    return next((status for marker, status in OUTCOME_MARKERS if marker in text), "completed")


def is_slow(text: str) -> bool:
    """Whether ``text`` asks for a response ten times longer than usual."""
    return "[sim:slow]" in text


def text_of(value: Any) -> str:
    """Every text a value carries (message contents, parts, strings), joined by newlines."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(text for item in value if (text := text_of(item)))
    if isinstance(value, Mapping):
        texts = [text_of(value.get(key)) for key in ("content", "text", "output")]
        return "\n".join(text for text in texts if text)
    return ""


def input_items(value: Any, new_id: NewId) -> list[dict[str, Any]]:
    """A request's ``input`` (or a conversation's ``items``) as the items the API stores."""
    if isinstance(value, str):
        value = [{"role": "user", "content": value}]
    return [_item(item, new_id) for item in value if isinstance(item, Mapping)]


def _item(item: Mapping[str, Any], new_id: NewId) -> dict[str, Any]:
    kind = item.get("type", "message")
    if kind != "message":
        return {"id": item.get("id") or new_id(_ID_PREFIXES.get(kind, "item_")), **item}
    role = item.get("role", "user")
    content = item.get("content")
    part_type = "output_text" if role == "assistant" else "input_text"
    if isinstance(content, str):
        parts: list[Any] = [{"type": part_type, "text": content}]
    else:
        parts = list(content) if isinstance(content, list) else []
    return {
        "type": "message",
        "id": item.get("id") or new_id("msg_"),
        "status": item.get("status", "completed"),
        "role": role,
        "content": parts,
    }


_ID_PREFIXES = {"function_call_output": "fco_", "function_call": "fc_", "reasoning": "rs_"}


def output_message(text: str, new_id: NewId, *, status: str = "completed") -> dict[str, Any]:
    """The assistant's ``message`` output item holding ``text`` as one ``output_text``."""
    return {
        "type": "message",
        "id": new_id("msg_"),
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def chars_of(items: Iterable[Mapping[str, Any]]) -> int:
    """The number of text characters in ``items``."""
    return sum(len(text_of(item)) for item in items)
