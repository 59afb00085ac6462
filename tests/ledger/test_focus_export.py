"""``tokenops export focus``: the ledger's spend as a FOCUS 1.2 dataset, on both backends.

The FinOps Foundation's validator is run on the files in tests/ledger/test_focus_validator.py; it does not check
the rules below row by row (it checks allowed values per dataset and skips the cost products on rows without a
ChargeClass), so they are checked here on every row: ListCost = ListUnitPrice x PricingQuantity exactly, the
allowed values, the pairs that are null together, ASCII strings, periods, and BilledCost adding up to the
ledger's spend to the pico-dollar.
"""

from __future__ import annotations

import csv
import decimal
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from ledger_samples import event
from typer.testing import CliRunner

from cli_runs import refused
from tokenops.cli import app
from tokenops.errors import UsageError
from tokenops.keys import KeyRecord
from tokenops.ledger.base import Ledger
from tokenops.money import quantize
from tokenops.pricing.model import LongContextTier, PriceRow, price_usage, scaled
from tokenops.services.focus import (
    COLUMNS,
    DATETIME_COLUMNS,
    DECIMAL_COLUMNS,
    FOCUS_COLUMNS,
    focus_export,
    write_focus,
)
from tokenops.usage import Usage

DAY = datetime(2026, 11, 3, tzinfo=UTC)
WIDE = decimal.Context(prec=80)  # products checked without the default context's rounding (28 digits)
T0 = datetime(2026, 1, 1, tzinfo=UTC)
GPT = PriceRow(provider="openai", model="gpt-4o", effective_from=T0, source="test", input_per_mtok=Decimal("2.5"),
               cache_read_per_mtok=Decimal("1.25"), output_per_mtok=Decimal("10"), web_search_per_k=Decimal("25"),
               input_audio_per_mtok=Decimal("40"))  # fmt: skip
# the same model's price from the 4th: another row, the same SKU price point
GPT_NEW = PriceRow(provider="openai", model="gpt-4o", effective_from=DAY + timedelta(days=1), source="test",
                   input_per_mtok=Decimal("2"), output_per_mtok=Decimal("8"))  # fmt: skip
CLAUDE = PriceRow(provider="anthropic", model="claude-sonnet-4-5", effective_from=T0, source="test",
                  input_per_mtok=Decimal("3"), cache_read_per_mtok=Decimal("0.3"),
                  cache_write_5m_per_mtok=Decimal("3.75"), cache_write_1h_per_mtok=Decimal("6"),
                  output_per_mtok=Decimal("15"),
                  tiers=(LongContextTier(200_000, input_per_mtok=Decimal("6"), output_per_mtok=Decimal("22.5"),
                                         cache_read_per_mtok=Decimal("0.6")),))  # fmt: skip
# rates of millionths of a dollar per million tokens: each call's cost is rounded to the pico-dollar
O3 = PriceRow(provider="openai", model="o3", effective_from=T0, source="test", input_per_mtok=Decimal("0.0000015"),
              output_per_mtok=Decimal("0.0000035"), per_request=Decimal("0.0001"))  # fmt: skip
BATCH = scaled(GPT, Decimal("0.5"), "batch", "batch = 50%")
ROWS = (GPT, GPT_NEW, CLAUDE, O3, BATCH)
ENUMS = {
    "ChargeCategory": {"Usage", "Purchase", "Tax", "Credit", "Adjustment"},
    "ChargeFrequency": {"One-Time", "Recurring", "Usage-Based"},
    "PricingCategory": {"Standard", "Dynamic", "Committed", "Other"},
    "ServiceCategory": {"AI and Machine Learning"},
    "ServiceSubcategory": {"Generative AI"},
    "BillingCurrency": {"USD"},
    "PricingCurrency": {"USD"},
}


def priced(row: PriceRow, usage: Usage, ts: datetime, **kw: Any) -> Any:
    return event(ts=ts, provider=row.provider, model_used=row.model, model_requested=row.model, usage=usage,
                 cost_usd=price_usage(usage, row).total, price_row_id=row.id, **kw)  # fmt: skip


