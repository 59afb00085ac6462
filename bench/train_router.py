"""Train the difficulty router's weights (``src/tokenops/optimize/data/router-v1.json.gz``) and print held-out figures.

    .venv/bin/python bench/train_router.py                 # train on the training subjects, write the weights
    .venv/bin/python bench/train_router.py --cv --in-domain --ablation --gsm8k-train train.jsonl   # and more figures

Data: RouteLLM's MMLU rows with per-prompt correctness of gpt-4-1106-preview (strong) and Mixtral-8x7B (weak)
(``/work/shared/data/router/mmlu.jsonl.gz``, see its README); the 5 ``contaminated`` rows are dropped. It is read,
never copied into the repository.

Held-out split, by **subject**: the 57 subjects sorted by name, every 4th from the first (0, 4, 8, …: 15 subjects,
about a third of the rows) is held out. A split by subject measures what the router is for: prompts from domains
it never saw (GSM8K, MT-Bench, real traffic). A split by row id would put questions of the same subjects on both
sides, and a router can then learn *which subject* a prompt is from (each subject has its own strong-minus-weak
gap), which does not carry over to new domains (``--in-domain`` shows how much that inflates the figures). The
rule looks at subject names only, never at labels, and was fixed before any router was scored on it; ``--cv``
rotates it over all four folds, since one fold of 15 subjects is a noisy sample of "unseen domains".

Training rows: the other 42 subjects, less ``high_school_mathematics``: there GPT-4 is "correct" on 3 % of the
questions (Mixtral 32 %), far below GPT-4's published MMLU math scores, a grading artifact of the source rather than
a difficulty signal, and one that would teach the router that math needs the weak model. (It stays in evaluation
wherever it falls.)

Model (the features are :mod:`tokenops.optimize.router`'s own functions, so training and serving cannot drift):
the rule router's logit (hand-set weights: a prior from outside MMLU) **plus a correction learned here**, a logistic
model of the soft target ``(1 + strong_correct - weak_correct) / 2`` (the strong model's win rate, a tie counting
half, as RouteLLM's routers estimate) over the standardized hand features and the hashed word unigrams and bigrams
(scaled by 1/sqrt(#n-grams) of the prompt), fitted by L-BFGS-B with L2 penalties towards 0, and **applied only to
multiple-choice prompts** (the ``mc_options`` hand feature), the one format MMLU has labels for. Why: fitted alone
(``--ablation`` shows it) the MMLU model ranks MMLU's held-out subjects better than the rules, but what it learns
is that format's quirks: numbers, math, reasoning verbs and quantity questions come out as signs of *no* gain from
the strong model (both models fail computation when they answer with a letter and no working); on other prompts it
is flat ("Thanks!" scores like a proof) and tracks GSM8K difficulty much less than the rules do. So other prompts
keep the prior. The sign constraints hold for the combined weights: hand features that stand for difficulty in
general (numbers, math, logic, code, enumerated parts, negations, conditionals, reasoning verbs, quantity
questions, constraints) may only raise the score, open writing tasks only lower it. N-grams are kept only when they
occur in at least ``min_subjects`` training subjects (subject vocabulary says nothing about unseen domains). The
penalties and ``min_subjects`` are chosen by 3-fold cross-validation over the training subjects (by subject again):
of the settings within :data:`TOLERANCE` of the best mean APGR, the most conservative. The held-out subjects take no
part in any choice.

A check off MMLU that needs no model labels (``--gsm8k-train FILE``): on GSM8K's *training* questions (RouteLLM's
``routellm/evals/gsm8k/train.jsonl``), the Spearman correlation of p_strong with the number of calculation steps
in the reference answer. No GSM8K test question and no MT-Bench data is used, for training or for any choice.

Needs numpy and scipy (training only: serving needs neither). About 2 minutes; ``--cv --ablation`` about 5 more.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tokenops.optimize import router as R  # noqa: E402
from tokenops.optimize import train_router as T  # noqa: E402
from tokenops.optimize.evaluate_router import EvalRow, evaluate  # noqa: E402

DATA = Path("/work/shared/data/router/mmlu.jsonl.gz")
OUT = ROOT / "src" / "tokenops" / "optimize" / "data" / R.DEFAULT_FILE
HASH_BITS = 18
ARTIFACT_SUBJECTS = ("high_school_mathematics",)  # excluded from training, see the module docstring
SIGN: dict[str, int] = {  # +1: may only raise p_strong; -1: may only lower it; others free
    **{n: 1 for n in ("digit_share", "log_numbers", "log_big_numbers", "log_math", "log_latex", "log_logic",
                      "log_variables", "log_code", "code_block", "log_enumerated", "log_negations",
                      "log_conditionals", "log_reasoning", "log_quantity", "log_constraints")},
    "log_open_tasks": -1,
}  # fmt: skip
GRID = {"lambda_hand": (1e-4, 1e-3, 1e-2), "lambda_grams": (1e-3, 3e-3, 1e-2), "min_subjects": (2, 5)}
# Mean cross-validated APGR within which the more conservative setting is preferred (a difference this small is
# within the fold-to-fold noise of a few thousand questions).
TOLERANCE = 0.01
SEED = 0
SANITY = (  # everyday prompts, easy to hard by common sense: printed after training, never used to choose anything
    "hi", "Thanks!", "What's the capital of France?", "Write a haiku about autumn.",
    "Summarize this paragraph: The meeting was moved to Tuesday.",
    "Compose an engaging travel blog post about a recent trip to Hawaii, highlighting cultural experiences.",
    "Write a Python function that checks whether a string is a palindrome.",
    "Explain quantum entanglement to a 10-year-old.", "Prove that the square root of 2 is irrational.",
    "A train leaves at 3pm at 60 mph; another at 4pm at 80 mph. When does the second catch up?",
    "Implement a thread-safe LRU cache in Java with O(1) operations and explain the design trade-offs.",
    "Given the system of equations x + y = 10 and 2x - y = 2, find x and y, then compute x^2 + y^2.",
)  # fmt: skip


def load(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return [r for r in rows if not r["contaminated"]]


def held_out_subjects(rows: list[dict[str, Any]], k: int = 0, folds: int = 4) -> set[str]:
    subjects = sorted({r["subject"] for r in rows})
    return {s for i, s in enumerate(subjects) if i % folds == k}


class Features:
    """Hand features and n-gram buckets of every row, computed once."""

    def __init__(self, rows: list[dict[str, Any]], bits: int) -> None:
        import numpy as np

        self.bits = bits
        self.hand = np.array([R.hand_features(r["prompt"]) for r in rows])
        self.grams = [sorted(R.gram_buckets(r["prompt"], bits)) for r in rows]
        self.subject = [r["subject"] for r in rows]
        self.target = np.array([(1 + r["strong_correct"] - r["weak_correct"]) / 2 for r in rows], dtype=float)
        self.strong = [float(r["strong_correct"]) for r in rows]
        self.weak = [float(r["weak_correct"]) for r in rows]


GATE = "mc_options"  # the learned correction applies to multiple-choice prompts: the format of MMLU


def fit(F: Features, idx: list[int], lambda_hand: float, lambda_grams: float, min_subjects: int,
        on_prior: bool = True) -> R.DifficultyRouter:  # fmt: skip
    """The router fitted on rows ``idx`` (:func:`tokenops.optimize.train_router.fit`, which ``tokenops train router``
    runs too). With ``on_prior`` (the shipped design) it is the rule router's logit plus a correction learned here,
    gated to multiple-choice prompts, the hand features' signs bounded by :data:`SIGN`; without, a model of its
    own fitted to these rows alone (the ablation). N-grams must occur in ``min_subjects`` training subjects."""
    features = T.Features(F.hand, F.grams, F.subject, F.target, F.bits)
    return T.fit(features, idx, lambda_hand, lambda_grams, min_subjects, on_prior=on_prior,
                 gate=GATE if on_prior else None, sign=SIGN, name="difficulty-v1")  # fmt: skip


_round = T.rounded


def figures(router: R.Router, F: Features, rows: list[dict[str, Any]], idx: list[int]) -> dict[str, Any]:
    """RouteLLM's metrics of ``router`` on rows ``idx``, scored from the prompts at serving time."""
    ev = [EvalRow(rows[i]["id"], rows[i]["prompt"], F.strong[i], F.weak[i]) for i in idx]
    rep = evaluate(ev, [router.p_strong(r.prompt) for r in ev])
    return {"n": rep.n, "strong_quality": round(rep.strong_quality, 4), "weak_quality": round(rep.weak_quality, 4),
            "cpt50": _r(rep.cpt50), "cpt80": _r(rep.cpt80), "apgr": _r(rep.apgr)}  # fmt: skip


