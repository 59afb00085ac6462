"""The semantic cache's published figures, in one command: precision, hit rate, recall and false hits at the
default threshold on the held-out part of the shared QQP pairs and on the whole file, the curve over thresholds,
scoring throughput and the latency of one short prompt, on this machine.

    python bench/cache_eval.py                          # ~4 min on 2 cores
    python bench/cache_eval.py --markdown out.md        # also write the tables as markdown
    python bench/cache_eval.py --pairs other.csv        # another file (the whole file is scored)
    python bench/cache_eval.py --limit 2000             # a quick timing on the first 2000 pairs

The held-out part is ``bench/train_similarity.py``'s split (connected components of questions, by hash): the
default threshold was chosen on the other part. The false hits at the default threshold on the held-out part
are printed in full, for reading. The data is read where it lies; nothing is copied into the repository.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

from train_similarity import DEFAULT_PAIRS, heldout_mask, subset

from tokenops.optimize.evaluate_cache import CURVE, Report, evaluate, read_pairs, score_pairs
from tokenops.optimize.similarity import DEFAULT_THRESHOLD, SimilarityScorer

SHORT_PROMPT = "How do I reset my password on the billing page?"


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} %"


def bootstrap(scores: list[float], labels: list[int], t: float, *, rounds: int = 1000, seed: int = 7) -> tuple[float, float]:
    """A 95 % interval for precision at ``t`` (pairs resampled with replacement; fixed seed)."""
    rng = random.Random(seed)
    n = len(scores)
    out = []
    for _ in range(rounds):
        hits = true = 0
        for _ in range(n):
            i = rng.randrange(n)
            if scores[i] >= t:
                hits += 1
                true += labels[i]
        out.append(true / hits if hits else 1.0)
    out.sort()
    return out[int(0.025 * rounds)], out[int(0.975 * rounds) - 1]


def summary_rows(name: str, r: Report, ci: tuple[float, float] | None = None) -> str:
    interval = f" ({pct(ci[0])} – {pct(ci[1])})" if ci else ""
    return (f"| {name} | {r.n} | {r.duplicates} | {r.at.threshold} | {pct(r.at.precision)}{interval} | "
            f"{pct(r.at.hit_rate)} | {r.at.hits} | {r.at.false_hits} | {pct(r.at.recall)} |")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", default=DEFAULT_PAIRS, help="the pairs CSV (default: the shared QQP file)")
    ap.add_argument("--markdown", type=Path, help="also write the tables to this markdown file")
    ap.add_argument("--limit", type=int, help="only the file's first N pairs (a quick timing; not the published figures)")
    args = ap.parse_args(argv)
    out: list[str] = []

    def say(line: str = "") -> None:
        print(line)
        out.append(line)

    pairs = read_pairs(args.pairs)
    if args.limit:
        pairs = subset(pairs, [i < args.limit for i in range(len(pairs))])
    scorer = SimilarityScorer()
    t0 = time.perf_counter()
    scorer.embedder.load()
    load_s = time.perf_counter() - t0
    distinct = len({t for p in pairs.pairs() for t in p})
    t0, c0, load0 = time.perf_counter(), time.process_time(), os.getloadavg()[0]
    scores = score_pairs(pairs, scorer)
    elapsed, cpu, load1 = time.perf_counter() - t0, time.process_time() - c0, os.getloadavg()[0]
    latencies = []
    for i in range(220):
        t0 = time.perf_counter()
        scorer.embedder.embed([f"{SHORT_PROMPT} ({i})"])
        latencies.append(time.perf_counter() - t0)
    latencies = sorted(latencies[20:])
    pair_lat = []
    for i in range(100):
        t0 = time.perf_counter()
        scorer.score(f"How do I reset my password? ({i})", f"I forgot my password, how can I reset it? ({i})")
        pair_lat.append(time.perf_counter() - t0)
    pair_lat.sort()

    held = heldout_mask(pairs.question1, pairs.question2)
    hp = subset(pairs, held)
    hs = [s for s, h in zip(scores, held, strict=True) if h]
    r_held = evaluate(hp, hs, DEFAULT_THRESHOLD, examples=1000)
    r_all = evaluate(pairs, scores, DEFAULT_THRESHOLD)
    ci = bootstrap(hs, hp.labels, DEFAULT_THRESHOLD)

    say(f"Model: {scorer.embedder.model_id}; default threshold {DEFAULT_THRESHOLD}; file {args.pairs}")
    say(f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    say()
    say("| part | pairs | duplicates | threshold | precision (95 % CI) | hit rate | hits | false hits | recall |")
    say("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    say(summary_rows("held-out", r_held, ci))
    say(summary_rows("whole file", r_all))
    say()
    say("Curve (held-out part | whole file): precision / hit rate / false hits")
    say()
    say("| threshold | held-out precision | held-out hit rate | held-out false hits | whole precision | whole hit rate | whole false hits |")
    say("|---:|---:|---:|---:|---:|---:|---:|")
    for ph, pa in zip(r_held.curve, r_all.curve, strict=True):
        if ph.threshold < 0.85 and round(ph.threshold * 100) % 10:
            continue
        say(f"| {ph.threshold:.2f} | {pct(ph.precision)} | {pct(ph.hit_rate)} | {ph.false_hits} | {pct(pa.precision)} | "
            f"{pct(pa.hit_rate)} | {pa.false_hits} |")  # fmt: skip
    for name, r in (("held-out", r_held), ("whole file", r_all)):
        b = r.best
        say(f"\nMost hits at precision >= 99 % ({name}): " + ("none" if b is None else
            f"threshold {b.threshold}, precision {pct(b.precision)}, hit rate {pct(b.hit_rate)} ({b.hits} hits)"))  # fmt: skip
    say()
    say(f"Throughput: {len(pairs)} pairs ({distinct} distinct questions) scored in {elapsed:.1f} s = "
        f"{len(pairs) / elapsed:.0f} pairs/s ({distinct / elapsed:.0f} texts embedded/s); model load {load_s:.2f} s")  # fmt: skip
    cores = os.cpu_count() or 1
    say(f"CPU time: {cpu:.1f} s = {1000 * cpu / len(pairs):.1f} ms per pair, so at most {cores * len(pairs) / cpu:.0f} "
        f"pairs/s with all {cores} cores to itself (1-minute load average {load0:.1f} at the start, {load1:.1f} at the "
        f"end: above {cores}, other processes shared the cores and the wall-clock figure is low)")  # fmt: skip
    say(f"One short prompt ({len(SHORT_PROMPT)} chars) embedded: p50 {1000 * statistics.median(latencies):.1f} ms, "
        f"p99 {1000 * latencies[int(0.99 * len(latencies)) - 1]:.1f} ms; one pair scored (two embeddings): "
        f"p50 {1000 * statistics.median(pair_lat):.1f} ms")  # fmt: skip
    say(f"Curve thresholds: {', '.join(f'{t:.2f}' for t in CURVE)}")
    print("\nFalse hits at the default threshold on the held-out part (score | question1 | question2):")
    for e in r_held.false_hit_examples:
        print(f"  {e['score']:.3f} | {e['question1']} | {e['question2']}")
    if args.markdown:
        args.markdown.write_text("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
