"""What a call can cost at most, before it is made.

Reservations need an upper bound, caps and token rate limits a typical figure:

* input tokens, upper bound: the request body's size in bytes (every token of a BPE tokenizer covers at least
  one byte, and the JSON around the text is more than the per-message formatting tokens);
* input tokens, typical: ~4 characters a token, plus 4 a message (what providers' own estimators do offline);
* output tokens: the call's ``max_tokens`` / ``max_completion_tokens``, else the configured ceiling.

The maximum cost prices the bound as if every input token were billed at the dearest input rate the price row
has (plain input, 5-minute or 1-hour cache write) and every output token at the output rate.
"""

from __future__ import annotations

from decimal import Decimal

from tokenops import money
from tokenops.gateway.call import Call
from tokenops.pricing.model import PriceRow
from tokenops.usage import Usage

OUTPUT_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


def requested_output(call: Call) -> int | None:
    for name in OUTPUT_FIELDS:
        value = call.body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def typical_input(call: Call) -> int:
    messages = call.body.get("messages")
    n = len(messages) if isinstance(messages, list) else 1
    return (call.prompt_chars + 3) // 4 + 4 * n


def input_bound(call: Call) -> int:
    return max(call.body_bytes, typical_input(call))


def max_cost(row: PriceRow | None, input_tokens: int, output_tokens: int) -> Decimal | None:
    """Every input token at the dearest input rate of the row (plain, 5-minute or 1-hour cache write), every
    output token at the output rate (or the reasoning rate, if dearer), long-context tiers applied."""
    if row is None:
        return None
    p = row.prices_for(Usage(input_tokens=input_tokens))
    input_rates = [p[n] for n in ("input_per_mtok", "cache_write_5m_per_mtok", "cache_write_1h_per_mtok") if p[n]]
    output_rates = [p[n] for n in ("output_per_mtok", "reasoning_per_mtok") if p[n]]
    worst = money.add(
        money.per_mtok(max(input_rates, default=money.ZERO), input_tokens),
        money.per_mtok(max(output_rates, default=money.ZERO), output_tokens),
        row.per_request or money.ZERO,
    )
    return money.quantize(worst)
