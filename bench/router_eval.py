"""The difficulty router's published figures, reproduced by one command:

    .venv/bin/python bench/router_eval.py [--output-tokens 256] [--keep DIR] [--latency]

It writes the held-out MMLU rows (the subjects ``bench/train_router.py`` never trains on) in the contract's JSONL
format (``{"id", "prompt", "scores": {model: 0|1}}``, no ``costs``: dollars come from the price catalog) to a
temporary directory, runs ``tokenops evaluate router`` on them with the shipped weights and with the rule
fallback, and prints the figures beside the ones RouteLLM publishes for MMLU.

With ``--latency`` it also times ``p_strong`` (one process, one thread, as the gateway calls it) on prompts of
several sizes made of the held-out questions, and prints the median and 99th percentile per call.

Data: ``/work/shared/data/router/mmlu.jsonl.gz`` (RouteLLM's MMLU correctness labels, see its README).
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "src"))

from train_router import ARTIFACT_SUBJECTS, DATA, held_out_subjects  # noqa: E402

STRONG = "gpt-4-1106-preview"
WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"

# RouteLLM: Ong et al., "RouteLLM: Learning to Route LLMs with Preference Data" (arXiv:2406.18665), Table 2,
# 5-shot MMLU, gpt-4-1106-preview vs Mixtral 8x7B, all 14,037 uncontaminated questions. Their routers train on
# Chatbot Arena preferences (D_arena), augmented with ~1,500 golden labels from MMLU's *validation* split (D_gold),
# i.e. on the same 57 subjects they are tested on.
ROUTELLM_MMLU = [
    ("Random (95% CI)", "-", 50.07, 79.93, 0.500),
    ("BERT", "D_arena", 49.43, 77.80, 0.502),
    ("Causal LLM", "D_arena", 48.88, 77.93, 0.499),
    ("Matrix Factorization", "D_arena", 45.00, 76.86, 0.524),
    ("SW Ranking", "D_arena", 55.82, 80.25, 0.473),
    ("BERT", "D_arena + D_gold", 41.30, 72.20, 0.572),
    ("Causal LLM", "D_arena + D_gold", 35.49, 70.31, 0.600),
    ("Matrix Factorization", "D_arena + D_gold", 35.46, 71.40, 0.597),
    ("SW Ranking", "D_arena + D_gold", 35.40, 71.55, 0.603),
]

# Runs the command as `tokenops evaluate router` does, also before the `evaluate` group is registered in the CLI.
_RUNNER = """
import sys, typer
from tokenops.cli.evaluate_router import router
from tokenops.errors import TokenOpsError
evaluate = typer.Typer(); evaluate.command("router")(router)
app = typer.Typer(); app.add_typer(evaluate, name="evaluate")
try:
    app(sys.argv[1:])
except TokenOpsError as exc:
    print(f"error: {exc}", file=sys.stderr); sys.exit(2)
