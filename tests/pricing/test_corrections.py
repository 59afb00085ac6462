"""TokenOps' reviewed corrections to genai-prices: each one tested against the provider's published price (the
page and the day it was read are in each test), how a correction patches a price history, and a malformed
corrections file (an error naming the file and the line)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from tokenops.errors import ConfigError
from tokenops.pricing.catalog import PriceCatalog, base_rows, load_catalog
from tokenops.pricing.corrections import (
    CORRECTIONS_FILE,
    apply_corrections,
    apply_tool_fees,
    load_corrections,
    load_tool_fees,
)
from tokenops.pricing.genai import EPOCH, genai_price_rows
from tokenops.pricing.model import LongContextTier, PriceRow, price_usage
from tokenops.usage import Usage

D = Decimal


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@pytest.fixture(scope="module")
def catalog() -> PriceCatalog:
    return load_catalog()


# --- the shipped corrections, against the published prices ----------------------------------------------------


def test_sonnet_4_above_200k_input_tokens_is_billed_at_the_long_context_tier(catalog: PriceCatalog) -> None:
    """https://docs.anthropic.com/en/docs/about-claude/pricing#long-context-pricing (read 2026-12-02): Claude
    Sonnet 4 with the 1M context window, input ≤ 200K tokens: $3 input / $15 output per MTok; > 200K: $6 input /
    $22.50 output per MTok, for every token of the request; prompt-caching multipliers apply on top."""
    at = utc(2025, 10, 15)
    row = catalog.lookup(["anthropic"], "claude-sonnet-4-20250514", at)
    assert row is not None and row.source.endswith("corrected per " + load_corrections()[0].source)
    (tier,) = row.tiers
    assert (tier.above_input_tokens, tier.input_per_mtok, tier.output_per_mtok) == (200_000, D(6), D("22.50"))
    assert (tier.cache_read_per_mtok, tier.cache_write_5m_per_mtok, tier.cache_write_1h_per_mtok) == (
        D("0.60"), D("7.50"), D(12))  # fmt: skip
    # 250,000 input tokens (50,000 of them cache reads, 10,000 5-minute writes) and 2,000 output tokens:
    # 190,000 x $6 + 50,000 x $0.60 + 10,000 x $7.50 + 2,000 x $22.50, per million
    usage = Usage(input_tokens=250_000, cache_read_tokens=50_000, cache_write_5m_tokens=10_000, output_tokens=2_000)
    assert price_usage(usage, row).total == D("1.14") + D("0.03") + D("0.075") + D("0.045")
    # exactly 200,000 is not above the threshold: the base prices, $3 / $15
    assert price_usage(Usage(input_tokens=200_000, output_tokens=1_000), row).total == D("0.6") + D("0.015")
    assert price_usage(Usage(input_tokens=200_001, output_tokens=1_000), row).total == D("1.200006") + D("0.0225")


def test_sonnet_4_long_context_tier_starts_with_the_1m_context_window(catalog: PriceCatalog) -> None:
    """The 1M-token context window for Sonnet 4 opened on 2025-08-12 (beta header context-1m-2025-08-07);
    before it no request could exceed 200K tokens, and the rows before keep genai-prices' price untouched."""
    before = catalog.lookup(["anthropic"], "claude-sonnet-4-0", utc(2025, 8, 11, 23, 59))
    after = catalog.lookup(["anthropic"], "claude-sonnet-4-0", utc(2025, 8, 12))
    assert before is not None and after is not None
    assert before.tiers == () and before.source == genai_price_rows()[0].source
    assert before.effective_to == after.effective_from == utc(2025, 8, 12)
    assert (before.input_per_mtok, before.output_per_mtok) == (after.input_per_mtok, after.output_per_mtok)


def test_o3_cached_input_before_the_2025_06_10_cut(catalog: PriceCatalog) -> None:
    """https://openai.com/api/pricing/ (o3 at launch, 2025-04-16, until the cut of 2025-06-10; checked
    2026-12-02): input $10, cached input $2.50, output $40 per MTok; after the cut $2 / $0.50 / $8."""
    before = catalog.lookup(["openai"], "o3-2025-04-16", utc(2025, 5, 1))
    after = catalog.lookup(["openai"], "o3", utc(2025, 6, 10))
    assert before is not None and after is not None
    assert (before.input_per_mtok, before.cache_read_per_mtok, before.output_per_mtok) == (D(10), D("2.50"), D(40))
    assert (after.input_per_mtok, after.cache_read_per_mtok, after.output_per_mtok) == (D(2), D("0.5"), D(8))
    # 10,000 input tokens of which 4,000 cached, 1,000 output: 6,000 x $10 + 4,000 x $2.50 + 1,000 x $40
    usage = Usage(input_tokens=10_000, cache_read_tokens=4_000, output_tokens=1_000)
    assert price_usage(usage, before).total == D("0.06") + D("0.01") + D("0.04")


