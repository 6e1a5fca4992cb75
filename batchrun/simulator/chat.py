"""Chat Completions: answered at once, stored with ``store: true`` and listable by metadata.

Each of the ``n`` choices is a deterministic reply to the request's model and messages
(see :mod:`~batchrun.simulator.generation`), with ``finish_reason: "stop"``. A stored
completion can be read back with ``GET /chat/completions/{id}`` and found with
``GET /chat/completions?metadata[KEY]=VALUE`` (every pair must match; oldest first unless
``order=desc``), which is how a client reconciles a request whose answer it never saw.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from batchrun.endpoints.rules import metadata_without_store
from batchrun.simulator import envelope, generation
from batchrun.simulator.settings import SimulatorConfig
from batchrun.simulator.wire import (
    EVENTS_KEY,
    Answer,
    Creates,
    append_to_log,
    check_body,
    json_body,
    listing,
    page,
    page_query,
)

METADATA_WITHOUT_STORE = "The 'metadata' parameter is only allowed when 'store' is enabled."
METADATA_QUERY = re.compile(r"metadata\[(?P<key>[^\]]*)\]")
FINGERPRINT = "fp_simulated"


class ChatCompletions:
    """Every stored chat completion of one simulator, and the routes that serve them."""

    __slots__ = ("clock", "config", "creates", "new_id", "stored")

    def __init__(
        self, config: SimulatorConfig, clock: Callable[[], float], new_id: Callable[[str], str]
    ) -> None:
        self.config = config
        self.clock = clock
        self.new_id = new_id
        self.stored: dict[str, Answer] = {}  # insertion order is creation order
        self.creates = Creates()

    async def create(self, request: web.Request, version: str) -> Answer:
        """``POST /v1/chat/completions``: check the body, answer the completion."""
        body = await json_body(request, empty_ok=False)
        _check(body)
        now = self.clock()
        completion = self._complete(body, int(now), self.new_id("chatcmpl-"))
        self._keep(completion, body)
        if body.get("store") is True:
            log_entry = {"chat": completion["id"], "at": now, "body": body}
            append_to_log(self.config.run_log, log_entry)
        if body.get("stream") is True:
            return {EVENTS_KEY: chunks(completion)}
        return completion

    def answer(self, body: Mapping[str, Any], at: float, new_id: Callable[[str], str]) -> Answer:
        """The completion of ``body`` made at ``at``: what a batch line gets. Checked as
        ``POST /v1/chat/completions`` checks it (400s raise :class:`~.envelope.ApiError`);
        ``new_id`` names it."""
        _check(body)
        completion = self._complete(body, int(at), new_id("chatcmpl-"))
        self._keep(completion, body)
        return completion

    def restore(self, body: Mapping[str, Any], at: float, completion_id: str) -> None:
        """Create again a stored completion a run log holds, as it was made at ``at``."""
        self._keep(self._complete(body, int(at), completion_id), body)

    def _keep(self, completion: Answer, body: Mapping[str, Any]) -> None:
        """Count the new completion, and store it with its metadata if ``store: true``."""
        self.creates.add(body)
        if body.get("store") is True:
            self.stored[completion["id"]] = {**completion, "metadata": body.get("metadata") or {}}

    def _complete(self, body: Mapping[str, Any], created: int, completion_id: str) -> Answer:
        messages = body["messages"]
        prompt = generation.estimate_tokens(len(generation.text_of(messages)))
        choices = []
        completion_tokens = 0
        most = body.get("max_completion_tokens") or body.get("max_tokens")
        for index in range(body.get("n") or 1):
            text, tokens = generation.reply(body["model"], messages, index)
            finish = "stop"
            if type(most) is int and tokens > most:  # the model stops at the limit
                text, tokens, finish = text.rsplit(" ", 4)[0], most, "length"
            completion_tokens += tokens
            message: Answer = {
                "role": "assistant",
                "content": text,
                "refusal": None,
                "annotations": [],
            }
            choices.append(
                {"index": index, "message": message, "logprobs": None, "finish_reason": finish}
            )
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": body["model"],
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 0,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
            "service_tier": body.get("service_tier") or "default",
            "system_fingerprint": FINGERPRINT,
        }

    async def list(self, request: web.Request, version: str) -> Answer:
        """``GET /v1/chat/completions``: stored completions, filtered by metadata and model."""
        wanted = {}
        for name, value in request.query.items():
            match = METADATA_QUERY.fullmatch(name)
            if match is not None:
                wanted[match["key"]] = value
        model = request.query.get("model")
        chosen = [
            completion
            for completion in self.stored.values()
            if all(completion["metadata"].get(key) == value for key, value in wanted.items())
            and (model is None or completion["model"] == model)
        ]
        query = page_query(request, default_order="asc")
        found, has_more = page(chosen, _completion_id, **query)
        return listing(found, has_more)

    async def retrieve(self, request: web.Request, version: str) -> Answer:
        """``GET /v1/chat/completions/{completion_id}``: a stored completion."""
        completion_id = request.match_info["completion_id"]
        completion = self.stored.get(completion_id)
        if completion is None:
            raise envelope.no_chat_completion(completion_id)
        return completion


def _completion_id(completion: Answer) -> str:
    identifier: str = completion["id"]
    return identifier


def chunks(completion: Answer) -> list[tuple[str | None, str]]:
    """``stream: true``: one chunk with each choice's role and whole text, one with its
    finish reason, then ``[DONE]``; bare ``data:`` lines, as OpenAI sends them."""
    base = {key: completion[key] for key in ("id", "created", "model", "system_fingerprint")}
    base["object"] = "chat.completion.chunk"
    events: list[tuple[str | None, str]] = []
    for choice in completion["choices"]:
        delta = {"role": "assistant", "content": choice["message"]["content"], "refusal": None}
        first = {"index": choice["index"], "delta": delta, "logprobs": None, "finish_reason": None}
        events.append((None, orjson.dumps({**base, "choices": [first]}).decode()))
        last = {**first, "delta": {}, "finish_reason": choice["finish_reason"]}
        events.append((None, orjson.dumps({**base, "choices": [last]}).decode()))
    events.append((None, "[DONE]"))
    return events


def _check(body: Mapping[str, Any]) -> None:
    """Answer 400 for what the service refuses, in its words."""
    if metadata_without_store(body):  # before the checks that share it, for its words
        raise envelope.invalid_param("metadata", METADATA_WITHOUT_STORE, "invalid_value")
    check_body(body, "chat", required=("model", "messages"))
