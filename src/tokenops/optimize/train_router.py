"""Fit the difficulty router to your own prompts: ``tokenops train router``.

The packaged router was trained on the one public format with labels for a strong and a weak model (MMLU's
multiple-choice questions); on everyday chat it is its hand-set prior, which is at random on the public chat labels
measured in ``docs/benchmarks.md``. What does carry is a correction learnt *in domain*: rows of your own traffic
(or an evaluation set like it), each with both models' scores, e.g. from ``tokenops evaluate models --rows-out``.

The model is the packaged design, :class:`~tokenops.optimize.router.DifficultyRouter`: the rule router's logit as a
prior, plus a correction learnt here (a logistic model of the strong model's win rate ``(1 + strong - weak) / 2``
over the standardized hand features and hashed word uni- and bigrams), applied to every prompt (no gate: the rows
are the domain). The L2 penalties are chosen by k-fold cross-validation by row, and the file written is the fitted
router only when it beats the packaged one and the prior alone on the same folds by more than the folds' noise
(the paired differences' standard error); otherwise the better of those two.
Training needs numpy and scipy (dependencies of the forecaster); serving stays pure Python.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from tokenops.errors import UsageError
from tokenops.optimize import router as R
from tokenops.optimize.evaluate_router import EvalRow, evaluate

HASH_BITS = 18
MIN_ROWS = 40  # fewer rows than this cannot be cross-validated into anything but noise
FOLDS = 5
# penalties tried (None: no n-gram weights), and how often an n-gram must occur to get one
GRID_HAND = (0.01, 0.1, 1.0)
GRID_GRAMS: tuple[float | None, ...] = (None, 0.01, 0.1, 1.0)
MIN_GRAM_ROWS = 3
TOLERANCE = 0.005  # a cross-validated APGR this much better is needed to prefer the more complex router

Choice = Literal["packaged", "prior", "fitted"]


@dataclass(frozen=True, slots=True)
class Features:
    """Hand features, n-gram buckets, groups and soft targets of training rows, computed once."""

    hand: Any  # numpy array rows x HAND_FEATURES
    grams: list[list[int]]
    groups: list[str]  # the rows' groups, for the n-gram filter (a row is its own group by default)
    target: Any  # numpy array: the strong model's win rate, a tie counting half
    bits: int

    @classmethod
    def of(cls, prompts: Sequence[str], target: Sequence[float], groups: Sequence[str] | None = None,
           bits: int = HASH_BITS) -> Features:  # fmt: skip
        import numpy as np

        return cls(np.array([R.hand_features(p) for p in prompts], dtype=float),
                   [sorted(R.gram_buckets(p, bits)) for p in prompts],
                   list(groups) if groups is not None else [str(i) for i in range(len(prompts))],
                   np.array(target, dtype=float), bits)  # fmt: skip


def fit(F: Features, idx: Sequence[int], lambda_hand: float, lambda_grams: float | None, min_groups: int, *,
        on_prior: bool = True, gate: str | None = None, sign: Mapping[str, int] | None = None,
        name: str = "difficulty-custom") -> R.DifficultyRouter:  # fmt: skip
    """The router fitted on rows ``idx``, its standardization folded into the weights.

    With ``on_prior`` it is the rule router's logit plus the correction learnt here (applied where ``gate``'s hand
    feature is non-zero, or everywhere); without, a model of its own. ``lambda_grams`` None: hand features only.
    An n-gram gets a weight when it occurs in at least ``min_groups`` of the rows' groups. ``sign`` bounds the
    combined weight (prior + correction) of a hand feature: +1 may only raise p_strong, -1 only lower it."""
    import numpy as np
    from scipy import optimize, sparse

    H = F.hand[list(idx)]
    mu = H.mean(0)
    sd = H.std(0)
    sd[sd == 0] = 1.0
    Hs = (H - mu) / sd
    vocab: list[int] = []
    if lambda_grams is not None:
        seen: dict[int, set[str]] = {}
        for i in idx:
            for b in F.grams[i]:
                seen.setdefault(b, set()).add(F.groups[i])
        vocab = sorted(b for b, s in seen.items() if len(s) >= min_groups)
    col = {b: j for j, b in enumerate(vocab)}
    r_, c_, v_ = [], [], []
    for a, i in enumerate(idx):
        scale = 1.0 / math.sqrt(len(F.grams[i])) if F.grams[i] else 0.0
        for b in F.grams[i]:
            j = col.get(b)
            if j is not None:
                r_.append(a)
                c_.append(j)
                v_.append(scale)
    G = sparse.csr_matrix((v_, (r_, c_)), shape=(len(idx), len(vocab)))
    t = F.target[list(idx)]
    n, h = len(idx), Hs.shape[1]
    lg = lambda_grams if lambda_grams is not None else 0.0
    rule = R.RuleRouter()
    prior = np.array(rule.weights, dtype=float) if on_prior else np.zeros(h)
    offset = (rule.bias + H @ prior) if on_prior else np.zeros(n)  # the rule router's logit of each row
    if on_prior and gate is not None:  # rows outside the gate keep the prior alone: they do not train it
        inside = H[:, R.HAND_FEATURES.index(gate)] != 0
    else:
        inside = np.ones(n, dtype=bool)
    prior_std = prior * sd  # in standardized units: the combined weight is prior_std + w

    def loss(w: Any) -> tuple[float, Any]:
        b, wh, wg = w[0], w[1 : 1 + h], w[1 + h :]
        z = offset + np.where(inside, b + Hs @ wh + G @ wg, 0.0)
        # soft-target logistic loss, numerically stable: log(1 + e^z) - t z
        value = float(np.sum(np.logaddexp(0.0, z) - t * z)) / n
        value += 0.5 * lambda_hand * float(wh @ wh) + 0.5 * lg * float(wg @ wg)
        g = np.where(inside, (1.0 / (1.0 + np.exp(-z)) - t) / n, 0.0)
        grad = np.concatenate(([g.sum()], Hs.T @ g + lambda_hand * wh, G.T @ g + lg * wg))
        return value, grad

    bounds: list[tuple[float | None, float | None]] = [(None, None)]
    for j, feature in enumerate(R.HAND_FEATURES):
        s = (sign or {}).get(feature, 0)
        limit = float(-prior_std[j])
        bounds.append((limit, None) if s > 0 else (None, limit) if s < 0 else (None, None))
    bounds += [(None, None)] * len(vocab)
    res = optimize.minimize(loss, np.zeros(1 + h + len(vocab)), jac=True, method="L-BFGS-B", bounds=bounds,
                            options={"maxiter": 3000, "gtol": 1e-9})  # fmt: skip
    w = res.x
    wh = w[1 : 1 + h] / sd
    bias = float(w[0] - np.sum(w[1 : 1 + h] * mu / sd))
    grams = {b: rounded(float(x)) for b, x in zip(vocab, w[1 + h :], strict=True) if abs(x) >= 1e-4}
    return R.DifficultyRouter(bias=rounded(bias, 8), hand_weights=tuple(rounded(float(x), 8) for x in wh),
                              ngram_weights=grams, hash_bits=F.bits, prior_bias=rule.bias if on_prior else 0.0,
                              prior_weights=tuple(rule.weights) if on_prior else (),
                              gate=gate if on_prior else None, name=name)  # fmt: skip


def rounded(x: float, digits: int = 4) -> float:
    """``digits`` significant digits: what a weights file needs, and it keeps the file small."""
    return 0.0 if x == 0 else round(x, digits - 1 - int(math.floor(math.log10(abs(x)))))


def prior_router(name: str = "difficulty-custom") -> R.DifficultyRouter:
    """The rule router as a weights file: the prior with no correction."""
    rule = R.RuleRouter()
    return R.DifficultyRouter(bias=0.0, hand_weights=(0.0,) * len(R.HAND_FEATURES), ngram_weights={},
                              hash_bits=HASH_BITS, prior_bias=rule.bias, prior_weights=tuple(rule.weights),
                              name=name)  # fmt: skip


def apgr(router: R.Router, rows: Sequence[EvalRow]) -> float | None:
    return evaluate(rows, [router.p_strong(r.prompt) for r in rows]).apgr


@dataclass(frozen=True, slots=True)
class Candidate:
    lambda_hand: float
    lambda_grams: float | None
    cv_apgr: float
    folds: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Trained:
    """What :func:`train` did: the cross-validated APGR of each router, the choice, and the router to write."""

    n: int
    folds: int
    packaged: tuple[float, ...]  # APGR of the packaged router on each fold's test rows
    prior: tuple[float, ...]
    best: Candidate
    tried: list[Candidate]
    chosen: Choice
    router: R.DifficultyRouter
    full: dict[str, float | None] = field(default_factory=dict)  # APGR on all rows (the chosen one: in-sample)

    @staticmethod
    def mean(xs: Sequence[float]) -> float:
        return sum(xs) / len(xs)


def fold_of(row_id: str, folds: int) -> int:
    """A row's fold: by a hash of its id, so the same rows always fall in the same fold."""
    return zlib.crc32(row_id.encode()) % folds


