"""`tokenops prices calc`: the exact cost of one call, priced by the gateway's own lookup and arithmetic, with the
price row used; service tiers not in the catalog are priced at the standard rate and flagged; a malformed config
price is a one-line error naming the file and line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tokenops.cli import app
from tokenops.pricing.catalog import load_catalog
from tokenops.pricing.model import price_usage
from tokenops.usage import Usage

D = Decimal
runner = CliRunner()


@pytest.fixture(autouse=True)
def _own_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No data file of the person running the tests: the catalog is the bundled one (with the corrections)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "tokenops.yaml"
    path.write_text("""ledger: duckdb:///./l.duckdb
providers:
  openai: {base_url: https://api.openai.com/v1}
  local:  {base_url: "http://127.0.0.1:8000/v1", kind: openai}
prices:
  - {provider: local, model: llama-3.1-8b, input_per_mtok: "0.05", output_per_mtok: "0.08", effective_from: 2025-01-01}
""")
    return path


def calc(cfg: Path, *args: str) -> dict[str, Any]:
    result = runner.invoke(app, ["prices", "calc", *args, "--config", str(cfg), "--format", "json"],
                           catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    out: dict[str, Any] = json.loads(result.output)
    return out


def tokenops(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tokenops", *args], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ))  # fmt: skip


def test_sonnet_4_long_context_call(cfg: Path) -> None:
    """https://docs.anthropic.com/en/docs/about-claude/pricing#long-context-pricing (read 2026-12-02): above 200K
    input tokens Claude Sonnet 4 is $6 input / $22.50 output per MTok, cache reads $0.60, 5-minute writes $7.50."""
    out = calc(cfg, "claude-sonnet-4-20250514", "--provider", "anthropic", "--input", "250000", "--cached", "50000",
               "--cache-write-5m", "10000", "--output", "2000", "--reasoning", "500", "--at", "2025-10-15")  # fmt: skip
    # 190,000 x $6 + 50,000 x $0.60 + 10,000 x $7.50 + 2,000 x $22.50 (reasoning is output), per million
    assert out["cost_usd"] == "1.29" and out["cost_usd_recorded"] == "1.29" and out["cost_usd_rounded"] == "1.29"
    assert out["cost_parts_usd"] == {"input": "1.14", "cache_read": "0.03", "cache_write": "0.075", "output": "0.045",
                                     "request": "0.00"}  # fmt: skip
    (row,) = out["rows"]
    assert (row["provider"], row["model"], row["effective_from"]) == ("anthropic", "claude-sonnet-4-0",
                                                                      "2025-08-12T00:00:00Z")  # fmt: skip
    assert row["source"].endswith("corrected per https://docs.anthropic.com/en/docs/about-claude/pricing#long-context-pricing")
    assert row["long_context_tier"]["above_input_tokens"] == 200000
    assert row["rates_applied"]["input_per_mtok"] == "6" and row["rates_applied"]["output_per_mtok"] == "22.50"
    assert row["base_rates"]["input_per_mtok"] == "3"
    # the row is the catalog's, and the cost is price_usage's: the gateway would record the same
    catalog = load_catalog()
    used = catalog.get(row["id"])
    usage = Usage(input_tokens=250_000, cache_read_tokens=50_000, cache_write_5m_tokens=10_000, output_tokens=2_000,
                  reasoning_tokens=500)  # fmt: skip
    assert used is not None and str(price_usage(usage, used).total.normalize()) == "1.29"
    assert out["usage"] == usage.to_dict() and out["service_tier"] is None


def test_full_precision_and_rounded_amounts(cfg: Path) -> None:
    # 1,234 x $0.15 + 567 x $0.60 per million (gpt-4o-mini, https://openai.com/api/pricing/, as of 2025-10-15)
    out = calc(cfg, "gpt-4o-mini", "--input", "1234", "--output", "567", "--at", "2025-10-15")
    exact = D(1234) * D("0.15") / 1_000_000 + D(567) * D("0.60") / 1_000_000
    assert D(out["cost_usd"]) == exact == D("0.0005253")
    assert out["cost_usd_rounded"] == "0.00" and out["provider"] == "openai"


def test_a_row_before_a_price_change(cfg: Path) -> None:
    """o3 before OpenAI's 2025-06-10 cut: $10 input, $2.50 cached input, $40 output per MTok
    (https://openai.com/api/pricing/, checked 2026-12-02)."""
    before = calc(cfg, "o3", "--input", "10000", "--cached", "4000", "--output", "1000", "--at", "2025-05-01")
    after = calc(cfg, "o3", "--input", "10000", "--cached", "4000", "--output", "1000", "--at", "2025-06-10T00:00")
    assert before["cost_usd"] == "0.11" and before["rows"][0]["effective_to"] == "2025-06-10T00:00:00Z"
    assert after["cost_usd"] == "0.022" and after["rows"][0]["effective_from"] == "2025-06-10T00:00:00Z"


def test_a_service_tier_not_in_the_catalog_is_priced_at_standard_and_flagged(cfg: Path) -> None:
    standard = calc(cfg, "gpt-4o", "--input", "1000", "--output", "100", "--at", "2025-10-15")
    priority = calc(cfg, "gpt-4o", "--input", "1000", "--output", "100", "--at", "2025-10-15", "--tier", "priority")
    assert priority["cost_usd"] == standard["cost_usd"]
    assert priority["service_tier"] == {"requested": "priority", "priced_as": "standard", "flagged": True,
                                        "note": "service tier 'priority' is not in the price catalog: the standard "
                                                "rate was used"}  # fmt: skip
    assert calc(cfg, "gpt-4o", "--input", "1", "--output", "1", "--tier", "standard")["service_tier"]["flagged"] is False
    table = runner.invoke(app, ["prices", "calc", "gpt-4o", "--input", "1000", "--output", "100", "--tier", "flex",
                                "--config", str(cfg)])  # fmt: skip
    assert table.exit_code == 0, table.output
    assert "total (exact)" in table.output and "Price row used" in table.output
    assert "warning: service tier 'flex' is not in the price catalog: the standard rate was used (flagged)" in table.output


def test_a_configured_provider_is_priced_like_the_gateway_prices_it(cfg: Path) -> None:
    local = calc(cfg, "llama-3.1-8b", "--provider", "local", "--input", "1000000", "--output", "1000000")
    assert local["cost_usd"] == "0.13" and local["rows"][0]["source"] == str(cfg)
    assert calc(cfg, "llama-3.1-8b", "--input", "1000", "--output", "1000")["provider"] == "local"
    # a self-hosted OpenAI-compatible server has no price for gpt-oss-120b: OpenAI's catalog row is not its price
    r = tokenops("prices", "calc", "gpt-oss-120b", "--provider", "local", "--input", "1", "--output", "1",
                 "--config", str(cfg))  # fmt: skip
    assert r.returncode == 2 and "no price known for model 'gpt-oss-120b' under provider 'local'" in r.stderr
    assert calc(cfg, "gpt-oss-120b", "--provider", "openai", "--input", "1", "--output", "1")["rows"][0]["provider"] == "openai"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--input", "10", "--cached", "8", "--cache-write-5m", "3", "--output", "1"], "parts of --input"),
        (["--input", "10", "--output", "1", "--reasoning", "2"], "--reasoning is part of --output"),
        (["--input", "10", "--output", "1", "--at", "yesterday-ish"], "--at"),
        (["--input", "2000000000", "--output", "1"], "at most 1,000,000,000"),
    ],
)
def test_bad_arguments_are_one_line_errors(cfg: Path, args: list[str], fragment: str) -> None:
    r = tokenops("prices", "calc", "gpt-4o", *args, "--config", str(cfg))
    assert r.returncode == 2, r.stdout + r.stderr
    assert fragment in r.stderr and "Traceback" not in r.stderr


