"""The genai-prices snapshot as price rows: checked against providers' published prices (with TokenOps' reviewed
corrections applied, as the catalog holds them) and against genai-prices' own arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib.metadata import version

import pytest
from genai_prices.data import providers as genai_providers
from genai_prices.types import ModelPrice
from genai_prices.types import Usage as GenaiUsage

from tokenops import money
from tokenops.pricing.catalog import base_rows
from tokenops.pricing.genai import (
    EPOCH,
    genai_matcher,
    genai_price_rows,
    genai_source,
    rows_for_model,
    variant_name,
)
from tokenops.pricing.model import format_hours, price_usage
from tokenops.usage import Usage

D = Decimal
# A date when every model below was on sale at the prices quoted (late 2025).
AT = datetime(2025, 10, 15, tzinfo=UTC)


def row_for(provider: str, model_ref: str, at: datetime = AT):
    """The row the catalog's base rows (the bundled snapshot, corrected) price ``model_ref`` with at ``at``."""
    key = genai_matcher()(provider, model_ref)
    assert key is not None, f"{provider}/{model_ref} not matched"
    rows = [r for r in base_rows() if (r.provider, r.model) == key and not r.variant and r.in_force(at)]
    assert len(rows) == 1, rows
    return rows[0]


# Where each price below is published, and the date it was checked for: the price in force on that date
# (Anthropic: 5-minute cache write = 1.25x input, 1-hour write = 2x input, read = 0.1x).
OPENAI = ("https://openai.com/api/pricing/", "2025-10-15")
ANTHROPIC = ("https://docs.anthropic.com/en/docs/about-claude/pricing", "2026-12-02")
SONNET_4_5 = ("https://platform.claude.com/docs/en/models/sonnet-4-5/overview", "2026-12-02")

# Published list prices in USD per 1M tokens, written by hand from the page named in each case.
PUBLISHED = [
    # provider, model as called, input, cache read, 5m write, 1h write, output, (source URL, date read)
    ("openai", "gpt-4o", "2.50", "1.25", None, None, "10", OPENAI),
    ("openai", "gpt-4o-2024-08-06", "2.50", "1.25", None, None, "10", OPENAI),
    ("openai", "gpt-4o-mini", "0.15", "0.075", None, None, "0.60", OPENAI),
    ("openai", "gpt-4o-mini-2024-07-18", "0.15", "0.075", None, None, "0.60", OPENAI),
    ("anthropic", "claude-3-5-haiku-20241022", "0.80", "0.08", "1.00", "1.60", "4", ANTHROPIC),
    ("anthropic", "claude-3-5-haiku-latest", "0.80", "0.08", "1.00", "1.60", "4", ANTHROPIC),
    ("anthropic", "claude-sonnet-4-20250514", "3", "0.30", "3.75", "6", "15", ANTHROPIC),
    ("anthropic", "claude-3-7-sonnet-20250219", "3", "0.30", "3.75", "6", "15", ANTHROPIC),
    ("anthropic", "claude-sonnet-4-5-20250929", "3", "0.30", "3.75", "6", "15", SONNET_4_5),
    ("anthropic", "claude-opus-4-20250514", "15", "1.50", "18.75", "30", "75", ANTHROPIC),
]


@pytest.mark.parametrize(("provider", "model", "inp", "read", "w5", "w1h", "out", "published"), PUBLISHED)
def test_published_base_prices(provider, model, inp, read, w5, w1h, out, published):
    row = row_for(provider, model)
    assert row.input_per_mtok == D(inp)
    assert row.cache_read_per_mtok == D(read)
    assert row.cache_write_5m_per_mtok == (D(w5) if w5 else None)
    assert row.cache_write_1h_per_mtok == (D(w1h) if w1h else None)
    assert row.output_per_mtok == D(out)


GEMINI = ("https://ai.google.dev/gemini-api/docs/pricing", "2025-10-15")

# Long context: (provider, model, threshold, input, output, cache read above the threshold, (source, date read))
PUBLISHED_TIERS = [
    ("anthropic", "claude-sonnet-4-5-20250929", 200_000, "6", "22.50", "0.60", ANTHROPIC),
    ("google", "gemini-2.5-pro", 200_000, "2.50", "15", "0.25", GEMINI),
    ("google", "gemini-1.5-pro-002", 128_000, "2.50", "10", None, GEMINI),
]


@pytest.mark.parametrize(("provider", "model", "threshold", "inp", "out", "read", "published"), PUBLISHED_TIERS)
def test_published_long_context_tiers(provider, model, threshold, inp, out, read, published):
    row = row_for(provider, model)
    (tier,) = row.tiers
    assert tier.above_input_tokens == threshold
    assert (tier.input_per_mtok, tier.output_per_mtok) == (D(inp), D(out))
    assert tier.cache_read_per_mtok == (D(read) if read else None)


