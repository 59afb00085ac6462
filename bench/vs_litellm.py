"""TokenOps vs LiteLLM's proxy: throughput on the same fake upstream, in the same run.

DESIGN.md §6 asks for at least 5x the throughput of LiteLLM's proxy. LiteLLM is not a TokenOps dependency, so
it runs from its own virtual environment (its pins clash with ours):

    python3 -m venv /tmp/litellm-venv && /tmp/litellm-venv/bin/pip install 'litellm[proxy]'
    .venv/bin/python bench/vs_litellm.py --litellm /tmp/litellm-venv/bin/litellm [--quick]

Placement as in bench/gateway.py: the proxy under test alone on one core, the fake upstream and this load
generator on the other. Each proxy is measured in alternating rounds at 100 concurrent clients, JSON answers
and SSE streams. Both proxies authenticate the client and forward to the same upstream. TokenOps also prices
every call, fsyncs it to its spool and meters it into DuckDB; LiteLLM runs without a database (it needs
PostgreSQL for spend logs), so it does less work per call than in a typical deployment.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import gateway as gw  # noqa: E402  (bench/gateway.py: children, load generator, statistics)

MASTER_KEY = "sk-bench-litellm-master-key-0123456789"
LITELLM_CONFIG = """\
model_list:
  - model_name: {model}
    litellm_params:
      model: openai/{model}
      api_base: http://127.0.0.1:{port}/v1
      api_key: {key}
litellm_settings:
  drop_params: true
"""


def start_litellm(binary: str, home: Path, fake_port: int, cpu: int | None) -> gw.Child:
    (home / "litellm.yaml").write_text(LITELLM_CONFIG.format(model=gw.MODEL, port=fake_port, key=gw.UPSTREAM_KEY))
    port = gw_free_port()
    env = {**os.environ, "LITELLM_MASTER_KEY": MASTER_KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "LITELLM_LOG": "ERROR"}  # fmt: skip
    log = open(home / "litellm.log", "w")
    proc = subprocess.Popen(
        [binary, "--config", str(home / "litellm.yaml"), "--host", "127.0.0.1", "--port", str(port),
         "--num_workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, env=env, text=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None,
    )  # fmt: skip
    child = gw.Child("litellm", proc, port)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(child.url + "/health/liveliness", timeout=2)
            return child
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("LiteLLM did not start:\n" + (home / "litellm.log").read_text()[-3000:])


def gw_free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def measure(targets: list[gw.Target], kind: str, n: int, seconds: float, rounds: int) -> dict[str, gw.Run]:
    import aiohttp

    stream = kind == "stream"
    payload: dict[str, Any] = {"model": gw.MODEL, "messages": [{"role": "user", "content": gw.PROMPT}],
                               "max_tokens": 64}  # fmt: skip
    if stream:
        payload |= {"stream": True, "stream_options": {"include_usage": True},
                    "fake": {"chunks": 20, "chunk_delay_ms": 20.0}}  # fmt: skip
    body = json.dumps(payload).encode()
    runs = {t.mode: gw.Run() for t in targets}
    sessions = {t.mode: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100), auto_decompress=False,
                                              timeout=aiohttp.ClientTimeout(total=300))  # fmt: skip
                for t in targets}
    try:
        for t in targets:  # warm-up
            await gw.drive(sessions[t.mode], t, body, 200, 100, stream, gw.Run(), 5.0)
        for rnd in range(rounds):
            for t in targets if rnd % 2 == 0 else targets[::-1]:
                start = time.perf_counter()
                await gw.drive(sessions[t.mode], t, body, n // rounds, 100, stream, runs[t.mode], seconds / rounds)
                runs[t.mode].elapsed += time.perf_counter() - start
    finally:
        for s in sessions.values():
            await s.close()
    return runs


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--litellm", default="litellm", help="the litellm executable (from its own venv)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args()
    import uvloop

    cores = sorted(os.sched_getaffinity(0))
    shared, own = (cores[0], cores[1]) if len(cores) >= 2 else (None, None)
    home = Path(tempfile.mkdtemp(prefix="tokenops-vs-litellm-"))
    fake = tokenops = litellm = None
    results: dict[str, Any] = {}
    try:
        fake = gw.start_child("fake", home, shared)
        key, _ = gw.make_ledger(home, fake.port)
        tokenops = gw.start_child("gateway", home, own)
        litellm = start_litellm(args.litellm, home, fake.port, own)
        if shared is not None:
            os.sched_setaffinity(0, {shared})
        h = {"content-type": "application/json"}
        targets = [
            gw.Target("tokenops", tokenops.url + "/v1/chat/completions", h | {"authorization": f"Bearer {key}"},
                      tokenops),
            gw.Target("litellm", litellm.url + "/v1/chat/completions", h | {"authorization": f"Bearer {MASTER_KEY}"},
                      litellm),
        ]  # fmt: skip
        # one proxy runs at a time on the shared core: stop the other from competing by measuring alternately
        for kind, n in (("json", 3000), ("stream", 800)):
            n = n // (4 if args.quick else 1)
            runs = uvloop.run(measure(targets, kind, n, 40.0 / (4 if args.quick else 1), 4))
            row = {}
            for mode, r in runs.items():
                row[mode] = {"requests": len(r.latency), "errors": len(r.errors),
                             "rps": round(len(r.latency) / r.elapsed, 1) if r.elapsed else 0.0,
                             "p50_ms": round(gw.pct(r.latency, 50), 2), "p99_ms": round(gw.pct(r.latency, 99), 2)}  # fmt: skip
            row["ratio"] = round(row["tokenops"]["rps"] / row["litellm"]["rps"], 2) if row["litellm"]["rps"] else None
            results[kind] = row
            print(f"{kind:<6} c=100  TokenOps {row['tokenops']['rps']:>7} req/s (p50 {row['tokenops']['p50_ms']} ms, "
                  f"p99 {row['tokenops']['p99_ms']} ms)   LiteLLM {row['litellm']['rps']:>7} req/s (p50 "
                  f"{row['litellm']['p50_ms']} ms, p99 {row['litellm']['p99_ms']} ms)   ratio {row['ratio']}x   "
                  f"errors {row['tokenops']['errors']}/{row['litellm']['errors']}", flush=True)  # fmt: skip
    finally:
        for child in (litellm, tokenops, fake):
            if child is not None:
                child.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
