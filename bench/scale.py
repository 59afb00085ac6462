"""Several gateways as one: N `tokenops serve` processes on one PostgreSQL ledger and one Redis, against the fake
upstream, at the highest load this machine sustains.

    python bench/scale.py                                  # 2 gateways, JSON calls, 100 clients, 20 s
    python bench/scale.py --gateways 3 --clients 200 --seconds 60 --kill   # SIGKILL one gateway mid-run

Measures, in one run: the throughput and latency of the calls straight to the upstream and through the gateways
(clients spread over the gateways round-robin), and then checks the ledger: every call a client got an answer
for must be in it exactly once (``lost`` and ``doubled`` must both be 0). With ``--kill``, one gateway is killed
with SIGKILL halfway through and started again; its spool is drained by the restarted process.

Needs PostgreSQL (``--pg``, default postgresql://postgres@127.0.0.1:5432) and Redis (``--redis``, default
redis://127.0.0.1:6379/0): a fresh database and a fresh key prefix are made for the run and dropped after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import gateway as single  # noqa: E402  (bench/gateway.py: the fake upstream child, percentiles)

UPSTREAM_KEY = single.UPSTREAM_KEY


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_gateway(home: Path, cfg: Path, port: int, workers: int, name: str) -> subprocess.Popen[bytes]:
    log = open(home / f"{name}.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "tokenops", "serve", "--config", str(cfg), "--port", str(port),
                             "--workers", str(workers), "--log-level", "warning"], stdout=log, stderr=log,
                            start_new_session=True)  # fmt: skip
    import urllib.request

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{name} did not become ready:\n{(home / f'{name}.log').read_text()[-3000:]}")


async def load(urls: list[str], headers: dict[str, str], body: bytes, clients: int, seconds: float,
               on_half: Any = None) -> dict[str, Any]:  # fmt: skip
    import aiohttp

    answered: list[str] = []
    latency: list[float] = []
    errors: list[str] = []
    start = time.perf_counter()
    deadline = start + seconds
    half_done = False
    connector = aiohttp.TCPConnector(limit=clients, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def client(i: int) -> None:
            nonlocal half_done
            n = i
            while time.perf_counter() < deadline:
                url = urls[n % len(urls)]
                n += 1
                t0 = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=headers) as resp:
                        data = await resp.read()
                        if resp.status == 200 and b'"usage"' in data:
                            latency.append(time.perf_counter() - t0)
                            rid = resp.headers.get("x-tokenops-request-id")
                            if rid:
                                answered.append(rid)
                        else:
                            errors.append(f"HTTP {resp.status}")
                except Exception as exc:  # a benchmark counts failures (a killed gateway's clients get them)
                    errors.append(type(exc).__name__)
                if on_half is not None and not half_done and time.perf_counter() - start > seconds / 2:
                    half_done = True  # off the event loop: the other gateways' clients go on meanwhile
                    asyncio.get_running_loop().run_in_executor(None, on_half)

        await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.perf_counter() - start
    return {"answered": answered, "latency": latency, "errors": errors, "elapsed": elapsed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gateways", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1, help="uvicorn workers per gateway process")
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--kill", action="store_true", help="SIGKILL one gateway halfway, then start it again")
    ap.add_argument("--durability", choices=("fsync", "write"), default="fsync")
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()

    import psycopg

    home = Path(tempfile.mkdtemp(prefix="tokenops-scale-"))
    db = f"tokenops_scale_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{args.pg}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    prefix = f"scale-{uuid.uuid4().hex[:8]}"
    fake = single.start_child("fake", home, None)
    ports = [free_port() for _ in range(args.gateways)]
    cfg = home / "tokenops.yaml"
    cfg.write_text(f"""
ledger: {args.pg}/{db}
state: {args.redis}
state_options: {{prefix: {prefix}}}
providers:
  openai: {{base_url: "http://127.0.0.1:{fake.port}/v1", api_key: {UPSTREAM_KEY}}}
budgets:
  - {{name: org, amount_usd: "1000000", period: month, hard: true}}
gateway: {{writer_interval: 1.0, durability: {args.durability}, spool_dir: {home}/spool}}
""")
    from tokenops.config import load_config
    from tokenops.ledger import open_ledger
    from tokenops.services.keys import create_key

    c = load_config(cfg)
    _, key = create_key(open_ledger(c.ledger, c.base_dir), "scale", {"team": "scale"})
    procs = [start_gateway(home, cfg, p, args.workers, f"gateway{i}") for i, p in enumerate(ports)]
    body = json.dumps({"model": single.MODEL, "messages": [{"role": "user", "content": single.PROMPT}],
                       "max_tokens": 64}).encode()  # fmt: skip
    figures: dict[str, Any] = {"gateways": args.gateways, "workers": args.workers, "clients": args.clients,
                               "durability": args.durability, "kill": args.kill}  # fmt: skip
    try:
        direct = asyncio.run(load([f"{fake.url}/v1/chat/completions"], {"authorization": f"Bearer {UPSTREAM_KEY}"},
                                  body, args.clients, min(10.0, args.seconds)))  # fmt: skip

        def kill_one() -> None:
            os.killpg(procs[0].pid, signal.SIGKILL)
            procs[0].wait()
            print("  killed gateway0 (SIGKILL), starting it again", flush=True)
            procs[0] = start_gateway(home, cfg, ports[0], args.workers, "gateway0")

        urls = [f"http://127.0.0.1:{p}/v1/chat/completions" for p in ports]
        through = asyncio.run(load(urls, {"authorization": f"Bearer {key}"}, body, args.clients, args.seconds,
                                   kill_one if args.kill else None))  # fmt: skip
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)  # each drains its spool on the way out
        for p in procs:
            p.wait(timeout=60)
        fake.stop()
    # the restarted gateways drained what the killed one left; one more drain takes whatever is left anywhere
    ledger = open_ledger(c.ledger, c.base_dir)
    ledger.drain(c.spool_path())
    with psycopg.connect(f"{args.pg}/{db}") as conn:
        counts = dict(conn.execute("SELECT request_id, count(*) FROM events GROUP BY 1").fetchall())
    answered = set(through["answered"])
    lost = len([r for r in answered if r not in counts])
    doubled = len([r for r, n in counts.items() if n > 1])
    for name, run in (("direct", direct), ("gateways", through)):
        lat = run["latency"]
        figures[name] = {"requests": len(lat), "errors": len(run["errors"]), "rps": round(len(lat) / run["elapsed"], 1),
                         "p50_ms": round(single.pct(lat, 50), 2), "p99_ms": round(single.pct(lat, 99), 2)}  # fmt: skip
        print(f"{name:9} {len(lat):>7} calls  {figures[name]['rps']:>8} /s  p50 {figures[name]['p50_ms']:>7} ms  "
              f"p99 {figures[name]['p99_ms']:>7} ms  errors {len(run['errors'])}")  # fmt: skip
    figures["ledger"] = {"answered": len(answered), "in_ledger": len(counts), "lost": lost, "doubled": doubled}
    print(f"ledger: {len(answered)} answered calls, {lost} lost, {doubled} recorded twice "
          f"({len(counts)} events in the ledger)")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    with psycopg.connect(f"{args.pg}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    import redis

    r = redis.Redis.from_url(args.redis)
    for k in r.scan_iter(f"{prefix}:*"):
        r.delete(k)
    sys.exit(0 if lost == 0 and doubled == 0 else 1)


if __name__ == "__main__":
    main()
