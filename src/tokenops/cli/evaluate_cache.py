"""``tokenops evaluate cache``: how often the semantic cache would answer, and how often rightly, on labelled
question pairs (``question1,question2,is_duplicate``; a hit serves question2 the cached answer of question1)."""

from __future__ import annotations

import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from tokenops.cli.common import Format, emit


class CacheFormat(StrEnum):
    table = "table"
    json = "json"


def cache(
    pairs: Annotated[Path, typer.Option(
        "--pairs", help="CSV with a header and the columns question1,question2,is_duplicate (0 or 1).",
        show_default=False)],
    fmt: Annotated[CacheFormat, typer.Option("--format", "-f", help="Output format.")] = CacheFormat.table,
    scores_out: Annotated[Path | None, typer.Option(
        "--scores-out", help="Write the input rows, in input order, with a last column 'score' (the pair's "
                             "similarity, 0 to 1) to this CSV file.")] = None,
    threshold: Annotated[float | None, typer.Option(
        "--threshold", min=0.0, max=1.0, help="Score at or above which a pair is a hit (default: the cache's "
                                              "default threshold).")] = None,
) -> None:  # fmt: skip
    """Score every pair with the semantic cache's similarity model; report precision, hit rate, recall and false
    hits at the threshold, the curve over thresholds, and the threshold with the most hits at precision ≥ 0.99.

    Needs the optional extra: pip install 'tokenops\\[semantic]'.
    """
    from tokenops.optimize.evaluate_cache import evaluate, read_pairs, write_scores
    from tokenops.optimize.similarity import DEFAULT_THRESHOLD, default_scorer

    data = read_pairs(pairs)  # checked before the model loads: a bad file fails fast
    scorer = default_scorer()
    scorer.embedder.load()  # a missing extra is reported before any work
    started = time.perf_counter()
    scores = _score(data, scorer, show_progress=fmt is CacheFormat.table and sys.stderr.isatty())
    elapsed = time.perf_counter() - started
    if scores_out is not None:
        write_scores(scores_out, data, scores)
    t = DEFAULT_THRESHOLD if threshold is None else threshold
    report = evaluate(data, scores, t)
    payload = {"file": str(pairs), "model": scorer.embedder.model_id, **report.to_dict(),
               "seconds": round(elapsed, 3), "pairs_per_second": round(len(data) / elapsed, 1) if elapsed else None,
               "scores_out": None if scores_out is None else str(scores_out)}  # fmt: skip
    if fmt is CacheFormat.json:
        emit([], Format.json, payload=payload)
        return
    _table(payload, default=threshold is None)


def _score(data: Any, scorer: Any, *, show_progress: bool) -> list[float]:
    from tokenops.optimize.evaluate_cache import score_pairs

    if not show_progress:
        return list(score_pairs(data, scorer))
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task("scoring pairs", total=len(data))
        return list(score_pairs(data, scorer, progress=lambda done, _total: bar.update(task, completed=done)))


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} %"


def _table(p: dict[str, Any], *, default: bool) -> None:
    which = "default" if default else "--threshold"
    summary = [
        {"": "pairs", "value": p["n"]}, {"": "duplicates", "value": p["duplicates"]},
        {"": "threshold", "value": f"{p['threshold']} ({which})"}, {"": "hits", "value": p["hits"]},
        {"": "precision (true hits / hits)", "value": _pct(p["precision"])},
        {"": "hit rate (hits / pairs)", "value": _pct(p["hit_rate"])},
        {"": "recall (true hits / duplicates)", "value": _pct(p["recall"])},
        {"": "false hits", "value": p["false_hits"]},
        {"": "pairs per second", "value": p["pairs_per_second"]},
    ]  # fmt: skip
    emit(summary, Format.table, title=f"Semantic cache on {p['file']} ({p['model']})", columns=["", "value"])
    curve = [{"threshold": f"{c['threshold']:.2f}", "hits": c["hits"], "precision": _pct(c["precision"]),
              "hit_rate": _pct(c["hit_rate"]), "recall": _pct(c["recall"]), "false_hits": c["false_hits"]}
             for c in p["curve"]]  # fmt: skip
    best = p["best_threshold"]
    if best is None:
        footer = "no threshold reaches precision ≥ 99 % on this file"
    else:
        footer = (f"most hits at precision ≥ 99 %: threshold {best['threshold']} (precision {_pct(best['precision'])}, "
                  f"hit rate {_pct(best['hit_rate'])}, {best['hits']} hits)")  # fmt: skip
    if p["scores_out"]:
        footer += f"\nscores written to {p['scores_out']}"
    emit(curve, Format.table, title="Over thresholds", footer=footer,
         columns=["threshold", "hits", "precision", "hit_rate", "recall", "false_hits"])  # fmt: skip
    if p["false_hit_examples"]:
        emit([{"line": e["line"], "score": f"{e['score']:.3f}", "question1": e["question1"], "question2": e["question2"]}
              for e in p["false_hit_examples"][:5]], Format.table, title="Highest-scoring false hits")  # fmt: skip