def test_claude_sonnet_5_is_two_and_ten_dollars(catalog: PriceCatalog) -> None:
    """https://platform.claude.com/docs/en/models/sonnet-5/overview (read 2026-12-02): Claude Sonnet 5, input
    $2 / MTok, output $10 / MTok, 5-minute cache write $2.50, 1-hour write $4, cache read $0.20; one price over
    the whole 1M context window. Anthropic first called $2/$10 introductory, with $3/$15 from 2026-09-01, then
    cancelled that increase before it applied (tables that still say $3/$15, e.g. Claude Code's, have the
    cancelled price). genai-prices has $2/$10: no correction."""
    for at in (utc(2026, 7, 1), utc(2026, 9, 1), utc(2026, 12, 2)):
        row = catalog.lookup(["anthropic"], "claude-sonnet-5", at)
        assert row is not None
        assert (row.input_per_mtok, row.output_per_mtok) == (D(2), D(10))
        assert (row.cache_write_5m_per_mtok, row.cache_write_1h_per_mtok, row.cache_read_per_mtok) == (
            D("2.5"), D(4), D("0.2"))  # fmt: skip
        assert row.tiers == ()
    assert not [c for c in load_corrections() if c.model == "claude-sonnet-5"]


def test_every_shipped_correction_is_reviewed_and_still_needed() -> None:
    corrections = load_corrections()
    assert corrections, "corrections.yaml is empty"
    raw = genai_price_rows()
    for c in corrections:
        assert c.source.startswith("https://") and c.note and c.checked <= date.today()
        mine = [r for r in raw if (r.provider, r.model) == (c.provider, c.model)]
        assert mine, f"genai-prices no longer has {c.provider}/{c.model}: remove or update the correction"
        assert apply_corrections(mine, [c]) != tuple(mine), (
            f"genai-prices now has {c.provider}/{c.model} right: remove the correction")  # fmt: skip


def test_the_corrections_file_ships_inside_the_package() -> None:
    from importlib.resources import files

    assert CORRECTIONS_FILE.parent == Path(__file__).resolve().parents[2] / "src" / "tokenops" / "pricing"
    assert files("tokenops.pricing").joinpath("corrections.yaml").read_text(encoding="utf-8").startswith("#")


# --- how a correction patches a history -------------------------------------------------------------------------


def row(start: datetime, end: datetime | None = None, inp: str = "1", out: str = "2", **kw: object) -> PriceRow:
    return PriceRow(provider="p", model="m", effective_from=start, effective_to=end, source="genai-prices x",
                    input_per_mtok=D(inp), output_per_mtok=D(out), **kw)  # type: ignore[arg-type]  # fmt: skip


def corrections_from(tmp_path: Path, text: str) -> tuple:
    path = tmp_path / "corrections.yaml"
    path.write_text(text)
    return load_corrections(path)


ENTRY = """corrections:
  - provider: p
    model: m
{span}    set: {{{fix}}}
    source: https://example.com/pricing
    checked: 2026-12-02
    note: test
"""


def test_a_correction_inside_a_row_splits_it_in_three(tmp_path: Path) -> None:
    (c,) = corrections_from(tmp_path, ENTRY.format(span="    effective_from: 2025-03-01\n    effective_to: 2025-04-01\n",
                                                   fix='input_per_mtok: "5"'))  # fmt: skip
    original = row(EPOCH)
    first, middle, last = apply_corrections([original], [c])
    assert (first.effective_from, first.effective_to, first.input_per_mtok) == (EPOCH, utc(2025, 3, 1), D(1))
    assert first.id == original.id  # the same price from the same start: the same row
    assert (middle.effective_from, middle.effective_to, middle.input_per_mtok) == (utc(2025, 3, 1), utc(2025, 4, 1), D(5))
    assert middle.output_per_mtok == D(2)  # what the correction does not set stays
    assert middle.source == "genai-prices x, corrected per https://example.com/pricing"
    assert (last.effective_from, last.effective_to, last.input_per_mtok, last.source) == (
        utc(2025, 4, 1), None, D(1), "genai-prices x")  # fmt: skip
    assert len({first.id, middle.id, last.id}) == 3


def test_a_correction_covers_every_row_of_its_span_and_no_other(tmp_path: Path) -> None:
    (c,) = corrections_from(tmp_path, ENTRY.format(span="    effective_to: 2025-06-10\n",
                                                   fix='cache_read_per_mtok: "2.50"'))  # fmt: skip
    history = [row(EPOCH, utc(2025, 1, 1)), row(utc(2025, 1, 1), utc(2025, 6, 10)), row(utc(2025, 6, 10), inp="2")]
    out = apply_corrections(history, [c])
    assert [r.cache_read_per_mtok for r in out] == [D("2.50"), D("2.50"), None]
    assert out[2] is history[2]
    other = PriceRow(provider="p", model="other", effective_from=EPOCH, source="s", input_per_mtok=D(1))
    assert apply_corrections([other], [c]) == (other,)