def calls() -> list[Any]:
    at = DAY + timedelta(hours=9)
    return [
        # two calls of one charge: input, cache reads, output, audio input and web searches at their own rates
        priced(GPT, Usage(input_tokens=1234, cache_read_tokens=1000, output_tokens=77, input_audio_tokens=100,
                          web_searches=2), at, key_id="key_a", tags={"team": "search", "feature": "café"}),  # fmt: skip
        priced(GPT, Usage(input_tokens=10, output_tokens=3), at + timedelta(minutes=5), key_id="key_a",
               tags={"team": "search", "feature": "café"}),  # fmt: skip
        # another team, another charge; and a price change the next day: the same SkuPriceId
        priced(GPT, Usage(input_tokens=500, output_tokens=50), at, key_id="key_b", tags={"team": "ads"}),
        priced(GPT_NEW, Usage(input_tokens=500, output_tokens=50), at + timedelta(days=1), key_id="key_b",
               tags={"team": "ads"}),  # fmt: skip
        # Claude: 5-minute and 1-hour cache writes; a call above 200k tokens at the long-context prices
        priced(CLAUDE, Usage(input_tokens=5000, cache_write_5m_tokens=1000, cache_write_1h_tokens=2000,
                             output_tokens=100), at, tags={"team": "support"}),  # fmt: skip
        priced(CLAUDE, Usage(input_tokens=250_000, cache_read_tokens=50_000, output_tokens=1000), at,
               tags={"team": "support"}),  # fmt: skip
        # prices of a millionth of a dollar per million tokens: costs rounded to the pico-dollar per call
        *(priced(O3, Usage(input_tokens=333 + i, output_tokens=7, reasoning_tokens=3), at, tags={"team": "lab"})
          for i in range(7)),  # fmt: skip
        priced(BATCH, Usage(input_tokens=1000, output_tokens=100), at, route="batches", tags={"team": "lab"}),
        # not exported: unpriced, answered from the cache, refused
        event(ts=at, model_used="mystery-7b", usage=Usage(input_tokens=900, output_tokens=9), cost_usd=None),
        event(ts=at, model_used="gpt-4o", usage=Usage(input_tokens=900, output_tokens=9), cost_usd=Decimal(0),
              cache="hit", price_row_id=GPT.id),  # fmt: skip
        event(ts=at, model_used="gpt-4o", usage=Usage(), cost_usd=Decimal(0), status="rejected", http_status=400),
    ]


@pytest.fixture
def filled(any_ledger: Ledger) -> Ledger:
    any_ledger.append(calls(), ROWS)
    any_ledger.insert_key(KeyRecord(id="key_a", name="search-bot ☃", key_hash="h1", key_prefix="tok_a",
                                    tags={}, locked_tags=(), created_at=T0))  # fmt: skip
    return any_ledger


def exported(ledger: Ledger, **kw: Any) -> Any:
    kw.setdefault("since", DAY)
    kw.setdefault("until", DAY + timedelta(days=3))
    return focus_export(ledger, **kw)


