"""``batchrun validate --batch-jsonl FILE``: the valid rows as Batch API input files.

Written as the sheet is checked, chunk by chunk, into ``FILE``, then ``STEM.2.jsonl``, ...
when a file reaches the Batch API's limits. Each line's ``custom_id`` is the row's key
and its body the request ``validate`` shows (run tag included). A row a batch cannot
carry (``background: true``, ``stream: true``) is reported invalid in the checked output.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from batchrun.batch.lines import (
    BATCH_URLS,
    ConversationTurns,
    PartWriter,
    batch_line,
    batch_problem,
    batch_url,
    jsonl_part_path,
    too_large,
)
from batchrun.config import Settings
from batchrun.endpoints.validation import CheckedChunk
from batchrun.errors import UsageError


class BatchJsonl:
    """Batch input files written beside a ``validate`` job."""

    def __init__(self, path: Path, settings: Settings, source: Path, target: Path) -> None:
        if settings.endpoint not in BATCH_URLS:
            raise UsageError(
                "--batch-jsonl: the Batch API never takes Assistants runs; "
                "use --endpoint responses or --endpoint chat"
            )
        if path.suffix.lower() != ".jsonl":
            raise UsageError(f"--batch-jsonl {path}: name a .jsonl file")
        if not path.parent.is_dir():
            raise UsageError(f"--batch-jsonl {path}: folder {path.parent} does not exist")
        for other, what in ((source, "the input"), (target, "the checked output")):
            if path.resolve() == other.resolve():
                raise UsageError(f"--batch-jsonl {path} would overwrite {what}")
        self.url = batch_url(settings.endpoint)
        self.writer = PartWriter(jsonl_part_path(path))
        self.turns = ConversationTurns()
        self.closed = ""

    def add(self, checked: CheckedChunk) -> None:
        """Write the chunk's valid rows; rows a batch cannot carry get their error."""
        for position, key in enumerate(checked.keys):
            if key is None or checked.errors[position]:
                continue
            body = orjson.loads(checked.requests[position])
            line = batch_line(key, self.url, body)
            problem = batch_problem(body) or self.turns.problem(body) or too_large(line)
            if problem:
                checked.refuse(position, body, problem)
            else:
                self.writer.add(key, line)

    def close(self) -> str:
        """Close the last file; what was written, for the summary line."""
        if not self.closed:
            parts = self.writer.close()
            if not parts:
                self.closed = "no valid rows, no JSONL written"
            else:
                lines = sum(len(part.keys) for part in parts)
                names = ", ".join(part.path.name for part in parts)
                files = "file" if len(parts) == 1 else "files"
                self.closed = f"{lines} lines in {len(parts)} {files} ({names})"
        return self.closed
