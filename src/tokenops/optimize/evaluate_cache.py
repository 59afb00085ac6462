"""Evaluating the semantic cache's similarity score on labelled pairs (``tokenops evaluate cache``).

    read_pairs(path)                   a CSV of question1,question2,is_duplicate, checked (errors name file:line)
    evaluate(pairs, scores, threshold) precision, hit rate, recall and false hits at a threshold, and the curve
    write_scores(path, pairs, scores)  the input rows with each pair's score, in input order

A pair stands for a cache that holds the answer to ``question1`` when ``question2`` arrives: a score at or above
the threshold is a **hit** (``question2`` is served ``question1``'s answer), which is right when the pair is
labelled a duplicate (``is_duplicate`` 1) and a **false hit** otherwise. ``hit_rate`` is hits over all pairs,
``precision`` true hits over hits (null when nothing hits), ``recall`` true hits over duplicates (null when the
file has none).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenops.errors import UsageError
from tokenops.textfile import read_text

COLUMNS = ("question1", "question2", "is_duplicate")
# The curve's thresholds: every 0.05 up to 0.85, then every 0.01 (where a cache's threshold lives).
CURVE = tuple(round(0.5 + 0.05 * i, 2) for i in range(7)) + tuple(round(0.85 + 0.01 * i, 2) for i in range(16))
TARGET_PRECISION = 0.99


@dataclass(frozen=True)
class Pairs:
    """A checked pairs file: its header and rows as read (for ``--scores-out``), the line each row starts on,
    and the three columns."""

    path: str
    header: list[str]
    rows: list[list[str]]
    lines: list[int]
    question1: list[str]
    question2: list[str]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.rows)

    def pairs(self) -> list[tuple[str, str]]:
        return list(zip(self.question1, self.question2, strict=True))


@dataclass(frozen=True)
class Point:
    """The cache's figures at one threshold."""

    threshold: float
    hits: int
    true_hits: int
    false_hits: int
    precision: float | None
    hit_rate: float
    recall: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "hits": self.hits, "true_hits": self.true_hits,
                "false_hits": self.false_hits, "precision": _r(self.precision), "hit_rate": _r(self.hit_rate),
                "recall": _r(self.recall)}  # fmt: skip


@dataclass(frozen=True)
class Report:
    n: int
    duplicates: int
    at: Point  # at the threshold asked for
    curve: list[Point]
    best: Point | None  # the lowest threshold (most hits) whose precision is at least TARGET_PRECISION
    false_hit_examples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n, "duplicates": self.duplicates, "threshold": self.at.threshold,
            "precision": _r(self.at.precision), "hit_rate": _r(self.at.hit_rate), "recall": _r(self.at.recall),
            "hits": self.at.hits, "true_hits": self.at.true_hits, "false_hits": self.at.false_hits,
            "curve": [p.to_dict() for p in self.curve],
            "best_threshold": None if self.best is None else {"target_precision": TARGET_PRECISION, **self.best.to_dict()},
            "false_hit_examples": self.false_hit_examples,
        }  # fmt: skip


