"""Forecasts with prediction intervals: the CLI's JSON contract, seasonality, trend, interval coverage, totals,
and input that is gappy, tiny, constant, spiky, across a DST change, irregular or not numeric."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tokenops.analytics.forecast import IrregularStepsError, forecast, forecast_total, resample
from tokenops.cli import app
from tokenops.cli.forecast import format_like
from tokenops.errors import UsageError

runner = CliRunner()
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


def write(path: Path, rows: list[tuple[str, object]]) -> Path:
    path.write_text("timestamp,value\n" + "".join(f"{t},{v}\n" for t, v in rows))
    return path


def cli_json(*args: str) -> dict:
    result = runner.invoke(app, ["forecast", "series", *args, "--format", "json"])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.output)


def check_points(points: list[dict], n: int) -> None:
    assert len(points) == n
    for p in points:
        assert set(p) == {"timestamp", "value", "lo", "hi"}
        assert all(math.isfinite(p[k]) for k in ("value", "lo", "hi"))
        assert p["lo"] <= p["value"] <= p["hi"]


def test_cli_json_contract_hourly(tmp_path: Path) -> None:
    rnd = random.Random(1)
    start = datetime(2026, 3, 1)
    rows = [((start + i * HOUR).strftime("%Y-%m-%d %H:%M:%S"),
             round(50 + 20 * math.sin(2 * math.pi * i / 24) + rnd.gauss(0, 3), 3)) for i in range(24 * 8)]  # fmt: skip
    out = cli_json(str(write(tmp_path / "h.csv", rows)), "--horizon", "5")
    check_points(out["forecast"], 5)
    last = start + (24 * 8 - 1) * HOUR
    assert [p["timestamp"] for p in out["forecast"]] == [(last + k * HOUR).strftime("%Y-%m-%d %H:%M:%S")
                                                         for k in range(1, 6)]  # fmt: skip
    assert out["level"] == 80 and 24 in out["season_lengths"]


def test_cli_table_and_help(tmp_path: Path) -> None:
    f = write(tmp_path / "d.csv", [(f"2026-01-{d:02d}", 10 + d) for d in range(1, 21)])
    result = runner.invoke(app, ["forecast", "series", str(f), "--horizon", "3"])
    assert result.exit_code == 0, result.output
    assert "2026-01-23" in result.output and "total over 3 steps" in result.output
    result = runner.invoke(app, ["forecast"])
    assert result.exit_code == 0 and "series" in result.output


def test_weekly_shape_of_a_clean_daily_series() -> None:
    pattern = [100, 120, 130, 125, 110, 40, 30]  # Mon..Sun
    start = datetime(2026, 1, 5)  # a Monday
    rnd = random.Random(2)
    ts = [start + i * DAY for i in range(10 * 7)]
    ys = [pattern[t.weekday()] + rnd.gauss(0, 1) for t in ts]
    fc = forecast(ts, ys, 7)
    assert fc.season_lengths == (7,)
    by_day = {p.timestamp.weekday(): p.value for p in fc.points}
    assert sorted(by_day, key=by_day.__getitem__) == sorted(range(7), key=pattern.__getitem__)
    for d, v in by_day.items():
        assert abs(v - pattern[d]) < 8


def test_growing_series_forecasts_above_its_past() -> None:
    rnd = random.Random(3)
    ts = [datetime(2026, 1, 1) + i * DAY for i in range(60)]
    ys = [100 * 1.02**i + rnd.gauss(0, 3) for i in range(60)]
    fc = forecast(ts, ys, 14)
    assert min(p.value for p in fc.points) > sum(ys) / len(ys)
    assert fc.points[-1].value > fc.points[0].value > sum(ys[-7:]) / 7 - 5


def test_interval_coverage_on_a_noisy_series() -> None:
    rnd = random.Random(4)
    n, h = 150, 60
    ts = [datetime(2026, 1, 1) + i * DAY for i in range(n + h)]
    ys = [200 + 15 * (i % 7 == 6) + rnd.gauss(0, 20) for i in range(n + h)]
    fc = forecast(ts[:n], ys[:n], h)
    inside = sum(p.lo <= y <= p.hi for p, y in zip(fc.points, ys[n:], strict=True)) / h
    assert 0.6 <= inside <= 0.97, inside
    assert fc.backtest is not None and 0.7 <= fc.backtest.coverage <= 0.95


def test_total_interval_is_narrower_than_the_sum_of_bounds() -> None:
    rnd = random.Random(5)
    ts = [datetime(2026, 1, 1) + i * DAY for i in range(90)]
    fc = forecast(ts, [50 + rnd.gauss(0, 10) for _ in ts], 30)
    total = forecast_total(fc)
    assert total.lo < total.value < total.hi and total.steps == 30
    assert total.hi - total.lo < sum(p.hi - p.lo for p in fc.points) * 0.9
    assert total.value == pytest.approx(sum(p.value for p in fc.points))
    assert forecast_total(fc, 7).value == pytest.approx(sum(p.value for p in fc.points[:7]))


def test_gaps_are_filled_and_said(tmp_path: Path) -> None:
    days = [d for d in range(1, 31) if d not in (10, 11, 20)]
    f = write(tmp_path / "g.csv", [(f"2026-04-{d:02d}", 100 + d) for d in days])
    out = cli_json(str(f), "--horizon", "4")
    check_points(out["forecast"], 4)
    assert [p["timestamp"] for p in out["forecast"]] == ["2026-05-01", "2026-05-02", "2026-05-03", "2026-05-04"]
    assert any("filled 3 missing steps" in n for n in out["notes"])
    ts = [datetime(2026, 4, d) for d in days]
    assert any("with 0" in n for n in forecast(ts, [5.0] * len(ts), 2, fill="zero").notes)


def test_single_point(tmp_path: Path) -> None:
    out = cli_json(str(write(tmp_path / "one.csv", [("2026-05-01", 42.5)])), "--horizon", "3")
    check_points(out["forecast"], 3)
    assert [p["timestamp"] for p in out["forecast"]] == ["2026-05-02", "2026-05-03", "2026-05-04"]
    assert all(p["value"] == p["lo"] == p["hi"] == 42.5 for p in out["forecast"])
    assert forecast_total(forecast([datetime(2026, 5, 1, 13)], [1.0], 2)).value == 2.0


def test_few_points_naive_with_an_interval() -> None:
    fc = forecast([datetime(2026, 1, 1) + i * DAY for i in range(4)], [10.0, 12.0, 11.0, 13.0], 3)
    assert fc.model == "Naive" and all(p.value == 13.0 and p.lo < 13.0 < p.hi for p in fc.points)


def test_all_zeros(tmp_path: Path) -> None:
    out = cli_json(str(write(tmp_path / "z.csv", [(f"2026-01-{d:02d}", 0) for d in range(1, 32)])), "--horizon", "5")
    check_points(out["forecast"], 5)
    assert all(p["value"] == p["lo"] == p["hi"] == 0 for p in out["forecast"])


def test_mostly_zero_sparse_series_is_not_negative() -> None:
    rnd = random.Random(6)
    ts = [datetime(2026, 1, 1) + i * DAY for i in range(60)]
    ys = [rnd.choice([0.0, 0.0, 0.0, 5.0]) for _ in ts]
    fc = forecast(ts, ys, 10)
    assert fc.nonnegative and all(p.lo >= 0 and p.value >= 0 and not math.isnan(p.hi) for p in fc.points)


def test_spike_on_the_first_day() -> None:
    rnd = random.Random(7)
    ts = [datetime(2026, 1, 1) + i * DAY for i in range(70)]
    ys = [1e7] + [100 + 10 * (t.weekday() < 5) + rnd.gauss(0, 2) for t in ts[1:]]
    fc = forecast(ts, ys, 7)
    assert all(80 < p.value < 130 for p in fc.points)
    assert all(p.hi < 1000 for p in fc.points)


def test_dst_offsets(tmp_path: Path) -> None:
    # hourly across the Europe/Berlin spring-forward night: regular instants, offsets change
    start = datetime(2026, 3, 27, 0, tzinfo=timezone(timedelta(hours=1)))
    berlin_switch = datetime(2026, 3, 29, 1, tzinfo=UTC)
    stamps = [start + i * HOUR for i in range(24 * 4)]
    rows = []
    for i, t in enumerate(stamps):
        off = timedelta(hours=2) if t >= berlin_switch else timedelta(hours=1)
        rows.append((t.astimezone(timezone(off)).isoformat(), 10 + (i % 24)))
    out = cli_json(str(write(tmp_path / "dst.csv", rows)), "--horizon", "3")
    check_points(out["forecast"], 3)
    # 96 instants from 00:00+01:00 on the 27th end at 00:00+02:00 on the 31st (the night had 23 hours)
    assert [p["timestamp"] for p in out["forecast"]] == ["2026-03-31T01:00:00+02:00", "2026-03-31T02:00:00+02:00",
                                                         "2026-03-31T03:00:00+02:00"]  # fmt: skip
    assert not any("snapped" in n for n in out["notes"])
    # daily at local midnight across the change: one 23-hour day, snapped onto the grid
    daily = [(f"2026-03-{d:02d}T00:00:00{'+02:00' if d >= 30 else '+01:00'}", 100 + d % 7) for d in range(1, 32)]
    out = cli_json(str(write(tmp_path / "dstd.csv", daily)), "--horizon", "2")
    assert [p["timestamp"] for p in out["forecast"]] == ["2026-04-01T00:00:00+02:00", "2026-04-02T00:00:00+02:00"]
    assert any("snapped" in n for n in out["notes"])


def test_bad_value_names_file_and_line(tmp_path: Path) -> None:
    f = write(tmp_path / "bad.csv", [("2026-01-01", 1), ("2026-01-02", "lots")])
    result = runner.invoke(app, ["forecast", "series", str(f), "--horizon", "2"])
    assert isinstance(result.exception, UsageError)
    assert f"{f}:3:" in str(result.exception) and "not a number" in str(result.exception)


def test_irregular_steps_name_the_line_and_resample_fixes_them(tmp_path: Path) -> None:
    rows = [(f"2026-01-01 {h:02d}:00:00", h) for h in range(10)] + [("2026-01-01 10:25:00", 3)]
    rows += [(f"2026-01-01 {h:02d}:00:00", h) for h in range(11, 20)]
    f = write(tmp_path / "irr.csv", rows)
    result = runner.invoke(app, ["forecast", "series", str(f), "--horizon", "2"])
    assert isinstance(result.exception, UsageError)
    assert f"{f}:12:" in str(result.exception) and "irregular" in str(result.exception)
    out = cli_json(str(f), "--horizon", "2", "--resample", "mean", "--step", "1h")
    check_points(out["forecast"], 2)
    assert out["forecast"][0]["timestamp"] == "2026-01-01 20:00:00"
    with pytest.raises(IrregularStepsError):
        forecast([datetime(2026, 1, 1), datetime(2026, 1, 2), datetime(2026, 1, 3, 7)], [1.0, 2.0, 3.0], 1)


def test_resample_sums_into_buckets() -> None:
    ts = [datetime(2026, 1, 1, 0, 5), datetime(2026, 1, 1, 0, 50), datetime(2026, 1, 1, 2, 10)]
    assert resample(ts, [1.0, 2.0, 4.0], HOUR) == ([datetime(2026, 1, 1, 0), datetime(2026, 1, 1, 2)], [3.0, 4.0])


def test_format_like() -> None:
    t = datetime(2026, 1, 2, 3, 4, 0)
    assert format_like(datetime(2026, 1, 2), "2025-12-31") == "2026-01-02"
    assert format_like(t, "2025-12-31 00:00:00") == "2026-01-02 03:04:00"
    assert format_like(t, "2025-12-31T00:00") == "2026-01-02T03:04"
    assert format_like(t.replace(tzinfo=UTC), "2025-12-31T00:00:00Z") == "2026-01-02T03:04:00Z"
    assert format_like(t.replace(microsecond=500000), "2025-12-31 00:00:00.000") == "2026-01-02 03:04:00.500"


def test_bad_arguments() -> None:
    with pytest.raises(UsageError):
        forecast([datetime(2026, 1, 1)], [1.0], 0)
    with pytest.raises(UsageError):
        forecast([datetime(2026, 1, 2), datetime(2026, 1, 1)], [1.0, 2.0], 1)
    with pytest.raises(UsageError):
        forecast([datetime(2026, 1, 1)], [math.nan], 1)
