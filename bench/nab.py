"""The Numenta Anomaly Benchmark (NAB v1.1) score of TokenOps' anomaly detector, computed exactly as NAB computes
it (``nab/sweeper.py``, ``optimizer.py``, ``runner.py``; the data's README.md describes every step):

* the first ``min(floor(0.15·n), 750)`` rows of each series are probationary and not scored;
* every row gets a weight: inside a window ``A_TP·σ(y)/σ(−1)`` with ``y = −(b − i + 1)/w``; outside, after a
  window, ``A_FP·σ(|b_prev − i|/(w_prev − 1))``; before any window ``−A_FP`` (σ is NAB's scaled sigmoid);
* at a threshold θ each window counts the best weight of its detected rows (``−A_FN`` if none) and every
  detected row outside a window adds its weight; one threshold θ* for the whole corpus maximises the sum,
  found by an exhaustive sweep over every distinct score (and 1.1, no detections);
* the score is ``100·(S(θ*) − S_null)/(S_perfect − S_null)``, with ``S_null`` the swept score of a detector
  that answers 0.5 everywhere and ``S_perfect = A_TP × windows``.

Usage (from the repository root; the data is read where it lies, nothing is copied):

    python bench/nab.py                               # the built-in detector, all three profiles
    python bench/nab.py --results out/                # result CSVs from `tokenops anomalies score`
    python bench/nab.py --detector random --seed 1    # sanity checks: null (0), oracle (100), random
    python bench/nab.py --exclude realTweets          # a subset of categories (scored on its own)
    python bench/nab.py --write out/ --json nab.json  # also keep the result CSVs and the figures as JSON

``--results DIR`` reads ``DIR/<category>/<series>.csv`` (or ``DIR/<series>.csv``) with the columns
``timestamp,anomaly_score`` as ``tokenops anomalies score`` writes them.
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
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "nab"
PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")


def scaled_sigmoid(y: float) -> float:
    """NAB's scaled sigmoid: 2/(1+e^{5y}) − 1, and −1 from y ≥ 3 on."""
    if y >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


def probationary_length(n: int) -> float:
    return min(math.floor(0.15 * n), 0.15 * 5000)


@dataclass(frozen=True)
class Costs:
    tp: float
    fp: float
    fn: float


def load_profiles(data: Path) -> dict[str, Costs]:
    raw = json.loads((data / "config" / "profiles.json").read_text())
    return {name: Costs(p["CostMatrix"]["tpWeight"], p["CostMatrix"]["fpWeight"], p["CostMatrix"]["fnWeight"])
            for name, p in raw.items()}  # fmt: skip


def row_weights(n: int, windows: list[tuple[int, int]], costs: Costs) -> tuple[list[float], list[int]]:
    """Each row's sweep weight and window number (−1 outside every window, −2 probationary), as NAB's
    ``Sweeper.calcSweepScore`` computes them; ``windows`` are (first row, last row) index pairs."""
    max_tp = scaled_sigmoid(-1.0)
    prob = probationary_length(n)
    weights = [0.0] * n
    names = [-1] * n
    starts = {a: (k, b) for k, (a, b) in enumerate(windows)}
    cur: tuple[int, int, float] | None = None  # (window number, right index, width)
    prev_right: int | None = None
    prev_width = 0.0
    for i in range(n):
        if i in starts:
            k, b = starts[i]
            cur = (k, b, float(b - i + 1))
        if cur is not None:
            k, b, w = cur
            weights[i] = scaled_sigmoid(-(b - i + 1) / w) * costs.tp / max_tp
        elif prev_right is None:
            weights[i] = scaled_sigmoid(3.0) * costs.fp
        else:
            weights[i] = scaled_sigmoid(abs(prev_right - i) / (prev_width - 1.0)) * costs.fp
        names[i] = (cur[0] if cur is not None else -1) if i >= prob else -2
        if cur is not None and i == cur[1]:
            prev_right, prev_width, cur = i, cur[2], None
    return weights, names


@dataclass
class Sweep:
    threshold: float
    score: float
    windows: int


