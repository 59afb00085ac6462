"""``tokenops train router``'s core: a correction learnt in domain, chosen only when it beats the prior on the folds."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tokenops.errors import UsageError
from tokenops.optimize.evaluate_router import EvalRow, evaluate
from tokenops.optimize.router import DifficultyRouter, RuleRouter
from tokenops.optimize.train_router import better, fold_of, train, weights_bytes

FILLER = ("please", "kindly", "quickly", "today", "for my team", "in plain words", "with an example", "briefly")
HARD = ("reconcile the deferred revenue schedule", "allocate the intercompany transfer pricing adjustment",
        "restate the lease liability under the new standard", "consolidate the subsidiary's minority interest")  # fmt: skip
EASY = ("say hello to the new hire", "suggest a name for the team lunch", "thank the customer for the feedback",
        "write a friendly out-of-office note")  # fmt: skip


def rows(n: int, seed: int, informative: bool = True) -> list[EvalRow]:
    """Chat-like prompts where a topic (not the length, not math or code) decides whether the strong model wins."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        hard = rng.random() < 0.4
        words = " ".join(rng.choice(FILLER) for _ in range(rng.randint(0, 12)))  # length says nothing
        prompt = f"{rng.choice(HARD if hard else EASY)} {words}".strip()
        strong_wins = hard if informative else rng.random() < 0.4
        noise = rng.random() < 0.1
        strong, weak = (1.0, 0.0) if strong_wins != noise else (1.0, 1.0)
        out.append(EvalRow(f"r{seed}-{i}", prompt, strong, weak))
    return out


def test_a_correction_learnt_in_domain_is_chosen_and_carries_to_new_rows(tmp_path: Path) -> None:
    trained = train(rows(400, 1))
    assert trained.chosen == "fitted"
    assert trained.best.cv_apgr > trained.mean(trained.prior) + 0.1  # the prior cannot see the topic
    fresh = rows(300, 2)  # never trained on
    router = trained.router
    got = evaluate(fresh, [router.p_strong(r.prompt) for r in fresh]).apgr
    prior = evaluate(fresh, [RuleRouter().p_strong(r.prompt) for r in fresh]).apgr
    assert got is not None and prior is not None and got > prior + 0.1
    assert router.gate is None and router.meta["chosen"] == "fitted" and router.meta["rows"] == 400
    path = tmp_path / "mine.json.gz"
    path.write_bytes(weights_bytes(router))
    loaded = DifficultyRouter.load(path)  # what routing.auto.model_file reads
    assert [loaded.p_strong(r.prompt) for r in fresh[:20]] == pytest.approx([router.p_strong(r.prompt)
                                                                            for r in fresh[:20]], abs=1e-9)  # fmt: skip
    assert weights_bytes(router) == weights_bytes(router)  # the same bytes each time


def test_labels_that_say_nothing_keep_the_prior_or_the_packaged_router() -> None:
    trained = train(rows(300, 3, informative=False))
    assert trained.chosen in ("prior", "packaged")
    assert trained.router.meta["chosen"] == trained.chosen


def test_the_choice_needs_more_than_the_folds_noise() -> None:
    assert better([0.60, 0.62, 0.61, 0.63, 0.59], [0.50, 0.52, 0.49, 0.51, 0.50])
    assert not better([0.56, 0.59, 0.46, 0.56, 0.53], [0.50, 0.52, 0.59, 0.50, 0.51])  # one fold against it
    assert not better([0.502, 0.503, 0.501], [0.50, 0.50, 0.50])  # steady but too small to matter


def test_bad_training_sets_are_refused_with_a_reason() -> None:
    with pytest.raises(UsageError, match="at least"):
        train(rows(20, 4))
    twice = rows(100, 5)
    with pytest.raises(UsageError, match="ids repeat"):
        train([*twice, twice[0]])
    flat = [EvalRow(f"f{i}", f"prompt {i}", 1.0, 1.0) for i in range(100)]
    with pytest.raises(UsageError, match="nothing to learn"):
        train(flat)
    assert {fold_of(f"x{i}", 5) for i in range(100)} == set(range(5))


def test_the_command_writes_a_file_the_gateway_and_evaluate_router_read(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from tokenops.cli import app

    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"id": r.id, "prompt": r.prompt, "scores": {"big": r.strong, "small": r.weak}})
                            + "\n" for r in rows(400, 6)))  # fmt: skip
    out = tmp_path / "mine.json.gz"
    result = CliRunner().invoke(app, ["train", "router", "--data", str(data), "--strong", "big", "--weak", "small",
                                      "-o", str(out), "-f", "json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["chosen"] == "fitted" and report["n"] == 400 and len(report["fold_apgr"]["fitted"]) == 5
    assert report["cv_apgr"]["fitted"] > report["cv_apgr"]["prior"]
    router = DifficultyRouter.load(out)
    assert router.meta["strong"] == "big" and router.meta["chosen"] == "fitted"
    fresh = tmp_path / "fresh.jsonl"
    fresh.write_text("".join(json.dumps({"id": r.id, "prompt": r.prompt, "scores": {"big": r.strong, "small": r.weak}})
                             + "\n" for r in rows(200, 7)))  # fmt: skip
    evaluated = CliRunner().invoke(app, ["evaluate", "router", "--data", str(fresh), "--strong", "big", "--weak",
                                         "small", "--model", str(out), "-f", "json"])  # fmt: skip
    assert evaluated.exit_code == 0 and json.loads(evaluated.output)["apgr"] > 0.6

    table = CliRunner().invoke(app, ["train", "router", "--data", str(data), "--strong", "big", "--weak", "small",
                                     "-o", str(out)])  # fmt: skip
    assert "chosen: fitted" in table.output and f"wrote {out}" in table.output
    bad = CliRunner().invoke(app, ["train", "router", "--data", str(data), "--strong", "big", "--weak", "big",
                                   "-o", str(out)])  # fmt: skip
    assert isinstance(bad.exception, UsageError) and "same model" in str(bad.exception)
    missing = CliRunner().invoke(app, ["train", "router", "--data", str(data), "--strong", "huge", "--weak", "small",
                                       "-o", str(out)])  # fmt: skip
    assert isinstance(missing.exception, UsageError) and "rows.jsonl:1" in str(missing.exception)
