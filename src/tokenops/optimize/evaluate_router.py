"""How good a strong/weak router is: RouteLLM's quality-vs-cost curve, CPT(x %), APGR, and dollars.

The metrics mirror RouteLLM exactly (lm-sys/RouteLLM at commit 0b64fda, ``routellm/evals/benchmarks.py``
``MMLU.evaluate`` and ``routellm/evals/evaluate.py`` ``generate_results``):

* **Thresholds**: the router's scores cut into ``num_results`` = 10 equal-count bins: the 11 bin edges are the
  score quantiles at 0, 0.1, …, 1 with linear interpolation (``pd.qcut(scores, 10, retbins=True)``). At each edge
  but the last a row goes to the strong model when its score is ``>=`` the edge; at the last, when it is ``>``
  (so the curve runs from 100 % to 0 % strong calls). Where pandas would refuse repeated edges (tied scores),
  they are kept: a repeated point adds nothing to the area.
* **Curve**: per threshold, the share of calls sent to the strong model and the mean score of the model each
  row went to (RouteLLM: accuracy in %; here a 0..1 score, which leaves every ratio below unchanged).
* **PGR** (performance gap recovered) of a point: ``(quality - weak) / (strong - weak)``, where ``strong`` and
  ``weak`` are the mean scores of always-strong and always-weak.
* **CPT(x %)**: the share of strong calls needed to reach ``weak + x·(strong - weak)``: ``np.interp`` of that
  quality over the curve's points sorted by strong share (quality as ``xp``, share as ``fp``), reproduced here
  without numpy, including its behaviour outside the range and where ``xp`` is not increasing.
* **APGR**: the trapezoid area under quality vs strong share, less the always-weak area, over the strong
  minus always-weak area (``np.trapz``): the average PGR over the curve; 0.5 for a random router.

Dollars, which RouteLLM does not report: the cost of each point is the sum, over rows, of the chosen model's cost
for that row, against always-strong (saved = always-strong − routed). Money is ``Decimal``; a row whose chosen
model has no cost makes the point's dollars ``None`` (unpriced), the other metrics are computed all the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from tokenops import money
from tokenops.errors import UsageError
from tokenops.textfile import read_text

__all__ = ["CurvePoint", "EvalRow", "OperatingPoint", "RouterReport", "apgr", "cpt", "curve", "evaluate",
           "interp", "quantile", "read_rows", "threshold_for_share"]  # fmt: skip

NUM_RESULTS = 10  # RouteLLM's --num-results: 10 bins, 11 thresholds
CPT_LEVELS = (0.2, 0.5, 0.8)  # RouteLLM prints "20% qual", "50% qual", "80% qual"


@dataclass(frozen=True, slots=True)
class EvalRow:
    """One prompt with both models' scores (0..1) and, where known, each model's cost of answering it (USD)."""

    id: str
    prompt: str
    strong: float
    weak: float
    strong_cost: Decimal | None = None
    weak_cost: Decimal | None = None


@dataclass(frozen=True, slots=True)
class CurvePoint:
    threshold: float  # a row goes to the strong model when p_strong >= threshold (> at the last point)
    strong_share: float  # 0..1 of the rows sent to the strong model
    quality: float  # mean score of the chosen models
    pgr: float | None  # (quality - weak) / (strong - weak); None when strong == weak
    cost_usd: Decimal | None  # None: some chosen model's cost is unknown
    saved_usd: Decimal | None  # always-strong cost minus this


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """Where a router reaches a PGR target: the interpolated share (CPT), and what routing with the threshold
    that sends that share of these rows to the strong model actually gives."""

    target_pgr: float
    cpt: float | None  # the interpolated share of strong calls (RouteLLM's CPT)
    threshold: float | None
    strong_share: float | None  # realised with ``threshold`` (ties can add rows)
    quality: float | None
    pgr: float | None
    cost_usd: Decimal | None
    saved_usd: Decimal | None


@dataclass(frozen=True, slots=True)
class RouterReport:
    n: int
    strong_quality: float
    weak_quality: float
    curve: tuple[CurvePoint, ...]
    cpt20: float | None
    cpt50: float | None
    cpt80: float | None
    apgr: float | None
    auc: float
    strong_cost_usd: Decimal | None  # always-strong
    weak_cost_usd: Decimal | None  # always-weak
    at_cpt50: OperatingPoint
    at_cpt80: OperatingPoint


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """numpy's default ("linear") quantile of already sorted values."""
    n = len(sorted_values)
    h = (n - 1) * q
    lo = math.floor(h)
    if lo >= n - 1:
        return sorted_values[-1]
    return sorted_values[lo] + (h - lo) * (sorted_values[lo + 1] - sorted_values[lo])