def random_figures(F: Features, rows: list[dict[str, Any]], idx: list[int], iters: int = 10) -> dict[str, Any]:
    """The random router, averaged over ``iters`` seeds (RouteLLM's --random-iters)."""
    import random

    out = []
    for k in range(iters):
        rng = random.Random(SEED + k)
        ev = [EvalRow(rows[i]["id"], "", F.strong[i], F.weak[i]) for i in idx]
        rep = evaluate(ev, [rng.random() for _ in ev])
        out.append((rep.cpt50 or 0.0, rep.cpt80 or 0.0, rep.apgr or 0.0))
    return {"n": len(idx), "cpt50": _r(sum(o[0] for o in out) / iters), "cpt80": _r(sum(o[1] for o in out) / iters),
            "apgr": _r(sum(o[2] for o in out) / iters)}  # fmt: skip


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def select(F: Features, rows: list[dict[str, Any]], train: list[int]) -> dict[str, Any]:
    """The penalties and ``min_subjects`` by 3-fold cross-validation over the training subjects: of the settings
    whose mean APGR is within :data:`TOLERANCE` of the best, the most conservative (the largest penalties, then
    the most subjects an n-gram must occur in), which carries better to unseen domains."""
    subjects = sorted({F.subject[i] for i in train})
    results: list[tuple[float, dict[str, Any]]] = []
    for lh in GRID["lambda_hand"]:
        for lg in GRID["lambda_grams"]:
            for ms in GRID["min_subjects"]:
                scores = []
                for k in range(3):
                    held = {s for j, s in enumerate(subjects) if j % 3 == k}
                    tr = [i for i in train if F.subject[i] not in held]
                    te = [i for i in train if F.subject[i] in held]
                    model = fit(F, tr, lh, lg, ms)
                    scores.append(figures(model, F, rows, te)["apgr"] or 0.0)
                mean = sum(scores) / len(scores)
                params = {"lambda_hand": lh, "lambda_grams": lg, "min_subjects": ms}
                print(f"  cv {params}: APGR {mean:.4f} ({', '.join(f'{s:.3f}' for s in scores)})", flush=True)
                results.append((mean, params))
    best = max(m for m, _ in results)
    near = [(m, p) for m, p in results if m >= best - TOLERANCE]
    mean, params = max(near, key=lambda mp: (mp[1]["lambda_hand"], mp[1]["lambda_grams"], mp[1]["min_subjects"]))
    return params | {"cv_apgr": round(mean, 4), "cv_best_apgr": round(best, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--bits", type=int, default=HASH_BITS)
    ap.add_argument("--no-search", action="store_true", help="skip the cross-validated choice: use --params")
    ap.add_argument("--params", default='{"lambda_hand": 0.01, "lambda_grams": 0.001, "min_subjects": 5}',
                    help="with --no-search: the setting (default: what the search chose for the shipped file)")
    ap.add_argument("--cv", action="store_true", help="also: 4-fold cross-validation by subject (each fold held out)")
    ap.add_argument("--in-domain", action="store_true", help="also: a split by row id (same subjects on both sides)")
    ap.add_argument("--ablation", action="store_true", help="also: a model fitted to MMLU alone (no prior, no gate), "
                    "and the shipped correction applied to every prompt (no gate), against the shipped one and the "
                    "rules: 4-fold subject CV and, with --gsm8k-train, the GSM8K check")
    ap.add_argument("--gsm8k-train", type=Path, help="also: GSM8K's *training* questions (JSONL with question and "
                    "answer, e.g. RouteLLM's routellm/evals/gsm8k/train.jsonl): Spearman correlation of p_strong with "
                    "the number of calculation steps of the reference answer, a label-free measure of difficulty")
    args = ap.parse_args()

    import numpy as np

    np.random.seed(SEED)
    started = time.perf_counter()
    rows = load(args.data)
    F = Features(rows, args.bits)
    held = held_out_subjects(rows)
    train = [i for i, r in enumerate(rows) if r["subject"] not in held and r["subject"] not in ARTIFACT_SUBJECTS]
    test = [i for i, r in enumerate(rows) if r["subject"] in held]
    print(f"{len(rows)} rows (contaminated dropped), {len(train)} training rows in "
          f"{len({F.subject[i] for i in train})} subjects, {len(test)} held-out rows in {len(held)} subjects: "
          f"{', '.join(sorted(held))}")  # fmt: skip
    params = json.loads(args.params) if args.no_search else select(F, rows, train)
    print(f"chosen: {params}")
    model = fit(F, train, params["lambda_hand"], params["lambda_grams"], params["min_subjects"])

    held_figs = figures(model, F, rows, test)
    meta = {
        "trained_on": "RouteLLM MMLU correctness, gpt-4-1106-preview vs Mixtral-8x7B-Instruct-v0.1 "
                      "(lm-sys/RouteLLM@0b64fda), contaminated rows dropped",
        "split": "held out: subjects sorted by name, every 4th from the first; high_school_mathematics not trained on",
        "held_out_subjects": sorted(held), "training_rows": len(train), "params": params,
        "target": "(1 + strong_correct - weak_correct) / 2", "held_out": held_figs,
    }  # fmt: skip
    model = R.DifficultyRouter(**{**_fields(model), "name": "difficulty-v1", "meta": meta})
    raw = json.dumps(model.to_dict(), separators=(",", ":"), sort_keys=False).encode()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))  # mtime 0: the same bytes on every run
    loaded = R.DifficultyRouter.load(args.out)  # the file as served
    again = figures(loaded, F, rows, test)
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes, {len(loaded.ngram_weights):,} n-gram weights)")
    print(f"held out (subjects never trained on): {again}")
    print(f"  random router (10 seeds):           {random_figures(F, rows, test)}")
    print(f"  rule router (fallback):             {figures(R.RuleRouter(), F, rows, test)}")
    hand_only = R.DifficultyRouter(**{**_fields(loaded), "ngram_weights": {}})
    print(f"  same weights without n-grams:       {figures(hand_only, F, rows, test)}")
    _show(loaded, rows, train)

    gsm8k = _load_gsm8k(args.gsm8k_train) if args.gsm8k_train else None
    if gsm8k:
        print(f"GSM8K training questions ({len(gsm8k[0])}): Spearman rho of p_strong with the reference answer's steps:")
        plain = R.DifficultyRouter(**{**_fields(loaded), "ngram_weights": {}})
        for name, router in (("difficulty-v1", loaded), ("  without n-grams", plain), ("rules-v1", R.RuleRouter())):
            print(f"  {name}: {_rho(router, gsm8k):.3f}")
        print(f"  (question length alone: {_rho(None, gsm8k):.3f})")
    print("everyday prompts (not a criterion, a look): p_strong of difficulty-v1 / rules-v1")
    for prompt in SANITY:
        print(f"  {loaded.p_strong(prompt):.3f} / {R.RuleRouter().p_strong(prompt):.3f}  {prompt[:80]}")
    if args.cv:
        print("4-fold cross-validation by subject (each fold's subjects held out, the others trained on):")
        _cv(F, rows, params, show=True)
    if args.in_domain:
        import zlib

        te = [i for i, r in enumerate(rows) if zlib.crc32(r["id"].encode()) % 4 == 0]
        tr = [i for i, r in enumerate(rows) if zlib.crc32(r["id"].encode()) % 4 != 0
              and r["subject"] not in ARTIFACT_SUBJECTS]  # fmt: skip
        m = fit(F, tr, params["lambda_hand"], params["lambda_grams"], params["min_subjects"])
        print(f"in-domain (split by crc32(id) % 4; every subject on both sides): {figures(m, F, rows, te)}")
    if args.ablation:
        print("ablation (the same n-gram settings; 4-fold APGR by subject, GSM8K rho, the everyday prompts):")
        alone, alone0 = _cv(F, rows, params | {"lambda_hand": GRID["lambda_hand"][0]}, on_prior=False)
        shipped, shipped0 = _cv(F, rows, params)
        ungated = R.DifficultyRouter(**{**_fields(shipped0), "gate": None})
        rules = [figures(R.RuleRouter(), F, rows, _fold(rows, k)[1])["apgr"] or 0.0 for k in range(4)]
        for name, folds, model in (("MMLU alone (no prior, no gate)", alone, alone0),
                                   ("shipped design (prior + gated correction)", shipped, shipped0),
                                   ("  the same, correction not gated", shipped, ungated),
                                   ("rules-v1", rules, R.RuleRouter())):  # fmt: skip
            extra = f", GSM8K rho {_rho(model, gsm8k):.3f}" if gsm8k else ""
            print(f"  {name}: 4-fold APGR {sum(folds) / 4:.4f} ({', '.join(f'{a:.3f}' for a in folds)}){extra}; "
                  f"everyday prompts: {' '.join(f'{model.p_strong(p):.2f}' for p in SANITY)}", flush=True)  # fmt: skip
    print(f"done in {time.perf_counter() - started:.0f} s")


