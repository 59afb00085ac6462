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

from tokenops.gateway.call import Call
from tokenops.pricing.model import PriceRow, price_usage
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
    if row is None:
        return None
    worst = Decimal(0)
    for usage in (
        Usage(input_tokens=input_tokens, output_tokens=output_tokens),
        Usage(input_tokens=input_tokens, cache_write_5m_tokens=input_tokens, output_tokens=output_tokens),
        Usage(input_tokens=input_tokens, cache_write_1h_tokens=input_tokens, output_tokens=output_tokens),
    ):
        worst = max(worst, price_usage(usage, row).total)
    return worst