def test_every_row_keeps_focus_rules_the_validator_does_not_check(filled: Ledger) -> None:
    out = exported(filled)
    assert out.rows and all(list(r) == list(COLUMNS) for r in out.rows)
    for r in out.rows:
        assert r["ListCost"] == WIDE.multiply(r["ListUnitPrice"], r["PricingQuantity"])  # exactly, no rounding
        assert r["ContractedCost"] == WIDE.multiply(r["ContractedUnitPrice"], r["PricingQuantity"]) == r["ListCost"]
        assert r["EffectiveCost"] == r["BilledCost"] == r["PricingCurrencyEffectiveCost"]
        assert r["ListUnitPrice"] >= 0 and r["PricingQuantity"] > 0
        for column, allowed in ENUMS.items():
            assert r[column] in allowed, (column, r[column])
        assert r["ChargeClass"] is None and r["CommitmentDiscountId"] is None and r["InvoiceId"] is None
        assert (r["ConsumedQuantity"] is None) == (r["ConsumedUnit"] is None)
        assert (r["PricingQuantity"] is None) == (r["PricingUnit"] is None)
        assert (r["SubAccountId"] is None) == (r["SubAccountName"] is None) == (r["SubAccountType"] is None)
        assert r["ProviderName"] == r["InvoiceIssuerName"]  # else FOCUS wants BilledCost 0 (a marketplace)
        assert r["BillingPeriodStart"] <= r["ChargePeriodStart"] < r["ChargePeriodEnd"] <= r["BillingPeriodEnd"]
        assert DAY <= r["ChargePeriodStart"] and r["ChargePeriodEnd"] <= DAY + timedelta(days=3)
        for c in FOCUS_COLUMNS:
            if isinstance(r[c], str):
                assert r[c].isascii() and r[c].strip(), (c, r[c])
        if r["ConsumedUnit"] == "Tokens":
            assert r["PricingUnit"] == "1000000 Tokens"
            assert r["PricingQuantity"] * 1_000_000 == r["ConsumedQuantity"]
        json.loads(r["SkuPriceDetails"])
        assert all(k.startswith("x_") for k in json.loads(r["SkuPriceDetails"]))


def test_billed_cost_adds_up_to_the_ledgers_spend_to_the_pico_dollar(filled: Ledger) -> None:
    out = exported(filled)
    priced_calls = [e for e in calls() if e.cost_usd is not None and e.cache != "hit" and e.status == "ok"]
    assert out.calls == len(priced_calls) == sum(1 for _ in priced_calls)
    ledger_total = sum((e.cost_usd for e in priced_calls), Decimal(0))
    assert out.billed == out.ledger_cost == ledger_total == sum((r["BilledCost"] for r in out.rows), Decimal(0))
    # o3's calls cost fractions of a pico-dollar per line: what the per-call rounding left is on one line
    lab = [r for r in out.rows if r["x_Model"] == "o3"]
    assert sum((r["BilledCost"] for r in lab), Decimal(0)) == sum(
        (quantize(price_usage(e.usage, O3).total) for e in priced_calls if e.model_used == "o3"), Decimal(0))
    assert sum(r["BilledCost"] != r["ListCost"] for r in lab) == 1


def test_each_kind_of_token_is_its_own_line_at_its_own_rate(filled: Ledger) -> None:
    out = exported(filled)
    search = {r["x_TokenType"]: r for r in out.rows if r["SubAccountId"] == "key_a"}
    assert set(search) == {"input", "input_audio", "cache_read", "output", "web_search"}
    assert search["input"]["ConsumedQuantity"] == (1234 - 1000 - 100) + 10  # uncached text input of both calls
    assert search["input"]["ListUnitPrice"] == Decimal("2.5")
    assert search["input_audio"]["ListUnitPrice"] == Decimal("40") and search["input_audio"]["ConsumedQuantity"] == 100
    assert search["cache_read"]["ListCost"] == Decimal("0.00125")  # 1000 tokens at $1.25 / MTok
    assert search["output"]["ConsumedQuantity"] == 80
    assert search["web_search"]["ConsumedUnit"] == "Searches" and search["web_search"]["PricingUnit"] == "1000 Searches"
    assert search["web_search"]["ListCost"] == Decimal("0.05")  # 2 searches at $25 / 1000
    first = search["input"]
    assert first["x_CallCount"] == 2 and first["SubAccountName"] == "search-bot \\u2603"  # ASCII, readable back
    assert json.loads(first["Tags"]) == {"feature": "café", "team": "search"}  # tags as the callers set them
    assert first["ProviderName"] == "OpenAI" and first["ServiceName"] == "OpenAI API"
    assert first["SkuId"] == "openai/gpt-4o/input" and first["SkuPriceId"] == "openai/gpt-4o/input/standard"
    assert first["ChargeDescription"] == "gpt-4o input tokens"

    claude = {(r["x_TokenType"], r["SkuPriceId"]): r for r in out.rows if r["x_Model"] == "claude-sonnet-4-5"}
    assert claude["cache_write_5m", "anthropic/claude-sonnet-4-5/cache_write_5m/standard"]["ListUnitPrice"] == \
        Decimal("3.75")  # fmt: skip
    assert claude["cache_write_1h", "anthropic/claude-sonnet-4-5/cache_write_1h/standard"]["ListUnitPrice"] == 6
    long_input = claude["input", "anthropic/claude-sonnet-4-5/input/standard/above-200000"]
    assert long_input["ListUnitPrice"] == 6 and long_input["ConsumedQuantity"] == 200_000
    assert json.loads(long_input["SkuPriceDetails"])["x_ContextAbove"] == 200_000
    assert claude["output", "anthropic/claude-sonnet-4-5/output/standard/above-200000"]["ListUnitPrice"] == \
        Decimal("22.5")  # fmt: skip

    o3 = {r["x_TokenType"]: r for r in out.rows if r["x_Model"] == "o3"}
    assert o3["request"]["ConsumedQuantity"] == 7 and o3["request"]["PricingUnit"] == "Requests"
    assert o3["reasoning"]["ConsumedQuantity"] == 21 and o3["output"]["ConsumedQuantity"] == 28
    batch = [r for r in out.rows if r["x_PriceRowId"] == BATCH.id]
    assert {r["SkuPriceId"] for r in batch} == {"openai/gpt-4o/input/batch", "openai/gpt-4o/output/batch"}
    assert {r["ListUnitPrice"] for r in batch} == {Decimal("1.25"), Decimal("5")}


