"""Threads, runs and messages, with run lifecycles computed from the clock.

No background task moves a run along: each read asks the run where it is by now. A run is
``queued`` for the first half of its duration, ``in_progress`` for the second, then reaches
its outcome. Markers in its instructions pick the outcome, so tests can reach every
``--wait`` path: ``[sim:fail]`` (failed), ``[sim:expire]`` (expired), ``[sim:requires_action]``
(stops for tool outputs) and ``[sim:slow]`` (ten times longer). A completed run adds a
deterministic assistant message and ``usage``; the same thread, run id and instructions
always give the same reply.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable, Mapping
from typing import Any

from batchrun.simulator import envelope
from batchrun.simulator.settings import DEFAULT_MODEL, SimulatorConfig

ACTIVE = frozenset({"queued", "in_progress", "requires_action", "cancelling"})
TERMINAL = frozenset({"completed", "failed", "cancelled", "expired", "incomplete"})
EXPIRY_SECONDS = 600.0  # OpenAI expires a run that has not finished after ten minutes
SLOW_FACTOR = 10.0
THREAD_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
REPLY_WORDS = (
    "amber", "birch", "cedar", "delta", "ember", "fjord", "garnet", "harbor",
    "indigo", "juniper", "kestrel", "lumen", "meadow", "nimbus", "orchid", "prairie",
)  # fmt: skip
FAILURE = {"code": "server_error", "message": "Simulated failure."}


def text_content(content: Any) -> tuple[list[Any], int]:
    """A message's ``content`` as the API returns it, and the number of text characters."""
    if isinstance(content, str):
        return [{"type": "text", "text": {"value": content, "annotations": []}}], len(content)
    parts: list[Any] = []
    chars = 0
    for part in content if isinstance(content, list) else []:
        if isinstance(part, Mapping) and part.get("type") == "text":
            value = str(part.get("text", ""))
            parts.append({"type": "text", "text": {"value": value, "annotations": []}})
            chars += len(value)
        else:
            parts.append(part)  # image_file / image_url parts come back as sent
    return parts, chars


class Thread:
    """A thread: its runs and messages, oldest first, and at most one active run."""

    __slots__ = ("active", "bodies", "chars", "created_at", "id", "messages", "metadata", "runs")

    def __init__(self, thread_id: str, created_at: int, metadata: dict[str, Any]) -> None:
        self.id = thread_id
        self.created_at = created_at
        self.metadata = metadata
        self.runs: dict[str, Run] = {}  # insertion order is creation order
        self.messages: list[dict[str, Any]] = []
        self.active: Run | None = None
        self.bodies: set[bytes] = set()  # canonical bodies of its runs, to count duplicates
        self.chars = 0  # text characters in its messages, for a plausible prompt_tokens

    def to_json(self) -> dict[str, Any]:
        """The thread object as the API returns it."""
        return {
            "id": self.id,
            "object": "thread",
            "created_at": self.created_at,
            "metadata": self.metadata,
            "tool_resources": {},
        }


