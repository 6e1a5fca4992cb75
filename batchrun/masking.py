"""The API key masked in text: as written, and as servers echo it back."""

from __future__ import annotations

import functools
import html
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
    it back, JSON-escaped (``\\/``, ``\\u002d``), percent-encoded (``%2F``), HTML-escaped
    (``&#x2F;``) or form-decoded (``+`` read as a space). A key shorter than
    :data:`MIN_MASKED_KEY` is left as it is."""
    if not key or len(key) < MIN_MASKED_KEY:
        return text
    if key in text:
        text = text.replace(key, mask_key(key))
    if _may_hold_echo(text, key) and _echoed(key, _unescaped(text)):
        text = _echoed_forms(key).sub(mask_key(key), text)
    return text


def _may_hold_echo(text: str, key: str) -> bool:
    """Whether ``text`` has what an escaped or decoded echo of ``key`` would show."""
    return "\\" in text or "%" in text or "&" in text or ("+" in key and " " in text)


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
_NAMED = {"/": "sol", "+": "plus", "=": "equals", "-": "hyphen", "_": "lowbar", ".": "period"}


@functools.lru_cache(maxsize=8)
def _echoed_forms(key: str) -> re.Pattern[str]:
    """The key with each character as written or as an echo may show it."""
    return re.compile("".join(_char_forms(char) for char in key))


def _char_forms(char: str) -> str:
    code = ord(char)
    forms = [re.escape(char), rf"\\u(?i:{code:04x})", rf"&#0*{code};", rf"&#(?i:x0*{code:x});"]
    if char in '/"\\':
        forms.append(re.escape("\\" + char))
    if char in _NAMED:
        forms.append(f"&{_NAMED[char]};")
    if char == "+":
        forms.append(" ")  # form-decoded: a "+" read as a space
    encoded = urllib.parse.quote(char, safe="")
    if encoded != char:
        forms.append("".join(f"%(?i:{part})" for part in encoded.split("%")[1:]))
    return f"(?:{'|'.join(forms)})"
