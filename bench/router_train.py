"""What ``tokenops train router`` is worth on rows it never saw: nested cross-validation on contract rows.

    .venv/bin/python bench/router_train.py ROWS.jsonl --strong M --weak M [--outer 5]

Each outer fold (by a hash of the row id, independent of the inner folds) is held out; ``train`` runs on the other
rows exactly as the command does (its own inner cross-validation, its own choice of packaged / prior / fitted),
and the router it returns is scored on the held-out fold against the packaged router and the rule prior, with
RouteLLM's metrics. Rows in the contract format of ``tokenops evaluate router`` (``bench/router_chat.py
--rows-out DIR`` writes AlpacaEval's and arena-bench's).
"""

from __future__ import annotations

import argparse
import sys
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tokenops.optimize.evaluate_router import evaluate, read_rows  # noqa: E402
from tokenops.optimize.router import DifficultyRouter, Router, RuleRouter  # noqa: E402
from tokenops.optimize.train_router import train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rows", type=Path)
    ap.add_argument("--strong", required=True)
    ap.add_argument("--weak", required=True)
    ap.add_argument("--outer", type=int, default=5)
    args = ap.parse_args()
    started = time.perf_counter()
    rows = read_rows(args.rows, args.strong, args.weak)
    packaged: Router = DifficultyRouter.load()
    sums = {"trained": 0.0, "packaged": 0.0, "prior": 0.0}
    for k in range(args.outer):
        held = [r for r in rows if zlib.crc32(("outer:" + r.id).encode()) % args.outer == k]
        rest = [r for r in rows if zlib.crc32(("outer:" + r.id).encode()) % args.outer != k]
        trained = train(rest)
        line = []
        for name, router in (("trained", trained.router), ("packaged", packaged), ("prior", RuleRouter())):
            apgr = evaluate(held, [router.p_strong(r.prompt) for r in held]).apgr or 0.0
            sums[name] += apgr
            line.append(f"{name} {apgr:.3f}")
        print(f"outer fold {k}: {len(held)} held out, {len(rest)} trained on, chose {trained.chosen}: "
              f"{', '.join(line)}", flush=True)  # fmt: skip
    print(f"{len(rows)} rows, mean held-out APGR: " + ", ".join(f"{n} {v / args.outer:.4f}" for n, v in sums.items())
          + f" ({time.perf_counter() - started:.0f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