def _fold(rows: list[dict[str, Any]], k: int) -> tuple[list[int], list[int]]:
    """Training and held-out rows when fold ``k``'s subjects are held out."""
    held = held_out_subjects(rows, k)
    train = [i for i, r in enumerate(rows) if r["subject"] not in held and r["subject"] not in ARTIFACT_SUBJECTS]
    return train, [i for i, r in enumerate(rows) if r["subject"] in held]


def _cv(F: Features, rows: list[dict[str, Any]], params: dict[str, Any], show: bool = False,
        on_prior: bool = True) -> tuple[list[float], R.DifficultyRouter]:  # fmt: skip
    """APGR on each of the 4 subject folds, and the model trained without fold 0 (the shipped split)."""
    out, first = [], None
    for k in range(4):
        tr, te = _fold(rows, k)
        m = fit(F, tr, params["lambda_hand"], params["lambda_grams"], params["min_subjects"], on_prior)
        first = first or m
        fig = figures(m, F, rows, te)
        out.append(fig["apgr"] or 0.0)
        if show:
            print(f"  fold {k}: {fig}  random: {random_figures(F, rows, te)}  rules: "
                  f"{figures(R.RuleRouter(), F, rows, te)['apgr']}", flush=True)  # fmt: skip
    if show:
        print(f"  mean APGR {sum(out) / 4:.4f}")
    assert first is not None
    return out, first


