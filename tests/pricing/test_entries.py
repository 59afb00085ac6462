"""PriceEntry: the config file's ``prices:`` items."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
import yaml
from pydantic import ValidationError

from tokenops.pricing.catalog import load_catalog
from tokenops.pricing.entries import PriceEntry
from tokenops.pricing.model import LongContextTier

D = Decimal
GOOD = {
    "provider": "local",
    "model": "llama-3.1-8b",
    "input_per_mtok": "0.05",
    "output_per_mtok": "0.08",
    "effective_from": "2025-01-01",
}


def entry(**changes) -> PriceEntry:
    return PriceEntry.model_validate({**GOOD, **changes})


def test_design_example_from_yaml():
    (raw,) = yaml.safe_load(
        """
        - {provider: local, model: llama-3.1-8b, input_per_mtok: "0.05", output_per_mtok: "0.08",
           effective_from: 2025-01-01}
        """
    )
    assert isinstance(raw["effective_from"], date)
    row = PriceEntry.model_validate(raw).to_row("config tokenops.yaml")
    assert (row.provider, row.model, row.source) == ("local", "llama-3.1-8b", "config tokenops.yaml")
    assert (row.input_per_mtok, row.output_per_mtok) == (D("0.05"), D("0.08"))
    assert row.effective_from == datetime(2025, 1, 1, tzinfo=UTC)
    assert row.cache_read_per_mtok is None and row.per_request is None and row.tiers == ()


def test_unquoted_yaml_float_is_refused_with_advice():
    (raw,) = yaml.safe_load(
        "- {provider: local, model: m, input_per_mtok: 0.05, output_per_mtok: '1', effective_from: 2025-01-01}"
    )
    with pytest.raises(ValidationError) as err:
        PriceEntry.model_validate(raw)
    message = str(err.value)
    assert "input_per_mtok" in message
    assert 'quoted decimal strings, e.g. "0.05"' in message


def test_every_price_field_refuses_floats():
    for field in ("cache_read_per_mtok", "cache_write_5m_per_mtok", "cache_write_1h_per_mtok", "per_request"):
        with pytest.raises(ValidationError, match="quoted"):
            entry(**{field: 0.1})
    with pytest.raises(ValidationError, match="quoted"):
        entry(tiers=[{"above_input_tokens": 200_000, "input_per_mtok": 6.0}])


EXTRA = ("web_search_per_k", "input_audio_per_mtok", "output_audio_per_mtok", "input_image_per_mtok",
         "output_image_per_mtok")


def test_tool_audio_and_image_rates_become_the_rows_rates():
    plain = entry().to_row("config")
    for i, field in enumerate(EXTRA, start=1):
        row = entry(**{field: f"{i}.5"}).to_row("config")
        assert getattr(row, field) == D(f"{i}.5") and row.id != plain.id  # in the id once set
        with pytest.raises(ValidationError, match="quoted"):
            entry(**{field: 0.1})
        with pytest.raises(ValidationError, match="negative"):
            entry(**{field: "-1"})
    assert all(getattr(plain, field) is None for field in EXTRA)
    with pytest.raises(ValidationError):  # not a long-context tier price
        entry(tiers=[{"above_input_tokens": 1, "web_search_per_k": "10"}])


def test_ints_and_decimals_are_exact_prices():
    e = entry(input_per_mtok=3, output_per_mtok=D("15.00"), per_request="0.012")
    assert (e.input_per_mtok, e.output_per_mtok, e.per_request) == (D(3), D("15.00"), D("0.012"))


@pytest.mark.parametrize("bad", ["-0.01", -1])
def test_negative_prices_are_refused(bad):
    with pytest.raises(ValidationError, match="negative"):
        entry(output_per_mtok=bad)
    with pytest.raises(ValidationError, match="negative"):
        entry(tiers=[{"above_input_tokens": 1, "input_per_mtok": bad}])


@pytest.mark.parametrize("bad", ["abc", "NaN", "Infinity", True, None])
def test_non_numbers_are_refused(bad):
    with pytest.raises(ValidationError):
        entry(input_per_mtok=bad)


def test_unknown_keys_are_refused():
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        entry(input_per_mtok_typo="1")
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        entry(tiers=[{"above_input_tokens": 1, "input_per_mtok": "1", "above": 2}])


@pytest.mark.parametrize("missing", ["provider", "model", "effective_from", "input_per_mtok", "output_per_mtok"])
def test_required_fields(missing):
    raw = dict(GOOD)
    del raw[missing]
    with pytest.raises(ValidationError) as err:
        PriceEntry.model_validate(raw)
    assert err.value.errors()[0]["loc"] == (missing,)
    assert err.value.errors()[0]["type"] == "missing"


def test_empty_names_are_refused():
    with pytest.raises(ValidationError):
        entry(model="  ")


def test_effective_from_forms():
    assert entry(effective_from=date(2025, 3, 1)).effective_from == datetime(2025, 3, 1, tzinfo=UTC)
    assert entry(effective_from=datetime(2025, 3, 1, 12)).effective_from == datetime(2025, 3, 1, 12, tzinfo=UTC)
    cet = timezone(timedelta(hours=1))
    moment = entry(effective_from=datetime(2025, 3, 1, 0, 30, tzinfo=cet)).effective_from
    assert moment == datetime(2025, 2, 28, 23, 30, tzinfo=UTC) and moment.tzinfo is UTC
    assert entry(effective_from="2025-03-01T10:00:00Z").effective_from == datetime(2025, 3, 1, 10, tzinfo=UTC)
    with pytest.raises(ValidationError, match="effective_from must be a date"):
        entry(effective_from=2025)
    with pytest.raises(ValidationError):
        entry(effective_from="soon")


def test_tiers_become_sorted_long_context_tiers():
    row = entry(
        tiers=[
            {"above_input_tokens": 500_000, "input_per_mtok": "9"},
            {"above_input_tokens": 200_000, "input_per_mtok": "6", "output_per_mtok": "22.50"},
        ]
    ).to_row("config")
    assert row.tiers == (
        LongContextTier(above_input_tokens=200_000, input_per_mtok=D(6), output_per_mtok=D("22.50")),
        LongContextTier(above_input_tokens=500_000, input_per_mtok=D(9)),
    )


def test_tier_validation():
    with pytest.raises(ValidationError, match="distinct"):
        entry(
            tiers=[{"above_input_tokens": 1, "input_per_mtok": "1"}, {"above_input_tokens": 1, "input_per_mtok": "2"}]
        )
    with pytest.raises(ValidationError, match="at least one price"):
        entry(tiers=[{"above_input_tokens": 1}])
    with pytest.raises(ValidationError):
        entry(tiers=[{"above_input_tokens": "200000", "input_per_mtok": "1"}])  # a count is a YAML int
    with pytest.raises(ValidationError):
        entry(tiers=[{"above_input_tokens": -1, "input_per_mtok": "1"}])


def test_entries_price_calls_through_the_catalog():
    rows = [entry().to_row("config"), entry(input_per_mtok="0.04", effective_from="2025-07-01").to_row("config")]
    catalog = load_catalog(rows)
    at = datetime(2025, 3, 1, tzinfo=UTC)
    assert catalog.lookup(["local", "openai"], "llama-3.1-8b", at).input_per_mtok == D("0.05")
    at = datetime(2025, 7, 1, tzinfo=UTC)
    assert catalog.lookup(["local", "openai"], "llama-3.1-8b", at).input_per_mtok == D("0.04")
