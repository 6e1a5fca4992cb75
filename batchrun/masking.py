"""The API key masked in text and in parsed answers: as written, and as servers echo it.

A server may echo the key escaped or decoded: JSON-escaped (``\\/``, ``\\u002d``),
percent-encoded (``%2F``, ``%2d``), HTML-escaped (``&#x2F;``, ``&sol;``) or form-decoded (a
``+`` read as a space). Every form is masked, with one assumption that keeps the check cheap
on every answer: the key's longest run of letters and digits appears as written (no echo
escapes letters one by one). An answer is parsed before it is masked, and its parsed values
are masked apart (:func:`masked_data`), so masking never breaks the JSON it is in.
"""

from __future__ import annotations

import functools
import html
import re
import urllib.parse
from collections.abc import Callable
from typing import Any


def mask_key(key: str) -> str:
    """``sk-abc...xyz`` -> ``sk-a***yz``: enough to recognise, too little to use."""
    return f"{key[:4]}***{key[-2:]}" if len(key) > 12 else "***"


# Shorter keys are a local server's placeholders (``test``, ``key``, ``0``), not secrets:
# masking them would cut words, JSON keys and the run tag's name out of every answer.
MIN_MASKED_KEY = 8
# What stands for a text that holds the key in a form the masking cannot find the bounds
# of: withheld whole rather than shown.
WITHHELD = "(withheld: it holds the API key in a form batchrun cannot mask)"


def holds_key(text: str, key: str | None) -> bool:
    """Whether ``text`` holds ``key`` (long enough to be a secret) in any form it masks."""
    if not key or len(key) < MIN_MASKED_KEY or _anchor(key) not in text:
        return False
    return key in text or _echoed(key, _unescaped(text))


def mask_text(text: str, key: str | None) -> str:
    """``text`` with ``key`` masked wherever it occurs, in every form (see the module); a
    key shorter than :data:`MIN_MASKED_KEY` is left as it is."""
    if not holds_key(text, key):
        return text
    assert key is not None
    shown = mask_key(key)
    text = _echoed_forms(key).sub(lambda _: shown, text.replace(key, shown))
    return WITHHELD if holds_key(text, key) else text


def masked_data(value: Any, mask: Callable[[str], str]) -> Any:
    """A parsed JSON ``value`` with ``mask`` applied to every string in it, keys included."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {mask(name): masked_data(item, mask) for name, item in value.items()}
    if isinstance(value, list):
        return [masked_data(item, mask) for item in value]
    return value


@functools.lru_cache(maxsize=8)
def _anchor(key: str) -> str:
    """The key's longest run of letters and digits: in every echo of it (cached, as the
    compiled forms are, for the few keys a process uses)."""
    return max(re.findall("[A-Za-z0-9]+", key), key=len, default=key)


def _echoed(key: str, plain: str) -> bool:
    return key in plain or ("+" in key and key.replace("+", " ") in plain)


def _unescaped(text: str) -> str:
    """``text`` with JSON's escapes, percent-encoding and HTML's character references undone,
    for a look for the key."""
    text = _JSON_ESCAPE.sub(lambda match: chr(int(match[1], 16)), text).replace("\\/", "/")
    if "&" in text:
        text = html.unescape(text)
    return urllib.parse.unquote(text) if "%" in text else text


_JSON_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")
# Named HTML character references of the characters keys hold besides letters and digits.
_NAMED = {"/": "sol", "+": "plus", "=": "equals", "_": "lowbar", ".": "period"}


@functools.lru_cache(maxsize=8)
def _echoed_forms(key: str) -> re.Pattern[str]:
    """The key with each character as written or as an echo may show it."""
    return re.compile("".join(_char_forms(char) for char in key))


def _char_forms(char: str) -> str:
    code = ord(char)
    forms = [
        re.escape(char),
        rf"\\u(?i:{code:04x})",
        rf"&#0*{code};?",
        rf"&#[xX]0*(?i:{code:x});?",
        "".join(f"%(?i:{byte:02x})" for byte in char.encode()),
    ]
    if char in '/"\\':
        forms.append(re.escape("\\" + char))
    if char in _NAMED:
        forms.append(f"&{_NAMED[char]};")
    if char == "+":
        forms.append(" ")  # form-decoded: a "+" read as a space
    return f"(?:{'|'.join(forms)})"
