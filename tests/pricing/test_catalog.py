"""PriceCatalog: history, overrides, provider order, name matching and the unpriced case."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tokenops.pricing.catalog import PriceCatalog, base_rows, load_catalog
from tokenops.pricing.corrections import load_corrections
from tokenops.pricing.genai import genai_price_rows, genai_source
from tokenops.pricing.model import PriceRow

D = Decimal


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def row(provider: str, model: str, start: datetime, inp: str, out: str, source: str = "test", **kw) -> PriceRow:
    return PriceRow(
        provider=provider,
        model=model,
        effective_from=start,
        source=source,
        input_per_mtok=D(inp),
        output_per_mtok=D(out),
        **kw,
    )


@pytest.fixture(scope="module")
def catalog() -> PriceCatalog:
    return load_catalog()


def test_override_replaces_the_catalog_price_from_its_date_on():
    base = [row("openai", "m", utc(1970, 1, 1), "10", "40"), row("openai", "m", utc(2025, 6, 10), "2", "8")]
    override = row("openai", "m", utc(2025, 1, 1), "5", "20", source="config")
    catalog = PriceCatalog(base, [override])

    assert catalog.lookup(["openai"], "m", utc(2024, 12, 31, 23, 59)).input_per_mtok == D(10)
    assert catalog.lookup(["openai"], "m", utc(2025, 1, 1)) is override
    # the catalog's own later change no longer applies: the config owns this model from 2025-01-01
    assert catalog.lookup(["openai"], "m", utc(2025, 7, 1)) is override

    first, second = catalog.rows("openai", "m")
    assert (first.input_per_mtok, first.effective_to) == (D(10), utc(2025, 1, 1))
    assert first.id == base[0].id  # the id names the price, not how long it lasted
    assert second is override


def test_several_override_rows_form_their_own_history():
    base = [row("openai", "m", utc(1970, 1, 1), "10", "40")]
    later = row("openai", "m", utc(2025, 6, 1), "3", "9", source="config")
    earlier = row("openai", "m", utc(2025, 1, 1), "4", "12", source="config")
    catalog = PriceCatalog(base, [later, earlier])  # any order

    assert catalog.lookup(["openai"], "m", utc(2024, 6, 1)).input_per_mtok == D(10)
    assert catalog.lookup(["openai"], "m", utc(2025, 3, 1)).input_per_mtok == D(4)
    assert catalog.lookup(["openai"], "m", utc(2025, 6, 1)).input_per_mtok == D(3)
    assert [r.effective_to for r in catalog.rows("openai", "m")] == [utc(2025, 1, 1), utc(2025, 6, 1), None]


def test_a_model_only_the_config_prices_has_no_price_before_its_first_row():
    catalog = PriceCatalog([], [row("local", "llama-3.1-8b", utc(2025, 1, 1), "0.05", "0.08")])
    assert catalog.lookup(["local"], "llama-3.1-8b", utc(2024, 12, 31)) is None
    assert catalog.lookup(["local"], "llama-3.1-8b", utc(2025, 1, 1)).output_per_mtok == D("0.08")


def test_two_override_rows_for_the_same_start_are_an_error():
    rows = [row("local", "m", utc(2025, 1, 1), "1", "2"), row("local", "m", utc(2025, 1, 1), "1", "3")]
    with pytest.raises(ValueError, match="local/m"):
        PriceCatalog([], rows)
    assert len(PriceCatalog([], [rows[0], rows[0]])) == 1  # the same row twice is one row


def test_rows_get_and_len():
    a = row("anthropic", "b", utc(2025, 1, 1), "1", "2")
    b = row("anthropic", "a", utc(2025, 1, 1), "1", "2")
    c = row("openai", "a", utc(2024, 1, 1), "1", "2")
    catalog = PriceCatalog([a, b, c])
    assert catalog.rows() == (b, a, c)
    assert catalog.rows(provider="anthropic") == (b, a)
    assert catalog.rows(model="a") == (b, c)
    assert catalog.rows("openai", "zzz") == ()
    assert catalog.get(c.id) is c
    assert catalog.get("pr_missing") is None
    assert len(catalog) == 3


def test_unknown_model_is_none_never_zero(catalog):
    assert catalog.lookup(["openai"], "gpt-99-imaginary", utc(2025, 10, 1)) is None
    assert catalog.lookup(["local", "openai"], "llama-3.1-8b", utc(2025, 10, 1)) is None
    assert catalog.lookup([], "gpt-4o", utc(2025, 10, 1)) is None
    assert catalog.lookup(["no-such-provider"], "gpt-4o", utc(2025, 10, 1)) is None


@pytest.mark.parametrize(
    ("provider", "ref", "model", "inp"),
    [
        ("openai", "gpt-4o", "gpt-4o", "2.5"),
        ("openai", "gpt-4o-2024-08-06", "gpt-4o", "2.5"),
        ("openai", "gpt-4o-2024-05-13", "gpt-4o-2024-05-13", "5"),  # an older snapshot keeps its own price
        ("openai", "GPT-4o-Mini", "gpt-4o-mini", "0.15"),
        ("anthropic", "claude-sonnet-4-5-20250929", "claude-sonnet-4-5", "3"),
        ("anthropic", "claude-3-5-haiku-latest", "claude-3-5-haiku-latest", "0.8"),
        ("anthropic", "claude-3-5-haiku-20241022", "claude-3-5-haiku-latest", "0.8"),
        ("anthropic", "claude-opus-4-20250514", "claude-opus-4-0", "15"),
    ],
)
def test_dated_and_decorated_names_resolve(catalog, provider, ref, model, inp):
    found = catalog.lookup([provider], ref, utc(2025, 10, 1))
    assert (found.provider, found.model, found.input_per_mtok) == (provider, model, D(inp))
    assert catalog.resolve(provider, ref) == (provider, model)


def test_fallback_provider_data_and_its_own_override():
    override = row("azure", "gpt-4o", utc(2025, 1, 1), "2.75", "11", source="config")
    catalog = load_catalog([override])
    plain = load_catalog()
    # azure has no gpt-4o price of its own in genai-prices: it falls back to openai's
    assert plain.lookup(["azure"], "gpt-4o-2024-08-06", utc(2025, 10, 1)).provider == "openai"
    # with a config price for azure's gpt-4o, a dated azure name finds it
    assert catalog.lookup(["azure"], "gpt-4o-2024-08-06", utc(2025, 10, 1)) is override


def test_provider_order(catalog):
    local = row("local", "gpt-4o", utc(2025, 1, 1), "0.01", "0.02", source="config")
    both = load_catalog([local])
    at = utc(2025, 10, 1)
    assert both.lookup(["local", "openai"], "gpt-4o", at) is local
    assert both.lookup(["openai", "local"], "gpt-4o", at).provider == "openai"
    # the first provider without a price in force is skipped, not an answer
    assert both.lookup(["local", "openai"], "gpt-4o", utc(2024, 1, 1)).provider == "openai"
    assert both.lookup(["local", "openai"], "gpt-4o-mini", at).model == "gpt-4o-mini"
    # a bare provider name is one provider, not a sequence of letters
    assert both.lookup("local", "gpt-4o", at) is local


def test_config_override_of_a_catalog_model_applies_to_its_dated_names():
    cut = utc(2026, 1, 1)
    override = row("openai", "gpt-4o", cut, "2", "8", source="config")
    catalog = load_catalog([override])
    assert catalog.lookup(["openai"], "gpt-4o-2024-08-06", utc(2025, 12, 31)).input_per_mtok == D("2.5")
    assert catalog.lookup(["openai"], "gpt-4o-2024-08-06", cut) is override


def test_price_history_before_and_after_a_change(catalog):
    before = catalog.lookup(["openai"], "o3", utc(2025, 6, 9, 23, 59, 59))
    after = catalog.lookup(["openai"], "o3-2025-04-16", utc(2025, 6, 10))
    assert (before.input_per_mtok, before.output_per_mtok) == (D(10), D(40))
    assert (after.input_per_mtok, after.output_per_mtok) == (D(2), D(8))
    assert [r.input_per_mtok for r in catalog.rows("openai", "o3") if not r.variant] == [D(10), D(2)]


def test_lookup_needs_an_aware_time(catalog):
    with pytest.raises(ValueError, match="timezone"):
        catalog.lookup(["openai"], "gpt-4o", datetime(2025, 1, 1))


def test_load_catalog_holds_the_genai_rows_with_the_corrections(catalog):
    assert len(catalog.rows()) == len(base_rows()) and set(catalog.rows()) == set(base_rows())
    sources = {r.source for r in catalog.rows()}
    assert genai_source() in sources
    corrected = sources - {genai_source()}
    # a corrected row names the correction's source; an OpenAI row names the shipped file-search fee's
    assert corrected and all(s.startswith(f"{genai_source()}, ") and "per https://" in s for s in corrected)
    assert any("corrected per https://" in s for s in corrected)
    openai_rows = [r for r in catalog.rows() if r.provider == "openai"]
    assert openai_rows and all(r.file_search_per_k == Decimal("2.50") and "file_search_per_k per https://" in r.source
                               for r in openai_rows)  # fmt: skip
    # a correction splits a row where it starts or ends: a few more rows than genai-prices has
    assert 0 < len(catalog) - len(genai_price_rows()) <= len(load_corrections())


def test_match_results_are_cached_in_a_bounded_dict():
    calls: list[tuple[str, str]] = []

    def matcher(provider: str, ref: str) -> tuple[str, str] | None:
        calls.append((provider, ref))
        return ("p", "m") if ref.startswith("m-") else None

    catalog = PriceCatalog([row("p", "m", utc(2025, 1, 1), "1", "1")], matcher=matcher, match_cache_size=2)
    at = utc(2025, 2, 1)
    for _ in range(3):
        assert catalog.lookup(["p"], "m-1", at).model == "m"
        assert catalog.lookup(["p"], "x", at) is None
    assert calls == [("p", "m-1"), ("p", "x")]  # each name matched once
    assert catalog.lookup(["p"], "m", at).model == "m"  # exact names never reach the matcher
    catalog.lookup(["p"], "m-2", at)
    assert len(catalog._matches) <= 2


def test_lookup_finds_a_tier_row_or_none(catalog):
    """OpenAI gpt-5 (https://platform.openai.com/docs/pricing, read 2026-12-02): standard $1.25 / $10, Flex
    $0.625 / $5, Priority $2.50 / $20 per MTok; genai-prices dates its tier rows from 2026-10-12."""
    at = utc(2026, 12, 2)
    standard = catalog.lookup(["openai"], "gpt-5-2025-08-07", at)
    flex = catalog.lookup(["openai"], "gpt-5-2025-08-07", at, variant="flex")
    priority = catalog.lookup(["openai"], "gpt-5", at, variant="priority")
    assert (standard.variant, standard.input_per_mtok, standard.output_per_mtok) == ("", D("1.25"), D(10))
    assert (flex.variant, flex.input_per_mtok, flex.output_per_mtok) == ("flex", D("0.625"), D(5))
    assert (priority.variant, priority.input_per_mtok, priority.output_per_mtok) == ("priority", D("2.5"), D(20))
    assert len({standard.id, flex.id, priority.id}) == 3
    assert catalog.lookup(["openai"], "gpt-5", at, variant="scale") is None  # no such tier: the caller flags it
    assert catalog.lookup(["openai"], "gpt-5", utc(2026, 1, 1), variant="flex") is None  # before the tier row
    # a provider that prices the model answers for its tiers: a later provider's tier is never mixed in
    override = row("local", "gpt-5", utc(2026, 1, 1), "1", "2", source="config")
    mixed = PriceCatalog(catalog.rows(), [override])
    assert mixed.lookup(["local", "openai"], "gpt-5", at, variant="flex") is None
    assert mixed.lookup(["openai"], "gpt-5", at, variant="flex") == flex


def test_a_config_row_can_price_a_tier_and_replaces_the_built_in_tiers(catalog):
    at = utc(2026, 12, 2)
    base = row("openai", "gpt-5", utc(2026, 11, 1), "1", "8", source="config")
    flex = dataclasses.replace(row("openai", "gpt-5", utc(2026, 11, 1), "0.5", "4", source="config"), variant="flex", id="")
    cat = PriceCatalog(catalog.rows(), [base, flex])
    assert cat.lookup(["openai"], "gpt-5", at) == base
    assert cat.lookup(["openai"], "gpt-5", at, variant="flex") == flex
    assert cat.lookup(["openai"], "gpt-5", at, variant="priority") is None  # the built-in tiers end where config begins
    assert cat.lookup(["openai"], "gpt-5", utc(2026, 10, 20), variant="priority").input_per_mtok == D("2.5")


def test_daily_hours_pick_the_row_by_time_of_day(catalog):
    """DeepSeek (https://api-docs.deepseek.com/quick_start/pricing, read 2026-12-02): deepseek-chat $0.27 input
    at UTC 00:30-16:30 and $0.135 at 16:30-00:30 until 2025-09-05 16:00 UTC, then $0.56 all day."""
    def price(*when: int) -> Decimal:
        return catalog.lookup(["deepseek"], "deepseek-chat", utc(*when)).input_per_mtok

    assert price(2025, 6, 2, 10) == D("0.27") and price(2025, 6, 2, 17) == D("0.135")
    assert price(2025, 6, 2, 0, 29) == D("0.135") and price(2025, 6, 2, 0, 30) == D("0.27")
    assert price(2025, 9, 5, 15, 59) == D("0.27") and price(2025, 9, 5, 16) == D("0.56")
    assert price(2025, 9, 5, 17) == D("0.56")  # the discount was cancelled
    assert price(2025, 10, 1, 17) == D("0.28")
