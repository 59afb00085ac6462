"""Exact cost arithmetic with catalog rows: every expected figure is worked out by hand from the per-MTok price."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tokenops import money
from tokenops.pricing.catalog import PriceCatalog, load_catalog
from tokenops.pricing.model import PriceRow, price_usage
from tokenops.usage import Usage

D = Decimal
AT = datetime(2025, 10, 15, tzinfo=UTC)


@pytest.fixture(scope="module")
def catalog() -> PriceCatalog:
    return load_catalog()


def cost(catalog: PriceCatalog, provider: str, model: str, usage: Usage, at: datetime = AT):
    row = catalog.lookup([provider], model, at)
    assert row is not None
    return price_usage(usage, row)


def test_plain_input_and_output(catalog):
    c = cost(catalog, "openai", "gpt-4o-2024-08-06", Usage(input_tokens=1_000, output_tokens=500))
    # 1,000 x $2.50/M + 500 x $10/M
    assert (c.input, c.output, c.total) == (D("0.0025"), D("0.005"), D("0.0075"))
    assert c.total.as_tuple().exponent == -12  # recorded at the ledger's pico-dollar resolution


def test_openai_cached_input(catalog):
    usage = Usage(input_tokens=10_000, cache_read_tokens=4_000, output_tokens=1_000)
    c = cost(catalog, "openai", "gpt-4o-mini", usage)
    # 6,000 uncached x $0.15/M + 4,000 cached x $0.075/M + 1,000 x $0.60/M
    assert (c.input, c.cache_read, c.output) == (D("0.0009"), D("0.0003"), D("0.0006"))
    assert c.total == D("0.0018")


def test_anthropic_5_minute_and_1_hour_cache_writes(catalog):
    usage = Usage(
        input_tokens=10_000,
        cache_read_tokens=2_000,
        cache_write_5m_tokens=3_000,
        cache_write_1h_tokens=1_000,
        output_tokens=500,
    )
    c = cost(catalog, "anthropic", "claude-sonnet-4-20250514", usage)
    # 4,000 x $3 + 2,000 x $0.30 + 3,000 x $3.75 + 1,000 x $6 + 500 x $15, per million
    assert c.input == D("0.012")
    assert c.cache_read == D("0.0006")
    assert c.cache_write == D("0.01125") + D("0.006")
    assert c.output == D("0.0075")
    assert c.total == D("0.03735")


def test_one_million_cache_writes_at_each_ttl(catalog):
    five = cost(
        catalog,
        "anthropic",
        "claude-3-5-haiku-20241022",
        Usage(input_tokens=1_000_000, cache_write_5m_tokens=1_000_000),
    )
    hour = cost(
        catalog,
        "anthropic",
        "claude-3-5-haiku-20241022",
        Usage(input_tokens=1_000_000, cache_write_1h_tokens=1_000_000),
    )
    assert (five.total, hour.total) == (D("1.00"), D("1.60"))


def test_reasoning_with_its_own_price(catalog):
    usage = Usage(input_tokens=100, output_tokens=1_000, reasoning_tokens=600)
    c = cost(catalog, "perplexity", "sonar-deep-research", usage)
    # 100 x $2 + 400 answer tokens x $8 + 600 reasoning tokens x $3, per million
    assert (c.input, c.output, c.total) == (D("0.0002"), D("0.005"), D("0.0052"))


def test_reasoning_billed_as_output(catalog):
    usage = Usage(input_tokens=1_000, output_tokens=5_000, reasoning_tokens=4_000)
    c = cost(catalog, "openai", "o3", usage)  # $2 / $8 after the June 2025 cut
    assert c.total == D("0.042")
    assert cost(catalog, "openai", "o3", usage, datetime(2025, 5, 1, tzinfo=UTC)).total == D("0.21")


def test_per_request_price(catalog):
    c = cost(catalog, "perplexity", "sonar", Usage(input_tokens=1_000, output_tokens=1_000))
    assert (c.request, c.total) == (D("0.012"), D("0.014"))


def test_long_context_tier_prices_the_whole_call(catalog):
    model = "claude-sonnet-4-5-20250929"
    above = cost(
        catalog, "anthropic", model, Usage(input_tokens=250_000, cache_read_tokens=50_000, output_tokens=2_000)
    )
    # above 200k every token is at the tier: 200,000 x $6 + 50,000 x $0.60 + 2,000 x $22.50, per million
    assert (above.input, above.cache_read, above.output) == (D("1.2"), D("0.03"), D("0.045"))
    assert above.total == D("1.275")
    at = cost(catalog, "anthropic", model, Usage(input_tokens=200_000, cache_read_tokens=50_000, output_tokens=2_000))
    # exactly 200k is not above it: 150,000 x $3 + 50,000 x $0.30 + 2,000 x $15
    assert at.total == D("0.495")
    gemini = cost(catalog, "google", "gemini-2.5-pro", Usage(input_tokens=300_000, output_tokens=1_000))
    assert gemini.total == D("0.765")  # 300,000 x $2.50 + 1,000 x $15, per million


def test_cheap_model_fractions_of_a_micro_dollar(catalog):
    # gemini-1.5-flash: $0.075 input, $0.01875 cached, $0.30 output per million: one token is 75 nano-dollars
    one = cost(catalog, "google", "gemini-1.5-flash-002", Usage(input_tokens=1, output_tokens=1))
    assert one.total == D("0.000000375")
    cached = cost(catalog, "google", "gemini-1.5-flash", Usage(input_tokens=3, cache_read_tokens=1))
    assert cached.total == D("0.00000016875")
    assert money.format_usd(cached.total) == "0.00000016875"


def test_rounding_happens_once_on_the_total():
    row = PriceRow(
        provider="local",
        model="tiny",
        effective_from=AT,
        source="test",
        input_per_mtok=D("0.0000001"),
        output_per_mtok=D("0.0000001"),
    )
    c = price_usage(Usage(input_tokens=7, output_tokens=8), row)
    # 0.7 + 0.8 pico-dollars: each part is kept exact and only the sum (1.5 pico) is rounded, half-even
    assert (c.input, c.output) == (D("7E-13"), D("8E-13"))
    assert c.total == D("0.000000000002")


@pytest.mark.parametrize(
    ("provider", "model"),
    [("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("anthropic", "claude-3-5-haiku-20241022")],
)
def test_sum_of_calls_equals_cost_of_summed_usage(catalog, provider, model):
    """With linear prices (no tier crossed, no per-request fee) pricing is additive to the last pico-dollar."""
    rng = random.Random(20251015)
    row = catalog.lookup([provider], model, AT)
    assert row.tiers == () and row.per_request is None
    usages = []
    for _ in range(2_000):
        read, w5, w1h = rng.randrange(0, 5_000), rng.randrange(0, 2_000), rng.randrange(0, 2_000)
        output = rng.randrange(0, 4_000)
        usages.append(
            Usage(
                input_tokens=read + w5 + w1h + rng.randrange(0, 20_000),
                cache_read_tokens=read,
                cache_write_5m_tokens=w5,
                cache_write_1h_tokens=w1h,
                output_tokens=output,
                reasoning_tokens=rng.randrange(0, output + 1),
            )
        )
    total_usage = sum(usages[1:], usages[0])
    per_call = money.add(*(price_usage(u, row).total for u in usages))
    assert per_call == price_usage(total_usage, row).total
    assert per_call > 0
