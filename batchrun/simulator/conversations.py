"""Conversations: the Responses API's threads, holding items, one request at a time.

A response that names a conversation occupies it until the response is over; another
request meanwhile gets OpenAI's 400 ``conversation_locked`` (not in the spec, see
API-NOTES.md). A completed response adds its input and output items; one that fails or is
cancelled adds nothing. Like threads, any well-formed id exists unless ``strict_threads``.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import itemgetter
from typing import Any, Protocol

from aiohttp import web

from batchrun.simulator import envelope
from batchrun.simulator.generation import chars_of, input_items
from batchrun.simulator.settings import SimulatorConfig
from batchrun.simulator.state import THREAD_ID
from batchrun.simulator.wire import Answer, checked_metadata, json_body, listing, page, page_query

MAX_ITEMS = 20  # items a conversation may be created with


class Occupant(Protocol):
    """What holds a conversation: a response that moves along with the clock."""

    id: str

    def advance(self, now: float) -> None:
        """Bring the response up to ``now``; it releases the conversation when over."""


class Conversation:
    """A conversation: its items, oldest first, and the response occupying it, if any."""

    __slots__ = ("created_at", "id", "items", "metadata", "occupant")

    def __init__(self, conversation_id: str, created_at: int, metadata: dict[str, Any]) -> None:
        self.id = conversation_id
        self.created_at = created_at
        self.metadata = metadata
        self.items: list[dict[str, Any]] = []
        self.occupant: Occupant | None = None

    def settle(self, now: float) -> None:
        """Let the occupying response reach where the clock says it is."""
        if self.occupant is not None:
            self.occupant.advance(now)

    def occupy(self, occupant: Occupant, now: float) -> None:
        """Take the conversation for ``occupant``; 400 ``conversation_locked`` if taken."""
        self.settle(now)
        if self.occupant is not None:
            raise envelope.conversation_locked()
        self.occupant = occupant

    def release(self, occupant: Occupant, items: list[dict[str, Any]]) -> None:
        """The response is over: free the conversation and keep what it added."""
        if self.occupant is occupant:
            self.occupant = None
        self.items.extend(items)

    def chars(self) -> int:
        """Text characters in the items: the context a new response reads."""
        return chars_of(self.items)

    def to_json(self) -> Answer:
        """The conversation object as the API returns it."""
        return {
            "id": self.id,
            "object": "conversation",
            "created_at": self.created_at,
            "metadata": self.metadata,
        }


class Conversations:
    """Every conversation of one simulator, and the routes that serve them."""

    __slots__ = ("by_id", "clock", "config", "new_id")

    def __init__(
        self, config: SimulatorConfig, clock: Callable[[], float], new_id: Callable[[str], str]
    ) -> None:
        self.config = config
        self.clock = clock
        self.new_id = new_id
        self.by_id: dict[str, Conversation] = {}

    def get(self, conversation_id: str, now: float) -> Conversation:
        """The conversation, settled up to ``now``; auto-created unless ``strict_threads``."""
        conversation = self.by_id.get(conversation_id)
        if conversation is None:
            if self.config.strict_threads or not THREAD_ID.fullmatch(conversation_id):
                raise envelope.no_conversation(conversation_id)
            conversation = Conversation(conversation_id, int(now), {})
            self.by_id[conversation_id] = conversation
        conversation.settle(now)
        return conversation

    async def create(self, request: web.Request, version: str) -> Answer:
        """``POST /v1/conversations``: ``{metadata?, items?}`` -> a new conversation."""
        body = await json_body(request, empty_ok=True)
        for name in body:
            if name not in ("metadata", "items"):
                raise envelope.invalid_body(name, "is not a field here", "unknown_parameter")
        metadata = checked_metadata(body)
        items = body.get("items") or []
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise envelope.invalid_param(
                "items", "Invalid type for 'items': expected an array of objects.", "invalid_type"
            )
        if len(items) > MAX_ITEMS:
            raise envelope.invalid_param(
                "items",
                f"Invalid 'items': array too long. Expected an array with maximum length "
                f"{MAX_ITEMS}, but got an array with length {len(items)} instead.",
                "array_above_max_length",
            )
        now = self.clock()
        conversation = Conversation(self.new_id("conv_"), int(now), metadata)
        conversation.items.extend(input_items(items, self.new_id))
        self.by_id[conversation.id] = conversation
        return conversation.to_json()

    async def retrieve(self, request: web.Request, version: str) -> Answer:
        """``GET /v1/conversations/{conversation_id}``."""
        return self.get(request.match_info["conversation_id"], self.clock()).to_json()

    async def list_items(self, request: web.Request, version: str) -> Answer:
        """``GET /v1/conversations/{conversation_id}/items``: newest first unless asked."""
        conversation = self.get(request.match_info["conversation_id"], self.clock())
        chosen, has_more = page(conversation.items, itemgetter("id"), **page_query(request))
        return listing(chosen, has_more)