def interp(x: float, xp: Sequence[float], fp: Sequence[float]) -> float:
    """``numpy.interp(x, xp, fp)`` for one ``x``, step for step: numpy's search for the interval (which assumes
    ``xp`` increasing, and whose answer this reproduces when it is not), its clamping at both ends and its guard
    for an ``x`` that equals a point."""
    n = len(xp)
    j = _search(x, xp)
    if j == -1:
        return fp[0]
    if j == n:
        return fp[-1]
    if j == n - 1 or xp[j] == x:
        return fp[j]
    width = xp[j + 1] - xp[j]
    if width == 0:  # numpy gets inf or nan here; only a non-increasing xp can lead here
        return fp[j]
    return (fp[j + 1] - fp[j]) / width * (x - xp[j]) + fp[j]


def _search(key: float, arr: Sequence[float]) -> int:
    """numpy's ``binary_search_with_guess`` (numpy/_core/src/multiarray/compiled_base.c) with the first guess
    of a call with one ``x`` (0): j with arr[j] <= key < arr[j + 1]; -1 below arr[0], len above arr[-1]."""
    n = len(arr)
    if key > arr[-1]:
        return n
    if key < arr[0]:
        return -1
    if n <= 4:
        i = 1
        while i < n and key >= arr[i]:
            i += 1
        return i - 1
    guess = 1  # numpy clamps the first guess (0) to [1, n - 3]
    imin, imax = 0, n
    if key < arr[guess]:
        if key >= arr[guess - 1]:
            return guess - 1
        imax = guess - 1
    else:
        if key < arr[guess + 1]:
            return guess
        if key < arr[guess + 2]:
            return guess + 1
        imin = guess + 2
        if guess < n - 8 - 1 and key < arr[guess + 8]:  # numpy's LIKELY_IN_CACHE_SIZE
            imax = guess + 8
    while imin < imax:
        mid = imin + ((imax - imin) >> 1)
        if key >= arr[mid]:
            imin = mid + 1
        else:
            imax = mid
    return imin - 1


def _scores_of(rows: Sequence[EvalRow], strong_rows: Sequence[bool]) -> tuple[float, Decimal | None]:
    total = 0.0
    cost: Decimal | None = money.ZERO
    for row, strong in zip(rows, strong_rows, strict=True):
        total += row.strong if strong else row.weak
        c = row.strong_cost if strong else row.weak_cost
        cost = None if cost is None or c is None else money.add(cost, c)
    return total / len(rows), cost


def curve(rows: Sequence[EvalRow], p: Sequence[float], num_results: int = NUM_RESULTS) -> list[CurvePoint]:
    """The router's points at RouteLLM's quantile thresholds, sorted by strong share (then quality)."""
    if not rows or len(rows) != len(p):
        raise ValueError("curve needs one score per row, and at least one row")
    strong_q = sum(r.strong for r in rows) / len(rows)
    weak_q = sum(r.weak for r in rows) / len(rows)
    always_strong = _total_cost(r.strong_cost for r in rows)
    ordered = sorted(p)
    points = []
    for i in range(num_results + 1):
        t = quantile(ordered, i / num_results)
        chosen = [x >= t for x in p] if i != num_results else [x > t for x in p]
        quality, cost = _scores_of(rows, chosen)
        points.append(CurvePoint(threshold=t, strong_share=sum(chosen) / len(rows), quality=quality,
                                 pgr=_pgr(quality, strong_q, weak_q), cost_usd=cost,
                                 saved_usd=_minus(always_strong, cost)))  # fmt: skip
    points.sort(key=lambda c: (c.strong_share, c.quality))
    return points