def test_tiers_replace_the_rows_tiers(tmp_path: Path) -> None:
    fix = 'tiers: [{above_input_tokens: 200000, input_per_mtok: "6", output_per_mtok: "22.50"}]'
    (c,) = corrections_from(tmp_path, ENTRY.format(span="", fix=fix))
    old_tier = LongContextTier(above_input_tokens=128_000, input_per_mtok=D(9))
    (out,) = apply_corrections([row(EPOCH, tiers=(old_tier,))], [c])
    assert out.tiers == (LongContextTier(above_input_tokens=200_000, input_per_mtok=D(6), output_per_mtok=D("22.5")),)


def test_a_correction_the_data_already_has_changes_nothing(tmp_path: Path) -> None:
    """A fixed upstream file (tokenops prices update) makes a correction moot: the rows stay genai-prices' own."""
    (c,) = corrections_from(tmp_path, ENTRY.format(span="    effective_from: 2025-03-01\n", fix='input_per_mtok: "1.0"'))
    history = [row(EPOCH)]
    assert apply_corrections(history, [c]) == tuple(history)
    assert apply_corrections(history, [c])[0].source == "genai-prices x"


def test_the_base_rows_are_the_bundled_rows_with_the_shipped_corrections() -> None:
    assert base_rows() == apply_tool_fees(apply_corrections(genai_price_rows(), load_corrections()), load_tool_fees())


# --- a malformed corrections file -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("corrections:\n  - provider: p\n    model: [unclosed\n", 4, "not valid YAML"),
        (ENTRY.format(span="", fix="input_per_mtok: 0.05"), 4, "quoted decimal strings"),
        (ENTRY.format(span="", fix='input_per_mtok: "1", colour: "2"'), 4, "unknown key"),
        (ENTRY.format(span="", fix=""), 4, "at least one price"),
        (ENTRY.format(span="", fix='input_per_mtok: "1"').replace("https://example.com/pricing", "example.com"), 5,
         "https:// URL"),
        (ENTRY.format(span="", fix='input_per_mtok: "1"').replace("    checked: 2026-12-02\n", ""), 2, "required"),
        (ENTRY.format(span="    effective_from: 2025-06-01\n    effective_to: 2025-05-01\n", fix='output_per_mtok: "1"'),
         2, "effective_to must be after"),
        (ENTRY.format(span="", fix='input_per_mtok: "1"') + ENTRY.format(span="", fix='output_per_mtok: "1"')
         .removeprefix("corrections:\n"), 8, "overlaps corrections[0]"),
        ("- just a list\n", 1, "corrections:"),
    ],
)
def test_a_malformed_corrections_file_names_the_file_and_line(tmp_path: Path, text: str, line: int,
                                                              fragment: str) -> None:  # fmt: skip
    path = tmp_path / "corrections.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_corrections(path)
    assert (err.value.file, err.value.line) == (str(path), line), str(err.value)
    assert str(err.value).startswith(f"{path}:{line}: ") and fragment in str(err.value)


TOOL_FEE = "tool_fees:\n  - provider: openai\n    set: {{{fix}}}\n    source: {source}\n    checked: 2026-12-02\n    note: n\n"


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        (TOOL_FEE.format(fix="file_search_per_k: 2.5", source="https://x.test/p"), 3, "quoted decimal strings"),
        (TOOL_FEE.format(fix='code_per_k: "1"', source="https://x.test/p"), 3, "unknown key"),
        (TOOL_FEE.format(fix="", source="https://x.test/p"), 3, "at least one rate"),
        (TOOL_FEE.format(fix='file_search_per_k: "2.50"', source="x.test/p"), 4, "https:// URL"),
    ],
)
def test_a_malformed_tool_fee_names_the_file_and_line(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    path = tmp_path / "corrections.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_tool_fees(path)
    assert str(err.value).startswith(f"{path}:{line}: ") and fragment in str(err.value), str(err.value)


def test_the_shipped_tool_fee_is_openais_published_file_search_price() -> None:
    """https://platform.openai.com/docs/pricing (Built-in tools), read 2026-12-02: "File search tool call
    (Responses API only): $2.50 / 1K tool calls"."""
    (fee,) = load_tool_fees()
    assert fee.provider == "openai" and fee.fix.values() == {"file_search_per_k": Decimal("2.50")}
    assert fee.source == "https://platform.openai.com/docs/pricing#built-in-tools" and fee.note
