"""Responses: the Responses API's runs, in the foreground or in the background.

A foreground response is generated while the request waits (``run_seconds``, ten times
that with ``[sim:slow]``) and answered ``completed``; ``background: true`` answers
``queued`` at once, and the clock moves the response queued -> in_progress -> its outcome
over ``run_seconds``, as runs move. No task moves it: each read asks where it is by now.
A response that joins a conversation holds it until it is over (see
:mod:`~batchrun.simulator.conversations`). ``stream: true`` is answered with the whole event
stream at once. There is no way to list responses, as in the real API.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from batchrun.simulator import envelope, generation
from batchrun.simulator.conversations import Conversation, Conversations
from batchrun.simulator.settings import SimulatorConfig
from batchrun.simulator.wire import (
    EVENTS_KEY,
    Answer,
    Creates,
    append_to_log,
    check_body,
    json_body,
)

ACTIVE = frozenset({"queued", "in_progress"})
DEFAULTS: dict[str, Any] = {
    "instructions": None,
    "max_output_tokens": None,
    "max_tool_calls": None,
    "metadata": {},
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "prompt_cache_key": None,
    "safety_identifier": None,
    "service_tier": "default",
    "store": True,
    "temperature": 1.0,
    "tool_choice": "auto",
    "tools": [],
    "top_logprobs": 0,
    "top_p": 1.0,
    "truncation": "disabled",
    "user": None,
}
INCOMPLETE = {"reason": "max_output_tokens"}


class Response:
    """One response; :meth:`advance` moves a background one to where the clock says."""

    __slots__ = (
        "background",
        "completed_at",
        "context_chars",
        "conversation",
        "created",
        "duration",
        "error",
        "id",
        "input_items",
        "new_id",
        "outcome",
        "output",
        "reply",
        "static",
        "status",
        "usage",
    )

    def __init__(
        self,
        response_id: str,
        body: Mapping[str, Any],
        now: float,
        *,
        duration: float,
        conversation: Conversation | None,
        context_chars: int,
        new_id: Callable[[str], str],
    ) -> None:
        self.id = response_id
        self.new_id = new_id
        self.created = now
        self.background = body.get("background") is True
        self.conversation = conversation
        self.input_items = generation.input_items(body.get("input") or [], new_id)
        instructions = body.get("instructions") or ""
        said = f"{instructions}\n{generation.text_of(body.get('input'))}"
        self.outcome = generation.outcome(said)
        self.duration = duration * (generation.SLOW_FACTOR if generation.is_slow(said) else 1.0)
        self.reply = generation.reply(body.get("model"), instructions, body.get("input"))
        most = body.get("max_output_tokens")
        if self.outcome == "completed" and type(most) is int and self.reply[1] > most:
            self.outcome = "incomplete"  # the model stops at the limit, as OpenAI's do
        # What the model reads: the conversation (or previous response) so far, then this.
        self.context_chars = (
            context_chars + len(instructions) + generation.chars_of(self.input_items)
        )
        self.status = "queued" if self.background else "in_progress"
        self.completed_at: int | None = None
        self.error: dict[str, str] | None = None
        self.output: list[dict[str, Any]] = []
        self.usage: dict[str, Any] | None = None
        self.static = _static_fields(body)

    def advance(self, now: float) -> None:
        """Bring a background response up to ``now`` (a foreground one ends in :meth:`finish`)."""
        if not self.background or self.status not in ACTIVE:
            return
        elapsed = now - self.created
        if elapsed >= self.duration:
            self._end(self.outcome, self.created + self.duration)
        elif elapsed >= self.duration / 2:
            self.status = "in_progress"

    def finish(self, now: float) -> None:
        """End a foreground response: generation is over."""
        if self.status in ACTIVE:
            self._end(self.outcome, now)

    def cancel(self, now: float) -> None:
        """Stop a background response; one that is over stays as it is."""
        if not self.background:
            raise envelope.cannot_cancel_synchronous()
        self.advance(now)
        if self.status in ACTIVE:
            self._end("cancelled", now)

    def _end(self, status: str, at: float) -> None:
        self.status = status
        text, tokens = self.reply
        if status == "completed":
            self.completed_at = int(at)
            self.output = [generation.output_message(text, self.new_id)]
        elif status == "incomplete":
            tokens = self.static["max_output_tokens"] or tokens // 2
            cut = text.rsplit(" ", 4)[0]
            self.output = [generation.output_message(cut, self.new_id, status="incomplete")]
        elif status == "failed":
            self.error = dict(generation.FAILURE)
        if status in ("completed", "incomplete"):
            prompt = generation.estimate_tokens(self.context_chars)
            self.usage = {
                "input_tokens": prompt,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": prompt + tokens,
            }
            self.context_chars += generation.chars_of(self.output)
        if self.conversation is not None:
            kept = [*self.input_items, *self.output] if self.output else []
            self.conversation.release(self, kept)

    def to_json(self) -> Answer:
        """The response object as the API returns it."""
        return {
            "id": self.id,
            "object": "response",
            "created_at": int(self.created),
            "status": self.status,
            "background": self.background,
            "completed_at": self.completed_at,
            "conversation": {"id": self.conversation.id} if self.conversation else None,
            "error": self.error,
            "incomplete_details": INCOMPLETE if self.status == "incomplete" else None,
            "output": self.output,
            "usage": self.usage,
            **self.static,
        }


def _static_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    fields = {name: _given(body, name, default) for name, default in DEFAULTS.items()}
    fields["model"] = body.get("model")
    reasoning = body.get("reasoning") or {}
    fields["reasoning"] = {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")}
    text = body.get("text") or {}
    fields["text"] = {
        "format": text.get("format") or {"type": "text"},
        "verbosity": text.get("verbosity") or "medium",
    }
    return fields


def _given(body: Mapping[str, Any], name: str, default: Any) -> Any:
    value = body.get(name)
    return default if value is None else value


class Responses:
    """Every stored response of one simulator, and the routes that serve them."""

    __slots__ = ("by_id", "clock", "config", "conversations", "creates")

    def __init__(
        self,
        config: SimulatorConfig,
        clock: Callable[[], float],
        conversations: Conversations,
    ) -> None:
        self.config = config
        self.clock = clock
        self.conversations = conversations
        self.by_id: dict[str, Response] = {}
        self.creates = Creates()

    async def create(self, request: web.Request, version: str) -> Answer:
        """``POST /v1/responses``: check the body, then answer the response (or its events)."""
        body = await json_body(request, empty_ok=False)
        check_body(body, "responses", required=("model",))
        now = self.clock()
        conversation, context = self._context(body, now)
        response = self._start(self.conversations.new_id("resp_"), body, now, conversation, context)
        if conversation is not None:
            conversation.occupy(response, now)
        self._keep(response, body)
        log_entry = {"response": response.id, "at": now, "body": body}
        append_to_log(self.config.run_log, log_entry)
        stream = body.get("stream") is True
        if response.background:
            answer = response.to_json()
            return {EVENTS_KEY: stream_events(answer, None)} if stream else answer
        started = response.to_json()
        try:
            # Generation time: the request waits, and the conversation stays locked.
            await asyncio.sleep(response.duration)
        finally:
            response.finish(self.clock())
        answer = response.to_json()
        return {EVENTS_KEY: stream_events(started, answer)} if stream else answer

    def answer(self, body: Mapping[str, Any], at: float, new_id: Callable[[str], str]) -> Answer:
        """The response to ``body`` made at ``at``, at once: what a batch line gets.

        Checked as ``POST /v1/responses`` checks it (400s raise :class:`~.envelope.ApiError`);
        ``new_id`` names the response and its items. A conversation it joins gets its items
        as from a foreground response, with no lock taken or waited for.
        """
        check_body(body, "responses", required=("model",))
        conversation, context = self._context(body, at)
        response = Response(
            new_id("resp_"),
            body,
            at,
            duration=0.0,
            conversation=conversation,
            context_chars=context,
            new_id=new_id,
        )
        self._keep(response, body)
        response.finish(at)
        return response.to_json()

    def restore(self, body: Mapping[str, Any], at: float, response_id: str) -> None:
        """Create again a response a run log holds, as it was created at ``at``."""
        try:
            conversation, context = self._context(body, at)
        except envelope.ApiError:
            return  # what it built on is gone; the rerun will see a 404, as it would live
        response = self._start(response_id, body, at, conversation, context)
        if conversation is not None and conversation.occupant is None:
            conversation.occupant = response
        self._keep(response, body)
        if not response.background:
            response.finish(at + response.duration)

    def _start(
        self,
        response_id: str,
        body: Mapping[str, Any],
        now: float,
        conversation: Conversation | None,
        context: int,
    ) -> Response:
        return Response(
            response_id,
            body,
            now,
            duration=self.config.run_seconds,
            conversation=conversation,
            context_chars=context,
            new_id=self.conversations.new_id,
        )

    def _keep(self, response: Response, body: Mapping[str, Any]) -> None:
        """Count the new response, and store it unless ``store: false`` (foreground only)."""
        self.creates.add(body)
        if body.get("store") is not False or response.background:
            self.by_id[response.id] = response

    def _context(self, body: Mapping[str, Any], now: float) -> tuple[Conversation | None, int]:
        """The conversation the request joins, and the characters of context it reads."""
        named = body.get("conversation")
        previous_id = body.get("previous_response_id")
        if named is not None and previous_id is not None:
            raise envelope.conversation_and_previous_response()
        if named is not None:
            conversation_id = named if isinstance(named, str) else named["id"]
            conversation = self.conversations.get(conversation_id, now)
            return conversation, conversation.chars()
        if previous_id is not None:
            previous = self.by_id.get(previous_id)
            if previous is None:
                raise envelope.previous_response_not_found(previous_id)
            previous.advance(now)
            return None, previous.context_chars
        return None, 0

    def _response(self, request: web.Request) -> Response:
        response_id = request.match_info["response_id"]
        response = self.by_id.get(response_id)
        if response is None:
            raise envelope.no_response(response_id)
        response.advance(self.clock())
        return response

    async def retrieve(self, request: web.Request, version: str) -> Answer:
        """``GET /v1/responses/{response_id}``."""
        return self._response(request).to_json()

    async def cancel(self, request: web.Request, version: str) -> Answer:
        """``POST /v1/responses/{response_id}/cancel``: background responses only."""
        response = self._response(request)
        response.cancel(self.clock())
        return response.to_json()


def stream_events(started: Answer, final: Answer | None) -> list[tuple[str | None, str]]:
    """The server-sent events of a response, from ``started`` to ``final``.

    ``final`` None (a background response): only ``response.created`` and
    ``response.queued``. Otherwise the output is announced item by item, each text as one
    delta, and the stream ends with ``response.completed`` (or ``.failed``/``.incomplete``).
    """
    events: list[tuple[str | None, str]] = []

    def emit(kind: str, **fields: Any) -> None:
        data = {"type": kind, "sequence_number": len(events), **fields}
        events.append((kind, orjson.dumps(data).decode()))

    emit("response.created", response=started)
    if final is None:
        emit("response.queued", response=started)
        return events
    emit("response.in_progress", response=started)
    for index, item in enumerate(final["output"]):
        emit("response.output_item.added", output_index=index,
             item={**item, "status": "in_progress", "content": []})  # fmt: skip
        for part_index, part in enumerate(item.get("content", [])):
            where = {"item_id": item["id"], "output_index": index, "content_index": part_index}
            emit("response.content_part.added", **where, part={**part, "text": ""})
            emit("response.output_text.delta", **where, delta=part["text"], logprobs=[])
            emit("response.output_text.done", **where, text=part["text"], logprobs=[])
            emit("response.content_part.done", **where, part=part)
        emit("response.output_item.done", output_index=index, item=item)
    emit(f"response.{final['status']}", response=final)
    return events