def test_a_price_change_keeps_the_sku_price_id_and_names_the_row(filled: Ledger) -> None:
    ads = [r for r in exported(filled).rows if r["x_TokenType"] == "input" and r["SubAccountId"] == "key_b"]
    assert len(ads) == 2 and ads[0]["ChargePeriodStart"] < ads[1]["ChargePeriodStart"]
    assert ads[0]["SkuPriceId"] == ads[1]["SkuPriceId"] == "openai/gpt-4o/input/standard"
    assert (ads[0]["ListUnitPrice"], ads[1]["ListUnitPrice"]) == (Decimal("2.5"), Decimal("2"))
    assert (ads[0]["x_PriceRowId"], ads[1]["x_PriceRowId"]) == (GPT.id, GPT_NEW.id)


def test_unpriced_calls_are_counted_not_exported_and_cache_hits_are_no_charge(filled: Ledger) -> None:
    out = exported(filled)
    assert out.unpriced_calls == 1 and out.unpriced_tokens == 909 and out.unpriced_models == {("openai", "mystery-7b")}
    assert not [r for r in out.rows if r["x_Model"] == "mystery-7b"]
    assert sum(r["x_CallCount"] or 0 for r in out.rows) == out.calls  # each call once, no cache hit


def test_hours_and_a_window_cut_inside_a_day(filled: Ledger) -> None:
    since, until = DAY + timedelta(hours=9, minutes=2), DAY + timedelta(hours=9, minutes=30)
    out = exported(filled, since=since, until=until, granularity="hour")
    assert out.rows and {r["ChargePeriodStart"] for r in out.rows} == {since}
    assert {r["ChargePeriodEnd"] for r in out.rows} == {until}
    search = [r for r in out.rows if r["SubAccountId"] == "key_a"]
    assert {r["x_CallCount"] for r in search} == {1, None}  # the 09:00 call is before the window
    hourly = exported(filled, granularity="hour")
    assert {r["ChargePeriodEnd"] - r["ChargePeriodStart"] for r in hourly.rows} == {timedelta(hours=1)}
    assert hourly.billed == exported(filled).billed


