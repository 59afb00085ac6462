"""The task matrix ``tokenops evaluate models`` prints is the config's routing section: pasted, the gateway's
choice for each task (the cheapest model of the task's tier or above) is a model that met the target."""

from __future__ import annotations

from decimal import Decimal

import yaml

from tokenops.optimize.experiments import Outcome, summarize, task_matrix_yaml
from tokenops.routing import RoutingConfig

# cost per call and quality per task of each model, as a run measured them
RUN = {
    "mini": (Decimal("0.0001"), {"classify": 1.0, "extract": 0.5, "legal": 0.0}),
    "haiku": (Decimal("0.0004"), {"classify": 1.0, "extract": 1.0, "legal": 0.5}),
    "sonnet": (Decimal("0.003"), {"classify": 1.0, "extract": 1.0, "legal": 1.0}),
}


def outcomes() -> list[Outcome]:
    out = []
    for model, (cost, quality) in RUN.items():
        for task, q in quality.items():
            for i in range(4):  # quality q: that share of 4 answers right
                out.append(Outcome(f"{task}{i}", task, model, "answer", 1.0 if i < q * 4 else 0.0, cost, 10.0))
    return out


def served(routing: RoutingConfig, task: str) -> str:
    """What the gateway serves a call of ``task`` with: the cheapest model of its tier or above."""
    return min(routing.eligible(task), key=lambda m: RUN[m][0])


def test_against_the_configs_tiers_each_task_gets_the_lowest_tier_whose_cheapest_model_is_good_enough() -> None:
    config = RoutingConfig(tiers={"small": ("mini", "haiku"), "frontier": ("sonnet",)})
    summary = summarize(outcomes(), list(RUN), 0.9)
    assert {c.task: c.model for c in summary.choices} == {"classify": "mini", "extract": "haiku", "legal": "sonnet"}
    snippet = task_matrix_yaml(summary, scorer="exact", run_id="ev-1", routing=config)
    pasted = yaml.safe_load(snippet)["routing"]
    assert "tiers" not in pasted  # the config's tiers stay as they are
    routing = RoutingConfig(tiers=config.tiers, tasks=pasted["tasks"])
    # extract's choice (haiku) shares the small tier with the cheaper mini, which fails it: extract needs frontier
    assert routing.tasks == {"classify": "small", "extract": "frontier", "legal": "frontier"}
    for task in routing.tasks:
        assert RUN[served(routing, task)][1][task] >= 0.9
    assert "# extract: frontier -> sonnet (quality 1, $0.003 a call)" in snippet


def test_without_tiers_a_tier_per_chosen_model_makes_each_choice_the_cheapest_eligible() -> None:
    summary = summarize(outcomes(), list(RUN), 0.9)
    routing = RoutingConfig.model_validate(yaml.safe_load(task_matrix_yaml(summary, scorer="exact", run_id="ev-2"))
                                           ["routing"])  # fmt: skip
    assert routing.tiers == {"tier1": ("mini",), "tier2": ("haiku",), "tier3": ("sonnet",)}
    assert {t: served(routing, t) for t in routing.tasks} == {"classify": "mini", "extract": "haiku", "legal": "sonnet"}


def test_a_tier_with_a_model_the_run_did_not_measure_is_flagged_and_a_task_no_model_met_has_no_line() -> None:
    config = RoutingConfig(tiers={"small": ("mini", "flash"), "frontier": ("sonnet", "haiku")})
    summary = summarize(outcomes(), list(RUN), 0.99)
    snippet = task_matrix_yaml(summary, scorer="exact", run_id="ev-3", routing=config)
    tasks = yaml.safe_load(snippet)["routing"]["tasks"]
    assert tasks["classify"] == "small" and "not measured, check: flash" in snippet
    assert tasks["extract"] == "frontier"  # haiku (cheapest there) met it
    # legal: only sonnet is good enough, and haiku is cheaper in its tier: no tier serves it well, so no line
    assert "legal" not in tasks and "# legal: sonnet met 0.99 (quality 1) but no tier has it as its cheapest" in snippet
    summary = summarize(outcomes(), list(RUN), 1.01)  # nobody can reach it
    snippet = task_matrix_yaml(summary, scorer="exact", run_id="ev-4", routing=config)
    assert yaml.safe_load(snippet)["routing"]["tasks"] == {}
    assert "# legal: no model reached 1.01" in snippet
