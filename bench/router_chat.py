"""The difficulty router on chat prompts: public per-prompt judge labels for a strong and a weak model.

    .venv/bin/python bench/router_chat.py --alpaca-eval ALPACA_EVAL --arena-hard ARENA_HARD [--rows-out DIR]
    .venv/bin/python bench/router_chat.py --alpaca-eval A --arena-hard H --learn [--gsm8k-train train.jsonl]

``ALPACA_EVAL`` and ``ARENA_HARD`` are a checkout, or a bare git directory, of ``tatsu-lab/alpaca_eval`` and of
``lmarena/arena-hard-auto`` (both Apache-2.0). Nothing is copied into this repository.

* **AlpacaEval** (805 instructions; ``results/<model>/<annotator>/annotations.json`` at the repository's HEAD):
  the GPT-4-Turbo judge's preference between ``gpt4_1106_preview`` (the baseline, output 1) and ``<model>``
  (output 2), 1 or 2 (``alpaca_eval_gpt4_turbo_fn``) or a probability in [1, 2] (``weighted_alpaca_eval_gpt4_turbo``).
  Pair: gpt-4-1106-preview (strong) against Mixtral-8x7B-Instruct-v0.1 (weak, ``alpaca_eval_gpt4_turbo_fn``);
  a row's scores are the judge's preference for each (strong ``2 - p``, weak ``p - 1``).
* **arena-bench-v1** (300 Chatbot Arena prompts; ``data/arena-bench-v1/`` at commit :data:`ARENA_BENCH_COMMIT`,
  removed from the repository later): GPT-4 grades each model's answer 1-10 against a GPT-4 reference answer (the
  MT-Bench single-answer format). Pair: gpt-4-1106-preview (``gpt-4-turbo.jsonl``) against Mixtral-8x7B; a row's
  scores are grade / 10. Rows where either grade failed to parse are dropped.

Besides the pair, each source has many other models judged on the same prompts. The **weak consensus** of a
prompt is the strong model's mean win rate (a tie counting half) against every weak model of the source: a
per-prompt "how much does a strong model help here" with much less judge noise than one pair. It is the training
target of ``--learn``; the evaluation is always on the pair.

``--learn`` fits a *chat correction* (a logistic model over the standardized hand features and, optionally, the
hashed n-grams, on top of the rule prior, L2-penalized) and reports it honestly: 5-fold cross-validation by prompt
within each source, and across sources (train on AlpacaEval, test on arena-bench, and the reverse). No MT-Bench and
no GSM8K test data is read, for training or for any choice.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tokenops.optimize import router as R  # noqa: E402
from tokenops.optimize.evaluate_router import EvalRow, evaluate  # noqa: E402

STRONG = "gpt-4-1106-preview"
WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"
ARENA_BENCH_COMMIT = "ac4ad9a"  # lmarena/arena-hard-auto, 2023-12-12 "add mixtral": the last with arena-bench-v1
AE_PAIR = "results/Mixtral-8x7B-Instruct-v0.1/alpaca_eval_gpt4_turbo_fn/annotations.json"
AE_ANNOTATORS = ("weighted_alpaca_eval_gpt4_turbo", "alpaca_eval_gpt4_turbo_fn")  # GPT-4-Turbo judge, no CoT
# AlpacaEval results that are not a model's plain answers: attacks on the judge, prompt variants of a model, and
# the baseline itself
AE_SKIP = ("NullModel", "gpt4_gamed", "gpt4_1106_preview")
AE_SKIP_SUFFIXES = ("_concise", "_verbose")
AB_STRONG = ("gpt-4-1106-preview", "gpt-4-0314")  # arena-bench-v1 models of the strong class (not in the consensus)
SEED = 0


@dataclass
class Source:
    """One source's prompts with the pair's scores and the weak consensus (the strong model's win rate)."""

    name: str
    ids: list[str]
    prompts: list[str]
    strong: list[float]  # the pair's scores, 0..1
    weak: list[float]
    consensus: list[float]  # the strong model's mean win rate against the source's weak models
    weak_models: list[str] = field(default_factory=list)

    def rows(self, idx: list[int] | None = None) -> list[EvalRow]:
        idx = list(range(len(self.ids))) if idx is None else idx
        return [EvalRow(self.ids[i], self.prompts[i], self.strong[i], self.weak[i]) for i in idx]


class Repo:
    """Files of a repository, from a checkout or a bare git directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.bare = not (path / ".git").exists() and (path / "HEAD").is_file()

    def read(self, name: str, rev: str = "HEAD") -> bytes | None:
        if not self.bare and rev == "HEAD":
            f = self.path / name
            return f.read_bytes() if f.is_file() else None
        git = ["git", f"--git-dir={self.path}"] if self.bare else ["git", "-C", str(self.path)]
        done = subprocess.run([*git, "show", f"{rev}:{name}"], capture_output=True, check=False)
        return done.stdout if done.returncode == 0 else None

    def names(self, under: str, rev: str = "HEAD") -> list[str]:
        git = ["git", f"--git-dir={self.path}"] if self.bare else ["git", "-C", str(self.path)]
        done = subprocess.run([*git, "ls-tree", "-r", "--name-only", rev, under], capture_output=True, text=True,
                              check=True)  # fmt: skip
        return done.stdout.split()


def load_alpaca_eval(path: Path, min_judged: int = 800) -> Source:
    repo = Repo(path)
    pair = json.loads(repo.read(AE_PAIR) or b"null")
    if not pair:
        raise SystemExit(f"{path}: no {AE_PAIR}")
    prompts = [a["instruction"] for a in pair]
    index = {p: i for i, p in enumerate(prompts)}
    strong = [2.0 - float(a["preference"]) for a in pair]
    wins: list[list[float]] = [[] for _ in prompts]
    used: list[tuple[str, str]] = []
    for name in repo.names("results"):
        parts = name.split("/")
        if len(parts) != 4 or parts[3] != "annotations.json" or parts[2] not in AE_ANNOTATORS:
            continue
        model = parts[1]
        if model in AE_SKIP or model.endswith(AE_SKIP_SUFFIXES):
            continue
        raw = repo.read(name)
        if raw is None:  # a file the snapshot lists but does not hold
            continue
        annotations = json.loads(raw)
        if any(a.get("generator_1") != "gpt4_1106_preview" for a in annotations):
            continue
        pref = {index[a["instruction"]]: 2.0 - float(a["preference"]) for a in annotations
                if a.get("instruction") in index and a.get("preference") is not None}  # fmt: skip
        if len(pref) < min_judged or sum(pref.values()) / len(pref) < 0.5:
            continue  # not judged on (almost) every instruction, or not weaker than the baseline
        if any(u[0] == model for u in used):
            continue  # one annotator per model (the first listed)
        used.append((model, parts[2]))
        for i, w in pref.items():
            wins[i].append(w)
    consensus = [sum(w) / len(w) for w in wins]
    return Source("alpaca_eval", [f"alpacaeval-{i:03d}" for i in range(len(prompts))], prompts, strong,
                  [1.0 - s for s in strong], consensus, [f"{m} ({a})" for m, a in used])  # fmt: skip


def load_arena_bench(path: Path, rev: str = ARENA_BENCH_COMMIT) -> Source:
    repo = Repo(path)
    base = "data/arena-bench-v1"
    questions = [json.loads(line) for line in (repo.read(f"{base}/question.jsonl", rev) or b"").splitlines()]
    if not questions:
        raise SystemExit(f"{path}: no {base}/question.jsonl at {rev}")
    grades: dict[str, dict[str, float]] = {}
    for name in repo.names(f"{base}/model_judgment", rev):
        raw = repo.read(name, rev)
        if raw is None:
            continue
        for line in raw.splitlines():
            j = json.loads(line)
            try:
                g = float(j["score"])
            except (TypeError, ValueError, KeyError):
                continue
            if 1 <= g <= 10:
                grades.setdefault(j["model"].split("/")[-1], {})[j["question_id"]] = g
    s_model, w_model = STRONG, WEAK.split("/")[-1]
    weak_models = sorted(m for m in grades if m not in AB_STRONG)
    ids, prompts, strong, weak, consensus = [], [], [], [], []
    for q in questions:
        qid = q["question_id"]
        s, w = grades[s_model].get(qid), grades[w_model].get(qid)
        if s is None or w is None:
            continue
        wins = [1.0 if s > o[qid] else 0.5 if s == o[qid] else 0.0 for m in weak_models if qid in (o := grades[m])]
        ids.append(f"arenabench-{qid}")
        prompts.append(q["turns"][0])
        strong.append(s / 10)
        weak.append(w / 10)
        consensus.append(sum(wins) / len(wins))
    return Source("arena_bench", ids, prompts, strong, weak, consensus, weak_models)


def write_contract(path: Path, src: Source) -> None:
    with path.open("w", encoding="utf-8") as f:
        for i in range(len(src.ids)):
            f.write(json.dumps({"id": src.ids[i], "prompt": src.prompts[i],
                                "scores": {STRONG: src.strong[i], WEAK: src.weak[i]}}) + "\n")  # fmt: skip


def figures(scores: list[float], rows: list[EvalRow]) -> dict[str, Any]:
    rep = evaluate(rows, scores)
    return {"n": rep.n, "cpt50": rep.cpt50, "cpt80": rep.cpt80, "apgr": rep.apgr}


def random_figures(rows: list[EvalRow], iters: int = 100) -> dict[str, Any]:
    out = []
    for k in range(iters):
        rng = random.Random(SEED + k)
        out.append(figures([rng.random() for _ in rows], rows))
    fig: dict[str, Any] = {key: sum(o[key] or 0.0 for o in out) / iters for key in ("cpt50", "cpt80", "apgr")}
    return fig | {"n": len(rows)}


def fmt(fig: dict[str, Any]) -> str:
    def pct(x: float | None) -> str:
        return "   -   " if x is None else f"{x * 100:6.1f}%"

    return f"CPT(50%) {pct(fig['cpt50'])}  CPT(80%) {pct(fig['cpt80'])}  APGR {fig['apgr']:.3f}"


def spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b)[0])


# ---- --learn: a chat correction on top of the prior, evaluated by prompt CV and across sources ----

LAMBDA_HAND = (0.01, 0.1, 1.0, 10.0)
LAMBDA_GRAMS = (0.01, 0.1, 1.0)
HASH_BITS = 18
MIN_DOCS = 3  # an n-gram is a feature when at least this many training prompts have it


class Features:
    """A source's hand features, n-gram buckets, prior logits and targets, computed once."""

    def __init__(self, src: Source) -> None:
        import numpy as np

        rule = R.RuleRouter()
        self.src = src
        self.rows = src.rows()
        self.hand = np.array([R.hand_features(p) for p in src.prompts])
        self.grams = [sorted(R.gram_buckets(p, HASH_BITS)) for p in src.prompts]
        self.prior = np.array([rule.score(p) for p in src.prompts])
        self.target = {
            "pair": (1 + np.array(src.strong) - np.array(src.weak)) / 2,
            "consensus": np.array(src.consensus),
        }


@dataclass
class Correction:
    bias: float
    hand: Any  # weights per raw hand feature
    grams: dict[int, float]

    def scores(self, F: Features, idx: list[int]) -> list[float]:
        """The logit of each row: the prior plus this correction."""
        out = []
        for i in idx:
            z = float(F.prior[i]) + self.bias + float(F.hand[i] @ self.hand)
            g = F.grams[i]
            if g and self.grams:
                z += sum(self.grams.get(b, 0.0) for b in g) / math.sqrt(len(g))
            out.append(z)
        return out


def fit(parts: list[tuple[Features, list[int]]], target: str, lambda_hand: float, lambda_grams: float | None
        ) -> Correction:  # fmt: skip
    """A logistic model of ``target`` on top of the prior logit: standardized hand features and (unless
    ``lambda_grams`` is None) hashed n-grams scaled by 1/sqrt(#n-grams), L2 penalties towards 0 (the prior)."""
    import numpy as np
    from scipy import optimize, sparse

    H = np.vstack([F.hand[idx] for F, idx in parts])
    offset = np.concatenate([F.prior[idx] for F, idx in parts])
    t = np.concatenate([F.target[target][idx] for F, idx in parts])
    G = [F.grams[i] for F, idx in parts for i in idx]
    mu, sd = H.mean(0), H.std(0)
    sd[sd == 0] = 1.0
    Hs = (H - mu) / sd
    df: dict[int, int] = {}
    for g in G:
        for b in g:
            df[b] = df.get(b, 0) + 1
    vocab = sorted(b for b, c in df.items() if c >= MIN_DOCS) if lambda_grams is not None else []
    col = {b: j for j, b in enumerate(vocab)}
    r_, c_, v_ = [], [], []
    for a, g in enumerate(G):
        for b in g:
            if (j := col.get(b)) is not None:
                r_.append(a)
                c_.append(j)
                v_.append(1.0 / math.sqrt(len(g)))
    M = sparse.csr_matrix((v_, (r_, c_)), shape=(len(G), len(vocab)))
    n, h = H.shape
    lg = lambda_grams or 0.0

    def loss(w: Any) -> tuple[float, Any]:
        b, wh, wg = w[0], w[1 : 1 + h], w[1 + h :]
        z = offset + b + Hs @ wh + M @ wg
        value = float(np.sum(np.logaddexp(0.0, z) - t * z)) / n + 0.5 * (lambda_hand * wh @ wh + lg * wg @ wg)
        g = (1.0 / (1.0 + np.exp(-z)) - t) / n
        return value, np.concatenate(([g.sum()], Hs.T @ g + lambda_hand * wh, M.T @ g + lg * wg))

    w = optimize.minimize(loss, np.zeros(1 + h + len(vocab)), jac=True, method="L-BFGS-B",
                          options={"maxiter": 3000}).x  # fmt: skip
    return Correction(float(w[0] - np.sum(w[1 : 1 + h] * mu / sd)), w[1 : 1 + h] / sd,
                      dict(zip(vocab, map(float, w[1 + h :]), strict=True)))  # fmt: skip


def _folds(n: int, k: int = 5) -> list[list[int]]:
    order = list(range(n))
    random.Random(SEED).shuffle(order)
    return [[order[i] for i in range(n) if i % k == j] for j in range(k)]


def cv_apgr(F: Features, target: str, lh: float, lg: float | None) -> float:
    """Mean APGR (on the pair) over 5 folds by prompt, the correction fitted on the other 4."""
    out = []
    for te in _folds(len(F.rows)):
        held = set(te)
        c = fit([(F, [i for i in range(len(F.rows)) if i not in held])], target, lh, lg)
        out.append(figures(c.scores(F, te), [F.rows[i] for i in te])["apgr"] or 0.0)
    return sum(out) / len(out)


def learn(sources: list[Source]) -> None:
    feats = [Features(s) for s in sources]
    everything = {F.src.name: list(range(len(F.rows))) for F in feats}
    print("\nchat correction on top of the prior (APGR on the pair; the prior alone is rules-v1 above):")
    for target in ("pair", "consensus"):
        for grams in (False, True):
            design = f"target {target}, hand features{' + n-grams' if grams else ''}"
            grid = [(lh, lg) for lh in LAMBDA_HAND for lg in (LAMBDA_GRAMS if grams else (None,))]
            for F, G in ((feats[0], feats[1]), (feats[1], feats[0])):
                # penalties chosen by 5-fold CV on the training source only, then fitted on all of it
                scored = [(cv_apgr(F, target, lh, lg), lh, lg) for lh, lg in grid]
                best, lh, lg = max(scored, key=lambda s: (round(s[0], 3), s[1], s[2] or 0.0))
                c = fit([(F, everything[F.src.name])], target, lh, lg)
                cross = figures(c.scores(G, everything[G.src.name]), G.rows)
                prior = figures(list(G.prior), G.rows)
                print(f"  {design}: train {F.src.name} (CV APGR {best:.3f}, lambda_hand {lh:g}"
                      f"{'' if lg is None else f', lambda_grams {lg:g}'}) -> test {G.src.name}: {fmt(cross)}"
                      f"  [prior {prior['apgr']:.3f}]", flush=True)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--alpaca-eval", type=Path, required=True, help="tatsu-lab/alpaca_eval: checkout or git dir")
    ap.add_argument("--arena-hard", type=Path, required=True, help="lmarena/arena-hard-auto: checkout or git dir")
    ap.add_argument("--rows-out", type=Path, help="write each source's pair as contract JSONL here")
    ap.add_argument("--learn", action="store_true", help="also: fit a chat correction, CV by prompt and across sources")
    args = ap.parse_args()

    sources = [load_alpaca_eval(args.alpaca_eval), load_arena_bench(args.arena_hard)]
    shipped, rules = R.DifficultyRouter.load(), R.RuleRouter()
    for src in sources:
        rows = src.rows()
        sq, wq = sum(src.strong) / len(rows), sum(src.weak) / len(rows)
        print(f"{src.name}: {len(rows)} prompts; {STRONG} {sq:.3f}, {WEAK} {wq:.3f}; weak consensus of "
              f"{len(src.weak_models)} models: strong win rate {sum(src.consensus) / len(rows):.3f}; "
              f"Spearman(pair strong-weak, consensus) "
              f"{spearman([s - w for s, w in zip(src.strong, src.weak, strict=True)], src.consensus):.3f}")  # fmt: skip
        if args.rows_out:
            args.rows_out.mkdir(parents=True, exist_ok=True)
            write_contract(args.rows_out / f"{src.name}.jsonl", src)
        for name, router in (("difficulty-v1 (shipped)", shipped), ("rules-v1", rules)):
            print(f"  {name:28s} {fmt(figures([router.p_strong(p) for p in src.prompts], rows))}")
        print(f"  {'length (chars)':28s} {fmt(figures([float(len(p)) for p in src.prompts], rows))}")
        print(f"  {'random (100 seeds)':28s} {fmt(random_figures(rows))}")
    if args.learn:
        learn(sources)


if __name__ == "__main__":
    main()