def test_sonnet_4_5_long_context_cache_writes():
    (tier,) = row_for("anthropic", "claude-sonnet-4-5").tiers
    assert (tier.cache_write_5m_per_mtok, tier.cache_write_1h_per_mtok) == (D("7.5"), D("12"))


def test_published_sonnet_4_long_context_tier():
    # https://docs.anthropic.com/en/docs/about-claude/pricing#long-context-pricing, read 2026-12-02: Claude
    # Sonnet 4 above 200K input tokens (1M-context beta) is $6 input / $22.50 output per MTok. genai-prices has
    # no tier for it: corrections.yaml adds it.
    tiers = row_for("anthropic", "claude-sonnet-4-20250514").tiers
    assert [(t.above_input_tokens, t.input_per_mtok, t.output_per_mtok) for t in tiers] == [
        (200_000, D("6"), D("22.5"))
    ]


def test_price_change_history_o3():
    # OpenAI cut o3 by 80% on 2025-06-10: $10/$40 -> $2/$8 per MTok.
    before = row_for("openai", "o3-2025-04-16", datetime(2025, 6, 9, 23, 59, 59, tzinfo=UTC))
    after = row_for("openai", "o3", datetime(2025, 6, 10, tzinfo=UTC))
    assert (before.input_per_mtok, before.output_per_mtok) == (D(10), D(40))
    assert (after.input_per_mtok, after.output_per_mtok, after.cache_read_per_mtok) == (D(2), D(8), D("0.5"))
    assert before.effective_from == EPOCH
    assert before.effective_to == after.effective_from == datetime(2025, 6, 10, tzinfo=UTC)
    assert after.effective_to is None


def test_published_o3_cached_input_before_the_cut():
    # https://openai.com/api/pricing/ as published from o3's launch (2025-04-16) to the 2025-06-10 cut: $10 input,
    # $2.50 cached input, $40 output per MTok. genai-prices gives $0.50 (the post-cut price): corrections.yaml
    # fixes it.
    assert row_for("openai", "o3", datetime(2025, 5, 1, tzinfo=UTC)).cache_read_per_mtok == D("2.50")
    assert row_for("openai", "o3", datetime(2025, 6, 10, tzinfo=UTC)).cache_read_per_mtok == D("0.50")


def test_source_names_the_installed_version():
    assert genai_source() == f"genai-prices {version('genai-prices')}"
    assert {r.source for r in genai_price_rows()} == {genai_source()}


def test_rows_are_utc_ordered_and_chained():
    rows = genai_price_rows()
    assert len(rows) > 2000
    line = lambda r: (r.provider, r.model, r.variant, format_hours(r.hours))  # noqa: E731
    assert [(r.provider, r.model) for r in rows] == sorted((r.provider, r.model) for r in rows)
    for key in {line(r) for r in rows}:
        history = sorted((r for r in rows if line(r) == key), key=lambda r: r.effective_from)
        for earlier, later in zip(history, history[1:], strict=False):
            assert earlier.effective_from.tzinfo is UTC
            assert earlier.effective_to is not None and earlier.effective_to <= later.effective_from
    assert len({r.id for r in rows}) == len(rows)


def test_requests_kcount_becomes_a_per_request_price():
    row = row_for("perplexity", "sonar")  # $12 per 1,000 requests
    assert row.per_request == D("0.012")


def test_reasoning_price():
    row = row_for("perplexity", "sonar-deep-research")
    assert (row.output_per_mtok, row.reasoning_per_mtok) == (D(8), D(3))


def test_time_of_day_prices_become_rows_with_daily_hours():
    # DeepSeek (https://api-docs.deepseek.com/quick_start/pricing, read 2026-12-02): until 2025-09-05 16:00 UTC
    # deepseek-chat cost $0.27 / $0.07 cache hit / $1.10 per MTok at UTC 00:30-16:30 and half that (the "discount
    # price") at UTC 16:30-00:30.
    peak = row_for("deepseek", "deepseek-chat", datetime(2025, 6, 2, 10, 0, tzinfo=UTC))
    off = row_for("deepseek", "deepseek-chat", datetime(2025, 6, 2, 17, 0, tzinfo=UTC))
    assert format_hours(peak.hours) == "00:30-16:30" and format_hours(off.hours) == "16:30-00:30"
    assert (peak.input_per_mtok, peak.cache_read_per_mtok, peak.output_per_mtok) == (D("0.27"), D("0.07"), D("1.1"))
    assert (off.input_per_mtok, off.cache_read_per_mtok, off.output_per_mtok) == (D("0.135"), D("0.035"), D("0.55"))
    assert row_for("deepseek", "deepseek-chat", datetime(2025, 6, 2, 0, 29, tzinfo=UTC)) == off  # past midnight
    assert row_for("deepseek", "deepseek-chat", datetime(2025, 6, 2, 16, 30, tzinfo=UTC)) == off  # end exclusive
    # several windows a day: V4 Flash's peak is UTC 01:00-04:00 and 06:00-10:00
    model = next(m for p in genai_providers if p.id == "deepseek" for m in p.models if m.id == "deepseek-v4-flash")
    hours = {format_hours(r.hours) for r in rows_for_model("deepseek", model, "test")}
    assert hours == {"01:00-04:00,06:00-10:00", "04:00-06:00,10:00-01:00"}


