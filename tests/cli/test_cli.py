"""The CLI: keys, spend reports (the JSON contract, exact totals), prices; errors without tracebacks."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tokenops.cli import app
from tokenops.ledger.duckdb import DuckDBLedger
from tokenops.ledger.events import SpendEvent, new_request_id
from tokenops.usage import Usage

runner = CliRunner()


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "tokenops.yaml"
    path.write_text("ledger: duckdb:///./l.duckdb\n"
                    "prices:\n  - {provider: local, model: llama-3.1-8b, input_per_mtok: '0.05', "
                    "output_per_mtok: '0.08', effective_from: 2025-01-01}\n")  # fmt: skip
    return path


def run(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def tokenops(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tokenops", *args], capture_output=True, text=True, timeout=60)


def test_keys_create_list_revoke(cfg: Path) -> None:
    created = json.loads(run("keys", "create", "--name", "search-app", "--tags", "team=search,env=prod",
                             "--lock", "team", "--config", str(cfg), "--format", "json"))  # fmt: skip
    assert created["key"].startswith("tok-") and created["id"].startswith("key_")
    listed = json.loads(run("keys", "list", "--config", str(cfg), "--format", "json"))
    assert listed[0]["id"] == created["id"] and listed[0]["tags"] == {"team": "search", "env": "prod"}
    assert created["key"] not in json.dumps(listed)  # only a hash is stored, only a prefix is shown
    assert listed[0]["locked_tags"] == ["team"] and listed[0]["status"] == "active"
    run("keys", "revoke", created["id"], "--config", str(cfg))
    listed = json.loads(run("keys", "list", "--config", str(cfg), "--format", "json"))
    assert listed[0]["status"] == "revoked"


def test_keys_create_with_a_user_round_trip(cfg: Path) -> None:
    created = json.loads(run("keys", "create", "--name", "bob's laptop", "--user", "bob@example.com",
                             "--config", str(cfg), "--format", "json"))  # fmt: skip
    assert created["end_user"] == "bob@example.com"
    run("keys", "create", "--name", "shared", "--config", str(cfg))
    listed = {k["name"]: k for k in json.loads(run("keys", "list", "--config", str(cfg), "--format", "json"))}
    assert listed["bob's laptop"]["end_user"] == "bob@example.com" and listed["shared"]["end_user"] is None
    rows = list(csv.DictReader(io.StringIO(run("keys", "list", "--config", str(cfg), "--format", "csv"))))
    assert {r["name"]: r["end_user"] for r in rows} == {"bob's laptop": "bob@example.com", "shared": ""}
    assert "end user bob@example.com" in run("keys", "create", "--name", "b2", "--user", "bob@example.com",
                                             "--config", str(cfg))  # fmt: skip


def test_config_from_environment_variable(cfg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENOPS_CONFIG", str(cfg))
    run("keys", "create", "--name", "env-app")
    assert (cfg.parent / "l.duckdb").exists()


def seed(cfg: Path) -> list[SpendEvent]:
    now = datetime.now(UTC).replace(microsecond=0)
    rows = [
        ("search", "gpt-4o-mini", "prod", Decimal("0.000123456789"), 0),
        ("search", "gpt-4o-mini", "dev", Decimal("0.1"), 1),
        ("search", "claude-3-5-haiku", "prod", Decimal("1.000000000001"), 1),
        ("support", "gpt-4o-mini", "prod", Decimal("0.2"), 2),
        (None, "gpt-4o", "prod", Decimal("0.3"), 3),
        ("support", "mystery", "prod", None, 3),
    ]
    events = [
        SpendEvent(request_id=new_request_id(), ts=now - timedelta(days=days, minutes=i), source="test",
                   provider="openai", model_requested=model, model_used=model, usage=Usage(input_tokens=100, output_tokens=7),
                   cost_usd=cost, tags={k: v for k, v in (("team", team), ("env", env)) if v})  # fmt: skip
        for i, (team, model, env, cost, days) in enumerate(rows)
    ]
    DuckDBLedger(cfg.parent / "l.duckdb").append(events)
    return events


def test_report_json_contract_and_exact_totals(cfg: Path) -> None:
    events = seed(cfg)
    out = json.loads(run("report", "spend", "--by", "team,model", "--config", str(cfg), "--format", "json"))
    assert set(out) == {"rows", "total_cost_usd", "unpriced_requests"}
    for row in out["rows"]:
        assert set(row) == {"team", "model", "requests", "input_tokens", "output_tokens", "cost_usd",
                            "unpriced_requests"}  # fmt: skip
        assert isinstance(row["cost_usd"], str)
    total = Decimal(out["total_cost_usd"])
    assert total == sum(Decimal(r["cost_usd"]) for r in out["rows"])
    assert total == sum(e.cost_usd for e in events if e.cost_usd is not None) == Decimal("1.600123456790")
    assert out["unpriced_requests"] == 1
    untagged = [r for r in out["rows"] if r["team"] == "(untagged)"]
    assert untagged and untagged[0]["cost_usd"] == "0.30"
    assert sum(r["requests"] for r in out["rows"]) == 6


def test_report_where_since_and_time_buckets(cfg: Path) -> None:
    seed(cfg)
    out = json.loads(run("report", "spend", "--by", "env", "--where", "team=search", "--config", str(cfg),
                         "--format", "json"))  # fmt: skip
    assert {r["env"]: r["cost_usd"] for r in out["rows"]} == {"prod": "1.00012345679", "dev": "0.10"}
    out = json.loads(run("report", "spend", "--by", "day", "--since", "12h", "--config", str(cfg), "--format", "json"))
    assert sum(r["requests"] for r in out["rows"]) == 1
    out = json.loads(run("report", "spend", "--by", "month,provider", "--tz", "Europe/Berlin", "--config", str(cfg),
                         "--format", "json"))  # fmt: skip
    assert all(len(r["month"]) == 7 for r in out["rows"])


def test_report_csv_and_table(cfg: Path) -> None:
    seed(cfg)
    text = run("report", "spend", "--by", "team", "--config", str(cfg), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[0].keys() == {"team", "requests", "input_tokens", "output_tokens", "cost_usd", "unpriced_requests"}
    table = run("report", "spend", "--by", "team", "--config", str(cfg))
    assert "search" in table and "total: $1.60012345679" in table and "unpriced calls: 1" in table


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["report", "spend", "--by", "bad name!"], "cannot group or filter by"),
        (["report", "spend", "--since", "yesterday-ish"], "--since"),
        (["report", "spend", "--where", "team"], "--where"),
        (["report", "spend", "--tz", "Mars/Base"], "time zone"),
        (["keys", "revoke", "key_nope"], "no key with id"),
        (["keys", "create", "--name", "x", "--tags", "a=1", "--lock", "b"], "lock names b"),
        (["keys", "create", "--name", "x", "--user", "u" * 257], "end user must be printable"),
        (["prices", "show", "no-such-model-xyz"], "no price known"),
        (["report", "spend", "--since", "99999999d"], "--since"),
        (["report", "spend", "--until", "99999999d"], "--until"),
        (["report", "spend", "--since", "9" * 5000 + "m"], "--since"),
        (["report", "spend", "--since", "0001-01-01T00:00:00+14:00"], "--since"),
        (["report", "spend", "--until", "9999-12-31T23:00:00-14:00"], "--until"),
        (["approvals", "approve", "apr_nope", "--until", "99999999d"], "--until"),
        (["approvals", "approve", "apr_nope", "--max-usd", "1e400"], "--max-usd"),
        (["approvals", "approve", "apr_nope", "--max-usd", "0.0000000000001"], "--max-usd"),
        (["budgets", "set", "--name", "b", "--amount-usd", "1e400"], "amount_usd"),
        (["budgets", "set", "--name", "b", "--amount-usd", "-0"], "amount_usd"),
        (["budgets", "set", "--name", "b", "--amount-tokens", str(2**64)], "amount_tokens"),
        (["budgets", "set", "--name", "b", "--amount-usd", "1", "-t", "NaN"], "at"),
    ],
)
def test_bad_arguments_are_one_line_errors(cfg: Path, args: list[str], fragment: str) -> None:
    r = tokenops(*args, "--config", str(cfg))
    assert r.returncode == 2, r.stdout + r.stderr
    assert fragment in r.stderr and "Traceback" not in r.stderr


def test_prices_list_show_and_unpriced(cfg: Path) -> None:
    out = json.loads(run("prices", "list", "--provider", "openai", "--search", "gpt-4o-mini", "--config", str(cfg),
                         "--format", "json"))  # fmt: skip
    mini = [p for p in out["prices"] if p["model"] == "gpt-4o-mini"][0]
    assert (mini["input_per_mtok"], mini["cache_read_per_mtok"], mini["output_per_mtok"]) == ("0.15", "0.075", "0.6")
    shown = json.loads(run("prices", "show", "llama-3.1-8b", "--config", str(cfg), "--format", "json"))
    assert shown["rows"][0]["source"].endswith("tokenops.yaml") and shown["rows"][0]["input_per_mtok"] == "0.05"
    tiers = json.loads(run("prices", "show", "claude-sonnet-4-5", "--provider", "anthropic", "--config", str(cfg),
                           "--format", "json"))["tiers"]  # fmt: skip
    assert any(t["above_input_tokens"] == 200000 for t in tiers)
    seed(cfg)
    unpriced = json.loads(run("prices", "list", "--unpriced", "--config", str(cfg), "--format", "json"))
    assert [m["model"] for m in unpriced["models"]] == ["mystery"]