"""


def write_contract_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({"id": r["id"], "prompt": r["prompt"],
                                "scores": {STRONG: int(r["strong_correct"]), WEAK: int(r["weak_correct"])}}) + "\n")  # fmt: skip


def tokenops_evaluate_router(*args: str) -> dict[str, Any]:
    cmd = [sys.executable, "-c", _RUNNER, "evaluate", "router", *args, "--format", "json"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise SystemExit(f"tokenops evaluate router failed ({done.returncode}): {done.stderr.strip()}")
    out: dict[str, Any] = json.loads(done.stdout)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--output-tokens", type=int, default=256, help="output tokens assumed per call (pricing)")
    ap.add_argument("--keep", type=Path, help="write the contract JSONL and the scores here instead of a temp dir")
    ap.add_argument("--latency", action="store_true", help="also time p_strong per call")
    args = ap.parse_args()

    with gzip.open(args.data, "rt", encoding="utf-8") as f:
        rows = [r for r in map(json.loads, f) if not r["contaminated"]]
    held = held_out_subjects(rows)
    test = [r for r in rows if r["subject"] in held]
    with tempfile.TemporaryDirectory() as tmp:
        where = args.keep or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        data = where / "mmlu-heldout.jsonl"
        write_contract_rows(data, test)
        common = ["--data", str(data), "--strong", STRONG, "--weak", WEAK, "--output-tokens", str(args.output_tokens)]
        learned = tokenops_evaluate_router(*common, "--scores-out", str(where / "scores-difficulty-v1.jsonl"))
        rules = tokenops_evaluate_router(*common, "--rules", "--scores-out", str(where / "scores-rules-v1.jsonl"))
        print(f"held-out MMLU: {learned['n']} questions in {len(held)} subjects never trained on "
              f"({', '.join(sorted(held))}); {ARTIFACT_SUBJECTS[0]} is not trained on either")  # fmt: skip
        print(f"  {STRONG} accuracy {learned['strong_quality']:.4f}, {WEAK} accuracy {learned['weak_quality']:.4f}")
        print(f"  written to {data}" if args.keep else "  (in a temporary directory; --keep DIR keeps it)")
        print()
        print(f"{'router':42s} {'CPT(50%)':>9s} {'CPT(80%)':>9s} {'APGR':>7s}")
        for name, doc in (("TokenOps difficulty-v1 (held out)", learned), ("TokenOps rules-v1 (held out)", rules)):
            print(f"{name:42s} {doc['cpt50'] * 100:8.2f}% {doc['cpt80'] * 100:8.2f}% {doc['apgr']:7.3f}")
        print("RouteLLM, paper Table 2 (all of MMLU, 5-shot; routers trained on other data, +D_gold = MMLU validation):")
        for name, data_name, c50, c80, apgr in ROUTELLM_MMLU:
            label = f"  {name} [{data_name}]"
            print(f"{label:42s} {c50:8.2f}% {c80:8.2f}% {apgr:7.3f}")
        print()
        d = learned["dollars"]
        models = learned["pricing"]["models"] or {}
        for m in (STRONG, WEAK):
            row = models.get(m)
            priced = (f"{row['provider']}/{row['catalog_model']} at ${row['input_per_mtok']} in, "
                      f"${row['output_per_mtok']} out per Mtok" if row else "unpriced")  # fmt: skip
            print(f"price of {m}: {priced}")
        print(f"dollars ({args.output_tokens} output tokens assumed per call, input tokens estimated from the prompt):")
        print(f"  always {STRONG}: ${d['always_strong_usd']}   always {WEAK}: ${d['always_weak_usd']}")
        for key, label in (("at_cpt50", "CPT(50%)"), ("at_cpt80", "CPT(80%)")):
            op = d[key]
            share = op["strong_share"] * 100 if op["strong_share"] is not None else float("nan")
            print(f"  at {label}: {share:.1f}% strong calls, quality {op['quality']:.4f}, cost ${op['cost_usd']}, "
                  f"saved ${op['saved_usd']} vs always strong")  # fmt: skip
        print()
        print("curve (difficulty-v1): strong calls -> accuracy, cost")
        for c in learned["curve"]:
            print(f"  {c['strong_share'] * 100:6.1f}% -> {c['quality']:.4f}  ${c['cost_usd']}  (saved ${c['saved_usd']})")
    if args.latency:
        latency([r["prompt"] for r in test])


def latency(prompts: list[str]) -> None:
    """Median and p99 of one p_strong call, per prompt size: slices of the held-out questions with their options
    (multiple choice: the learned correction runs) and of their stems alone (prose: the prior alone)."""
    import statistics
    import time

    from tokenops.optimize.router import DifficultyRouter, RuleRouter

    learned = DifficultyRouter.load()
    texts = {"multiple choice": "\n\n".join(prompts),
             "prose": " ".join(p.split("\nA.")[0].strip() for p in prompts)}  # fmt: skip
    print()
    print("p_strong latency per call (this machine, one thread):")
    for kind, text in texts.items():
        for size in (500, 3000, 8000, 100_000):
            samples = [text[i * size : (i + 1) * size] for i in range(min(200, len(text) // size))]
            for name, router in (("difficulty-v1", learned), ("rules-v1", RuleRouter())):
                times = []
                for _ in range(3):
                    for prompt in samples:
                        t0 = time.perf_counter()
                        router.p_strong(prompt)
                        times.append(time.perf_counter() - t0)
                times.sort()
                p99 = times[int(len(times) * 0.99) - 1]
                print(f"  {kind:15s} {size:>7,} chars, {name:13s}: median {statistics.median(times) * 1e3:.3f} ms, "
                      f"p99 {p99 * 1e3:.3f} ms ({len(times)} calls)")  # fmt: skip


if __name__ == "__main__":
    main()