def read_pairs(path: str | Path) -> Pairs:
    """Reads and checks a pairs CSV (UTF-8, RFC 4180 quoting, a header naming at least the three columns, in any
    order). Every problem is a :class:`UsageError` naming the file and the line."""
    name = str(path)
    text = read_text(path, what="CSV file")
    if not text.strip():
        raise UsageError(f"{name}:1: empty file; expected a header {','.join(COLUMNS)} and one row per pair")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except csv.Error as exc:
        raise UsageError(f"{name}:{reader.line_num}: bad CSV: {exc}") from None
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise UsageError(f"{name}:1: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                         f"(the header is {','.join(header)!r}; expected {','.join(COLUMNS)})")  # fmt: skip
    i1, i2, il = (header.index(c) for c in COLUMNS)
    rows: list[list[str]] = []
    lines: list[int] = []
    q1: list[str] = []
    q2: list[str] = []
    labels: list[int] = []
    end = reader.line_num
    while True:
        start = end + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise UsageError(f"{name}:{reader.line_num}: bad CSV: {exc}") from None
        line = end = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # a blank line (a trailing newline too many)
        if len(row) != len(header):
            raise UsageError(f"{name}:{line}: {len(row)} field{'s' if len(row) != 1 else ''}, expected "
                             f"{len(header)} (the header's {','.join(header)})")  # fmt: skip
        label = row[il].strip()
        if label not in ("0", "1"):
            raise UsageError(f"{name}:{line}: is_duplicate must be 0 or 1, not {row[il]!r}")
        rows.append(row)
        lines.append(start)
        q1.append(row[i1])
        q2.append(row[i2])
        labels.append(int(label))
    if not rows:
        raise UsageError(f"{name}:2: no pairs after the header")
    return Pairs(name, header, rows, lines, q1, q2, labels)


def point(scores: Sequence[float], labels: Sequence[int], threshold: float) -> Point:
    hits = true_hits = 0
    for s, y in zip(scores, labels, strict=True):
        if s >= threshold:
            hits += 1
            true_hits += y
    duplicates = sum(labels)
    return Point(threshold, hits, true_hits, hits - true_hits, true_hits / hits if hits else None,
                 hits / len(labels) if labels else 0.0, true_hits / duplicates if duplicates else None)  # fmt: skip


def best_threshold(scores: Sequence[float], labels: Sequence[int], target: float = TARGET_PRECISION) -> Point | None:
    """The threshold with the most hits whose precision is at least ``target``: the lowest score (of those in
    the file) at which it holds. None when no threshold reaches it."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    duplicates = sum(labels)
    best: Point | None = None
    hits = true_hits = 0
    for k, i in enumerate(order):
        hits += 1
        true_hits += labels[i]
        if k + 1 < len(order) and scores[order[k + 1]] == scores[i]:
            continue  # a threshold takes every pair of the same score
        if true_hits >= target * hits:
            best = Point(round(scores[i], 6), hits, true_hits, hits - true_hits, true_hits / hits, hits / len(scores),
                         true_hits / duplicates if duplicates else None)  # fmt: skip
    return best


def evaluate(pairs: Pairs, scores: Sequence[float], threshold: float, *, examples: int = 10) -> Report:
    if len(scores) != len(pairs):
        raise ValueError("one score per pair")
    labels = pairs.labels
    false = sorted((i for i, s in enumerate(scores) if s >= threshold and labels[i] == 0), key=lambda i: -scores[i])
    shown = [{"line": pairs.lines[i], "score": _r(scores[i]), "question1": pairs.question1[i],
              "question2": pairs.question2[i]} for i in false[:examples]]  # fmt: skip
    return Report(len(pairs), sum(labels), point(scores, labels, threshold),
                  [point(scores, labels, t) for t in CURVE], best_threshold(scores, labels), shown)  # fmt: skip


def score_pairs(pairs: Pairs, scorer: Any, *, chunk: int = 4096,
                progress: Callable[[int, int], None] | None = None) -> list[float]:  # fmt: skip
    """Every pair's score with ``scorer`` (a :class:`~tokenops.optimize.similarity.SimilarityScorer`), in input
    order, ``chunk`` pairs at a time (each chunk's distinct texts are embedded once, in batches)."""
    all_pairs = pairs.pairs()
    out: list[float] = []
    for start in range(0, len(all_pairs), chunk):
        out.extend(scorer.score_pairs(all_pairs[start : start + chunk]))
        if progress is not None:
            progress(len(out), len(all_pairs))
    return out


def write_scores(path: str | Path, pairs: Pairs, scores: Sequence[float]) -> None:
    """The input file's columns, row for row, with a last column ``score`` (6 decimals)."""
    try:
        with Path(path).open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow([*pairs.header, "score"])
            for row, s in zip(pairs.rows, scores, strict=True):
                w.writerow([*row, f"{s:.6f}"])
    except OSError as exc:
        raise UsageError(f"{path}: cannot write the scores ({exc.strerror})") from None


def _r(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else round(x, 6)