def test_a_malformed_config_price_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "tokenops.yaml"
    path.write_text('providers:\n  local: {base_url: "http://127.0.0.1:8000/v1"}\nprices:\n'
                    '  - {provider: local, model: m, input_per_mtok: 0.05, output_per_mtok: "1", effective_from: 2025-01-01}\n')  # fmt: skip
    r = tokenops("prices", "calc", "m", "--input", "1", "--output", "1", "--config", str(path))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"error: {path}:4: prices[0].input_per_mtok: prices must be quoted decimal strings")
    assert len(r.stderr.strip().splitlines()) == 1


def test_the_json_cost_agrees_with_the_pico_dollar_total_the_ledger_records(cfg: Path) -> None:
    out = calc(cfg, "claude-3-5-haiku-20241022", "--input", "3", "--output", "1", "--at", "2025-10-15")
    # 3 x $0.80 + 1 x $4, per million: representable exactly at 12 places
    assert out["cost_usd"] == out["cost_usd_recorded"] == "0.0000064"
    assert datetime.fromisoformat(out["at"].replace("Z", "+00:00")) == datetime(2025, 10, 15, tzinfo=UTC)


def test_a_malformed_corrections_file_is_a_one_line_error(cfg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """The shipped corrections file is reviewed; were it ever broken, every price command says where, in one line."""
    from tokenops.cli import main
    from tokenops.pricing import catalog, corrections

    bad = tmp_path / "corrections.yaml"
    bad.write_text("corrections:\n  - provider: openai\n    model: o3\n    set: {cache_read_per_mtok: 2.50}\n")
    monkeypatch.setattr(corrections, "CORRECTIONS_FILE", bad)
    corrections._shipped.cache_clear()
    catalog._corrected.cache_clear()
    monkeypatch.setattr(sys, "argv", ["tokenops", "prices", "calc", "o3", "--input", "1", "--output", "1",
                                      "--config", str(cfg)])  # fmt: skip
    try:
        with pytest.raises(SystemExit) as exit_:
            main()
    finally:
        corrections._shipped.cache_clear()
        catalog._corrected.cache_clear()
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}:4: corrections[0].set.cache_read_per_mtok: prices must be quoted")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_service_tier_with_a_row_is_priced_with_it(cfg: Path) -> None:
    """gpt-5 Flex: $0.625 input, $0.0625 cached input, $5 output per MTok; Priority: $2.50 / $0.25 / $20
    (https://platform.openai.com/docs/pricing, read 2026-12-02; genai-prices dates the tier rows 2026-10-12)."""
    args = ["gpt-5", "--input", "10000", "--cached", "2000", "--output", "1000", "--at", "2026-11-01"]
    flex = calc(cfg, *args, "--tier", "flex")
    assert flex["cost_usd"] == "0.010125"  # 8000 x 0.625 + 2000 x 0.0625 + 1000 x 5, per million
    assert flex["service_tier"] == {"requested": "flex", "priced_as": "flex", "flagged": False, "note": "the flex rate"}
    assert flex["rows"][0]["variant"] == "flex"
    assert calc(cfg, *args, "--tier", "priority")["cost_usd"] == "0.0405"
    assert calc(cfg, *args, "--tier", "default")["cost_usd"] == "0.02025"
    # before genai-prices' tier rows begin: the standard rate, flagged
    early = calc(cfg, "gpt-5", "--input", "10000", "--output", "1000", "--at", "2026-01-01", "--tier", "flex")
    assert early["service_tier"]["flagged"] is True and early["rows"][0]["variant"] == ""