def test_free_models_are_explicit_zero_and_unit_only_models_are_unpriced():
    for provider, model in (("openai", "omni-moderation-latest"), ("openrouter", "qwen3-14b:free")):
        free = row_for(provider, model)
        assert (free.input_per_mtok, free.output_per_mtok, free.per_request) == (D(0), D(0), None)
    # whisper is priced per audio hour only: no row, so the model is unpriced rather than $0
    assert genai_matcher()("openai", "whisper-1") == ("openai", "whisper-1")
    assert not [r for r in genai_price_rows() if (r.provider, r.model) == ("openai", "whisper-1")]


def test_matching_reuses_genai_prices_rules():
    match = genai_matcher()
    assert match("openai", "gpt-4o-2024-08-06") == ("openai", "gpt-4o")
    assert match("openai", "gpt-4o-2024-05-13") == ("openai", "gpt-4o-2024-05-13")  # its own, older price
    assert match("openai", "gpt-4.1-20250414") == ("openai", "gpt-4.1")  # compact date
    assert match("anthropic", "claude-sonnet-4-5-20250929") == ("anthropic", "claude-sonnet-4-5")
    assert match("anthropic", "CLAUDE-3-5-HAIKU-LATEST") == ("anthropic", "claude-3-5-haiku-latest")
    assert match("azure", "gpt-4o") == ("openai", "gpt-4o")  # azure falls back to openai's data
    assert match("openai", "no-such-model") is None
    assert match("local", "gpt-4o") is None


def _genai_usage(u: Usage) -> GenaiUsage:
    return GenaiUsage(
        input_tokens=u.input_tokens,
        cache_read_tokens=u.cache_read_tokens,
        cache_write_tokens=u.cache_write_tokens,
        cache_write_1h_tokens=u.cache_write_1h_tokens,
        output_tokens=u.output_tokens,
        output_reasoning_tokens=u.reasoning_tokens,
    )


USAGES = [
    Usage(input_tokens=1_234, output_tokens=567),
    Usage(
        input_tokens=12_345,
        cache_read_tokens=4_000,
        cache_write_5m_tokens=3_000,
        cache_write_1h_tokens=1_000,
        output_tokens=2_500,
        reasoning_tokens=1_100,
    ),
    Usage(input_tokens=200_000, cache_read_tokens=50_000, output_tokens=10),  # on a 200k threshold: base price
    Usage(input_tokens=300_001, cache_read_tokens=100_000, cache_write_5m_tokens=7, output_tokens=999),
]


def test_every_row_prices_like_genai_prices():
    """For token usage, each row gives exactly genai-prices' own price on the row's first day (at the start of
    its first daily window, for a row with hours), variant rows with genai-prices' price for that variant."""
    checked = 0
    for provider in genai_providers:
        for model in provider.models:
            contexts = {variant_name(v.when): v.when for v in model.price_variants or ()}
            for row in rows_for_model(provider.id, model, "test"):
                at = row.effective_from + timedelta(hours=12)
                if row.hours:
                    start = row.hours[0][0]
                    at = row.effective_from + timedelta(hours=start.hour, minutes=start.minute)
                assert row.in_force(at)
                context = contexts[row.variant] if row.variant else None
                for usage in USAGES:
                    expected = model.calc_price(_genai_usage(usage), provider, genai_request_timestamp=at,
                                                price_context=context)  # fmt: skip
                    got = price_usage(usage, row)
                    assert got.total == money.quantize(expected.total_price), (provider.id, model.id, row, usage)
                    checked += 1
    assert checked > 9000


def test_tier_threshold_is_strictly_greater_than_like_genai_prices():
    provider = next(p for p in genai_providers if p.id == "anthropic")
    model = next(m for m in provider.models if m.id == "claude-sonnet-4-5")
    (row,) = [r for r in rows_for_model("anthropic", model, "test") if not r.variant]
    assert isinstance(model.prices, ModelPrice)
    for n in (199_999, 200_000, 200_001):
        usage = Usage(input_tokens=n, output_tokens=1)
        expected = model.calc_price(_genai_usage(usage), provider, genai_request_timestamp=AT).total_price
        assert price_usage(usage, row).total == money.quantize(expected)
    assert price_usage(Usage(input_tokens=200_000), row).total == D("0.6")
    assert price_usage(Usage(input_tokens=200_001), row).total == D("1.200006")
