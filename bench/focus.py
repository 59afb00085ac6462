"""FOCUS export figures: how fast ``tokenops export focus`` turns a month of calls into FOCUS rows, and how much
memory it takes.

    python bench/focus.py                          # 1M calls, keys that each belong to one team and feature
    python bench/focus.py --shape scattered        # every call a random key, team, feature and env (worst case)
    python bench/focus.py --events 5000000 --format parquet

Events: 30 days of calls over 6 models with exact prices (their price rows recorded, as the gateway does), 200
keys. ``--shape owned``: each key belongs to one team, feature and env (how keys are handed out), so a day's
charges are about keys x models x kinds of token; ``scattered``: every call draws its key and tags apart, so
almost every call is a charge of its own (the most rows a month of calls can give). The export streams into the
file (the CLI's path); peak memory is the process's high-water mark. The export's BilledCost is checked against
the ledger's own spend report for the same window, to the pico-dollar.
"""

from __future__ import annotations

import argparse
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from tokenops.ledger import open_ledger
from tokenops.ledger.events import SpendEvent
from tokenops.ledger.reports import ReportQuery
from tokenops.pricing.model import PriceRow, price_usage
from tokenops.services.focus import FocusExport, focus_rows, write_focus
from tokenops.usage import Usage

MODELS = [("openai", "gpt-4o", "2.5", "1.25", "10"), ("openai", "gpt-4o-mini", "0.15", "0.075", "0.6"),
          ("openai", "o3", "2", "0.5", "8"), ("anthropic", "claude-sonnet-4-5", "3", "0.3", "15"),
          ("anthropic", "claude-3-5-haiku", "0.8", "0.08", "4"), ("openai", "text-embedding-3-small", "0.02", None, "0")]  # fmt: skip


def rows() -> dict[str, PriceRow]:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    return {m: PriceRow(provider=p, model=m, effective_from=start, source="bench", input_per_mtok=Decimal(i),
                        cache_read_per_mtok=None if c is None else Decimal(c), output_per_mtok=Decimal(o))
            for p, m, i, c, o in MODELS}  # fmt: skip


def events(n: int, shape: str, end: datetime, seed: int = 7) -> object:
    rng = random.Random(seed)
    prices = rows()
    keys = [f"key_{i:04d}" for i in range(200)]
    owner = {k: {"team": f"team-{i % 40:02d}", "feature": f"feature-{i % 12:02d}", "env": "prod" if i % 5 else "dev"}
             for i, k in enumerate(keys)}  # fmt: skip
    span = 30 * 86400
    batch: list[SpendEvent] = []
    for i in range(n):
        provider, model, *_ = MODELS[rng.randrange(len(MODELS))]
        key = keys[rng.randrange(200)]
        tags = owner[key] if shape == "owned" else {"team": f"team-{rng.randrange(40):02d}",
                                                     "feature": f"feature-{rng.randrange(12):02d}",
                                                     "env": rng.choice(("prod", "dev"))}  # fmt: skip
        prompt = rng.randrange(20, 4000)
        cached = int(prompt * rng.uniform(0.3, 0.9)) if rng.random() < 0.3 and not model.startswith("text-") else 0
        out = 0 if model.startswith("text-") else rng.randrange(5, 800)
        usage = Usage(input_tokens=prompt, cache_read_tokens=cached, output_tokens=out,
                      reasoning_tokens=out // 2 if model == "o3" else 0)  # fmt: skip
        row = prices[model]
        batch.append(SpendEvent(
            request_id=f"req_focusbench{seed:04d}{i:016x}", ts=end - timedelta(seconds=span * (i + 0.5) / n),
            source="bench", provider=provider, model_requested=model, model_used=model, usage=usage,
            cost_usd=price_usage(usage, row).total, price_row_id=row.id, key_id=key, tags=tags,
        ))  # fmt: skip
        if len(batch) == 100_000:
            yield batch
            batch = []
    if batch:
        yield batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ledger", help="ledger URL (default: a DuckDB file in a temporary folder)")
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--shape", choices=("owned", "scattered"), default="owned")
    ap.add_argument("--granularity", choices=("day", "hour"), default="day")
    ap.add_argument("--format", choices=("csv", "parquet"), default="csv")
    ap.add_argument("--write-only", metavar="END", help=argparse.SUPPRESS)  # the child that fills the ledger
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tokenops-focus-bench-"))
    url = args.ledger or f"duckdb:///{work / 'bench.duckdb'}"
    if args.write_only:
        ledger = open_ledger(url)
        for batch in events(args.events, args.shape, datetime.fromisoformat(args.write_only)):  # type: ignore[attr-defined]
            ledger.append(batch, rows().values())
        ledger.close()
        return
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    t0 = time.perf_counter()  # in a child process, so that the peak memory below is the export's alone
    subprocess.run([sys.executable, __file__, "--ledger", url, "--events", str(args.events), "--shape", args.shape,
                    "--write-only", end.isoformat()], check=True)  # fmt: skip
    print(f"{args.events:,} calls ({args.shape}) written in {time.perf_counter() - t0:.1f} s")
    ledger = open_ledger(url)
    since = end - timedelta(days=30)
    export = FocusExport(since, end, args.granularity)
    out = work / f"focus.{args.format}"
    t0 = time.perf_counter()
    write_focus(export, out, focus_rows(ledger, export))
    took = time.perf_counter() - t0
    total = ledger.spend_report(ReportQuery.build([], since=since, until=end)).total_cost_usd
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"export: {export.calls:,} calls -> {export.row_count:,} FOCUS rows ({args.granularity}) in {took:.1f} s: "
          f"{export.calls / took:,.0f} calls/s, {export.row_count / took:,.0f} rows/s; {out.stat().st_size / 1e6:.0f} MB "
          f"{args.format}; peak memory {peak:,.0f} MB")  # fmt: skip
    same = "=" if export.billed == total else "!="
    print(f"BilledCost {export.billed} {same} the ledger's spend {total}")
    if export.billed != total:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
