"""The router metrics (RouteLLM's CPT and APGR, and dollars) on small examples worked out by hand, and one whose
expected figures come from RouteLLM's own pandas/numpy code (routellm/evals/benchmarks.py and evaluate.py)."""

from __future__ import annotations

import math
import random
from decimal import Decimal

import pytest

from tokenops.optimize.evaluate_router import EvalRow, evaluate, interp, quantile, threshold_for_share

D = Decimal


def rows_of(strong: list[float], weak: list[float], strong_cost: str | None = None,
            weak_cost: str | None = None) -> list[EvalRow]:  # fmt: skip
    return [EvalRow(str(i), f"prompt {i}", s, w, None if strong_cost is None else D(strong_cost),
                    None if weak_cost is None else D(weak_cost)) for i, (s, w) in enumerate(zip(strong, weak, strict=True))]  # fmt: skip


# 10 rows: 4 where only the strong model is right, 5 where both are, 1 where neither is: strong 0.9, weak 0.5.
STRONG = [1.0] * 9 + [0.0]
WEAK = [0.0] * 4 + [1.0] * 5 + [0.0]


def test_oracle_router_reaches_each_quality_level_with_exactly_that_share_of_the_gap_rows() -> None:
    rows = rows_of(STRONG, WEAK, "0.01", "0.001")
    oracle = [s - w for s, w in zip(STRONG, WEAK, strict=True)]  # 1 on the 4 rows the strong model is needed for
    rep = evaluate(rows, oracle)
    assert rep.n == 10 and rep.strong_quality == pytest.approx(0.9) and rep.weak_quality == pytest.approx(0.5)
    # quality climbs from 0.5 to 0.9 over the first 40 % of calls: x of the gap costs x·40 % strong calls
    assert rep.cpt20 == pytest.approx(0.08)
    assert rep.cpt50 == pytest.approx(0.20)
    assert rep.cpt80 == pytest.approx(0.32)
    # area: 0.4·(0.5+0.9)/2 + 0.6·0.9 = 0.82; (0.82 - 0.5) / (0.9 - 0.5) = 0.8
    assert rep.apgr == pytest.approx(0.8)
    assert rep.curve[0].strong_share == 0.0 and rep.curve[0].quality == pytest.approx(0.5)
    assert rep.curve[-1].strong_share == 1.0 and rep.curve[-1].quality == pytest.approx(0.9)
    assert [c.strong_share for c in rep.curve] == sorted(c.strong_share for c in rep.curve)


def test_dollars_are_exact_decimals_against_always_strong() -> None:
    rows = rows_of(STRONG, WEAK, "0.01", "0.001")
    rep = evaluate(rows, [s - w for s, w in zip(STRONG, WEAK, strict=True)])
    assert rep.strong_cost_usd == D("0.10") and rep.weak_cost_usd == D("0.010")
    at_40 = next(c for c in rep.curve if c.strong_share == pytest.approx(0.4))
    assert at_40.cost_usd == D("0.046")  # 4 × 0.01 + 6 × 0.001
    assert at_40.saved_usd == D("0.054")
    assert isinstance(at_40.cost_usd, Decimal)
    # at CPT(50 %) = 20 % of the calls: the 2 rows with the highest p_strong go to the strong model
    op = rep.at_cpt50
    assert op.cpt == pytest.approx(0.2) and op.strong_share is not None
    assert op.cost_usd is not None and op.saved_usd == rep.strong_cost_usd - op.cost_usd


def test_a_row_without_a_cost_leaves_the_dollars_unpriced_and_the_metrics_computed() -> None:
    rows = rows_of(STRONG, WEAK, "0.01", None)
    rep = evaluate(rows, [s - w for s, w in zip(STRONG, WEAK, strict=True)])
    assert rep.strong_cost_usd == D("0.10") and rep.weak_cost_usd is None
    assert rep.curve[-1].cost_usd == D("0.10")  # all strong: priced
    assert rep.curve[0].cost_usd is None and rep.curve[0].saved_usd is None  # all weak: unpriced
    assert rep.apgr == pytest.approx(0.8)


