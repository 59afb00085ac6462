"""Ledger figures: how fast events go in, and how fast a month's breakdown comes out of millions of them.

Through the ledger's own interface (``Ledger.append``, ``Ledger.spend_report``), on the backend the URL names:

    python bench/ledger.py                                   # DuckDB, 10M events (~3-4 min)
    python bench/ledger.py --events 1000000                  # a quicker look
    createdb -h 127.0.0.1 -U postgres tokenops_bench    # PostgreSQL: an empty database of your choosing
    python bench/ledger.py --ledger postgresql://postgres@127.0.0.1:5432/tokenops_bench --events 10000000

Events: 60 days of calls from 40 teams, 12 features, 6 models, 200 keys and 2,000 end users, with exact prices,
in the order they happened (as a gateway's spool or a day-by-day import delivers them); appended in batches of ``--batch`` (the size the gateway's writer drains at most per segment). Then the report
the issue names, a 30-day breakdown by two tags (``--by team,feature --since 30d``), three times, and the same
by day, and a whole-period total; each time and its row count is printed. ``--json F`` writes every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from tokenops.ledger import open_ledger
from tokenops.ledger.events import SpendEvent
from tokenops.ledger.reports import ReportQuery
from tokenops.ledger.spool import Spool
from tokenops.usage import Usage

MODELS = [("openai", "gpt-4o", "2.5", "10"), ("openai", "gpt-4o-mini", "0.15", "0.6"), ("openai", "o3", "2", "8"),
          ("anthropic", "claude-sonnet-4-5", "3", "15"), ("anthropic", "claude-3-5-haiku", "0.8", "4"),
          ("openai", "text-embedding-3-small", "0.02", "0")]  # fmt: skip
M = Decimal(1_000_000)


def batches(n: int, size: int, days: int, seed: int = 7) -> object:
    rng = random.Random(seed)
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(days=days)
    span = (end - start).total_seconds()
    teams = [f"team-{i:02d}" for i in range(40)]
    features = [f"feature-{i:02d}" for i in range(12)]
    keys = [f"key_{i:012x}" for i in range(200)]
    made = 0
    counter = 0
    while made < n:
        out = []
        for _ in range(min(size, n - made)):
            provider, model, pin, pout = MODELS[rng.randrange(len(MODELS))]
            prompt = rng.randrange(20, 4000)
            completion = 0 if model.startswith("text-") else rng.randrange(5, 800)
            cost = (Decimal(prompt) * Decimal(pin) + Decimal(completion) * Decimal(pout)) / M
            counter += 1
            out.append(SpendEvent(
                request_id=f"req_bench{seed:04d}{counter:020x}",
                ts=start + timedelta(seconds=(counter + rng.random()) * span / n),
                source="bench", provider=provider, model_requested=model, model_used=model,
                route="chat.completions", usage=Usage(input_tokens=prompt, output_tokens=completion),
                cost_usd=cost.quantize(Decimal("0.000000000001")), key_id=keys[rng.randrange(200)],
                end_user=f"user-{rng.randrange(2000)}",
                tags={"team": teams[rng.randrange(40)], "feature": features[rng.randrange(12)],
                      "env": "prod" if rng.random() < 0.8 else "dev"},
                latency_ms=rng.uniform(100, 3000),
            ))  # fmt: skip
        made += len(out)
        yield out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ledger", help="ledger URL (default: a DuckDB file in a temporary folder)")
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--batch", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--via", choices=("append", "spool"), default="append",
                    help="append: Ledger.append (importers); spool: each batch written to a spool and drained "
                         "into the ledger as the gateway's writer does (the drain is what is timed)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tokenops-ledger-bench-"))
    url = args.ledger or f"duckdb:///{work / 'bench.duckdb'}"
    ledger = open_ledger(url)
    figures: dict[str, object] = {"ledger": url.split("@")[-1], "events": args.events, "batch": args.batch,
                                  "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}  # fmt: skip
    spool = Spool(work / "spool", fsync=False) if args.via == "spool" else None
    figures["via"] = args.via
    print(f"ledger {figures['ledger']}: {args.events:,} events in batches of {args.batch:,} through "
          f"{'Ledger.append' if spool is None else 'a spool and Ledger.drain'}")
    made = inserted = 0
    append_s = gen_s = 0.0
    t_gen = time.perf_counter()
    for batch in batches(args.events, args.batch, args.days):
        gen_s += time.perf_counter() - t_gen
        if spool is None:
            t0 = time.perf_counter()
            inserted += ledger.append(batch)
        else:
            spool.append_sync(batch)  # the gateway's part, not timed here
            t0 = time.perf_counter()
            while n := ledger.drain(spool.directory):
                inserted += n
        append_s += time.perf_counter() - t0
        made += len(batch)
        if made % (args.batch * 10) == 0 or made == args.events:
            print(f"  {made:>12,} events  {args.via} {made / append_s:,.0f}/s  (generating them: {made / gen_s:,.0f}/s)")
        t_gen = time.perf_counter()
    assert inserted == args.events, f"{inserted} of {args.events} inserted"
    figures["ingest_events_per_s"] = round(made / append_s)
    print(f"ingest: {figures['ingest_events_per_s']:,} events/s through "
          f"{'Ledger.append' if spool is None else 'Ledger.drain'} ({append_s:.1f} s)")

    now = datetime.now(UTC)
    reports = {
        "30d by team,feature": ReportQuery.build(["team", "feature"], since=now - timedelta(days=30)),
        "30d by team,day": ReportQuery.build(["team", "day"], since=now - timedelta(days=30)),
        "30d by team,feature in Europe/Berlin": ReportQuery.build(["team", "feature"], since=now - timedelta(days=30),
                                                                  timezone="Europe/Berlin"),  # fmt: skip
        "all by model": ReportQuery.build(["model"]),
    }
    timings: dict[str, list[float]] = {}
    for name, q in reports.items():
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            report = ledger.spend_report(q)
            times.append(time.perf_counter() - t0)
        timings[name] = times
        print(f"report {name}: {len(report.rows):,} rows, total ${report.total_cost_usd}: "
              + ", ".join(f"{t * 1000:.0f} ms" for t in times))  # fmt: skip
    figures["reports_s"] = timings
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
