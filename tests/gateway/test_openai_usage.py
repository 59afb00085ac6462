"""OpenAI-format usage fields the adapter must read: cache writes, reasoning reported beside completion tokens,
DeepSeek's cache hits. Each case is priced with the catalog's row, the way the meter prices a call."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tokenops.gateway.providers.openai import usage_from_openai
from tokenops.pricing.catalog import load_catalog
from tokenops.pricing.model import price_usage
from tokenops.usage import MalformedUsage, Usage

M = Decimal(1_000_000)
NOW = datetime(2026, 12, 2, tzinfo=UTC)


def test_cache_writes_are_read_and_priced_at_the_cache_write_rate() -> None:
    # a Responses usage with writes, as the openai SDK 3.57 types it (input_tokens_details.cache_write_tokens)
    u = usage_from_openai({"input_tokens": 10_000, "output_tokens": 500, "total_tokens": 10_500,
                           "input_tokens_details": {"cached_tokens": 2_000, "cache_write_tokens": 6_000},
                           "output_tokens_details": {"reasoning_tokens": 100}})  # fmt: skip
    assert u == Usage(input_tokens=10_000, cache_read_tokens=2_000, cache_write_5m_tokens=6_000, output_tokens=500,
                      reasoning_tokens=100)  # fmt: skip
    # gpt-6-sol in genai-prices 0.2.3 (OpenAI pricing page): $2 input, $2.50 cache write (1.25x), $0.20 cached
    row = load_catalog(()).lookup(("openai",), "gpt-6-sol", NOW)
    assert row is not None and row.cache_write_5m_per_mtok == Decimal("2.5")
    cost = price_usage(u, row)
    expected = (2_000 * row.input_per_mtok + 2_000 * row.cache_read_per_mtok + 6_000 * Decimal("2.5")
                + 500 * row.output_per_mtok) / M  # fmt: skip
    assert cost.total == expected
    plain = price_usage(Usage(input_tokens=10_000, cache_read_tokens=2_000, output_tokens=500, reasoning_tokens=100), row)
    assert cost.total - plain.total == 6_000 * (Decimal("2.5") - row.input_per_mtok) / M  # what reading them changes


def test_writes_never_exceed_what_the_prompt_holds() -> None:
    u = usage_from_openai({"prompt_tokens": 100, "completion_tokens": 1,
                           "prompt_tokens_details": {"cached_tokens": 80, "cache_write_tokens": 50}})  # fmt: skip
    assert u is not None and u.cache_read_tokens == 80 and u.cache_write_5m_tokens == 20


@pytest.mark.parametrize("usage,output,reasoning", [
    # the OpenAI convention: reasoning inside completion_tokens
    ({"prompt_tokens": 10, "completion_tokens": 50, "total_tokens": 60,
      "completion_tokens_details": {"reasoning_tokens": 30}}, 50, 30),
    # a compatible server that reports reasoning beside completion_tokens: total counts all three
    ({"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 60,
      "completion_tokens_details": {"reasoning_tokens": 30}}, 50, 30),
    # more reasoning than completion: it cannot be inside it
    ({"prompt_tokens": 10, "completion_tokens": 5, "completion_tokens_details": {"reasoning_tokens": 30}}, 35, 30),
])  # fmt: skip
def test_reasoning_outside_completion_tokens_is_kept(usage: dict[str, object], output: int, reasoning: int) -> None:
    u = usage_from_openai(usage)
    assert u is not None and (u.output_tokens, u.reasoning_tokens) == (output, reasoning)


def test_deepseek_cache_hits_are_cache_reads() -> None:
    # DeepSeek's usage (api-docs.deepseek.com/api/create-chat-completion, read 2026-12-02)
    u = usage_from_openai({"prompt_tokens": 1_000, "completion_tokens": 10, "total_tokens": 1_010,
                           "prompt_cache_hit_tokens": 600, "prompt_cache_miss_tokens": 400})  # fmt: skip
    assert u is not None and u.cache_read_tokens == 600 and u.input_tokens == 1_000


def test_a_garbage_cache_write_count_makes_the_usage_untrusted() -> None:
    with pytest.raises(MalformedUsage):
        usage_from_openai({"prompt_tokens": 10, "prompt_tokens_details": {"cache_write_tokens": "lots"}})
