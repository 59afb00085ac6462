"""Soak: the gateway under steady mixed traffic for a long time, its memory sampled throughout.

    python bench/soak.py                     # 30 minutes, 20 clients
    python bench/soak.py --minutes 5         # a shorter look
    python bench/soak.py --json soak.json    # also write every sample as JSON

The traffic is what a gateway sees all day, not one request repeated: JSON calls and SSE streams on the OpenAI
and Anthropic routes, calls with fresh tag values each time (a label set that would grow without bound if
anything kept one entry per value), upstream errors (429 and 500), requests the gateway refuses (bad JSON),
models missing from the price list and clients that hang up in the middle of a stream, at ``--rate`` calls a
second (0: as fast as the clients go). Every ``--sample`` seconds the resident memory (RSS, from /proc) of the
gateway process and of each of its children (the ledger writer) is recorded.

The verdict compares the last third of the run with the middle third (the first third is warm-up: caches, the
allocator's arenas, DuckDB's buffer pool fill then): ``growth`` is the change of the median RSS between the two,
and ``slope`` the least-squares trend over the last two thirds, in MiB per hour. A leak shows as a slope that
stays positive however long the run; the run fails (exit 1) if the gateway's total RSS grew more than
``--max-growth-mib`` (default 16) from the middle third to the last, or if the ledger does not hold exactly the
calls the gateway answered.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import gateway as single  # noqa: E402  (bench/gateway.py: the fake upstream and gateway children)

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * PAGE / 2**20


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (the ledger writer and, on some Pythons, multiprocessing's tracker)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                kids = [int(x) for x in fh.read().split()]
        except OSError:
            continue
        for kid in kids:
            found.append(kid)
            found.extend(children(kid))
    return found


def command_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")
    except OSError:
        return "?"
    text = b" ".join(argv).decode(errors="replace")
    if "resource_tracker" in text:
        return "resource-tracker"
    if "multiprocessing" in text or "writer" in text:
        return "ledger-writer"
    return "child"


def pss_mib(pid: int) -> float:
    """Proportional set size: each shared page (the interpreter, DuckDB's library) counted once across the
    processes that map it, which a sum of RSS counts in each."""
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    return 0.0


def sample(pid: int) -> dict[str, float]:
    out = {"gateway": rss_mib(pid)}
    pss = pss_mib(pid)
    for kid in children(pid):
        try:
            name = command_name(kid)
            out[name] = out.get(name, 0.0) + rss_mib(kid)
            pss += pss_mib(kid)
        except OSError:
            continue
    out["total"] = sum(v for k, v in out.items())
    out["total_pss"] = pss
    return out


CONFIG = """\
ledger: duckdb:///{home}/bench.duckdb
providers:
  openai: {{base_url: "http://127.0.0.1:{port}/v1", api_key: {key}}}
  anthropic: {{base_url: "http://127.0.0.1:{port}", api_key: {key}}}
gateway: {{writer_interval: 1.0, durability: {durability}, writer: {writer}}}
"""


def make_ledger(home: Path, port: int, durability: str, writer: str) -> tuple[str, Any]:
    from tokenops.config import load_config
    from tokenops.ledger import open_ledger
    from tokenops.services.keys import create_key

    (home / "tokenops.yaml").write_text(CONFIG.format(home=home, port=port, key=single.UPSTREAM_KEY,
                                                      durability=durability, writer=writer))  # fmt: skip
    cfg = load_config(home / "tokenops.yaml")
    ledger = open_ledger(cfg.ledger, cfg.base_dir)
    _, key = create_key(ledger, "soak", {"team": "soak", "env": "dev"})
    return key, ledger


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    if len(points) < 3:
        return 0.0
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var * 3600


async def traffic(gw: str, key: str, clients: int, seconds: float, rate: float, stats: dict[str, int]) -> None:
    import aiohttp

    begun = time.monotonic()
    issued = 0

    rng = random.Random(7)
    deadline = time.monotonic() + seconds
    openai = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    anthropic = {"x-api-key": key, "anthropic-version": "2023-06-01", "content-type": "application/json"}
    chat = {"model": single.MODEL, "messages": [{"role": "user", "content": single.PROMPT}]}
    msgs = {"model": "claude-3-5-haiku-20241022", "max_tokens": 64,
            "messages": [{"role": "user", "content": single.PROMPT}]}  # fmt: skip
    seq = 0

    def request() -> tuple[str, str, dict[str, str], bytes, bool]:
        """(kind, url, headers, body, stream): one draw from the day's mix."""
        nonlocal seq
        seq += 1
        r = rng.random()
        if r < 0.40:
            return "openai-json", f"{gw}/v1/chat/completions", openai, json.dumps(chat).encode(), False
        if r < 0.55:
            body = dict(chat, stream=True, stream_options={"include_usage": True}, fake={"chunks": 8})
            return "openai-stream", f"{gw}/v1/chat/completions", openai, json.dumps(body).encode(), True
        if r < 0.70:
            return "anthropic-json", f"{gw}/v1/messages", anthropic, json.dumps(msgs).encode(), False
        if r < 0.78:
            body = dict(msgs, stream=True, fake={"chunks": 8})
            return "anthropic-stream", f"{gw}/v1/messages", anthropic, json.dumps(body).encode(), True
        if r < 0.88:  # a fresh tag value on every call
            headers = openai | {"x-tokenops-tags": f"feature=f{seq},customer=c{seq % 5000}"}
            return "fresh-tags", f"{gw}/v1/chat/completions", headers, json.dumps(chat).encode(), False
        if r < 0.93:
            body = dict(chat, fake={"status": rng.choice([429, 500])})
            return "upstream-error", f"{gw}/v1/chat/completions", openai, json.dumps(body).encode(), False
        if r < 0.96:
            return "bad-json", f"{gw}/v1/chat/completions", openai, b'{"model": "gpt-4o-mini", "messages": [', False
        if r < 0.98:
            body = dict(chat, model=f"no-such-model-{seq}")
            return "unpriced-model", f"{gw}/v1/chat/completions", openai, json.dumps(body).encode(), False
        body = dict(chat, stream=True, stream_options={"include_usage": True},
                    fake={"chunks": 40, "chunk_delay_ms": 5})  # fmt: skip
        return "hang-up", f"{gw}/v1/chat/completions", openai, json.dumps(body).encode(), True

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def client() -> None:
            nonlocal issued
            while time.monotonic() < deadline:
                if rate > 0:  # an open schedule: call i leaves at begun + i / rate
                    issued += 1
                    wait = begun + issued / rate - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                kind, url, headers, body, stream = request()
                try:
                    async with session.post(url, data=body, headers=headers) as resp:
                        if kind == "hang-up":
                            await resp.content.readany()
                            resp.close()  # drop the connection mid-stream
                        else:
                            await resp.read()
                        stats[f"{kind} {resp.status}"] = stats.get(f"{kind} {resp.status}", 0) + 1
                        if resp.status == 200 and kind != "hang-up":
                            stats["answered"] = stats.get("answered", 0) + 1
                except Exception as exc:  # count, never die: a soak must run to its end
                    stats[f"{kind} {type(exc).__name__}"] = stats.get(f"{kind} {type(exc).__name__}", 0) + 1

        await asyncio.gather(*(client() for _ in range(clients)))


async def soak(
    gateway: single.Child, key: str, args: argparse.Namespace
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    stats: dict[str, int] = {}
    samples: list[dict[str, Any]] = []
    seconds = args.minutes * 60
    start = time.monotonic()
    load = asyncio.create_task(traffic(gateway.url, key, args.clients, seconds, args.rate, stats))
    while not load.done():
        s = sample(gateway.proc.pid)
        s["t"] = round(time.monotonic() - start, 1)
        s["calls"] = sum(v for k, v in stats.items() if k != "answered")
        samples.append(s)
        print(f"  {s['t']:>7.0f} s  calls {s['calls']:>8}  RSS gateway {s['gateway']:6.1f} MiB  "
              f"total {s['total']:6.1f} MiB (PSS {s['total_pss']:6.1f})", flush=True)  # fmt: skip
        try:
            await asyncio.wait_for(asyncio.shield(load), timeout=args.sample)
        except TimeoutError:
            pass
    await load
    return samples, stats


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0, help="length of the run (default 30)")
    p.add_argument("--clients", type=int, default=20, help="concurrent clients (default 20)")
    p.add_argument("--rate", type=float, default=200.0, help="calls a second, 0 for flat out (default 200)")
    p.add_argument("--sample", type=float, default=15.0, help="seconds between memory samples (default 15)")
    p.add_argument("--max-growth-mib", type=float, default=16.0, help="fail above this growth (default 16)")
    p.add_argument("--durability", choices=("fsync", "write"), default="fsync")
    p.add_argument("--writer", choices=("process", "thread"), default="process", help="the gateway's gateway.writer")
    p.add_argument("--json", metavar="FILE", help="write the samples and the verdict as JSON")
    p.add_argument("--workdir", help="directory for the ledger and spool (default: the system temp directory)")
    args = p.parse_args()
    import uvloop

    home = Path(tempfile.mkdtemp(prefix="tokenops-soak-", dir=args.workdir))
    fake = gw = None
    try:
        fake = single.start_child("fake", home, None)
        key, ledger = make_ledger(home, fake.port, args.durability, args.writer)
        gw = single.start_child("gateway", home, None)
        print(f"TokenOps soak: {args.minutes:g} min, {args.clients} clients, durability {args.durability}; "
              f"workdir {home}", flush=True)  # fmt: skip
        samples, stats = uvloop.run(soak(gw, key, args))
        final = sample(gw.proc.pid)
        code = gw.stop()
        gw = None
        metered = ledger.count_events()
    finally:
        for child in (gw, fake):
            if child is not None:
                child.stop()
    third = max(1, len(samples) // 3)
    middle, last = samples[third : 2 * third], samples[2 * third :]
    growth = statistics.median(s["total"] for s in last) - statistics.median(s["total"] for s in middle or last)
    slope = slope_per_hour([(s["t"], s["total"]) for s in samples[third:]])
    answered = stats.get("answered", 0)
    verdict = {
        "rss_start_mib": round(samples[0]["total"], 1),
        "rss_end_mib": round(final["total"], 1),
        "pss_end_mib": round(final["total_pss"], 1),
        "rss_end_by_process_mib": {k: round(v, 1) for k, v in final.items()},
        "growth_mid_to_last_third_mib": round(growth, 1),
        "slope_mib_per_hour": round(slope, 2),
        "calls": sum(v for k, v in stats.items() if k != "answered"),
        "answered_200": answered,
        "metered": metered,
        "gateway_exit": code,
    }
    print("\noutcomes:", ", ".join(f"{k}: {v}" for k, v in sorted(stats.items())))
    print(json.dumps(verdict, indent=2))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "benchmark": "soak",
                    "when": datetime.now(UTC).isoformat(timespec="seconds"),
                    "parameters": vars(args),
                    "verdict": verdict,
                    "outcomes": stats,
                    "samples": samples,
                },
                indent=2,
            )
            + "\n"
        )
    ok = growth <= args.max_growth_mib and metered >= answered
    if not ok:
        print("FAIL: " + ("memory grew" if growth > args.max_growth_mib else "calls missing from the ledger"))
    import shutil

    shutil.rmtree(home, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