def _fields(m: R.DifficultyRouter) -> dict[str, Any]:
    import dataclasses

    return {f.name: getattr(m, f.name) for f in dataclasses.fields(m)}


def _load_gsm8k(path: Path) -> tuple[list[str], list[int]]:
    with path.open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r["question"] for r in rows], [r["answer"].count("<<") for r in rows]


def _rho(router: R.Router | None, gsm8k: tuple[list[str], list[int]] | None) -> float:
    """Spearman correlation of p_strong (or, for None, the question's length) with the number of steps."""
    from scipy.stats import spearmanr

    assert gsm8k is not None
    questions, steps = gsm8k
    scores = [router.p_strong(q) if router else len(q) for q in questions]
    return float(spearmanr(scores, steps)[0])


def _show(model: R.DifficultyRouter, rows: list[dict[str, Any]], train: list[int]) -> None:
    """The hand weights, and the n-grams with the largest weights (one example n-gram per bucket)."""
    print("hand weights (per raw unit):")
    print("  " + ", ".join(f"{n} {w:+.3g}" for n, w in zip(R.HAND_FEATURES, model.hand_weights, strict=True)))
    names: dict[int, str] = {}
    for i in train:
        for b, g in R.named_buckets(rows[i]["prompt"], model.hash_bits).items():
            names.setdefault(b, g)
    top = sorted(model.ngram_weights.items(), key=lambda kv: kv[1])
    print("n-grams that lower p_strong most: " + ", ".join(f"{names.get(b, '?')!r} {w:+.2f}" for b, w in top[:15]))
    print("n-grams that raise p_strong most: " + ", ".join(f"{names.get(b, '?')!r} {w:+.2f}" for b, w in top[::-1][:15]))


if __name__ == "__main__":
    main()
