"""Rolling-origin backtest of ``tokenops.analytics.forecast``: point accuracy (MASE, and MAE relative to seasonal
naive) and the 80 % interval's coverage, per data set and overall.

Data (read where it lies, nothing is copied; ``--data`` defaults to ``../shared/data`` beside the repository):

* **NAB** series with daily and weekly rhythms, resampled hourly: ``realKnownCause/nyc_taxi`` (taxi passengers,
  summed), ``realTweets/Twitter_volume_*`` (tweets per 5 min, summed) and ``realTraffic/*`` (irregular sensor
  readings, averaged); 24-hour horizons.
* **Azure LLM inference trace** (``azure-llm/AzureLLMInferenceTrace_code.csv``, 58 minutes of requests): tokens
  (context + generated) per minute; 5-minute horizons.
* **Synthetic daily spend** like the demo's (seeded): a weekday/weekend rhythm, compound growth, multiplicative
  noise, occasional spikes and a release that shifts the level; 28-day horizons.

For each data set the last ``origins`` windows of ``h`` steps (not overlapping) are forecast from everything before
them with :func:`tokenops.analytics.forecast.forecast`, exactly as the CLI does (its own inner backtest chooses the
model and calibrates the interval on the training part only). The baseline is seasonal naive at the data set's
main season (24 hours, 7 days; naive for the minute series), with statsforecast's interval for it.

* **MASE** = MAE over the windows / in-sample MAE of the seasonal naive one-season-ahead forecast (the M4 scale).
* **rel MAE** = MAE of the forecast / MAE of seasonal naive on the same windows (< 1: better than the baseline).
* **coverage** = share of actual values inside the 80 % interval; **total cov** = share of windows whose actual
  sum lies inside :func:`forecast_total`'s 80 % interval.

Usage (from the repository root):

    .venv/bin/python bench/forecast.py                 # everything, all cores
    .venv/bin/python bench/forecast.py --json out.json # also write every figure as JSON
    .venv/bin/python bench/forecast.py --only synthetic --jobs 1
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import random
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one process per core; no BLAS threads fighting over them
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from tokenops.analytics.forecast import forecast, forecast_total, resample  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data"
LEVEL = 80


@dataclass
class DataSet:
    name: str
    group: str
    timestamps: list[datetime]
    values: list[float]
    horizon: int
    origins: int
    season: int  # the baseline's season (1: naive)


def read_csv(path: Path, ts_col: str = "timestamp", value_cols: tuple[str, ...] = ("value",)) -> tuple[list, list]:
    ts, vs = [], []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            t = row[ts_col].strip()
            if "." in t:  # the Azure trace has 7 fractional digits
                head, frac = t.split(".", 1)
                t = f"{head}.{frac[:6]}"
            ts.append(datetime.fromisoformat(t))
            vs.append(sum(float(row[c]) for c in value_cols))
    return ts, vs


def nab(data: Path) -> list[DataSet]:
    root = data / "nab" / "data"
    out = []
    files = [("realKnownCause/nyc_taxi.csv", "sum")] + [
        (f"realTweets/Twitter_volume_{s}.csv", "sum") for s in ("AAPL", "AMZN", "GOOG", "IBM", "UPS")
    ] + [(f"realTraffic/{s}.csv", "mean") for s in ("occupancy_6005", "speed_6005", "TravelTime_451")]
    for rel, how in files:
        ts, vs = read_csv(root / rel)
        ts, vs = resample(ts, vs, timedelta(hours=1), how)  # type: ignore[arg-type]
        ts, vs = ts[1:-1], vs[1:-1]  # partial first and last hours
        out.append(DataSet(Path(rel).stem, "NAB hourly", ts, vs, 24, 7, 24))
    return out


def azure(data: Path) -> list[DataSet]:
    path = data / "azure-llm" / "AzureLLMInferenceTrace_code.csv"
    ts, vs = read_csv(path, "TIMESTAMP", ("ContextTokens", "GeneratedTokens"))
    ts, vs = resample(ts, vs, timedelta(minutes=1), "sum")
    ts, vs = ts[1:-1], vs[1:-1]
    return [DataSet("azure_code_tokens_per_min", "Azure LLM per minute", ts, vs, 5, 6, 1)]


def synthetic_spend(seed: int, days: int = 300) -> tuple[list[datetime], list[float]]:
    """Daily spend in dollars like the demo's traffic: weekends at ~35 % of a weekday, ~0.3 %/day compound growth,
    log-normal day-to-day noise, a rare spike (a runaway job), and a release that moves the level by -20..+60 %."""
    rng = random.Random(seed)
    start = datetime(2025, 1, 6)
    base = rng.uniform(50, 500)
    growth = rng.uniform(0.0005, 0.005)
    release = rng.randrange(days // 2, days - 40)
    shift = rng.uniform(0.8, 1.6)
    ts, vs = [], []
    for i in range(days):
        t = start + timedelta(days=i)
        v = base * (1 + growth) ** i * (0.35 if t.weekday() >= 5 else 1.0) * (shift if i >= release else 1.0)
        v *= math.exp(rng.gauss(0, 0.12))
        if rng.random() < 0.01:
            v *= rng.uniform(3, 8)
        ts.append(t)
        vs.append(round(v, 2))
    return ts, vs


def synthetic() -> list[DataSet]:
    out = []
    for seed in (1, 2, 3, 4):
        ts, vs = synthetic_spend(seed)
        out.append(DataSet(f"spend_seed{seed}", "synthetic daily spend", ts, vs, 28, 4, 7))
    return out


def snaive(train: list[float], h: int, m: int) -> tuple[list[float], list[float], list[float]]:
    import numpy as np
    from statsforecast.models import Naive, SeasonalNaive

    model = SeasonalNaive(season_length=m) if m > 1 else Naive()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = model.forecast(y=np.asarray(train, dtype=float), h=h, level=[LEVEL])
    lo, hi = r[f"lo-{LEVEL}"], r[f"hi-{LEVEL}"]
    if min(train) >= 0:
        lo = np.maximum(lo, 0)
    return list(r["mean"]), list(lo), list(hi)


def one(job: tuple[str, list[datetime], list[float], int, int, int]) -> dict:
    name, ts, vs, origin, h, m = job
    train_t, train_v, test = ts[:origin], vs[:origin], vs[origin:origin + h]
    started = time.process_time()
    fc = forecast(train_t, train_v, h, level=LEVEL)
    seconds = time.process_time() - started  # CPU time: steadier than wall time on a shared machine
    k = fc.backtest.scale if fc.backtest else 1.0
    total = forecast_total(fc)
    b_mean, b_lo, b_hi = snaive(train_v, h, m)
    scale = sum(abs(a - b) for a, b in zip(train_v[m:], train_v[:-m], strict=False)) / (len(train_v) - m)
    return {
        "name": name, "origin": origin, "model": fc.model, "seconds": seconds, "scale": scale,
        "ae": [abs(p.value - y) for p, y in zip(fc.points, test, strict=True)],
        "inside": [p.lo <= y <= p.hi for p, y in zip(fc.points, test, strict=True)],
        "width": [p.hi - p.lo for p in fc.points],
        "raw_inside": [p.value - (p.value - p.lo) / k <= y <= p.value + (p.hi - p.value) / k
                       for p, y in zip(fc.points, test, strict=True)],  # the chosen model's own interval
        "total_inside": total.lo <= sum(test) <= total.hi,
        "base_ae": [abs(a - y) for a, y in zip(b_mean, test, strict=True)],
        "base_inside": [lo <= y <= hi for lo, hi, y in zip(b_lo, b_hi, test, strict=True)],
        "base_width": [hi - lo for lo, hi in zip(b_lo, b_hi, strict=True)],
    }  # fmt: skip


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def summarize(ds: DataSet, results: list[dict]) -> dict:
    ae = [x for r in results for x in r["ae"]]
    base = [x for r in results for x in r["base_ae"]]
    mase = mean([mean(r["ae"]) / r["scale"] for r in results if r["scale"] > 0])
    base_mase = mean([mean(r["base_ae"]) / r["scale"] for r in results if r["scale"] > 0])
    models: dict[str, int] = {}
    for r in results:
        models[r["model"]] = models.get(r["model"], 0) + 1
    return {
        "name": ds.name, "group": ds.group, "steps": len(ds.values), "horizon": ds.horizon, "windows": len(results),
        "baseline_season": ds.season, "mase": mase, "baseline_mase": base_mase,
        "rel_mae": mean(ae) / mean(base) if mean(base) > 0 else math.nan,
        "coverage": mean([float(x) for r in results for x in r["inside"]]),
        "baseline_coverage": mean([float(x) for r in results for x in r["base_inside"]]),
        "uncalibrated_coverage": mean([float(x) for r in results for x in r["raw_inside"]]),
        "total_coverage": mean([float(r["total_inside"]) for r in results]),
        "rel_width": mean([x for r in results for x in r["width"]]) / mean([x for r in results for x in r["base_width"]]),
        "seconds_per_forecast": mean([r["seconds"] for r in results]), "models": models,
    }  # fmt: skip


def aggregate(rows: list[dict]) -> dict:
    def gmean(xs: list[float]) -> float:
        xs = [x for x in xs if x > 0 and math.isfinite(x)]
        return math.exp(mean([math.log(x) for x in xs])) if xs else math.nan

    w = [r["windows"] * r["horizon"] for r in rows]
    return {
        "name": "overall", "data_sets": len(rows), "windows": sum(r["windows"] for r in rows),
        "mase": mean([r["mase"] for r in rows]), "baseline_mase": mean([r["baseline_mase"] for r in rows]),
        "rel_mae_geomean": gmean([r["rel_mae"] for r in rows]),
        "coverage": sum(r["coverage"] * k for r, k in zip(rows, w, strict=True)) / sum(w),
        "baseline_coverage": sum(r["baseline_coverage"] * k for r, k in zip(rows, w, strict=True)) / sum(w),
        "uncalibrated_coverage": sum(r["uncalibrated_coverage"] * k for r, k in zip(rows, w, strict=True)) / sum(w),
        "total_coverage": sum(r["total_coverage"] * r["windows"] for r in rows) / sum(r["windows"] for r in rows),
        "seconds_per_forecast": mean([r["seconds_per_forecast"] for r in rows]),
    }  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder (default: %(default)s)")
    ap.add_argument("--only", default="", help="comma-separated groups: nab, azure, synthetic (default: all)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args()
    only = {x.strip() for x in args.only.split(",") if x.strip()} or {"nab", "azure", "synthetic"}
    sets: list[DataSet] = []
    if "nab" in only:
        sets += nab(args.data)
    if "azure" in only:
        sets += azure(args.data)
    if "synthetic" in only:
        sets += synthetic()
    jobs = [(ds.name, ds.timestamps, ds.values, len(ds.values) - ds.horizon * j, ds.horizon, ds.season)
            for ds in sets for j in range(ds.origins, 0, -1)]  # fmt: skip
    started = time.perf_counter()
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            results = list(pool.map(one, jobs))
    else:
        results = [one(j) for j in jobs]
    elapsed = time.perf_counter() - started
    rows = [summarize(ds, [r for r in results if r["name"] == ds.name]) for ds in sets]
    overall = aggregate(rows)
    groups = {g: aggregate([r for r in rows if r["group"] == g]) for g in dict.fromkeys(r["group"] for r in rows)}
    print(f"{'data set':28} {'steps':>6} {'h':>3} {'win':>4} {'MASE':>6} {'sn MASE':>7} {'rel MAE':>7} "
          f"{'cov80':>6} {'sn cov':>6} {'tot cov':>7} {'width':>6} {'raw cov':>7} {'cpu s':>5}  models")  # fmt: skip
    for r in rows:
        models = ", ".join(f"{k.split(';')[0].replace('(mean of ', '(')}×{v}" for k, v in sorted(r["models"].items(), key=lambda kv: -kv[1]))
        print(f"{r['name']:28} {r['steps']:6d} {r['horizon']:3d} {r['windows']:4d} {r['mase']:6.3f} "
              f"{r['baseline_mase']:7.3f} {r['rel_mae']:7.3f} {r['coverage']:6.1%} {r['baseline_coverage']:6.1%} "
              f"{r['total_coverage']:7.0%} {r['rel_width']:6.2f} {r['uncalibrated_coverage']:7.1%} {r['seconds_per_forecast']:5.1f}  {models}")  # fmt: skip
    print()
    for name, g in [*groups.items(), ("overall", overall)]:
        print(f"{name:28} MASE {g['mase']:.3f} (seasonal naive {g['baseline_mase']:.3f}), rel MAE geo-mean "
              f"{g['rel_mae_geomean']:.3f}, 80 % coverage {g['coverage']:.1%} (seasonal naive "
              f"{g['baseline_coverage']:.1%}), total coverage {g['total_coverage']:.0%}")  # fmt: skip
    print(f"\n{len(jobs)} forecasts in {elapsed:.0f} s on {args.jobs} process(es); {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"data_sets": rows, "groups": groups, "overall": overall,
                                         "forecasts": len(jobs), "seconds": elapsed, "level": LEVEL}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
