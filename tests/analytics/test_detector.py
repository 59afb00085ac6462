"""The streaming anomaly detector: causal, bounded, robust to odd input; spikes stand out, level shifts are
re-baselined; the ``tokenops anomalies score`` CLI; the NAB scorer's arithmetic (bench/nab.py)."""

from __future__ import annotations

import csv
import math
import random
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tokenops.analytics.detector import AnomalyDetector, score_series
from tokenops.cli import app
from tokenops.errors import UsageError

BENCH = Path(__file__).resolve().parents[2] / "bench"
T0 = datetime(2026, 1, 5)


def stamps(n: int, minutes: int = 60) -> list[datetime]:
    return [T0 + timedelta(minutes=minutes * i) for i in range(n)]


def seasonal(n: int, seed: int = 1, minutes: int = 60) -> list[float]:
    """Hourly spend with a daily cycle and noise."""
    rng = random.Random(seed)
    out = []
    for i, t in enumerate(stamps(n, minutes)):
        hour = t.hour + t.minute / 60
        out.append(100 + 40 * math.sin(2 * math.pi * hour / 24) + rng.gauss(0, 5) + 0 * i)
    return out


def test_causal_a_row_score_uses_only_earlier_rows() -> None:
    values = seasonal(900)
    ts = stamps(900)
    full = score_series(ts, values)
    changed = values[:600] + [v * 3 + 50 for v in values[600:]]
    again = score_series(ts, changed)
    assert again[:600] == full[:600]
    assert score_series(ts[:600], values[:600]) == full[:600]
    # and the incremental API agrees with score_series
    det = AnomalyDetector()
    assert [det.update(t, v) for t, v in zip(ts, values, strict=True)] == full


def test_scores_in_unit_interval_and_finite() -> None:
    rng = random.Random(3)
    values = [rng.lognormvariate(0, 2) * (1000 if rng.random() < 0.01 else 1) for _ in range(3000)]
    scores = score_series(stamps(3000, 5), values)
    assert len(scores) == 3000
    assert all(0.0 <= s <= 1.0 and math.isfinite(s) for s in scores)


@pytest.mark.parametrize(
    "values",
    [
        [5.0],
        [0.0] * 500,
        [7.5] * 500,
        [1e9] + [1.0] * 400,
        [-3.0, -1e12, 4.0, -7.0] * 100,
        [1e300, -1e300, 0.0, 1e-300] * 50,
        [float(i % 2) for i in range(400)],
        [0.0] * 300 + [1.0] + [0.0] * 300,
        [float("nan"), float("inf"), 1.0, -float("inf")] * 20,
    ],
    ids=["single", "zeros", "constant", "first-spike", "negative", "huge", "alternating", "lone-blip", "non-finite"],
)
def test_robust_to_odd_series(values: list[float]) -> None:
    scores = score_series(stamps(len(values)), values)
    assert len(scores) == len(values)
    assert all(isinstance(s, float) and 0.0 <= s <= 1.0 and not math.isnan(s) for s in scores)


def test_gaps_and_irregular_timestamps() -> None:
    rng = random.Random(5)
    ts, t = [], T0
    for _ in range(600):
        t += timedelta(seconds=rng.choice([1, 60, 300, 3600, 86400 * 3]))
        ts.append(t)
    scores = score_series(ts, [rng.gauss(10, 1) for _ in ts])
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_aware_timestamps() -> None:
    from datetime import UTC

    ts = [datetime(2026, 3, 1, tzinfo=UTC) + timedelta(hours=i) for i in range(300)]
    assert all(0.0 <= s <= 1.0 for s in score_series(ts, seasonal(300)))


def test_injected_spike_scores_higher_than_normal_rows() -> None:
    n, at = 24 * 30, 24 * 25 + 7
    values = seasonal(n, seed=11)
    values[at] += 120  # ~24 standard deviations of the noise, but inside the daily range plus a bit
    scores = score_series(stamps(n), values)
    normal = sorted(scores[24 * 10 : at - 3] + scores[at + 50 :])
    assert scores[at] > 0.5
    assert scores[at] > normal[int(0.99 * len(normal))]
    assert scores[at] > max(normal)


def test_level_shift_is_rebaselined() -> None:
    rng = random.Random(2)
    n, at = 3000, 1500
    values = [10 + rng.gauss(0, 1) for _ in range(at)] + [30 + rng.gauss(0, 1) for _ in range(n - at)]
    scores = score_series(stamps(n, 5), values)
    assert max(scores[at : at + 5]) > 0.5  # the shift is seen
    late = scores[at + 800 :]
    assert sum(s > 0.5 for s in late) <= 0.01 * len(late)  # and then it is the new normal