def test_random_router_recovers_half_the_gap() -> None:
    rng = random.Random(0)
    strong = [float(rng.random() < 0.8) for _ in range(4000)]
    weak = [float(rng.random() < 0.6) for _ in range(4000)]
    rep = evaluate(rows_of(strong, weak), [rng.random() for _ in strong])
    assert rep.apgr == pytest.approx(0.5, abs=0.04)
    assert rep.cpt50 == pytest.approx(0.5, abs=0.08)
    assert rep.cpt80 == pytest.approx(0.8, abs=0.08)


def test_anti_oracle_is_worse_than_random() -> None:
    rows = rows_of(STRONG, WEAK)
    rep = evaluate(rows, [w - s for s, w in zip(STRONG, WEAK, strict=True)])
    assert rep.apgr is not None and rep.apgr < 0.5
    assert rep.cpt50 is not None and rep.cpt50 > 0.5


def test_same_figures_as_routellms_own_code() -> None:
    # Expected values computed with RouteLLM's code path (pd.qcut thresholds, np.interp, np.trapz) on these rows.
    strong = [1, 1, 0, 1, 0.5, 1, 0, 1, 1, 0.25, 1, 1]
    weak = [1, 0, 0, 0, 0.5, 1, 1, 0, 1, 0, 0, 1]
    p = [0.91, 0.35, 0.12, 0.77, 0.5, 0.2, 0.05, 0.66, 0.41, 0.83, 0.58, 0.29]
    rep = evaluate(rows_of([float(x) for x in strong], [float(x) for x in weak]), p)
    assert [c.threshold for c in sorted(rep.curve, key=lambda c: -c.strong_share)][:3] == pytest.approx(
        [0.05, 0.128, 0.218])
    assert rep.cpt20 == pytest.approx(0.19999999999999990)
    assert rep.cpt50 == pytest.approx(0.28124999999999986)
    assert rep.cpt80 == pytest.approx(0.36249999999999990)
    assert rep.apgr == pytest.approx(0.8141025641025643)
    # the curve is not monotone (the last point is worse than the one before): CPT follows np.interp all the same
    qualities = [c.quality for c in rep.curve]
    assert qualities[-1] < max(qualities)


def test_no_gap_between_the_models_gives_no_cpt_or_apgr() -> None:
    rep = evaluate(rows_of([1.0, 0.0, 1.0], [1.0, 0.0, 1.0]), [0.1, 0.2, 0.3])
    assert rep.cpt50 is None and rep.cpt80 is None and rep.apgr is None
    assert all(c.pgr is None for c in rep.curve)


def test_interp_matches_numpy_semantics() -> None:
    xp, fp = [1.0, 2.0, 3.0], [10.0, 20.0, 40.0]
    assert interp(2.5, xp, fp) == 30.0
    assert interp(0.0, xp, fp) == 10.0  # clamped left
    assert interp(9.0, xp, fp) == 40.0  # clamped right
    assert interp(3.0, xp, fp) == 40.0
    assert interp(2.0, xp, fp) == 20.0
    # repeated xp values, as a flat stretch of the curve gives (numpy: 0.25)
    assert interp(0.7, [0.5, 0.9, 0.9, 0.9, 0.9, 0.9], [0.0, 0.4, 0.5, 0.6, 0.7, 1.0]) == pytest.approx(0.2)


def test_quantile_is_numpys_linear_quantile() -> None:
    values = [0.0, 1.0, 2.0, 10.0]
    assert quantile(values, 0.0) == 0.0
    assert quantile(values, 1.0) == 10.0
    assert quantile(values, 0.5) == 1.5
    assert quantile(values, 0.9) == pytest.approx(7.6)


def test_threshold_for_share() -> None:
    p = [0.9, 0.1, 0.5, 0.7, 0.3]
    assert threshold_for_share(p, 0.4) == 0.7  # the 2 highest
    assert sum(x >= threshold_for_share(p, 0.4) for x in p) == 2
    assert threshold_for_share(p, 1.0) == 0.1
    assert math.isinf(threshold_for_share(p, 0.0))