def test_a_row_missing_from_the_ledger_is_priced_from_its_cost(any_ledger: Ledger) -> None:
    lost = event(ts=DAY, model_used="gpt-4o", usage=Usage(input_tokens=300, output_tokens=30),
                 cost_usd=Decimal("0.0009"), price_row_id="pr_gone")  # fmt: skip
    any_ledger.append([lost])
    out = exported(any_ledger)
    (row,) = out.rows
    assert out.derived_charges == 1 and row["x_TokenType"] == "tokens" and row["ConsumedQuantity"] == 330
    assert row["ListCost"] == row["ListUnitPrice"] * row["PricingQuantity"] and row["BilledCost"] == Decimal("0.0009")
    assert exported(any_ledger, catalog_row={GPT.id: GPT}.get).derived_charges == 1  # not that row either


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_csv_and_parquet_files_hold_the_same_exact_values(filled: Ledger, tmp_path: Path) -> None:
    out = exported(filled)
    meta = write_focus(out, tmp_path / "nov.csv")
    write_focus(out, tmp_path / "nov.parquet")
    text = (tmp_path / "nov.csv").read_text(encoding="utf-8")
    assert text.isascii()  # tags too: JSON's \u escapes
    rows = read_csv(tmp_path / "nov.csv")
    assert list(rows[0]) == list(COLUMNS) and len(rows) == len(out.rows)
    table = pq.read_table(tmp_path / "nov.parquet").to_pylist()
    for want, got, arrow in zip(out.rows, rows, table, strict=True):
        for c in DECIMAL_COLUMNS:
            if want[c] is None:
                assert got[c] == "" and arrow[c] is None
            else:
                assert "." in got[c] and "E" not in got[c].upper()  # plain notation, always a decimal point
                assert Decimal(got[c]) == want[c] == arrow[c]
        for c in DATETIME_COLUMNS:
            assert got[c] == want[c].strftime("%Y-%m-%dT%H:%M:%SZ") and arrow[c] == want[c]
        assert got["Tags"] == (want["Tags"] or "") and arrow["Tags"] == want["Tags"]
    doc = json.loads(meta.read_text())
    assert meta.name == "nov.csv.metadata.json" and doc["FocusVersion"] == "1.2" and doc["DataGenerator"] == "TokenOps"
    assert doc["x_DataFile"] == "nov.csv" and (tmp_path / "nov.parquet.metadata.json").exists()  # one each
    assert [c["ColumnName"] for c in doc["ColumnDefinition"]] == list(FOCUS_COLUMNS)
    assert Decimal(doc["x_Export"]["billed_cost_usd"]) == out.billed


