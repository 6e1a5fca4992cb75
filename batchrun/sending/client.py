"""HTTP to one Assistants endpoint: headers, timeouts, capped answers, the key masked.

:meth:`ApiClient.call` returns an :class:`Answer` for any HTTP answer and raises
:class:`TransportError` when there is none, with a :class:`~batchrun.sending.retry.Failure`
that says whether the request may have reached the server.
"""

from __future__ import annotations

import ast
import asyncio
import re
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yarl

from batchrun import __version__
from batchrun.config import Settings
from batchrun.masking import holds_key, mask_text, masked_data
from batchrun.sending.retry import Failure

MAX_ANSWER_BYTES = 10 * 1024 * 1024
HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
PLAIN_PATH = re.compile(r"(?:/[A-Za-z0-9_-]+)+")


class TransportError(Exception):
    """No usable HTTP answer; ``.failure`` says whether the request may have arrived,
    ``.answering`` whether the server had begun its answer (so it was done with it)."""

    def __init__(self, failure: Failure, message: str, *, answering: bool = False) -> None:
        super().__init__(message)
        self.failure = failure
        self.answering = answering


class AnswerTooLarge(aiohttp.ClientPayloadError):
    """The answer is over MAX_ANSWER_BYTES; it was not read to the end."""


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP answer, its body already masked."""

    status: int
    headers: Mapping[str, str]
    text: str
    data: Any  # parsed JSON, or None

    @property
    def error(self) -> dict[str, Any]:
        """The ``error`` object of OpenAI's envelope, or {}."""
        error = self.data.get("error") if isinstance(self.data, dict) else None
        return error if isinstance(error, dict) else {}

    @property
    def message(self) -> str:
        """A one-line reason taken from the answer."""
        text = self.error.get("message")
        if isinstance(text, str) and text.startswith("[{") and "'loc'" in text:
            text = _repr_validation_items(text)  # a FastAPI 422 wrapped as a message
        detail = self.data.get("detail") if isinstance(self.data, dict) else None
        if not text and isinstance(detail, str):
            text = detail
        elif not text and isinstance(detail, list):
            text = "; ".join(_validation_item(item) for item in detail)  # FastAPI's 422
        if not text and (title := HTML_TITLE.search(self.text)):
            text = " ".join(title.group(1).split())  # a proxy's error page
        if not text:
            text = " ".join(self.text.split())[:200] or "(empty answer)"
        return f"HTTP {self.status}: {text}"


def _repr_validation_items(text: str) -> str:
    """``"[{'type': ..., 'loc': ('body', 'x'), 'msg': ...}]"`` (pydantic's errors as Python
    text, as some servers put them in ``message``) -> ``x: msg``; else ``text`` as it is."""
    try:
        items = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text
    if not isinstance(items, list):
        return text
    return "; ".join(_validation_item(item) for item in items)