def cpt(points: Sequence[CurvePoint], strong_q: float, weak_q: float, level: float) -> float | None:
    """RouteLLM's CPT(level): the strong share at which the curve reaches ``weak + level·(strong - weak)``."""
    if strong_q == weak_q:
        return None
    return interp(weak_q + level * (strong_q - weak_q), [c.quality for c in points], [c.strong_share for c in points])


def _trapezoid(y: Sequence[float], x: Sequence[float]) -> float:
    return sum((x[i + 1] - x[i]) * (y[i + 1] + y[i]) / 2 for i in range(len(x) - 1))


def apgr(points: Sequence[CurvePoint], strong_q: float, weak_q: float) -> float | None:
    """RouteLLM's APGR: (AUC − weak AUC) / (strong AUC − weak AUC) over the curve's share range."""
    xs = [c.strong_share for c in points]
    auc = _trapezoid([c.quality for c in points], xs)
    weak_auc = _trapezoid([weak_q] * len(xs), xs)
    strong_auc = _trapezoid([strong_q] * len(xs), xs)
    if strong_auc == weak_auc:
        return None
    return (auc - weak_auc) / (strong_auc - weak_auc)


def threshold_for_share(p: Sequence[float], share: float) -> float:
    """The threshold that sends ``share`` (0..1) of these scores to the strong model (``p >= threshold``): the
    k-th highest score, k = round(share · n); above every score for 0. Ties at the threshold can send more."""
    if not p:
        raise ValueError("threshold_for_share needs at least one score")
    k = round(min(1.0, max(0.0, share)) * len(p))
    if k == 0:
        return math.inf
    return sorted(p, reverse=True)[k - 1]


def _operating_point(rows: Sequence[EvalRow], p: Sequence[float], level: float, share: float | None,
                     strong_q: float, weak_q: float, always_strong: Decimal | None) -> OperatingPoint:  # fmt: skip
    if share is None:
        return OperatingPoint(level, None, None, None, None, None, None, None)
    t = threshold_for_share(p, share)
    chosen = [x >= t for x in p]
    quality, cost = _scores_of(rows, chosen)
    return OperatingPoint(target_pgr=level, cpt=share, threshold=t, strong_share=sum(chosen) / len(rows),
                          quality=quality, pgr=_pgr(quality, strong_q, weak_q), cost_usd=cost,
                          saved_usd=_minus(always_strong, cost))  # fmt: skip


def evaluate(rows: Sequence[EvalRow], p: Sequence[float], num_results: int = NUM_RESULTS) -> RouterReport:
    """Every metric of a router whose scores for ``rows`` are ``p`` (higher: more likely strong)."""
    if not rows:
        raise ValueError("evaluate needs at least one row")
    points = curve(rows, p, num_results)
    strong_q = sum(r.strong for r in rows) / len(rows)
    weak_q = sum(r.weak for r in rows) / len(rows)
    always_strong = _total_cost(r.strong_cost for r in rows)
    c20, c50, c80 = (cpt(points, strong_q, weak_q, level) for level in CPT_LEVELS)
    return RouterReport(
        n=len(rows), strong_quality=strong_q, weak_quality=weak_q, curve=tuple(points), cpt20=c20, cpt50=c50,
        cpt80=c80, apgr=apgr(points, strong_q, weak_q),
        auc=_trapezoid([c.quality for c in points], [c.strong_share for c in points]),
        strong_cost_usd=always_strong, weak_cost_usd=_total_cost(r.weak_cost for r in rows),
        at_cpt50=_operating_point(rows, p, 0.5, c50, strong_q, weak_q, always_strong),
        at_cpt80=_operating_point(rows, p, 0.8, c80, strong_q, weak_q, always_strong),
    )  # fmt: skip


def _pgr(quality: float, strong_q: float, weak_q: float) -> float | None:
    return None if strong_q == weak_q else (quality - weak_q) / (strong_q - weak_q)


def _total_cost(costs: Iterable[Decimal | None]) -> Decimal | None:
    total = money.ZERO
    for c in costs:
        if c is None:
            return None
        total = money.add(total, c)
    return total