def test_the_cli_writes_the_file_and_says_what_it_left_out(filled: Ledger, tmp_path: Path) -> None:
    url = filled.url if hasattr(filled, "url") else None
    cfg = tmp_path / "tokenops.yaml"
    ledger_url = url or f"duckdb:///{tmp_path}/ledger.duckdb"
    cfg.write_text(f"ledger: {ledger_url}\nproviders:\n  openai: {{base_url: https://api.openai.com/v1}}\n"
                   "  anthropic: {base_url: https://api.anthropic.com}\n")  # fmt: skip
    filled.close()
    runner = CliRunner()
    out = tmp_path / "spend.csv"
    r = runner.invoke(app, ["export", "focus", "--config", str(cfg), "--since", "2026-11-03", "--until",
                            "2026-11-06", "-o", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "BilledCost adds up to the ledger's spend" in r.output
    assert "Not exported: 1 unpriced calls (909 tokens) of openai/mystery-7b" in r.output
    assert len(read_csv(out)) == len(exported(filled).rows)
    r = runner.invoke(app, ["export", "focus", "--config", str(cfg), "-o", str(out), "--format", "json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["unpriced_calls"] == 1
    # no --until: up to now (today's charge ends now, not at a future midnight); the file said replaced
    until = datetime.fromisoformat(json.loads(r.stdout)["until"])
    assert timedelta(0) <= datetime.now(UTC) - until < timedelta(minutes=1)
    r = runner.invoke(app, ["export", "focus", "--config", str(cfg), "-o", str(out), "--since", "2020-01-01",
                            "--until", "2020-02-01"])  # fmt: skip
    assert r.exit_code == 0 and "(replaced)" in r.output and "the file holds the header only" in r.output
    for args, said in ((["-o", str(tmp_path / "x.xlsx")], "must end in .csv or .parquet"),
                       (["-o", str(tmp_path / "nope" / "x.csv")], "does not exist"),
                       (["-o", str(out), "--since", "2026-11-05", "--until", "2026-11-04"], "--since must be before"),
                       (["-o", str(out), "--since", "yesterday"], "--since: 'yesterday' is not a date")):  # fmt: skip
        assert said in refused("export", "focus", "--config", str(cfg), *args)
    r = runner.invoke(app, ["export", "focus", "--config", str(cfg), "--month", "2026-11", "-o", str(out),
                            "--format", "json"])  # fmt: skip
    assert r.exit_code == 0 and json.loads(r.stdout)["since"] == "2026-11-01T00:00:00Z"
    assert json.loads(r.stdout)["until"] == "2026-12-01T00:00:00Z" and json.loads(r.stdout)["calls"] > 0
    assert "not both" in refused("export", "focus", "--config", str(cfg), "--month", "2026-11", "--since", "1d",
                                 "-o", str(out))  # fmt: skip
    assert "is not a month" in refused("export", "focus", "--config", str(cfg), "--month", "11/2026", "-o", str(out))
    r = runner.invoke(app, ["export", "focus", "--config", str(cfg), "-o", str(out), "--granularity", "week"])
    assert r.exit_code == 2 and "'week' is not one of" in r.output
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_providers_are_named_by_their_api_host_or_their_config_name(filled: Ledger) -> None:
    from types import SimpleNamespace

    providers = {"openai": SimpleNamespace(base_url="http://10.0.0.7:8000/v1"),  # a vLLM server called openai
                 "anthropic": SimpleNamespace(base_url="https://api.anthropic.com")}  # fmt: skip
    names = {(r["x_Provider"], r["ProviderName"], r["ServiceName"], r["PublisherName"], r["InvoiceIssuerName"])
             for r in exported(filled, providers=providers).rows}  # fmt: skip
    assert names == {("openai", "openai", "openai LLM API", "openai", "openai"),
                     ("anthropic", "Anthropic", "Claude API", "Anthropic", "Anthropic")}  # fmt: skip
    assert {r["ServiceName"] for r in exported(filled).rows} == {"OpenAI API", "Claude API"}  # not configured


def test_media_tokens_are_counted_as_each_call_bills_them(any_ledger: Ledger) -> None:
    # image tokens are billed at the image rate only as far as a call's uncached input holds them: one call with
    # cached image tokens and one plain call must not pool into 1000 image tokens at the image rate
    img = PriceRow(provider="openai", model="gpt-image-1", effective_from=T0, source="test",
                   input_per_mtok=Decimal("5"), cache_read_per_mtok=Decimal("1.25"), output_per_mtok=Decimal("40"),
                   input_image_per_mtok=Decimal("10"), input_audio_per_mtok=Decimal("20"))  # fmt: skip
    at = DAY + timedelta(hours=9)
    calls_ = [priced(img, Usage(input_tokens=1000, cache_read_tokens=900, input_image_tokens=1000, output_tokens=10), at),
              priced(img, Usage(input_tokens=1000, output_tokens=10), at),
              priced(img, Usage(input_tokens=500, input_audio_tokens=400, input_image_tokens=400, output_tokens=1), at)]
    any_ledger.append(calls_, (img,))
    out = exported(any_ledger)
    lines = {r["x_TokenType"]: r for r in out.rows}
    assert {k: lines[k]["ConsumedQuantity"] for k in ("input", "input_image", "input_audio", "cache_read")} == {
        "input": 1000, "input_image": 200, "input_audio": 400, "cache_read": 900}  # fmt: skip
    assert out.repriced_mismatch == 0 and all(r["BilledCost"] == r["ListCost"] for r in out.rows)


def test_one_row_per_charge_whatever_the_tag_order_or_other_rows_tiers(any_ledger: Ledger) -> None:
    gemini = PriceRow(provider="google", model="gemini-2.5-pro", effective_from=T0, source="test",
                      input_per_mtok=Decimal("1.25"), output_per_mtok=Decimal("10"),
                      tiers=(LongContextTier(500_000, input_per_mtok=Decimal("2.5")),))  # fmt: skip
    at = DAY + timedelta(hours=2)
    any_ledger.append([
        priced(GPT, Usage(input_tokens=100, output_tokens=10), at, tags={"team": "a", "env": "prod"}),
        priced(GPT, Usage(input_tokens=100, output_tokens=10), at, tags={"env": "prod", "team": "a"}),
        # Claude's tier starts at 200k, Gemini's at 500k: these two Claude calls are one charge
        priced(CLAUDE, Usage(input_tokens=250_000, output_tokens=10), at),
        priced(CLAUDE, Usage(input_tokens=600_000, output_tokens=10), at),
    ], (GPT, CLAUDE, gemini))
    out = exported(any_ledger)
    keys = [(r["ChargePeriodStart"], r["SkuPriceId"], r["x_PriceRowId"], r["SubAccountId"], r["Tags"]) for r in out.rows]
    assert len(keys) == len(set(keys)) == 4
    assert {r["x_CallCount"] for r in out.rows} == {2, None}


def test_a_catalog_row_with_tiers_the_query_did_not_split_by_is_priced_from_its_cost(any_ledger: Ledger) -> None:
    at = DAY + timedelta(hours=2)
    any_ledger.append([priced(CLAUDE, Usage(input_tokens=1000, output_tokens=10), at),
                       priced(CLAUDE, Usage(input_tokens=300_000, output_tokens=10), at)])  # the row not recorded
    out = exported(any_ledger, catalog_row={CLAUDE.id: CLAUDE}.get)
    assert out.derived_charges == 1 and [r["x_TokenType"] for r in out.rows] == ["tokens"]
    assert out.billed == price_usage(Usage(input_tokens=1000, output_tokens=10), CLAUDE).total + price_usage(
        Usage(input_tokens=300_000, output_tokens=10), CLAUDE).total  # fmt: skip


def test_periods_are_utc_whatever_offset_the_window_is_given_in(filled: Ledger) -> None:
    since = datetime(2026, 11, 3, 10, 0, tzinfo=timezone(timedelta(hours=2)))  # 2026-11-03T08:00Z
    out = exported(filled, since=since)
    assert out.rows and all(r["ChargePeriodStart"].utcoffset() == timedelta(0) for r in out.rows)
    assert {r["BillingPeriodStart"] for r in out.rows} == {datetime(2026, 11, 1, tzinfo=UTC)}
    assert min(r["ChargePeriodStart"] for r in out.rows) == datetime(2026, 11, 3, 8, tzinfo=UTC)


def test_huge_quantities_and_long_prices_stay_exact_in_both_files(any_ledger: Ledger, tmp_path: Path) -> None:
    odd = PriceRow(provider="openai", model="odd", effective_from=T0, source="test",
                   input_per_mtok=Decimal("0.123456789012"), output_per_mtok=Decimal("3"))  # fmt: skip
    at = DAY + timedelta(hours=2)
    big = Usage(input_tokens=987_654_321, output_tokens=10)  # near the most one call may report
    any_ledger.append([priced(odd, big, at + timedelta(seconds=i)) for i in range(25)], (odd,))  # 2.5e10 tokens
    out = exported(any_ledger)
    (inp,) = [r for r in out.rows if r["x_TokenType"] == "input"]
    assert inp["ConsumedQuantity"] == 25 * 987_654_321 and inp["ListCost"] == WIDE.divide(
        WIDE.multiply(Decimal("0.123456789012"), Decimal(25 * 987_654_321)), Decimal(1_000_000))  # fmt: skip
    write_focus(out, tmp_path / "big.csv")
    write_focus(out, tmp_path / "big.parquet")
    assert sum(Decimal(r["BilledCost"]) for r in read_csv(tmp_path / "big.csv")) == out.billed
    assert sum(r["BilledCost"] for r in pq.read_table(tmp_path / "big.parquet").to_pylist()) == out.billed


def test_no_data_file_is_left_when_its_metadata_cannot_be_written(filled: Ledger, tmp_path: Path) -> None:
    (tmp_path / "m.csv.metadata.json").mkdir()
    with pytest.raises(UsageError, match="is a folder"):
        write_focus(exported(filled), tmp_path / "m.csv")
    assert not (tmp_path / "m.csv").exists() and not list(tmp_path.glob(".*.tmp"))


def test_a_negotiated_rate_is_the_contracted_price_beside_the_published_list_price(any_ledger: Ledger) -> None:
    # the config's prices: row for gpt-4o (a negotiated rate) priced the calls; the published row is GPT
    deal = PriceRow(provider="openai", model="gpt-4o", effective_from=T0, source="config tokenops.yaml",
                    input_per_mtok=Decimal("2"), output_per_mtok=Decimal("8"))  # fmt: skip
    at = DAY + timedelta(hours=3)
    any_ledger.append([priced(deal, Usage(input_tokens=4000, output_tokens=500), at),
                       priced(CLAUDE, Usage(input_tokens=100, output_tokens=10), at)], (deal, CLAUDE))  # fmt: skip
    published = {("openai", "gpt-4o"): GPT, ("anthropic", "claude-sonnet-4-5"): CLAUDE}

    def public_row(provider: str, model: str, at_: datetime, variant: str) -> PriceRow | None:
        assert at_ == DAY and variant == ""
        return published.get((provider, model))

    out = exported(any_ledger, public_row=public_row)
    gpt = {r["x_TokenType"]: r for r in out.rows if r["x_Model"] == "gpt-4o"}
    assert (gpt["input"]["ListUnitPrice"], gpt["input"]["ContractedUnitPrice"]) == (Decimal("2.5"), Decimal("2"))
    assert gpt["input"]["ListCost"] == Decimal("0.01") and gpt["input"]["ContractedCost"] == Decimal("0.008")
    assert gpt["output"]["ListCost"] == Decimal("0.005") and gpt["output"]["ContractedCost"] == Decimal("0.004")
    assert gpt["input"]["BilledCost"] == gpt["input"]["ContractedCost"]  # what was charged: the negotiated rate
    assert gpt["input"]["PricingCurrencyListUnitPrice"] == Decimal("2.5")
    claude = [r for r in out.rows if r["x_Model"] == "claude-sonnet-4-5"]
    assert all(r["ListUnitPrice"] == r["ContractedUnitPrice"] for r in claude)  # priced at the published row
    assert out.billed == sum((e.cost_usd for e in (priced(deal, Usage(input_tokens=4000, output_tokens=500), at),
                                                  priced(CLAUDE, Usage(input_tokens=100, output_tokens=10), at))),
                             Decimal(0))  # fmt: skip


def test_catalogs_give_the_configured_row_by_id_and_the_published_one_by_model() -> None:
    from tokenops.services.focus import Catalogs

    deal = PriceRow(provider="openai", model="gpt-4o", effective_from=T0, source="config tokenops.yaml",
                    input_per_mtok=Decimal("0.5"), output_per_mtok=Decimal("1"))  # fmt: skip
    catalogs = Catalogs((deal,))
    assert catalogs.row(deal.id) == deal and catalogs.row("pr_nothing") is None
    published = catalogs.public("openai", "gpt-4o", DAY, "")
    assert published is not None and published.id != deal.id and published.input_per_mtok == Decimal("2.5")


def test_todays_charge_ends_now_not_at_midnight(any_ledger: Ledger) -> None:
    now = datetime.now(UTC)
    any_ledger.append([priced(GPT, Usage(input_tokens=100, output_tokens=10), now - timedelta(seconds=5))], (GPT,))
    out = exported(any_ledger, since=now - timedelta(hours=1, microseconds=500), until=None)
    assert out.rows and out.calls == 1
    midnight = (now - timedelta(seconds=5)).replace(hour=0, minute=0, second=0, microsecond=0)
    for r in out.rows:  # (the call's day started after the window did, just after midnight)
        assert r["ChargePeriodStart"] == max(midnight, (now - timedelta(hours=1, microseconds=500)).replace(microsecond=0))
        assert now <= r["ChargePeriodEnd"] <= datetime.now(UTC) + timedelta(seconds=1)
        assert r["ChargePeriodEnd"].microsecond == 0
