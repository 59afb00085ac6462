"""Fit the semantic cache's one fitted number, ``DEFAULT_THRESHOLD``, on the train part of the shared QQP pairs.

The pairs file (question1,question2,is_duplicate; a hit serves question2 the cached answer of question1) is split
into a train and a held-out part by connected components of questions: two pairs that share a question (after
``similarity.normalize``) are in the same component, and a component goes to the held-out part when the sha256
of its first question (in sorted order) is 0, 1 or 2 modulo 10 (about 30 % of the pairs). No question is in both
parts; nothing is random, so the split is the same on every run and every machine.

On the train part only, this script scores every pair (cosine of the all-MiniLM-L6-v2 embeddings, then the
vetoes of :mod:`tokenops.optimize.similarity`), and chooses the threshold: the lowest one on a 0.01 grid from
0.80 at and above which precision stays at least ``--target`` (0.92: the plateau QQP's labels allow, see
docs/benchmarks.md). It also prints what each veto is worth on the train part (precision and hit rate with that
rule off). The vetoes themselves are rules, not fitted.

    python bench/train_similarity.py                      # ~3 min on 2 cores
    python bench/train_similarity.py --pairs other.csv --target 0.95

The held-out figures are ``bench/cache_eval.py``'s.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import Sequence

from tokenops.optimize.evaluate_cache import Pairs, read_pairs
from tokenops.optimize.similarity import DEFAULT_THRESHOLD, VETO_CAP, SimilarityScorer, normalize, veto

DEFAULT_PAIRS = "/work/shared/data/qqp/qqp_pairs.csv"
GRID = [round(0.80 + 0.01 * i, 2) for i in range(21)]


def heldout_mask(question1: Sequence[str], question2: Sequence[str]) -> list[bool]:
    """True for the pairs of the held-out part (components of questions linked by pairs; see the docstring)."""
    parent: dict[str, str] = {}

    def find(q: str) -> str:
        parent.setdefault(q, q)
        while parent[q] != q:
            parent[q] = parent[parent[q]]
            q = parent[q]
        return q

    keys = [(normalize(a), normalize(b)) for a, b in zip(question1, question2, strict=True)]
    for a, b in keys:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)  # the root is the component's smallest question
    return [int(hashlib.sha256(find(a).encode()).hexdigest(), 16) % 10 < 3 for a, _ in keys]


def subset(pairs: Pairs, keep: Sequence[bool]) -> Pairs:
    idx = [i for i, k in enumerate(keep) if k]
    return Pairs(pairs.path, pairs.header, [pairs.rows[i] for i in idx], [pairs.lines[i] for i in idx],
                 [pairs.question1[i] for i in idx], [pairs.question2[i] for i in idx],
                 [pairs.labels[i] for i in idx])  # fmt: skip


def components(pairs: Pairs, scorer: SimilarityScorer) -> tuple[list[float], list[bool], list[str | None], list[bool]]:
    """Per pair: cosine, equal after normalize, the veto (or None), both texts fit the model's window."""
    texts = list(dict.fromkeys(t for pair in pairs.pairs() for t in pair))
    enc = scorer.encode(texts)
    at = {t: i for i, t in enumerate(texts)}
    cos, same, vetoes, fits = [], [], [], []
    for a, b in pairs.pairs():
        i, j = at[a], at[b]
        cos.append(float(enc.vectors[i] @ enc.vectors[j]))
        same.append(normalize(a) == normalize(b))
        vetoes.append(veto(a, b))
        fits.append(enc.fits[i] and enc.fits[j])
    return cos, same, vetoes, fits


def scores_without(cos: list[float], same: list[bool], vetoes: list[str | None], fits: list[bool],
                   off: str | None) -> list[float]:  # fmt: skip
    """The scores with one veto turned off ("all": every veto off; None: none off)."""
    out = []
    for c, eq, v, f in zip(cos, same, vetoes, fits, strict=True):
        s = min(max(c, 0.0), 1.0)
        if eq:
            s = 1.0
        elif not f or (v is not None and off != "all" and v != off):
            s = min(s, VETO_CAP)
        out.append(s)
    return out


def at(scores: list[float], labels: list[int], t: float) -> tuple[float | None, float, int]:
    hits = [y for s, y in zip(scores, labels, strict=True) if s >= t]
    return (sum(hits) / len(hits) if hits else None), len(hits) / len(labels), len(hits) - sum(hits)


def choose(scores: list[float], labels: list[int], target: float) -> float | None:
    """The lowest grid threshold at and above which (on the grid) precision stays ≥ target."""
    chosen = None
    for t in reversed(GRID):
        p, _, _ = at(scores, labels, t)
        if p is not None and p < target:
            break
        chosen = t
    return chosen


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", default=DEFAULT_PAIRS, help="the pairs CSV (default: the shared QQP file)")
    ap.add_argument("--target", type=float, default=0.92, help="train precision the threshold keeps (0.92)")
    args = ap.parse_args(argv)
    pairs = read_pairs(args.pairs)
    held = heldout_mask(pairs.question1, pairs.question2)
    train = subset(pairs, [not h for h in held])
    print(f"{args.pairs}: {len(pairs)} pairs; train part {len(train)} pairs, {sum(train.labels)} duplicates "
          f"(held-out part: {sum(held)} pairs, not read here)")  # fmt: skip
    started = time.perf_counter()
    cos, same, vetoes, fits = components(train, SimilarityScorer())
    print(f"scored the train part in {time.perf_counter() - started:.0f} s")
    full = scores_without(cos, same, vetoes, fits, None)
    chosen = choose(full, train.labels, args.target)
    print(f"\nthreshold: {chosen} (lowest on the grid keeping train precision >= {args.target}); "
          f"similarity.DEFAULT_THRESHOLD is {DEFAULT_THRESHOLD}")  # fmt: skip
    print("\n| threshold | precision | hit rate | false hits |\n|---:|---:|---:|---:|")
    for t in GRID:
        p, h, f = at(full, train.labels, t)
        print(f"| {t:.2f} | {'n/a' if p is None else f'{p:.4f}'} | {h:.4f} | {f} |")
    t = chosen if chosen is not None else DEFAULT_THRESHOLD
    print(f"\nwhat each veto is worth on the train part, at {t}:\n")
    print("| vetoes | precision | hit rate | false hits | pairs the rule(s) veto with cosine >= threshold |\n|---|---:|---:|---:|---:|")
    for off in (None, "numbers", "negation", "opposite", "names", "name order", "all"):
        s = scores_without(cos, same, vetoes, fits, off)
        p, h, f = at(s, train.labels, t)
        n = sum(1 for c, v in zip(cos, vetoes, strict=True) if v is not None and c >= t and (off in (None, "all") or v == off))
        label = "all on" if off is None else "none" if off == "all" else f"all but {off}"
        print(f"| {label} | {'n/a' if p is None else f'{p:.4f}'} | {h:.4f} | {f} | {n} |")
    return 0 if chosen == DEFAULT_THRESHOLD else 1


if __name__ == "__main__":
    sys.exit(main())