def _minus(a: Decimal | None, b: Decimal | None) -> Decimal | None:
    return None if a is None or b is None else money.add(a, -b)


# ---- the contract's input: JSON Lines of {"id", "prompt", "scores": {model: 0..1}, "costs": {model: USD}} ----

Pricer = Callable[[str, str], Decimal | None]
"""``pricer(model, prompt)`` → the estimated USD cost of answering ``prompt`` with ``model``, or None (unpriced)."""


def read_rows(path: str | Path, strong: str, weak: str, pricer: Pricer | None = None) -> list[EvalRow]:
    """Read the contract's JSONL file. A row's cost for a model is its ``costs`` entry, else ``pricer``'s estimate,
    else None. Any malformed line raises :class:`~tokenops.errors.UsageError` naming the file and the line."""
    import json

    path = Path(path)
    text = read_text(path, what="JSONL file")  # a BOM is dropped, not a JSON error
    rows: list[EvalRow] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue

        def bad(why: str, number: int = number) -> UsageError:
            return UsageError(f"{path}:{number}: {why}")

        try:
            doc = json.loads(line, parse_float=Decimal)  # exact decimals for costs
        except ValueError as exc:
            raise bad(f"not valid JSON ({exc})") from None
        except RecursionError:
            raise bad("JSON nested too deeply (a row is one flat object)") from None
        rows.append(_row(doc, strong, weak, pricer, bad))
    if not rows:
        raise UsageError(f"{path}:1: no rows: the file is empty (expected one JSON object a line)")
    return rows


def _row(doc: Any, strong: str, weak: str, pricer: Pricer | None, bad: Callable[[str], UsageError]) -> EvalRow:
    if not isinstance(doc, dict):
        raise bad("expected a JSON object with id, prompt and scores")
    for key in ("id", "prompt", "scores"):
        if key not in doc:
            raise bad(f'missing field "{key}"')
    rid = doc["id"]
    if isinstance(rid, bool) or not isinstance(rid, str | int):
        raise bad('"id" must be a string')
    prompt = doc["prompt"]
    if not isinstance(prompt, str):
        raise bad('"prompt" must be a string')
    scores = doc["scores"]
    if not isinstance(scores, dict):
        raise bad('"scores" must be an object of model -> score (0..1)')
    costs = doc.get("costs", {})
    if costs is None:
        costs = {}
    if not isinstance(costs, dict):
        raise bad('"costs" must be an object of model -> USD')
    values = {}
    for model in (strong, weak):
        if model not in scores:
            raise bad(f'model "{model}" is not in "scores" (it has: {", ".join(sorted(map(str, scores))) or "none"})')
        values[model] = _score(scores[model], model, bad)
    return EvalRow(id=str(rid), prompt=prompt, strong=values[strong], weak=values[weak],
                   strong_cost=_cost(costs, strong, prompt, pricer, bad),
                   weak_cost=_cost(costs, weak, prompt, pricer, bad))  # fmt: skip


def _score(v: Any, model: str, bad: Callable[[str], UsageError]) -> float:
    if isinstance(v, bool):
        return 1.0 if v else 0.0  # correct / incorrect
    if not isinstance(v, int | Decimal):
        raise bad(f'score of "{model}" must be a number from 0 to 1, not {v!r}')
    x = float(v)
    if not (math.isfinite(x) and 0.0 <= x <= 1.0):
        raise bad(f'score of "{model}" is {v}, outside [0, 1]')
    return x


def _cost(costs: dict[str, Any], model: str, prompt: str, pricer: Pricer | None,
          bad: Callable[[str], UsageError]) -> Decimal | None:  # fmt: skip
    if model not in costs:
        return pricer(model, prompt) if pricer is not None else None
    v = costs[model]
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | Decimal | str):
        raise bad(f'cost of "{model}" must be a USD amount, not {v!r}')
    try:
        amount = money.to_decimal(v, what=f'cost of "{model}"')
    except ValueError as exc:
        raise bad(str(exc)) from None
    if amount < 0:
        raise bad(f'cost of "{model}" must not be negative')
    return amount