def _validation_item(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    where = ".".join(str(part) for part in item.get("loc") or [] if part != "body")
    return f"{where}: {item.get('msg')}" if where else str(item.get("msg"))


class ApiClient:
    """Requests to one Assistants endpoint over a shared aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, settings: Settings) -> None:
        self._session = session
        self._base = settings.base_url.rstrip("/")
        self._base_url = yarl.URL(self._base)
        self._base_path = self._base_url.raw_path.rstrip("/")
        self._key = settings.api_key or ""
        self._timeout = aiohttp.ClientTimeout(total=settings.attempt_timeout)
        # Batch files run to hundreds of MB: --timeout bounds each wait for data, not the
        # whole transfer.
        self._transfer = aiohttp.ClientTimeout(
            total=None, sock_connect=settings.attempt_timeout, sock_read=settings.attempt_timeout
        )
        # Every request, create or read, holds one of --concurrency slots while in flight:
        # followers polling many runs must not exceed the bound the user set.
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._proxy = env_proxy(self._base_url)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"batchrun/{__version__}",
        }
        if settings.endpoint == "runs" or settings.beta_header:
            headers["OpenAI-Beta"] = settings.beta  # the Assistants API's version header
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        if settings.organization:
            headers["OpenAI-Organization"] = settings.organization
        if settings.project:
            headers["OpenAI-Project"] = settings.project
        self._headers = headers

    def mask(self, text: str) -> str:
        """``text`` with the API key masked wherever it occurs."""
        return mask_text(text, self._key)

    def _url(self, path: str) -> yarl.URL | str:
        # A path of plain characters needs no encoding: building the URL from parts skips
        # parsing a string per request (1.5 us of the ~100 a create costs).
        if PLAIN_PATH.fullmatch(path):
            return self._base_url.with_path(self._base_path + path, encoded=True)
        return self._base + path

    async def call(self, method: str, path: str, payload: bytes | None = None) -> Answer:
        """One request; raises TransportError when there is no usable answer."""
        return await self._exchange(
            method, path, payload, self._headers, self._timeout, _read_capped
        )

    async def upload(
        self, path: str, fields: Mapping[str, str], source: Path, filename: str
    ) -> Answer:
        """A multipart POST of ``fields`` and the file at ``source``, streamed from disk."""
        form = aiohttp.FormData()
        for name, value in fields.items():
            form.add_field(name, value)
        # aiohttp writes the multipart Content-Type (with its boundary) itself.
        headers = {k: v for k, v in self._headers.items() if k != "Content-Type"}
        with source.open("rb") as stream:
            form.add_field("file", stream, filename=filename, content_type="application/jsonl")
            return await self._exchange("POST", path, form, headers, self._transfer, _read_capped)

    async def download(self, path: str, target: Path) -> Answer:
        """A GET whose 200 body is streamed into ``target`` (the answer's text is then
        empty); any other answer is read as :meth:`call` reads it."""

        async def save(response: aiohttp.ClientResponse) -> bytes:
            if response.status != 200:
                return await _read_capped(response)
            with target.open("wb") as out:
                async for chunk in response.content.iter_chunked(1 << 16):
                    out.write(chunk)
            return b""

        return await self._exchange("GET", path, None, self._headers, self._transfer, save)

    async def _exchange(
        self,
        method: str,
        path: str,
        data: Any,
        headers: Mapping[str, str],
        limits: aiohttp.ClientTimeout,
        consume: Callable[[aiohttp.ClientResponse], Awaitable[bytes]],
    ) -> Answer:
        answering = False
        try:
            async with (
                self._slots,
                self._session.request(
                    method,
                    self._url(path),
                    data=data,
                    headers=headers,
                    timeout=limits,
                    allow_redirects=False,
                    proxy=self._proxy,
                ) as response,
            ):
                answering = True  # its status line came: the server is done with it
                raw = await consume(response)
                answer_headers = response.headers  # case-insensitive already
                status = response.status
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise TransportError(
                Failure.TIMEOUT, "timed out waiting for the answer", answering=answering
            ) from None
        except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError) as error:
            raise TransportError(Failure.TLS, self.mask(f"TLS failed: {error}")) from None
        except aiohttp.ClientConnectorError as error:
            raise TransportError(
                Failure.CONNECT, self.mask(f"could not connect: {error}")
            ) from None
        except AnswerTooLarge as error:
            raise TransportError(Failure.DISCONNECT, str(error), answering=answering) from None
        except (aiohttp.ClientError, ConnectionError) as error:
            reason = self.mask(str(error) or type(error).__name__)
            raise TransportError(
                Failure.DISCONNECT, f"connection dropped: {reason}", answering=answering
            ) from None
        text = raw.decode("utf-8", errors="replace")
        try:
            data = orjson.loads(text) if text else None
        except orjson.JSONDecodeError:
            data = None
        if holds_key(text, self._key):  # parsed first: masking never breaks the JSON
            text = self.mask(text)
            data = masked_data(data, self.mask)
        return Answer(status, answer_headers, text, data)


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    length = response.content_length
    if length is not None and length <= MAX_ANSWER_BYTES:
        return await response.read()
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise AnswerTooLarge("answer larger than 10 MB (not read)")
        chunks.append(chunk)
    return b"".join(chunks)


def env_proxy(url: yarl.URL) -> str | None:
    """The proxy ``HTTPS_PROXY``/``HTTP_PROXY`` name for ``url`` (None when none applies,
    or ``NO_PROXY`` exempts its host), as corporate networks need."""
    proxy = urllib.request.getproxies().get(url.scheme)
    if not proxy or urllib.request.proxy_bypass(url.host or ""):
        return None
    return proxy