class Run:
    """One run; :meth:`advance` moves it to where the clock says it is."""

    __slots__ = (
        "cancel_requested",
        "completed_at",
        "created",
        "duration",
        "ended_at",
        "id",
        "instructions",
        "outcome",
        "prompt_tokens",
        "required_action",
        "started_at",
        "static",
        "status",
        "thread_id",
        "usage",
    )

    def __init__(
        self,
        run_id: str,
        thread: Thread,
        body: Mapping[str, Any],
        now: float,
        run_seconds: float,
        version: str = "v2",
    ) -> None:
        instructions = body.get("instructions") or ""
        if body.get("additional_instructions"):
            # As the real service does: the run shows the instructions it actually used.
            instructions = f"{instructions}\n{body['additional_instructions']}".lstrip("\n")
        self.id = run_id
        self.thread_id = thread.id
        self.instructions = instructions
        self.created = now
        self.duration = run_seconds * (SLOW_FACTOR if "[sim:slow]" in instructions else 1.0)
        self.outcome = "completed"
        for marker, outcome in (
            ("[sim:fail]", "failed"),
            ("[sim:expire]", "expired"),
            ("[sim:requires_action]", "requires_action"),
        ):
            if marker in instructions:
                self.outcome = outcome
        self.status = "queued"
        self.started_at: int | None = None
        self.completed_at: int | None = None
        self.ended_at: tuple[str, int] | None = None  # ("failed_at", t), ("cancelled_at", t)
        self.cancel_requested: float | None = None
        self.usage: dict[str, int] | None = None
        self.required_action: dict[str, Any] | None = None
        self.prompt_tokens = 40 + (thread.chars + len(instructions)) // 4
        self.static = self._static_fields(body, instructions, int(now), version)

    def _static_fields(
        self, body: Mapping[str, Any], instructions: str, created_at: int, version: str
    ) -> dict[str, Any]:
        """The fields that do not change, as the API ``version`` shapes a run (v1's run
        has ``file_ids`` and none of v2's sampling and limit fields)."""
        fields: dict[str, Any] = {
            "id": self.id,
            "object": "thread.run",
            "created_at": created_at,
            "assistant_id": body.get("assistant_id"),
            "thread_id": self.thread_id,
            "model": body.get("model") or DEFAULT_MODEL,
            "instructions": instructions,
            "tools": body.get("tools") or [],
            "metadata": body.get("metadata") or {},
        }
        if version == "v1":
            return {**fields, "file_ids": []}
        fields |= {
            "temperature": _given(body, "temperature", 1.0),
            "top_p": _given(body, "top_p", 1.0),
            "max_prompt_tokens": body.get("max_prompt_tokens"),
            "max_completion_tokens": body.get("max_completion_tokens"),
            "truncation_strategy": _given(
                body, "truncation_strategy", {"type": "auto", "last_messages": None}
            ),
            "response_format": _given(body, "response_format", "auto"),
            "tool_choice": _given(body, "tool_choice", "auto"),
            "parallel_tool_calls": _given(body, "parallel_tool_calls", True),
            "incomplete_details": None,
        }
        if "reasoning_effort" in body:
            fields["reasoning_effort"] = body["reasoning_effort"]
        return fields

    def advance(self, now: float) -> bool:
        """Bring the status up to ``now``; True when the run has just completed."""
        if self.status in TERMINAL:
            return False
        if self.cancel_requested is not None:
            # Cancelling lasts a quarter of the run's duration, so it can be observed.
            if now >= self.cancel_requested + self.duration / 4:
                self._end("cancelled", "cancelled_at", self.cancel_requested + self.duration / 4)
            return False
        elapsed = now - self.created
        if elapsed >= EXPIRY_SECONDS and (
            self.outcome == "requires_action" or self.duration > EXPIRY_SECONDS
        ):
            self._end("expired", None, self.created + EXPIRY_SECONDS)
            return False
        if elapsed < self.duration / 2 or self.status == "requires_action":
            return False
        self.started_at = int(self.created + self.duration / 2)
        if elapsed < self.duration:
            self.status = "in_progress"
            return False
        end = self.created + self.duration
        if self.outcome == "requires_action":
            self.status = "requires_action"
            self.required_action = self._tool_calls()
            return False
        if self.outcome == "failed":
            self._end("failed", "failed_at", end)
            return False
        if self.outcome == "expired":
            self._end("expired", None, end)
            return False
        self._end("completed", "completed_at", end)
        return True

    def cancel(self, now: float) -> None:
        """Ask the run to stop; raises the API's 400 when it already has."""
        self.advance(now)
        if self.status not in ACTIVE:
            raise envelope.cannot_cancel(self.status)
        if self.cancel_requested is None:
            self.status = "cancelling"
            self.required_action = None
            self.cancel_requested = now

    def _end(self, status: str, stamp: str | None, at: float) -> None:
        self.status = status
        self.required_action = None
        if stamp == "completed_at":
            self.completed_at = int(at)
        elif stamp is not None:
            self.ended_at = (stamp, int(at))
        completion = self.reply_tokens() if status == "completed" else 0
        self.usage = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }

    def _tool_calls(self) -> dict[str, Any]:
        names = [
            tool["function"]["name"]
            for tool in self.static["tools"]
            if isinstance(tool, Mapping) and tool.get("type") == "function"
        ]
        call = {
            "id": f"call_{self._digest()[:24]}",
            "type": "function",
            "function": {"name": names[0] if names else "simulated_tool", "arguments": "{}"},
        }
        return {"type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": [call]}}

    def _digest(self) -> str:
        seed = f"{self.thread_id}\0{self.id}\0{self.instructions}".encode()
        return hashlib.sha256(seed).hexdigest()

    def reply_text(self) -> str:
        """The assistant's deterministic reply: a function of thread, run and instructions."""
        digest = self._digest()
        words = " ".join(REPLY_WORDS[int(char, 16)] for char in digest[:8])
        return f"Simulated reply to {self.id}: {words}."

    def reply_tokens(self) -> int:
        """The reply's deterministic ``completion_tokens``."""
        return 10 + int(self._digest()[8:10], 16) % 90

    def to_json(self, *, status: str | None = None) -> dict[str, Any]:
        """The run object; ``status`` overrides the status shown (the create answer's)."""
        shown = status or self.status
        ended_at = self.ended_at
        fresh = status is not None
        return {
            **self.static,
            "status": shown,
            "started_at": None if fresh else self.started_at,
            "expires_at": (
                int(self.created + EXPIRY_SECONDS) if fresh or shown in ACTIVE else None
            ),
            "cancelled_at": ended_at[1] if ended_at and ended_at[0] == "cancelled_at" else None,
            "failed_at": ended_at[1] if ended_at and ended_at[0] == "failed_at" else None,
            "completed_at": None if fresh else self.completed_at,
            "required_action": None if fresh else self.required_action,
            "last_error": FAILURE if shown == "failed" else None,
            "usage": None if fresh else self.usage,
        }


