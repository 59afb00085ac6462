"""Bad input to the analytics commands (anomalies, forecast, plan, report chargeback|units|savings|variance, import
metrics, evaluate models) is one clear usage error: never a traceback, never an answer that silently drops it."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from cli_runs import refused, run, write
from tokenops.errors import ConfigError
from tokenops.ledger.duckdb import DuckDBLedger
from tokenops.ledger.events import SpendEvent, new_request_id
from tokenops.services.planning import PlanLine
from tokenops.usage import Usage

NOW = datetime.now(UTC)


def config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "tokenops.yaml"
    path.write_text("ledger: duckdb:///./l.duckdb\n" + extra)
    return path


def call(ts: datetime, **tags: str) -> SpendEvent:
    return SpendEvent(request_id=new_request_id(), ts=ts, source="test", provider="openai", model_requested="gpt-4o",
                      model_used="gpt-4o", usage=Usage(input_tokens=100, output_tokens=10), cost_usd=Decimal("0.01"),
                      tags=tags)  # fmt: skip


def test_chargeback_output_that_cannot_be_written(tmp_path: Path) -> None:
    cfg = str(config(tmp_path))
    missing = tmp_path / "no-such-dir" / "cb.csv"
    assert refused("report", "chargeback", "--month", "2026-10", "-o", str(missing), "-f", "csv", "-c", cfg) == \
        f"--output {missing}: cannot write (No such file or directory)"  # fmt: skip
    assert "cannot write" in refused("report", "chargeback", "--month", "2026-10", "-o", str(tmp_path), "-c", cfg)
    r = subprocess.run([sys.executable, "-m", "tokenops", "report", "chargeback", "--month", "2026-10", "-o",
                        str(missing), "-c", cfg], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.startswith("error: --output")


def test_a_month_or_window_before_the_year_one_in_utc(tmp_path: Path) -> None:
    cfg = str(config(tmp_path))
    # 0001-01 in Tokyo begins in the year 0 in UTC; 9999-12-31 has no day after it
    assert "outside the years 1 to 9999" in refused("report", "chargeback", "--month", "0001-01", "--tz",
                                                    "Asia/Tokyo", "-c", cfg)  # fmt: skip
    write(tmp_path, "m.csv", "date,metric,value\n2026-10-01,tickets,3\n")
    run("import", "metrics", str(tmp_path / "m.csv"), "-c", cfg)
    assert refused("report", "units", "--metric", "tickets", "--since", "0001-01-01", "--tz", "America/New_York",
                   "-c", cfg).startswith("--since:")  # fmt: skip
    assert refused("report", "units", "--metric", "tickets", "--until", "9999-12-31T12:00", "--tz", "Asia/Tokyo",
                   "-c", cfg).startswith("--until:")  # fmt: skip


def test_forecast_series_past_the_year_9999_and_bad_steps(tmp_path: Path) -> None:
    days = write(tmp_path, "days.csv", "timestamp,value\n" + "".join(f"2026-01-{d:02d},{d % 7}\n" for d in range(1, 29)))
    end = write(tmp_path, "end.csv", "timestamp,value\n9999-12-29,1\n9999-12-30,2\n9999-12-31,3\n")
    assert "reach beyond the year 9999" in refused("forecast", "series", str(end), "--horizon", "5")
    assert "reach beyond the year 9999" in refused("forecast", "series", str(days), "--horizon", "100000000")
    assert "longer than timestamps reach" in refused("forecast", "series", str(days), "--horizon", "3", "--step",
                                                     "99999999999999999999w")  # fmt: skip
    # a step below a microsecond was 0 and silently replaced by the file's own step
    assert refused("forecast", "series", str(days), "--horizon", "3", "--step", "0.0000001s", "--resample",
                   "sum") == "--step: '0.0000001s' is not a step (e.g. 5m, 1h, 1d, 1w)"  # fmt: skip
    huge = write(tmp_path, "huge.csv", "timestamp,value\n" + "".join(f"2026-01-{d:02d},1e308\n" for d in range(1, 29)))
    assert "values too large" in refused("forecast", "series", str(huge), "--horizon", "5", "--format", "json")


def test_forecast_series_writes_years_below_1000_with_four_digits(tmp_path: Path) -> None:
    early = write(tmp_path, "early.csv", "timestamp,value\n0001-01-01,1\n0001-01-02,2\n0001-01-03,3\n")
    out = run("forecast", "series", str(early), "--horizon", "1", "--format", "json")
    assert '"timestamp": "0001-01-04"' in out


def test_empty_scenarios_and_scopes_are_named(tmp_path: Path) -> None:
    cfg = str(config(tmp_path))
    assert refused("forecast", "--horizon", "30d", "--move", "", "-c", cfg).startswith("--move: ''")
    assert refused("forecast", "--horizon", "30d", "--price-change", "", "-c", cfg).startswith("--price-change: ''")
    assert refused("anomalies", "--scope", "team", "-c", cfg) == "malformed --scope: 'team' is not key=value"
    assert refused("forecast", "--scope", "team", "--horizon", "30d", "-c", cfg).startswith("malformed --scope")


def test_plan_and_variance_refuse_far_quarters_and_time_buckets(tmp_path: Path) -> None:
    cfg = str(config(tmp_path))
    assert "more than two years from now" in refused("plan", "budget", "--quarter", "9998-Q4", "-c", cfg)
    assert refused("plan", "budget", "--quarter", f"{NOW.year + 1}-Q1", "--by", "team,day", "-c", cfg) == \
        "--by day: lines are scopes (team, env, model, …), not time buckets"  # fmt: skip
    assert refused("report", "variance", "--month", "2026-10", "--by", "week", "-c", cfg).startswith("--by week:")


def test_a_plan_line_by_model_keeps_its_model() -> None:
    z = Decimal(0)
    line = PlanLine({"model": "gpt-4o"}, z, z, z, z, z, z, "AutoETS", 30).to_json()
    assert line["model"] == "gpt-4o" and line["plan_model"] == "AutoETS"
    assert PlanLine({"team": "a"}, z, z, z, z, z, z, "AutoETS", 30).to_json()["model"] == "AutoETS"


def test_anomalies_of_a_window_that_ends_before_it_starts(tmp_path: Path) -> None:
    cfg = str(config(tmp_path))
    for extra in ([], ["--scan"]):
        assert refused("anomalies", "--since", "9999-12-31", *extra, "-c", cfg).startswith("--since (9999-12-31 00:00 UTC)")


def test_an_immense_call_factor_finds_no_outlier_call_and_an_infinite_one_is_refused(tmp_path: Path) -> None:
    cfg = config(tmp_path, "anomalies: {call_factor: 1.0e300}\n")  # finite, but past any SQL integer
    led = DuckDBLedger(tmp_path / "l.duckdb")
    led.append([call(NOW - timedelta(days=3, minutes=i), feature="x", team="a") for i in range(30)])
    led.close()
    assert "no anomalies" in run("anomalies", "--scan", "--since", "1d", "--bucket", "3600", "-c", str(cfg))
    (tmp_path / "tokenops.yaml").write_text((tmp_path / "tokenops.yaml").read_text().replace("1.0e300", ".inf"))
    with pytest.raises(ConfigError, match="call_factor: Input should be a finite number"):
        run("anomalies", "--scan", "--since", "1d", "-c", str(cfg))


def test_savings_by_names_and_an_empty_report(tmp_path: Path) -> None:
    cfg = str(config(tmp_path))
    assert refused("report", "savings", "--by", "a;b", "-c", cfg) == "--by 'a;b': not kind, model, key, user or a tag name"
    assert refused("report", "savings", "--by", "kind,kind", "-c", cfg) == "--by names a dimension twice"
    assert "no routed, fallback, downgraded or cache-hit calls" in run("report", "savings", "-c", cfg)
    assert run("report", "savings", "-f", "csv", "-c", cfg) == "kind,calls,unpriced,paid_usd,counterfactual_usd,saved_usd\n"


def test_metrics_lines_break_only_at_line_ends(tmp_path: Path) -> None:
    cfg = str(config(tmp_path))
    # inside a value, U+2028 and \f are not line breaks (str.splitlines took them for some: wrong line, wrong error)
    bad = write(tmp_path, "m.csv", "date,metric,value,team\n2026-10-01,t,3,a\u2028b\n2026-10-02,t,x,c\n")
    assert refused("import", "metrics", str(bad), "-c", cfg) == f"{bad}:3: value 'x' is not a number"
    bad = write(tmp_path, "m.csv", "date,metric,value,team\n2026-10-01,t,3,a\fb\n2026-10-02,t,1,c\n")
    assert refused("import", "metrics", str(bad), "-c", cfg).startswith(f"{bad}:2: tag team has an invalid value")


def test_evaluate_models_needs_a_gateway_url(tmp_path: Path) -> None:
    prompts = write(tmp_path, "p.jsonl", '{"id": "1", "prompt": "hi", "expected": "hello"}\n')
    for url in ("notaurl", "ftp://x", "http://", "http://127.0.0.1:99999"):
        assert refused("evaluate", "models", "-p", str(prompts), "-m", "a,b", "--key", "tok-x", "--gateway",
                       url).startswith(f"--gateway {url!r}: expected the gateway's URL")  # fmt: skip


@pytest.mark.parametrize("args", [["forecast", "series", "{f}", "--horizon", "99999999999999999999"],
                                  ["report", "chargeback", "--month", "0001-01", "--tz", "Asia/Tokyo", "-c", "{c}"]])
def test_exit_status_2_without_traceback(tmp_path: Path, args: list[str]) -> None:
    f = write(tmp_path, "s.csv", "timestamp,value\n2026-01-01,1\n2026-01-02,2\n")
    cfg = config(tmp_path)
    argv = [a.format(f=f, c=cfg) for a in args]
    r = subprocess.run([sys.executable, "-m", "tokenops", *argv], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr + r.stdout and r.stderr.startswith("error: ")