def better(new: Sequence[float], old: Sequence[float]) -> bool:
    """``new`` beats ``old`` on the same folds: the mean of the paired differences is above :data:`TOLERANCE` and
    above twice its standard error (fold-to-fold noise of a few hundred rows is several points of APGR)."""
    d = [a - b for a, b in zip(new, old, strict=True)]
    mean = sum(d) / len(d)
    se = math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1) / len(d)) if len(d) > 1 else 0.0
    return mean > max(TOLERANCE, 2 * se)


def train(rows: Sequence[EvalRow], *, folds: int = FOLDS, packaged: R.DifficultyRouter | None = None,
          meta: Mapping[str, Any] | None = None) -> Trained:  # fmt: skip
    """Cross-validate the penalties on ``rows`` (k folds by row id), fit the best on every row, and choose."""
    if len(rows) < MIN_ROWS:
        raise UsageError(f"{len(rows)} rows: training needs at least {MIN_ROWS} (a few hundred for a useful router)")
    if len({r.id for r in rows}) != len(rows):
        raise UsageError("row ids repeat: each row needs its own id (the folds are drawn by id)")
    gaps = [r.strong - r.weak for r in rows]
    if all(g == gaps[0] for g in gaps):
        raise UsageError("every row has the same strong - weak score difference: there is nothing to learn")
    packaged = packaged or R.DifficultyRouter.load()
    F = Features.of([r.prompt for r in rows], [(1 + r.strong - r.weak) / 2 for r in rows])
    split = [fold_of(r.id, folds) for r in rows]
    tests = [[i for i in range(len(rows)) if split[i] == k] for k in range(folds)]
    if any(len(t) < 2 for t in tests):
        raise UsageError(f"{len(rows)} rows do not fill {folds} folds: give more rows or fewer --folds")

    def on(router: R.Router, idx: list[int]) -> float:
        return apgr(router, [rows[i] for i in idx]) or 0.0

    prior = prior_router()
    base = tuple(on(packaged, t) for t in tests)
    plain = tuple(on(prior, t) for t in tests)
    tried: list[Candidate] = []
    for lh in GRID_HAND:
        for lg in GRID_GRAMS:
            scores = []
            for k, test in enumerate(tests):
                train_idx = [i for i in range(len(rows)) if split[i] != k]
                scores.append(on(fit(F, train_idx, lh, lg, MIN_GRAM_ROWS), test))
            tried.append(Candidate(lh, lg, sum(scores) / folds, tuple(scores)))
    top = max(c.cv_apgr for c in tried)
    # of the settings within the tolerance of the best, the most conservative: hand only, then the largest penalties
    best = max((c for c in tried if c.cv_apgr >= top - TOLERANCE),
               key=lambda c: (c.lambda_grams is None, c.lambda_grams or 0.0, c.lambda_hand))  # fmt: skip
    m_base, m_prior = sum(base) / folds, sum(plain) / folds
    info = {"folds": folds, "rows": len(rows), "cv_apgr": {"packaged": round(m_base, 4), "prior": round(m_prior, 4),
            "fitted": round(best.cv_apgr, 4)}, "lambda_hand": best.lambda_hand, "lambda_grams": best.lambda_grams,
            **dict(meta or {})}  # fmt: skip
    chosen: Choice
    incumbent = base if m_base > m_prior + TOLERANCE else plain
    if better(best.folds, incumbent):
        chosen = "fitted"
        router = fit(F, list(range(len(rows))), best.lambda_hand, best.lambda_grams, MIN_GRAM_ROWS)
    elif incumbent is base:
        chosen, router = "packaged", packaged
    else:
        chosen, router = "prior", prior
    router = replace(router, name="difficulty-custom", meta={**info, "chosen": chosen}, source="<trained>")
    full = {"packaged": apgr(packaged, rows), "prior": apgr(prior, rows), chosen: apgr(router, rows)}
    return Trained(len(rows), folds, base, plain, best, tried, chosen, router, full)


def weights_bytes(router: R.DifficultyRouter) -> bytes:
    """The weights file's bytes: gzip JSON, the same bytes for the same router (mtime 0)."""
    import gzip

    import orjson

    return gzip.compress(orjson.dumps(router.to_dict()), compresslevel=9, mtime=0)


__all__ = ["FOLDS", "MIN_ROWS", "Candidate", "Features", "Trained", "fit", "fold_of", "prior_router", "rounded",
           "train", "weights_bytes"]  # fmt: skip
