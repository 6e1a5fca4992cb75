"""The simulated model's replies and the items conversations hold: pure functions, tested
as properties."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from batchrun.simulator import generation

ROLES = st.sampled_from(["user", "assistant", "system", "developer"])
MESSAGES = st.lists(st.fixed_dictionaries({"role": ROLES, "content": st.text(max_size=40)}))


def counter_ids() -> Any:
    numbers = itertools.count()
    return lambda prefix: f"{prefix}{next(numbers)}"


@given(st.text(max_size=200))
def test_text_input_becomes_one_user_message(text: str) -> None:
    (item,) = generation.input_items(text, counter_ids())
    assert item == {
        "type": "message",
        "id": "msg_0",
        "status": "completed",
        "role": "user",
        "content": [{"type": "input_text", "text": text}],
    }
    assert generation.chars_of([item]) == len(text)


@given(MESSAGES)
def test_easy_messages_keep_their_order_roles_and_text(messages: list[dict[str, str]]) -> None:
    items = generation.input_items(messages, counter_ids())
    assert [item["role"] for item in items] == [m["role"] for m in messages]
    assert len({item["id"] for item in items}) == len(items)
    for item, message in zip(items, messages, strict=True):
        (part,) = item["content"]
        assert part["text"] == message["content"]
        assert part["type"] == ("output_text" if message["role"] == "assistant" else "input_text")


def test_items_of_other_types_keep_their_fields_and_get_an_id() -> None:
    output = {"type": "function_call_output", "call_id": "call_1", "output": "42"}
    (item,) = generation.input_items([output], counter_ids())
    assert item == {"id": "fco_0", **output}


@given(st.text(max_size=50), st.text(max_size=50))
def test_a_reply_is_a_function_of_the_request(instructions: str, text: str) -> None:
    first = generation.reply("gpt-4o", instructions, text)
    assert generation.reply("gpt-4o", instructions, text) == first
    reply, tokens = first
    assert reply.startswith("Simulated reply: ") and 10 <= tokens < 100


@given(st.text(max_size=30))
def test_markers_pick_the_outcome_and_plain_text_completes(text: str) -> None:
    assert generation.outcome(f"[sim:incomplete]{text}[sim:fail]") == "failed"
    if "[sim:fail]" not in text:
        assert generation.outcome(f"[sim:incomplete]{text}") == "incomplete"
    if "[sim:" not in text:
        assert generation.outcome(text) == "completed"
        assert not generation.is_slow(text)