def test_expected_range_brackets_normal_values() -> None:
    det = AnomalyDetector()
    assert det.expected() is None
    values = seasonal(24 * 10, seed=4)
    for t, v in zip(stamps(len(values)), values, strict=True):
        det.update(t, v)
    got = det.expected()
    assert got is not None
    mid, low, high = got
    assert low <= mid <= high and all(math.isfinite(x) for x in got)
    assert 0 < high - low < 200


# ---------------------------------------------------------------------------------------------------- the CLI

runner = CliRunner()


def test_cli_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "spend.csv"
    texts = [f"2026-02-{1 + i // 24:02d}T{i % 24:02d}:00:00Z" for i in range(24 * 5)]
    values = seasonal(len(texts))
    with open(src, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "value"])
        for t, v in zip(texts, values, strict=True):
            w.writerow([t, f"{v:.3f}"])
    out = tmp_path / "out.csv"
    result = runner.invoke(app, ["anomalies", "score", str(src), "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    with open(out, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["timestamp", "value", "anomaly_score"]
    assert len(rows) == len(texts) + 1
    assert [r[0] for r in rows[1:]] == texts
    assert [round(float(r[1]), 3) for r in rows[1:]] == [round(v, 3) for v in values]
    assert all(0.0 <= float(r[2]) <= 1.0 for r in rows[1:])


def test_cli_bad_value_names_file_and_line(tmp_path: Path) -> None:
    src = tmp_path / "bad.csv"
    src.write_text("timestamp,value\n2026-01-01 00:00:00,1\n2026-01-01 01:00:00,lots\n")
    result = runner.invoke(app, ["anomalies", "score", str(src), "-o", str(tmp_path / "o.csv")])
    assert isinstance(result.exception, UsageError)
    assert f"{src}:3:" in str(result.exception) and "lots" in str(result.exception)
    assert not (tmp_path / "o.csv").exists()


def test_cli_unwritable_output_names_it(tmp_path: Path) -> None:
    src = tmp_path / "ok.csv"
    src.write_text("timestamp,value\n2026-01-01 00:00:00,1\n")
    target = tmp_path / "missing-dir" / "o.csv"
    result = runner.invoke(app, ["anomalies", "score", str(src), "-o", str(target)])
    assert isinstance(result.exception, UsageError) and str(target) in str(result.exception)


def test_cli_main_exits_2_on_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from tokenops.cli import main

    src = tmp_path / "bad.csv"
    src.write_text("timestamp,value\n2026-01-01 00:00:00,x\n")
    monkeypatch.setattr(sys, "argv", ["tokenops", "anomalies", "score", str(src), "-o", str(tmp_path / "o.csv")])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    assert f"{src}:2:" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ bench/nab.py's arithmetic


@pytest.fixture
def nab(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.syspath_prepend(str(BENCH))
    import nab as module

    return module


def test_nab_scaled_sigmoid_and_probation(nab) -> None:  # type: ignore[no-untyped-def]
    assert nab.scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert nab.scaled_sigmoid(0.0) == 0.0
    assert nab.scaled_sigmoid(1.0) == pytest.approx(-0.98661, abs=1e-5)
    assert nab.scaled_sigmoid(3.0) == -1.0
    assert nab.probationary_length(1000) == 150
    assert nab.probationary_length(100_000) == 750


def test_nab_hand_made_case(nab) -> None:  # type: ignore[no-untyped-def]
    costs = nab.Costs(tp=1.0, fp=0.11, fn=1.0)
    # 100 rows: probation is rows 0..14; one window rows 40..49 (w = 10)
    weights, names = nab.row_weights(100, [(40, 49)], costs)
    assert names[:15] == [-2] * 15 and names[40:50] == [0] * 10 and names[50] == -1
    assert weights[20] == pytest.approx(-0.11)  # before any window: −A_FP
    assert weights[40] == pytest.approx(1.0)  # first row of the window earns A_TP
    assert weights[49] == pytest.approx(nab.scaled_sigmoid(-0.1) / nab.scaled_sigmoid(-1.0))
    assert weights[58] == pytest.approx(0.11 * nab.scaled_sigmoid(9 / 9))  # y = |49 − 58| / (10 − 1) = 1
    scores = [0.0] * 100
    scores[45] = 0.9  # a detection mid-window
    scores[20] = 0.8  # a false positive before the window
    scores[5] = 1.0  # probationary: never counts
    best = nab.sweep([(scores, weights, names)], costs)
    tp45 = nab.scaled_sigmoid(-(49 - 45 + 1) / 10) / nab.scaled_sigmoid(-1.0)
    assert best.threshold == 0.9 and best.score == pytest.approx(tp45)
    assert nab.file_score(scores, weights, names, 0.8, costs) == pytest.approx(tp45 - 0.11)
    assert nab.file_score(scores, weights, names, 1.1, costs) == pytest.approx(-1.0)
    null = nab.sweep([([0.5] * 100, weights, names)], costs)
    assert null.score == pytest.approx(-1.0)  # detecting nothing beats detecting everything


def test_cli_scores_repeated_or_backward_timestamps_in_file_order(tmp_path: Path) -> None:
    # a daylight-saving repeat and a clock step back, as in two NAB files
    src = tmp_path / "dst.csv"
    src.write_text("timestamp,value\n2014-03-09 01:55:00,1\n2014-03-09 03:00:00,2\n2014-03-09 03:00:00,3\n"
                   "2014-03-09 02:00:00,4\n2014-03-09 02:05:00,5\n")  # fmt: skip
    out = tmp_path / "o.csv"
    result = runner.invoke(app, ["anomalies", "score", str(src), "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(out.read_text().splitlines()))
    assert [r[0] for r in rows[1:]] == ["2014-03-09 01:55:00", "2014-03-09 03:00:00", "2014-03-09 03:00:00",
                                        "2014-03-09 02:00:00", "2014-03-09 02:05:00"]  # fmt: skip
    bad = tmp_path / "bad2.csv"
    bad.write_text("timestamp,value\n2014-03-09 03:00:00,1\n2014-03-09 02:00:00,2\n2014-03-09 02:05:00,oops\n")
    result = runner.invoke(app, ["anomalies", "score", str(bad), "-o", str(out)])
    assert isinstance(result.exception, UsageError) and f"{bad}:4:" in str(result.exception)


def test_coarse_pattern_channels_report_once_per_block() -> None:
    values = seasonal(24 * 60, seed=7)
    ts = stamps(len(values))
    det = AnomalyDetector()
    seen: dict[str, list[int]] = {}
    for i, (t, v) in enumerate(zip(ts, values, strict=True)):
        det.update(t, v)
        for name in det.last_channels:
            seen.setdefault(name, []).append(i + 1)
    names = {"step", "pattern", "pattern_likelihood", "range", "resonance"} | {f"pattern_x{k}" for k in (8, 16, 32, 64)}
    assert set(seen) <= names
    assert seen["pattern_x8"] and all(n % 8 == 0 for n in seen["pattern_x8"])
    assert seen["pattern_x16"] and all(n % 16 == 0 for n in seen["pattern_x16"])
    assert all(0.0 < det_p <= 1.0 for det_p in det.last_channels.values())
    # without coarse scales the detector still works (and stays causal)
    plain = score_series(ts, values, scales=())
    assert all(0.0 <= s <= 1.0 for s in plain)
    assert score_series(ts[:500], values[:500], scales=()) == plain[:500]


def test_resonance_channel_flags_a_new_shape_only_after_its_probation() -> None:
    """The ARTime-like channel learns the first 750 rows as a batch, then flags a window that resonates with no
    learned category (here the daily cycle turning into a square wave) with a p-value in (0, 1)."""
    values = seasonal(24 * 60, seed=3)
    values[1100:1200] = [160.0 if (i // 6) % 2 else 40.0 for i in range(100)]
    det = AnomalyDetector()
    flagged = []
    for i, (t, v) in enumerate(zip(stamps(len(values)), values, strict=True)):
        det.update(t, v)
        if "resonance" in det.last_channels:
            assert 0.0 < det.last_channels["resonance"] < 1.0
            flagged.append(i)
    assert flagged and min(flagged) >= 750
    assert any(1100 <= i < 1220 for i in flagged)


def test_resonance_categories_are_capped() -> None:
    import numpy

    from tokenops.analytics.detector import _Resonance

    rng = random.Random(5)
    res = _Resonance(numpy, probation=100, max_categories=16)
    for _ in range(3000):
        s = res.update(rng.choice([0.0, 1.0, 1e6, -3.0, rng.random()]))
        assert 0.0 <= s <= 1.0 and math.isfinite(s)
    assert 2 <= len(res.W) <= 16 and len(res.used) == len(res.W)


def test_alerts_are_spaced_by_the_history_seen_but_a_strong_one_gets_through() -> None:
    """After a reported alert, scores below ``spacing_level`` stay 0 for ``spacing`` x rows seen (at most
    ``spacing_max`` rows); a much rarer row is reported anyway."""
    rng = random.Random(7)
    n = 6000
    values = [10 + rng.gauss(0, 1) for _ in range(n)]
    first, weak, strong = 4000, 4080, 4150  # the spacing after ``first`` is min(0.03 x 4001, 500) = 120 rows
    values[first] += 12
    values[weak] += 10
    values[strong] += 200
    options = {"rest": 10, "rest_seconds": 600.0}
    plain = score_series(stamps(n, 5), values, spacing=0.0, **options)
    spaced = score_series(stamps(n, 5), values, **options)
    assert plain[first] >= 0.3 and spaced[first] >= 0.3
    assert 0.3 <= plain[weak] < 0.7 and spaced[weak] == 0.0  # an alert, but too soon after the last one
    assert spaced[strong] >= 0.7 and spaced[strong] == plain[strong]
    assert sum(s > 0 for s in spaced) <= sum(s > 0 for s in plain)