def sweep(files: list[tuple[list[float], list[float], list[int]]], costs: Costs) -> Sweep:
    """Exhaustive corpus-wide threshold sweep (NAB's ``calcScoreByThreshold`` over the pooled rows of every
    file). ``files`` holds, per file, (anomaly scores, row weights, window numbers)."""
    rows: list[tuple[float, float, int]] = []  # (score, weight, global window id or -1)
    n_windows = 0
    for scores, weights, names in files:
        offset = n_windows
        seen = {k for k in names if k >= 0}
        for s, w, k in zip(scores, weights, names, strict=True):
            if k == -2:
                continue
            rows.append((s, w, offset + k if k >= 0 else -1))
        n_windows += (max(seen) + 1) if seen else 0
        # windows entirely in the probationary period are not counted (NAB never names them)
    scorable = {k for _, _, k in rows if k >= 0}
    rows.sort(key=lambda r: -r[0])
    best_window = dict.fromkeys(scorable, -costs.fn)
    total = -costs.fn * len(scorable)
    best = Sweep(1.1, total, len(scorable))
    for j, (s, w, k) in enumerate(rows):
        if k < 0:
            total += w
        elif w > best_window[k]:
            total += w - best_window[k]
            best_window[k] = w
        if (j + 1 == len(rows) or rows[j + 1][0] != s) and total > best.score:
            best = Sweep(s, total, len(scorable))
    return best


def file_score(scores: list[float], weights: list[float], names: list[int], threshold: float, costs: Costs) -> float:
    """One file's raw score at a threshold (its share of the corpus total)."""
    best: dict[int, float] = {k: -costs.fn for k in names if k >= 0}
    total = 0.0
    for s, w, k in zip(scores, weights, names, strict=True):
        if k == -2 or s < threshold:
            continue
        if k < 0:
            total += w
        else:
            best[k] = max(best[k], w)
    return total + sum(best.values())


# ---------------------------------------------------------------------------------------------- the corpus


@dataclass
class Series:
    key: str  # "<category>/<name>.csv", as in the labels file
    texts: list[str]
    values: list[float]
    windows: list[tuple[int, int]]


def _stamp(text: str) -> datetime:
    return datetime.fromisoformat(text.strip())


def load_corpus(data: Path, categories: set[str] | None = None, exclude: set[str] | None = None) -> list[Series]:
    labels = json.loads((data / "labels" / "combined_windows.json").read_text())
    out = []
    for key in sorted(labels):
        category = key.split("/")[0]
        if (categories and category not in categories) or (exclude and category in exclude):
            continue
        with open(data / "data" / key, newline="") as fh:
            rows = list(csv.reader(fh))[1:]
        texts = [r[0] for r in rows]
        index = {_stamp(t): i for i, t in enumerate(texts)}
        windows = [(index[_stamp(a)], index[_stamp(b)]) for a, b in labels[key]]
        out.append(Series(key, texts, [float(r[1]) for r in rows], windows))
    return out


def _builtin(args: tuple[list[str], list[float]]) -> list[float]:
    from tokenops.analytics.detector import score_series

    texts, values = args
    return score_series([_stamp(t) for t in texts], values)


def detect(corpus: list[Series], detector: str, seed: int, jobs: int) -> tuple[list[list[float]], float]:
    started = time.perf_counter()
    if detector == "builtin":
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            # longest first, so the two cores finish together
            order = sorted(range(len(corpus)), key=lambda i: -len(corpus[i].values))
            futures = {i: pool.submit(_builtin, (corpus[i].texts, corpus[i].values)) for i in order}
            scores = [[round(s, 6) for s in futures[i].result()] for i in range(len(corpus))]
    elif detector == "null":
        scores = [[0.5] * len(s.values) for s in corpus]
    elif detector == "random":
        rng = random.Random(seed)
        scores = [[rng.random() for _ in s.values] for s in corpus]
    elif detector == "oracle":
        scores = []
        for s in corpus:
            row = [0.0] * len(s.values)
            for a, _ in s.windows:
                row[a] = 1.0
            scores.append(row)
    else:
        raise SystemExit(f"unknown detector {detector!r}")
    return scores, time.perf_counter() - started


def read_results(corpus: list[Series], results: Path) -> list[list[float]]:
    out = []
    for s in corpus:
        category, name = s.key.split("/")
        path = results / category / name
        if not path.exists():
            path = results / name
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
        if [r["timestamp"].strip() for r in rows] != [t.strip() for t in s.texts]:
            raise SystemExit(f"{path}: its timestamps are not the input's")
        out.append([float(r["anomaly_score"]) for r in rows])
    return out