def _given(body: Mapping[str, Any], name: str, default: Any) -> Any:
    value = body.get(name)
    return default if value is None else value


class Store:
    """Every thread of one simulator, with id generation and counters."""

    __slots__ = ("_ids", "config", "duplicate_runs", "runs_created", "threads")

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        seed = config.seed
        # Ids come from the seed too, so a seeded session is reproducible end to end.
        self._ids = random.Random(f"{seed}/ids") if seed is not None else random.Random()
        self.threads: dict[str, Thread] = {}
        self.runs_created = 0
        self.duplicate_runs = 0

    def new_id(self, prefix: str) -> str:
        """A fresh id like ``run_`` + 24 hex digits."""
        return f"{prefix}{self._ids.getrandbits(96):024x}"

    def create_thread(
        self, now: float, metadata: dict[str, Any], messages: Iterable[Mapping[str, Any]]
    ) -> Thread:
        """A new thread holding ``messages``."""
        thread = Thread(self.new_id("thread_"), int(now), metadata)
        self.threads[thread.id] = thread
        for message in messages:
            self.add_message(thread, message, now)
        return thread

    def thread(self, thread_id: str, now: float) -> Thread:
        """The thread, settled up to ``now``; auto-created unless ``strict_threads``."""
        thread = self.threads.get(thread_id)
        if thread is None:
            if self.config.strict_threads or not THREAD_ID.fullmatch(thread_id):
                raise envelope.no_thread(thread_id)
            thread = self.threads[thread_id] = Thread(thread_id, int(now), {})
        active = thread.active
        if active is not None:
            if active.advance(now):
                self._add_reply(thread, active)
            if active.status in TERMINAL:
                thread.active = None
        return thread

    def create_run(
        self,
        thread: Thread,
        body: Mapping[str, Any],
        canonical: bytes,
        now: float,
        run_id: str | None = None,
        version: str = "v2",
    ) -> Run:
        """Start a run on ``thread`` (already settled); 400 while another run is active.
        ``version``: the Assistants API version that shapes the run object."""
        if thread.active is not None:
            raise envelope.busy_thread(thread.id, thread.active.id)
        for message in body.get("additional_messages") or ():
            self.add_message(thread, message, now)
        run_id = run_id or self.new_id("run_")
        run = Run(run_id, thread, body, now, self.config.run_seconds, version)
        thread.runs[run.id] = run
        thread.active = run
        self.runs_created += 1
        if canonical in thread.bodies:
            self.duplicate_runs += 1
        else:
            thread.bodies.add(canonical)
        return run

    def add_message(
        self,
        thread: Thread,
        message: Mapping[str, Any],
        now: float,
        *,
        run: Run | None = None,
    ) -> dict[str, Any]:
        """Append a message (a request's ``{role, content, ...}``) to ``thread``."""
        content, chars = text_content(message.get("content"))
        thread.chars += chars
        created_at = int(now)
        stored = {
            "id": self.new_id("msg_"),
            "object": "thread.message",
            "created_at": created_at,
            "assistant_id": run.static["assistant_id"] if run else None,
            "thread_id": thread.id,
            "run_id": run.id if run else None,
            "role": message.get("role") or "user",
            "content": content,
            "attachments": message.get("attachments") or [],
            "metadata": message.get("metadata") or {},
            "status": "completed",
            "completed_at": created_at,
            "incomplete_at": None,
            "incomplete_details": None,
        }
        thread.messages.append(stored)
        return stored

    def _add_reply(self, thread: Thread, run: Run) -> None:
        at = float(run.completed_at if run.completed_at is not None else run.created)
        reply = {"role": "assistant", "content": run.reply_text()}
        self.add_message(thread, reply, at, run=run)
