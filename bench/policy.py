"""The policy stage's cost: the gateway with 50 budgets, 20 rules and rate limits vs the same gateway without.

Both gateways run in this process against the same in-process upstream (an ``httpx.MockTransport`` answering
a canned OpenAI completion), so the difference between them is the policy stage and its settle hook, not the
network or the provider. Calls are sequential (one at a time) to measure per-call cost, then 50 at a time.

    python bench/policy.py            # ~20 s
    python bench/policy.py --calls 5000 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import orjson

from tokenops import keys as keymod
from tokenops.app import create_app
from tokenops.config import parse_config

ANSWER = orjson.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 20, "completion_tokens": 5},
})  # fmt: skip


def upstream(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=ANSWER, headers={"content-type": "application/json"})


def policy_yaml(budgets: int, rules: int) -> str:
    lines = ["budgets:"]
    teams = [f"team{i}" for i in range(10)]
    for i in range(budgets):
        scope = {"team": teams[i % 10]} if i % 5 else {"team": teams[i % 10], "env": "prod"}
        scope_text = ", ".join(f"{k}: {v}" for k, v in scope.items())
        lines.append(f"  - {{name: b{i}, scope: {{{scope_text}}}, amount_usd: \"{1000 + i}\", period: "
                     f"{['day', 'week', 'month', 'quarter'][i % 4]}, timezone: Europe/Berlin, hard: {str(i % 2 == 0).lower()}, "
                     "thresholds: [{at: 0.5}, {at: 0.8, action: downgrade, model: gpt-4o-mini}, {at: 1.0, action: block}]}")  # fmt: skip
    lines.append("rules:")
    for i in range(rules):
        kind = i % 4
        if kind == 0:
            lines.append(f"  - {{name: r{i}, scope: {{env: dev{i}}}, deny_models: [\"gpt-4o\", \"o1*\"]}}")
        elif kind == 1:
            lines.append(f"  - {{name: r{i}, scope: {{team: team{i % 10}}}, max_output_tokens: 4096, on_exceed: clamp}}")
        elif kind == 2:
            lines.append(f"  - {{name: r{i}, max_input_tokens: {100000 + i}}}")
        else:
            lines.append(f"  - {{name: r{i}, models: [\"claude-opus-*\"], scope: {{team: team{i % 10}}}, "
                         "require_approval: true}")  # fmt: skip
    lines.append("limits:\n  - {name: rpm, per: key, requests_per_minute: 1000000, tokens_per_minute: 1000000000}")
    return "\n".join(lines)


async def measure(extra: str, calls: int, concurrency: int, tmp: Path) -> dict[str, float]:
    text = f"ledger: duckdb:///{tmp}/l.duckdb\nproviders:\n  openai: {{base_url: http://up/v1, api_key: k}}\n{extra}\n"
    cfg = parse_config(text, file=str(tmp / "tokenops.yaml"))
    gw = create_app(cfg, transport=httpx.MockTransport(upstream))
    key = keymod.generate()
    gw.ledger.insert_key(keymod.KeyRecord(id="key_b", name="bench", key_hash=keymod.hash_key(key),
                                          key_prefix=key[:10], tags={"team": "team3", "env": "prod"}))  # fmt: skip
    body = {"model": "gpt-4o-mini", "max_tokens": 64, "messages": [{"role": "user", "content": "hello " * 20}]}
    headers = {"authorization": f"Bearer {key}", "x-tokenops-tags": "feature=bench"}
    await gw.start()
    gw.spool._fsync = False  # measure the stage, not the disk (the same for both gateways)
    times: list[float] = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gw), base_url="http://gw") as client:
        for _ in range(200):  # warm-up
            await client.post("/v1/chat/completions", json=body, headers=headers)

        async def one() -> None:
            t = time.perf_counter()
            r = await client.post("/v1/chat/completions", json=body, headers=headers)
            times.append(time.perf_counter() - t)
            assert r.status_code == 200, r.text

        start = time.perf_counter()
        for i in range(0, calls, concurrency):
            await asyncio.gather(*(one() for _ in range(min(concurrency, calls - i))))
        wall = time.perf_counter() - start
    await gw.close()
    times.sort()
    return {"p50_us": times[len(times) // 2] * 1e6, "p99_us": times[int(len(times) * 0.99)] * 1e6,
            "mean_us": statistics.fmean(times) * 1e6, "throughput": calls / wall}  # fmt: skip


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--budgets", type=int, default=50)
    ap.add_argument("--rules", type=int, default=20)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results = {}
    for concurrency in (1, 50):
        for label, extra in (("no policy", ""), (f"{args.budgets} budgets + {args.rules} rules",
                                                 policy_yaml(args.budgets, args.rules))):  # fmt: skip
            with tempfile.TemporaryDirectory() as tmp:
                results[(concurrency, label)] = await measure(extra, args.calls, concurrency, Path(tmp))
    print(f"{'concurrency':>11} {'gateway':<28} {'p50 µs':>8} {'p99 µs':>8} {'mean µs':>8} {'calls/s':>8}")
    out = []
    for (concurrency, label), r in results.items():
        print(f"{concurrency:>11} {label:<28} {r['p50_us']:>8.0f} {r['p99_us']:>8.0f} {r['mean_us']:>8.0f} "
              f"{r['throughput']:>8.0f}")  # fmt: skip
        out.append({"concurrency": concurrency, "gateway": label, **r})
    for concurrency in (1, 50):
        base = results[(concurrency, "no policy")]
        pol = results[(concurrency, f"{args.budgets} budgets + {args.rules} rules")]
        print(f"concurrency {concurrency}: policy adds {pol['p50_us'] - base['p50_us']:.0f} µs at p50 "
              f"(ratio {pol['mean_us'] / base['mean_us']:.2f}x mean time, "
              f"{base['throughput'] / pol['throughput']:.2f}x less throughput)")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