def write_results(corpus: list[Series], scores: list[list[float]], out: Path) -> None:
    for s, sc in zip(corpus, scores, strict=True):
        path = out / s.key
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["timestamp", "value", "anomaly_score"])
            for t, v, a in zip(s.texts, s.values, sc, strict=True):
                w.writerow([t, repr(v), f"{a:.6f}"])


def evaluate(corpus: list[Series], scores: list[list[float]], profiles: dict[str, Costs]) -> dict[str, dict]:
    """Per profile: normalized score, raw score, threshold, TP/FP/FN counts and per-category raw scores."""
    n_windows = sum(len(s.windows) for s in corpus)
    report: dict[str, dict] = {}
    for name in PROFILES:
        costs = profiles[name]
        parts = [(sc, *row_weights(len(s.values), s.windows, costs)) for s, sc in zip(corpus, scores, strict=True)]
        best = sweep(parts, costs)
        null = sweep([([0.5] * len(w), w, k) for _, w, k in parts], costs)
        perfect = costs.tp * n_windows
        normalized = 100.0 * (best.score - null.score) / (perfect - null.score) if perfect != null.score else 0.0
        tp = fp = fn = 0
        by_category: dict[str, float] = {}
        for s, (sc, w, k) in zip(corpus, parts, strict=True):
            detected = {kk for ss, kk in zip(sc, k, strict=True) if kk >= 0 and ss >= best.threshold}
            tp += len(detected)
            fn += len({kk for kk in k if kk >= 0}) - len(detected)
            fp += sum(1 for ss, kk in zip(sc, k, strict=True) if kk == -1 and ss >= best.threshold)
            cat = s.key.split("/")[0]
            by_category[cat] = by_category.get(cat, 0.0) + file_score(sc, w, k, best.threshold, costs)
        report[name] = {"score": round(normalized, 2), "raw": round(best.score, 4), "threshold": best.threshold,
                        "null_raw": round(null.score, 4), "perfect_raw": perfect, "windows": n_windows,
                        "tp_windows": tp, "fn_windows": fn, "fp_rows": fp,
                        "raw_by_category": {c: round(v, 3) for c, v in sorted(by_category.items())}}  # fmt: skip
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="NAB folder (data/, labels/, config/)")
    ap.add_argument("--results", type=Path, help="score these result CSVs instead of running a detector")
    ap.add_argument("--detector", default="builtin", choices=["builtin", "null", "random", "oracle"])
    ap.add_argument("--seed", type=int, default=0, help="for --detector random")
    ap.add_argument("--categories", nargs="*", help="only these categories")
    ap.add_argument("--exclude", nargs="*", help="leave these categories out")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--write", type=Path, help="write the detector's result CSVs under this folder")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = ap.parse_args(argv)

    corpus = load_corpus(args.data, set(args.categories or ()), set(args.exclude or ()))
    if not corpus:
        raise SystemExit("no series selected")
    profiles = load_profiles(args.data)
    if args.results is not None:
        scores, seconds = read_results(corpus, args.results), 0.0
        label = str(args.results)
    else:
        scores, seconds = detect(corpus, args.detector, args.seed, args.jobs)
        label = args.detector
    if args.write is not None:
        write_results(corpus, scores, args.write)
    report = evaluate(corpus, scores, profiles)
    rows = sum(len(s.values) for s in corpus)
    print(f"NAB ({label}): {len(corpus)} series, {rows:,} rows, {report['standard']['windows']} windows"
          + (f"; detection {seconds:.1f} s ({args.jobs} processes)" if seconds else ""))  # fmt: skip
    print(f"{'profile':<20} {'score':>7} {'raw':>9} {'threshold':>10} {'TP':>4} {'FN':>4} {'FP rows':>8}")
    for name in PROFILES:
        r = report[name]
        print(f"{name:<20} {r['score']:>7.2f} {r['raw']:>9.3f} {r['threshold']:>10.6f} {r['tp_windows']:>4} "
              f"{r['fn_windows']:>4} {r['fp_rows']:>8}")  # fmt: skip
    print("raw score by category (standard):",
          ", ".join(f"{c} {v:+.2f}" for c, v in report["standard"]["raw_by_category"].items()))
    if args.json is not None:
        payload = {"detector": label, "series": len(corpus), "rows": rows, "seconds": round(seconds, 2),
                   "jobs": args.jobs, "machine": platform.platform(), "python": sys.version.split()[0],
                   "profiles": report}  # fmt: skip
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
