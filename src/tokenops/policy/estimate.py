"""What a call can cost at most, before it is made.

Reservations need an upper bound, caps and token rate limits a typical figure (:mod:`tokenops.tokens` counts
both from the request's text, images and the parts its body does not bound):

* input tokens, upper bound: the body's bytes plus the most its images can be billed, or the model's context
  window for parts the body does not bound (a PDF, a file by id, a server-side tool), once per model turn;
* input tokens, typical: ~4 characters a token, plus 4 a message, plus its images;
* output tokens: the call's output limit (``max_tokens`` / ``max_completion_tokens``, or the one the gateway
  set), else the configured ceiling, once per answer asked for (``n``) and per model turn.

When a hard limit applies to a call that sets no output limit, the engine sends the ceiling upstream as the
call's limit (:func:`needs_output_bound`), so the output bound is one the provider enforces.

The maximum cost prices the bound as if every input token were billed at the dearest input rate the price row
has (plain input, 5-minute or 1-hour cache write) and every output token at the output rate.
"""

from __future__ import annotations

from decimal import Decimal

from tokenops import money
from tokenops.call import Call
from tokenops.pricing.model import PriceRow
from tokenops.tokens import estimate_input
from tokenops.tokens import input_bound as _input_bound

OUTPUT_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")
EMBEDDING_ROUTES = frozenset(("embeddings", "gemini.embed", "gemini.batch_embed"))  # no output to bound
UNBOUNDED_INPUT = 1_000_000  # tokens assumed for a part the body does not bound, when the context window is unknown


def requested_output(call: Call) -> int | None:
    """The output limit the call will go upstream with (the gateway's own, else the client's)."""
    if call.output_limit is not None:
        return call.output_limit
    config = call.body.get("generationConfig")  # Gemini's limit
    given = [call.body.get(name) for name in OUTPUT_FIELDS]
    given.append(config.get("maxOutputTokens") if isinstance(config, dict) else None)
    for value in given:
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def typical_input(call: Call, model: str) -> int:
    return estimate_input(call.shape, model)


def input_bound(call: Call, model: str, row: PriceRow | None) -> int:
    return _input_bound(call.shape, call.body_bytes, model, context_window=row.context_window if row else None,
                        unbounded_default=UNBOUNDED_INPUT)  # fmt: skip


def output_bound(call: Call, per_answer: int) -> int:
    """All the output a call may be billed: its per-answer limit, times the answers, times the model turns."""
    return per_answer * call.choices * call.shape.turns


def needs_output_bound(call: Call) -> bool:
    """A call whose output only the gateway can bound: it generates text and sets no output limit."""
    return call.route not in EMBEDDING_ROUTES and requested_output(call) is None


def max_cost(row: PriceRow | None, input_tokens: int, output_tokens: int) -> Decimal | None:
    """Every input token at the dearest input rate of the row (plain, 5-minute or 1-hour cache write), every
    output token at the output rate (or the reasoning rate, if dearer), long-context tiers applied."""
    if row is None:
        return None
    p = row.prices_at(input_tokens)
    input_rates = [r for n in ("input_per_mtok", "cache_write_5m_per_mtok", "cache_write_1h_per_mtok") if (r := p[n])]
    output_rates = [r for n in ("output_per_mtok", "reasoning_per_mtok") if (r := p[n])]
    worst = money.add(
        money.per_mtok(max(input_rates, default=money.ZERO), input_tokens),
        money.per_mtok(max(output_rates, default=money.ZERO), output_tokens),
        row.per_request or money.ZERO,
    )
    return money.quantize(worst)
