"""The API key masked in text: as written, and as servers echo it back."""

from __future__ import annotations

import functools
import re
import urllib.parse


def mask_key(key: str) -> str:
    """``sk-abc...xyz`` -> ``sk-a***yz``: enough to recognise, too little to use."""
    return f"{key[:4]}***{key[-2:]}" if len(key) > 12 else "***"


# Shorter keys are a local server's placeholders (``test``, ``key``, ``0``), not secrets:
# masking them would cut words, JSON keys and the run tag's name out of every answer.
MIN_MASKED_KEY = 8


def mask_text(text: str, key: str | None) -> str:
    """``text`` with ``key`` masked wherever it occurs: as written, and as a server may echo
    it back, JSON-escaped (``\\/``, ``\\u002d``) or percent-encoded (``%2F``). A key
    shorter than :data:`MIN_MASKED_KEY` is left as it is."""
    if not key or len(key) < MIN_MASKED_KEY:
        return text
    if key in text:
        text = text.replace(key, mask_key(key))
    if ("\\" in text or "%" in text) and key in _unescaped(text):
        text = _echoed_forms(key).sub(mask_key(key), text)
    return text


def _unescaped(text: str) -> str:
    """``text`` with JSON's escapes and percent-encoding undone, for a look for the key."""
    text = _JSON_ESCAPE.sub(lambda match: chr(int(match[1], 16)), text).replace("\\/", "/")
    return urllib.parse.unquote(text) if "%" in text else text


_JSON_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")


@functools.lru_cache(maxsize=8)
def _echoed_forms(key: str) -> re.Pattern[str]:
    """The key with each character as written, JSON-escaped or percent-encoded."""
    return re.compile("".join(_char_forms(char) for char in key))


def _char_forms(char: str) -> str:
    forms = [re.escape(char), rf"\\u(?i:{ord(char):04x})"]
    if char in '/"\\':
        forms.append(re.escape("\\" + char))
    encoded = urllib.parse.quote(char, safe="")
    if encoded != char:
        forms.append("".join(f"%(?i:{part})" for part in encoded.split("%")[1:]))
    return f"(?:{'|'.join(forms)})"
