"""Files: what clients upload (``POST /v1/files``) and the output and error files batches write.

An upload is ``multipart/form-data`` with the fields ``file`` and ``purpose`` (one of
OpenAI's: ``batch`` for a batch's input). The answer is OpenAI's File object, ``status``
always ``processed``. Files are listed newest first (``purpose``, ``limit`` up to 10,000,
``order``, ``after``), read back (``GET /v1/files/{id}/content``: the bytes as uploaded)
and deleted. An unknown id is a 404 "No such File object: ID".

Under a run log, an upload's bytes are written to ``<run_log>.files/<file_id>`` and only its
metadata goes into the log, so a log stays small however large the files; without one
they are kept in memory. A batch's output and error files are never stored: a replayed
batch writes them again, byte for byte (see :mod:`~batchrun.simulator.batches`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web

from batchrun.simulator import envelope
from batchrun.simulator.settings import SimulatorConfig
from batchrun.simulator.wire import RAW_KEY, Answer, append_to_log, listing, page, page_query

PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
MAX_UPLOAD_BYTES = 512 * 1024**2  # OpenAI's limit for any one file
MAX_FILES_PAGE = 10_000
CHUNK_BYTES = 1024**2
# Ids the simulator makes: a log naming anything else must not reach outside its directory.
FILE_ID = re.compile(r"file-[0-9a-f]{24}")


class StoredFile:
    """One file: its metadata, and its bytes in memory or at ``path``."""

    __slots__ = ("content", "created_at", "filename", "id", "path", "purpose", "size")

    def __init__(
        self,
        file_id: str,
        filename: str,
        purpose: str,
        created_at: int,
        *,
        content: bytes | None = None,
        path: Path | None = None,
        size: int | None = None,
    ) -> None:
        self.id = file_id
        self.filename = filename
        self.purpose = purpose
        self.created_at = created_at
        self.content = content
        self.path = path
        self.size = len(content) if content is not None else size or 0

    def read(self) -> bytes:
        """The file's bytes."""
        if self.content is not None:
            return self.content
        assert self.path is not None, "a file has its content or a path"
        return self.path.read_bytes()

    def to_json(self) -> Answer:
        """The File object as the API returns it."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.size,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
        }


class Files:
    """Every file of one simulator, and the routes that serve them."""

    __slots__ = ("by_id", "clock", "config", "deleted", "directory", "new_id", "uploads")

    def __init__(
        self, config: SimulatorConfig, clock: Callable[[], float], new_id: Callable[[str], str]
    ) -> None:
        self.config = config
        self.clock = clock
        self.new_id = new_id
        self.directory = None if config.run_log is None else Path(f"{config.run_log}.files")
        self.by_id: dict[str, StoredFile] = {}  # insertion order is creation order
        self.deleted: set[str] = set()
        self.uploads = 0

    def get(self, file_id: str, param: str = "id") -> StoredFile:
        """The file; 404 naming ``param`` when there is none."""
        found = self.by_id.get(file_id)
        if found is None:
            raise envelope.no_file(file_id, param)
        return found

    def add_generated(self, file_id: str, filename: str, content: bytes, created_at: int) -> None:
        """Keep a file a batch wrote (purpose ``batch_output``), unless it was deleted."""
        if file_id not in self.deleted and file_id not in self.by_id:
            self.by_id[file_id] = StoredFile(
                file_id, filename, "batch_output", created_at, content=content
            )

    async def upload(self, request: web.Request, version: str) -> Answer:
        """``POST /v1/files``: a multipart ``file`` and its ``purpose``."""
        filename, content, purpose = await _form(request)
        if content is None:
            raise envelope.invalid_body("file", "is required", "missing_required_parameter")
        if purpose is None:
            raise envelope.invalid_body("purpose", "is required", "missing_required_parameter")
        if purpose not in PURPOSES:
            raise envelope.unsupported_value("purpose", purpose, PURPOSES)
        now = self.clock()
        file_id = self.new_id("file-")
        if self.directory is None:
            stored = StoredFile(file_id, filename, purpose, int(now), content=content)
        else:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / file_id
            path.write_bytes(content)
            stored = StoredFile(file_id, filename, purpose, int(now), path=path, size=len(content))
        self.by_id[file_id] = stored
        self.uploads += 1
        entry = {"file": file_id, "at": now, "filename": filename, "purpose": purpose}
        append_to_log(self.config.run_log, {**entry, "bytes": stored.size})
        return stored.to_json()

    def restore(self, entry: dict[str, Any]) -> None:
        """Know again a file a run log holds (skipped if its bytes are gone)."""
        file_id = entry["file"]
        if self.directory is None or not FILE_ID.fullmatch(file_id):
            return
        path = self.directory / file_id
        if path.is_file():
            self.by_id[file_id] = StoredFile(
                file_id,
                entry["filename"],
                entry["purpose"],
                int(entry["at"]),
                path=path,
                size=int(entry["bytes"]),
            )

    def forget(self, file_id: str) -> None:
        """Delete a file. Its bytes stay on disk: a batch replayed from the log reads them."""
        self.by_id.pop(file_id, None)
        self.deleted.add(file_id)

    async def retrieve(self, request: web.Request, version: str) -> Answer:
        """``GET /v1/files/{file_id}``."""
        return self.get(request.match_info["file_id"]).to_json()

    async def content(self, request: web.Request, version: str) -> Answer:
        """``GET /v1/files/{file_id}/content``: the bytes, as uploaded or written."""
        found = self.get(request.match_info["file_id"])
        return {RAW_KEY: (found.read(), "application/octet-stream")}

    async def delete(self, request: web.Request, version: str) -> Answer:
        """``DELETE /v1/files/{file_id}``."""
        file_id = self.get(request.match_info["file_id"]).id
        self.forget(file_id)
        append_to_log(self.config.run_log, {"file_deleted": file_id, "at": self.clock()})
        return {"id": file_id, "object": "file", "deleted": True}

    async def list(self, request: web.Request, version: str) -> Answer:
        """``GET /v1/files``: newest first unless ``order=asc``; ``purpose`` filters."""
        purpose = request.query.get("purpose")
        chosen = [
            found.to_json()
            for found in self.by_id.values()
            if purpose is None or found.purpose == purpose
        ]
        query = page_query(request, default_limit=MAX_FILES_PAGE, max_limit=MAX_FILES_PAGE)
        found_page, has_more = page(chosen, _file_id, **query)
        return listing(found_page, has_more)


def _file_id(file: Answer) -> str:
    identifier: str = file["id"]
    return identifier


async def _form(request: web.Request) -> tuple[str, bytes | None, str | None]:
    """The upload's file name, bytes and purpose (None for a field not sent)."""
    if request.content_type != "multipart/form-data":
        raise envelope.not_multipart(request.content_type)
    filename, content, purpose = "file", None, None
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue  # a nested multipart: no field of ours
            if part.name == "file":
                filename = part.filename or filename
                content = await _read_capped(part)
            elif part.name == "purpose":
                purpose = (await part.text()).strip()
            else:
                await part.release()
    except ValueError:
        raise envelope.invalid_param("file", "The multipart body could not be read.") from None
    return filename, content, purpose


async def _read_capped(part: BodyPartReader) -> bytes:
    """A part's bytes; 400 once they pass :data:`MAX_UPLOAD_BYTES`."""
    content = bytearray()
    while chunk := await part.read_chunk(CHUNK_BYTES):
        content += chunk
        if len(content) > MAX_UPLOAD_BYTES:
            raise envelope.file_too_large(MAX_UPLOAD_BYTES)
    return bytes(content)
