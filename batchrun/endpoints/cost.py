"""What a row cost, and the most a sheet can cost, at the model's published prices.

    prices = Prices(batch=False)
    prices.cost("gpt-4o-mini", input_tokens=1_000, output_tokens=200)   # 0.00027 (dollars)

Prices come from `genai-prices <https://github.com/pydantic/genai-prices>`_ (Pydantic's
maintained price data, bundled in the package: nothing is fetched), OpenAI's as the
provider; Batch API rows are priced with its ``processing: batch`` variant, the Batch
discount. A model it does not know has no price: its cost is None (an empty cell), never a
guess. The library prices a call in about 0.1 ms; most models are priced per token alike
at any size, so each model's per-token rates are taken from it once and a row costs a
multiplication. A model whose price is not linear (a tier above some prompt size) is
priced by the library row by row.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from batchrun.endpoints import CACHED

# A probe far from any small request: a price that is linear there is linear throughout.
_PROBE_INPUT, _PROBE_OUTPUT, _PROBE_CACHED = 7_654_321, 1_234_567, 3_456_789
MILLION = 1_000_000
INPUT_KEYS = ("prompt_tokens", "input_tokens")
OUTPUT_KEYS = ("completion_tokens", "output_tokens")


def dollars(amount: float) -> str:
    """``0.00004875`` -> ``$0.00004875``, ``12.3456`` -> ``$12.35``."""
    if amount == 0:
        return "$0"
    if abs(amount) < 0.01:
        # Four significant digits of a fraction of a cent, without an exponent.
        places = 3 - math.floor(math.log10(abs(amount)))
        return f"${amount:.{places}f}".rstrip("0")
    return f"${amount:,.2f}"


class Prices:
    """Per-model prices for one job (``batch``: at the Batch API's discount)."""

    __slots__ = ("_batch", "_rates")

    def __init__(self, *, batch: bool = False) -> None:
        self._batch = batch
        # model -> dollars per (input, output, cached input) token; None: no known price;
        # "" : priced by the library per call (not linear).
        self._rates: dict[str, tuple[float, float, float] | str | None] = {}

    def cost(
        self, model: object, input_tokens: int, output_tokens: int, cached_tokens: int = 0
    ) -> float | None:
        """Dollars for this usage of ``model`` (``cached_tokens`` of the input read from
        the prompt cache, at its lower price), or None when it has no known price."""
        if not isinstance(model, str) or not model:
            return None
        if model not in self._rates:
            self._rates[model] = self._learn(model)
        rates = self._rates[model]
        if rates is None:
            return None
        cached = min(max(cached_tokens, 0), input_tokens)
        if isinstance(rates, str):
            return self._library(model, input_tokens, output_tokens, cached)
        paid = (input_tokens - cached) * rates[0] + output_tokens * rates[1] + cached * rates[2]
        return round(paid, 12)

    def row_cost(self, body: Mapping[str, Any] | None, usage: Mapping[str, int]) -> float | None:
        """What a row's answer cost: its usage at the price of the model it asked for."""
        if not usage or body is None:
            return None
        tokens_in = next((usage[key] for key in INPUT_KEYS if key in usage), None)
        tokens_out = next((usage[key] for key in OUTPUT_KEYS if key in usage), None)
        if tokens_in is None or tokens_out is None:
            return None
        return self.cost(body.get("model"), tokens_in, tokens_out, usage.get(CACHED, 0))

    def _library(
        self, model: str, input_tokens: int, output_tokens: int, cached_tokens: int = 0
    ) -> float | None:
        from genai_prices import Usage, calc_price

        context = {"processing": "batch"} if self._batch else None
        usage = Usage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cached_tokens or None,
        )
        try:
            found = calc_price(
                usage,
                model,
                provider_id="openai",
                price_context=context,
            )
        except LookupError:
            return None
        return round(float(found.total_price), 12)

    def _learn(self, model: str) -> tuple[float, float, float] | str | None:
        per_input = self._library(model, MILLION, 0)
        if per_input is None:
            return None
        per_output = self._library(model, 0, MILLION) or 0.0
        # A model without a cached-input price charges cached tokens as input.
        per_cached = self._library(model, MILLION, 0, MILLION)
        per_cached = per_input if per_cached is None else per_cached
        rates = (per_input / MILLION, per_output / MILLION, per_cached / MILLION)
        probe = self._library(model, _PROBE_INPUT, _PROBE_OUTPUT, _PROBE_CACHED) or 0.0
        expected = (
            (_PROBE_INPUT - _PROBE_CACHED) * rates[0]
            + _PROBE_OUTPUT * rates[1]
            + _PROBE_CACHED * rates[2]
        )
        if abs(probe - expected) > 1e-9 * max(1.0, probe):
            return ""  # tiered: ask the library each time
        return rates


@functools.cache
def prices_for(batch: bool) -> Prices:
    """The process's :class:`Prices` (``batch``: at the Batch discount): each model's rates
    are learnt from the library once, not once a chunk of rows."""
    return Prices(batch=batch)


@dataclass(slots=True)
class Estimate:
    """The tokens of the valid rows, and the most they can cost, by model."""

    # model -> [rows, prompt tokens, maximum output tokens, rows naming no maximum]
    by_model: dict[str, list[int]] = field(default_factory=dict)

    def add(self, model: str, prompt: int, most: int) -> None:
        """One valid row of ``model`` with its prompt and maximum output tokens (0: it
        names none)."""
        counts = self.by_model.setdefault(model, [0, 0, 0, 0])
        counts[0] += 1
        counts[1] += prompt
        counts[2] += most
        counts[3] += most == 0

    def merge(self, other: Mapping[str, list[int]]) -> None:
        """Add another chunk's counts."""
        for model, more in other.items():
            counts = self.by_model.setdefault(model, [0, 0, 0, 0])
            for index, count in enumerate(more):
                counts[index] += count

    def text(self, *, batch: bool = False) -> str:
        """``tokens: 1,200 prompt + at most 100,000 output; at most $0.0612 ...``."""
        if not self.by_model:
            return ""
        prompt = sum(counts[1] for counts in self.by_model.values())
        most = sum(counts[2] for counts in self.by_model.values())
        prices = Prices(batch=batch)
        total, unpriced = 0.0, 0
        for model, (rows, tokens_in, tokens_out, _) in self.by_model.items():
            cost = prices.cost(model, tokens_in, tokens_out)
            if cost is None:
                unpriced += rows
            else:
                total += cost
        unbounded = sum(counts[3] for counts in self.by_model.values())
        text = f"{_tokens(prompt, 'prompt')} + at most {_tokens(most, 'output')}"
        if unpriced == sum(counts[0] for counts in self.by_model.values()):
            return text + "; no known price for the model(s)"
        text += f"; at most {dollars(total)}"
        if batch:
            text += " at the Batch API's price"
        if unpriced:
            what = "row" if unpriced == 1 else "rows"
            text += f" ({unpriced:,} {what} of models with no known price not counted)"
        if unbounded:
            what = (
                "row names no maximum output: its"
                if unbounded == 1
                else "rows name no maximum output: their"
            )
            text += f" ({unbounded:,} {what} output is not counted)"
        return text


def _tokens(count: int, kind: str) -> str:
    """``1 prompt token``, ``2,400 prompt tokens``."""
    return f"{count:,} {kind} token{'' if count == 1 else 's'}"
