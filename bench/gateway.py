"""Gateway overhead: the same calls sent to the fake upstream directly and through the TokenOps gateway.

    python bench/gateway.py                  # full run, ~2.5 min on 2 cores
    python bench/gateway.py --quick          # ~40 s
    python bench/gateway.py --json out.json  # also write every figure as JSON

Three processes, all on 127.0.0.1: the fake upstream (``tokenops.fakeprovider``) and the gateway each run under
uvicorn (uvloop + httptools) in a child process started by this script, and this process is the load generator
(aiohttp, uvloop). Each level is a closed loop: ``concurrency`` workers each send their next request as soon as
the previous one has finished. Direct and gateway runs alternate in rounds (direct, gateway, gateway, direct) at
each level, after a warm-up of both, so drift on a shared machine hits both sides alike.

CPU placement (on 2+ cores, unless ``--no-pin``): the gateway has core 1 to itself; the fake upstream and the load
generator share core 0 in both modes. The direct path therefore runs on exactly the CPU the gateway path has
minus the gateway's own core, and the gateway never competes with the traffic it is measured against. The CPU
time each process used is read from ``/proc`` around every measured run and reported (gateway CPU per request is
the figure that does not depend on placement).

The gateway is the real one: a DuckDB ledger, a key checked per call, every call priced and fsync'd to its spool
before the response completes, the ledger writer draining in its background thread. The spool lives in a
temporary directory (``--workdir`` to choose its filesystem); at the end the ledger is checked to hold exactly
the calls sent through the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

UPSTREAM_KEY = "bench-upstream-key"
MODEL = "gpt-4o-mini"
PROMPT = "Summarise the quarterly spend report for the search team in two sentences."

# requests per mode at each concurrency level, and warm-up requests per mode (full run; --quick divides by 5).
# A slow gateway must not make the run unbounded: each mode gets at most MAX_SECONDS of measured traffic per
# level (and WARMUP_SECONDS of warm-up); requests in flight at the deadline finish and count.
COUNTS = {"json": {1: 1500, 10: 4000, 100: 6000}, "stream": {1: 20, 10: 200, 100: 1600}}
WARMUP = {"json": {1: 200, 10: 400, 100: 1000}, "stream": {1: 3, 10: 20, 100: 200}}
MAX_SECONDS, WARMUP_SECONDS = 12.0, 2.0

CONFIG = """\
ledger: duckdb:///{home}/bench.duckdb
providers:
  openai: {{base_url: "http://127.0.0.1:{port}/v1", api_key: {key}}}
gateway: {{writer_interval: 1.0, durability: {durability}, writer: {writer}}}
"""


# --- child processes: the fake upstream and the gateway ------------------------------------------------------
def serve(role: str, home: Path, cpu: int | None, profile: str | None) -> None:
    """Run one server; print its port on stdout once bound. SIGINT stops it gracefully (lifespan shutdown)."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    _die_with_parent()
    import uvicorn

    if role == "fake":
        from tokenops.fakeprovider import create_fake_provider

        app: Any = create_fake_provider(api_key=UPSTREAM_KEY)
    else:
        from tokenops.app import create_app
        from tokenops.config import load_config

        app = create_app(load_config(home / "tokenops.yaml"))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    # keep-alive well past a round's length: an idle pooled connection must not be closed between rounds
    config = uvicorn.Config(app, loop="uvloop", http="httptools", lifespan="on", log_level="warning",
                            access_log=False, ws="none", timeout_keep_alive=300, backlog=4096)  # fmt: skip
    server = uvicorn.Server(config)
    print(sock.getsockname()[1], flush=True)
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # uvicorn re-raises the SIGINT it handled, once it has shut down
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)


def machine_cpu_seconds() -> float:
    """User + system CPU seconds of every process on the machine, from /proc/stat.

    Interrupt and softirq time (where the kernel does much of the loopback TCP work) is left out: it is not
    charged to any process, so counting it would make our own traffic look like someone else's load.
    """
    with open("/proc/stat") as fh:
        user, nice, system = (int(x) for x in fh.readline().split()[1:4])
    return (user + nice + system) / os.sysconf("SC_CLK_TCK")


def _die_with_parent() -> None:
    """Linux: get SIGTERM when the benchmark process dies, so a crashed run leaves no server behind."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[str]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        """User + system CPU of the whole process (all threads) from /proc, in seconds."""
        with open(f"/proc/{self.proc.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_child(role: str, home: Path, cpu: int | None, profile: str | None = None) -> Child:
    cmd = [sys.executable, os.path.abspath(__file__), "--serve", role, "--workdir", str(home)]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    if profile:
        cmd += ["--profile", profile]
    log = open(home / f"{role}.log", "w")  # the child writes its stderr here for its whole life
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.strip().isdigit():
        proc.kill()
        raise RuntimeError(f"{role} did not start:\n{(home / f'{role}.log').read_text()[-3000:]}")
    child = Child(role, proc, int(line))
    deadline = time.monotonic() + 60
    while True:  # the port is bound before uvicorn listens and runs the lifespan startup
        try:
            with urllib.request.urlopen(child.url + ("/healthz" if role == "gateway" else "/v1/models"), timeout=2):
                return child
        except OSError as exc:
            if getattr(exc, "code", None) == 401:  # the fake answers, refusing the keyless request: it is up
                return child
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"{role} did not answer:\n{(home / f'{role}.log').read_text()[-3000:]}") from None
            time.sleep(0.05)


def make_ledger(home: Path, fake_port: int, durability: str = "fsync", writer: str = "process") -> tuple[str, Any]:
    """Write the gateway config and create one virtual key in a fresh ledger; returns the key and the ledger."""
    from tokenops.config import load_config
    from tokenops.ledger import open_ledger
    from tokenops.services.keys import create_key

    (home / "tokenops.yaml").write_text(CONFIG.format(home=home, port=fake_port, key=UPSTREAM_KEY,
                                                      durability=durability, writer=writer))  # fmt: skip
    cfg = load_config(home / "tokenops.yaml")
    ledger = open_ledger(cfg.ledger, cfg.base_dir)
    _, key = create_key(ledger, "bench", {"team": "bench", "env": "dev"})
    return key, ledger


# --- the load generator --------------------------------------------------------------------------------------
@dataclass
class Target:
    mode: str  # "direct" or "gateway"
    url: str
    headers: dict[str, str]
    child: Child


@dataclass
class Run:
    """Everything measured for one mode at one level, accumulated over its rounds."""

    latency: list[float] = field(default_factory=list)  # seconds, request sent -> response complete
    ttfb: list[float] = field(default_factory=list)  # seconds, request sent -> first body byte
    errors: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    cpu: dict[str, float] = field(default_factory=lambda: {"gateway": 0.0, "fake": 0.0, "loadgen": 0.0, "other": 0.0})


async def drive(session: Any, target: Target, body: bytes, n: int, concurrency: int, stream: bool, run: Run,
                seconds: float) -> None:  # fmt: skip
    """Send ``n`` requests (fewer if ``seconds`` run out) from ``concurrency`` closed-loop workers into ``run``."""
    left = n
    perf = time.perf_counter
    deadline = perf() + seconds

    async def worker() -> None:
        nonlocal left
        while left > 0 and perf() < deadline:
            left -= 1
            t0 = perf()
            first = None
            try:
                async with session.post(target.url, data=body, headers=target.headers) as resp:
                    if stream:
                        tail = b""
                        async for chunk in resp.content.iter_any():
                            if first is None:
                                first = perf()
                            tail = (tail + chunk)[-32:]
                        ok = resp.status == 200 and tail.endswith(b"data: [DONE]\n\n")
                    else:
                        data = await resp.read()
                        first = perf()
                        ok = resp.status == 200 and b'"usage"' in data
                        if target.mode == "gateway" and "x-tokenops-cost-usd" not in resp.headers:
                            ok = False
                    if not ok:
                        run.errors.append(f"{target.mode}: HTTP {resp.status}")
                        continue
            except Exception as exc:  # a benchmark counts failures rather than dying on the first one
                run.errors.append(f"{target.mode}: {type(exc).__name__}: {exc}")
                continue
            t1 = perf()
            run.latency.append(t1 - t0)
            run.ttfb.append((first or t1) - t0)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def measure(targets: list[Target], kind: str, concurrency: int, n: int, warmup: int, args: Any,
                  fake: Child) -> tuple[dict[str, Run], int]:  # fmt: skip
    """Warm up both targets, then measure them in alternating rounds; returns the runs and the gateway warm-ups."""
    import aiohttp

    stream = kind == "stream"
    payload: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 64}
    if stream:
        # the client asks for usage itself, so the upstream sends the same events in both modes
        payload |= {"stream": True, "stream_options": {"include_usage": True},
                    "fake": {"chunks": args.chunks, "chunk_delay_ms": args.chunk_delay_ms}}  # fmt: skip
    body = json.dumps(payload).encode()
    runs = {t.mode: Run() for t in targets}
    sessions = {}
    for t in targets:
        connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency, force_close=False)
        sessions[t.mode] = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=120), skip_auto_headers=("User-Agent",),
        )  # fmt: skip
    warmed = 0
    try:
        for t in targets:
            warm = Run()
            await drive(sessions[t.mode], t, body, warmup, concurrency, stream, warm, args.warmup_seconds)
            if warm.errors:
                raise RuntimeError(f"warm-up of {t.mode} failed: {warm.errors[:3]}")
            if t.mode == "gateway":
                warmed = len(warm.latency)
        gateway = next(t.child for t in targets if t.mode == "gateway")
        # every round sends at least one request per worker: with long streams, fewer rounds keep the level short
        rounds = max(1, min(args.rounds, n // (2 * concurrency)))
        order = [targets, targets[::-1]] * (rounds // 2) + [targets] * (rounds % 2)
        for rnd, seq in enumerate(order):
            for t in seq:
                share = n // rounds + (1 if rnd < n % rounds else 0)
                run = runs[t.mode]
                before = (gateway.cpu_seconds(), fake.cpu_seconds(), time.process_time(), machine_cpu_seconds(),
                          time.perf_counter())  # fmt: skip
                await drive(sessions[t.mode], t, body, share, concurrency, stream, run, args.max_seconds / rounds)
                after = (gateway.cpu_seconds(), fake.cpu_seconds(), time.process_time(), machine_cpu_seconds(),
                         time.perf_counter())  # fmt: skip
                run.elapsed += after[4] - before[4]
                used = [a - b for a, b in zip(after, before, strict=True)]
                for name, v in zip(("gateway", "fake", "loadgen"), used, strict=False):
                    run.cpu[name] += v
                # whatever else ran on the machine meanwhile (other users, the kernel): reported, not hidden
                run.cpu["other"] += max(0.0, used[3] - sum(used[:3]))
    finally:
        for s in sessions.values():
            await s.close()
    return runs, warmed


# --- statistics and report -----------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``, in milliseconds."""
    s = sorted(values)
    if not s:
        return float("nan")
    return s[max(0, min(len(s) - 1, int(-(-q * len(s) // 100)) - 1))] * 1000.0


def summarise(kind: str, concurrency: int, runs: dict[str, Run], idle_cpu: float) -> dict[str, Any]:
    """Percentiles per mode, the differences, and the gateway's CPU per call net of its idle background."""
    out: dict[str, Any] = {"kind": kind, "concurrency": concurrency}
    for mode, r in runs.items():
        n = len(r.latency)
        out[mode] = {
            "requests": n, "errors": len(r.errors), "error_samples": r.errors[:5],
            "latency_ms": {f"p{q}": round(pct(r.latency, q), 3) for q in (50, 90, 99)}
            | {"max": round(max(r.latency, default=0) * 1000, 3), "mean": round(sum(r.latency) / max(n, 1) * 1000, 3)},
            "ttfb_ms": {f"p{q}": round(pct(r.ttfb, q), 3) for q in (50, 90, 99)},
            "throughput_rps": round(n / r.elapsed, 1) if r.elapsed else 0.0,
            "elapsed_s": round(r.elapsed, 3),
            "cpu_s": {k: round(v, 3) for k, v in r.cpu.items()},
            "core_use_pct": {k: round(100 * v / r.elapsed, 1) if r.elapsed else 0.0 for k, v in r.cpu.items()},
        }  # fmt: skip
    d, g = out["direct"], out["gateway"]
    out["added_ms"] = {f"{m}_p{q}": round(g[f"{m}_ms"][f"p{q}"] - d[f"{m}_ms"][f"p{q}"], 3)
                       for m in ("latency", "ttfb") for q in (50, 90, 99)}  # fmt: skip
    out["throughput_ratio"] = round(g["throughput_rps"] / d["throughput_rps"], 3) if d["throughput_rps"] else None
    # all the gateway's CPU at this level, its direct rounds included (the ledger writer drains the spool a moment
    # later), less what it burns when idle (key reloads), so that slow streams are not charged for idle time
    gw_cpu = g["cpu_s"]["gateway"] + d["cpu_s"]["gateway"] - idle_cpu * (g["elapsed_s"] + d["elapsed_s"])
    out["gateway_cpu_us_per_request"] = round(gw_cpu / max(g["requests"], 1) * 1e6, 1)
    return out


def table(results: list[dict[str, Any]]) -> str:
    lines = []
    head = (
        f"{'kind':<6} {'conc':>4} {'n':>5} │ {'p50 dir':>8} {'p50 gw':>8} {'+p50':>7} │ {'p99 dir':>8} {'p99 gw':>8}"
        f" {'+p99':>7} │ {'rps dir':>8} {'rps gw':>8} {'ratio':>5} │ {'gw µs/req':>9} {'gw core':>7}"
    )
    lines += [head, "─" * len(head)]
    for r in results:
        d, g, a = r["direct"], r["gateway"], r["added_ms"]
        lines.append(
            f"{r['kind']:<6} {r['concurrency']:>4} {g['requests']:>5} │ {d['latency_ms']['p50']:>8.2f} "
            f"{g['latency_ms']['p50']:>8.2f} {a['latency_p50']:>+7.2f} │ {d['latency_ms']['p99']:>8.2f} "
            f"{g['latency_ms']['p99']:>8.2f} {a['latency_p99']:>+7.2f} │ {d['throughput_rps']:>8.0f} "
            f"{g['throughput_rps']:>8.0f} {r['throughput_ratio']:>5.2f} │ {r['gateway_cpu_us_per_request']:>9.0f} "
            f"{g['core_use_pct']['gateway']:>6.0f}%"
        )
    streams = [r for r in results if r["kind"] == "stream"]
    if streams:
        head = (
            f"\n{'stream':<6} {'conc':>4} │ {'ttfb p50 dir':>12} {'gw':>7} {'+':>6} │ {'ttfb p99 dir':>12} {'gw':>7}"
            f" {'+':>6} │ {'total p50 dir':>13} {'gw':>7} │ {'total p99 dir':>13} {'gw':>7}"
        )
        lines += [head, "─" * len(head)]
        for r in streams:
            d, g, a = r["direct"], r["gateway"], r["added_ms"]
            lines.append(
                f"{'':<6} {r['concurrency']:>4} │ {d['ttfb_ms']['p50']:>12.2f} {g['ttfb_ms']['p50']:>7.2f} "
                f"{a['ttfb_p50']:>+6.2f} │ {d['ttfb_ms']['p99']:>12.2f} {g['ttfb_ms']['p99']:>7.2f} "
                f"{a['ttfb_p99']:>+6.2f} │ {d['latency_ms']['p50']:>13.2f} {g['latency_ms']['p50']:>7.2f} "
                f"│ {d['latency_ms']['p99']:>13.2f} "
                f"{g['latency_ms']['p99']:>7.2f}"
            )
    return "\n".join(lines)


def machine(workdir: Path, pinned: bool) -> dict[str, Any]:
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor())  # fmt: skip
    fs = "?"
    best = ""
    for ln in Path("/proc/mounts").read_text().splitlines():
        parts = ln.split()
        if str(workdir.resolve()).startswith(parts[1]) and len(parts[1]) > len(best):
            best, fs = parts[1], parts[2]
    import aiohttp
    import uvicorn
    import uvloop

    try:
        repo = Path(__file__).resolve().parent.parent
        commit = subprocess.run(["git", "-C", str(repo), "describe", "--always", "--dirty"], capture_output=True,
                                text=True, timeout=10).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"commit": commit or "?", "cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "kernel": platform.release(), "spool_filesystem": fs, "pinned": pinned, "uvicorn": uvicorn.__version__,
            "uvloop": uvloop.__version__, "aiohttp": aiohttp.__version__}  # fmt: skip


# --- main ----------------------------------------------------------------------------------------------------
def bench(args: argparse.Namespace) -> int:
    import uvloop

    pin = not args.no_pin and len(os.sched_getaffinity(0)) >= 2
    cores = sorted(os.sched_getaffinity(0))
    shared, own = (cores[0], cores[1]) if pin else (None, None)
    home = Path(tempfile.mkdtemp(prefix="tokenops-bench-", dir=args.workdir))
    divisor = 5 if args.quick else 1
    if args.max_seconds is None:
        args.max_seconds = MAX_SECONDS / divisor
    args.warmup_seconds = WARMUP_SECONDS / (3 if args.quick else 1)
    levels = [int(x) for x in args.levels.split(",")]
    kinds = args.kinds.split(",")
    results: list[dict[str, Any]] = []
    fake = gateway = None
    idle_cpu = 0.0
    t_start = time.perf_counter()
    try:
        fake = start_child("fake", home, shared)
        key, ledger = make_ledger(home, fake.port, args.durability, args.writer)
        gateway = start_child("gateway", home, own, args.profile and os.path.abspath(args.profile))
        if pin:
            os.sched_setaffinity(0, {shared})
        common = {"content-type": "application/json"}
        targets = [
            Target("direct", fake.url + "/v1/chat/completions", common | {"authorization": f"Bearer {UPSTREAM_KEY}"},
                   fake),
            Target("gateway", gateway.url + "/v1/chat/completions", common | {"authorization": f"Bearer {key}"},
                   gateway),
        ]  # fmt: skip
        where = f"gateway on core {own}, fake upstream + load generator on core {shared}" if pin else "not pinned"
        print(f"TokenOps gateway overhead benchmark — {os.cpu_count()} cores, {where}; workdir {home}", flush=True)
        c0, t0 = gateway.cpu_seconds(), time.perf_counter()
        time.sleep(2.0 / (2 if args.quick else 1))
        idle_cpu = (gateway.cpu_seconds() - c0) / (time.perf_counter() - t0)
        print(f"  idle gateway: {100 * idle_cpu:.1f}% of a core (ledger writer and key reloads)", flush=True)
        sent_through_gateway = 0
        for kind in kinds:
            for c in levels:
                n = max(COUNTS[kind].get(c, 1000) // divisor, c)
                warm = max(WARMUP[kind].get(c, 100) // divisor, c)
                t0 = time.perf_counter()
                runs, warmed = uvloop.run(measure(targets, kind, c, n, warm, args, fake))
                sent_through_gateway += warmed + len(runs["gateway"].latency) + len(runs["gateway"].errors)
                results.append(summarise(kind, c, runs, idle_cpu))
                r = results[-1]
                done = f"{r['direct']['requests']}/{r['gateway']['requests']}"
                print(f"  {kind:<6} c={c:<3} n={done:<11} +p50 {r['added_ms']['latency_p50']:+.2f} ms  "
                      f"+p99 {r['added_ms']['latency_p99']:+.2f} ms  throughput ×{r['throughput_ratio']}  "
                      f"other load {max(r[m]['core_use_pct']['other'] for m in ('direct', 'gateway')):.0f}%  "
                      f"({time.perf_counter() - t0:.1f} s)", flush=True)  # fmt: skip
        code = gateway.stop()
        gateway = None
        metered = ledger.count_events()
    finally:
        for child in (gateway, fake):
            if child is not None:
                child.stop()
    errors = sum(r[m]["errors"] for r in results for m in ("direct", "gateway"))
    report = {
        "benchmark": "gateway-overhead",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(home, pin),
        "parameters": {
            "quick": args.quick,
            "rounds": args.rounds,
            "max_seconds": args.max_seconds,
            "stream_chunks": args.chunks,
            "stream_chunk_delay_ms": args.chunk_delay_ms,
            "model": MODEL,
            "durability": args.durability,
            "writer": args.writer,
        },
        "idle_gateway_core_pct": round(100 * idle_cpu, 2),
        "results": results,
        "ledger_check": {"sent_through_gateway": sent_through_gateway, "metered": metered, "gateway_exit": code},
        "errors": errors,
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    print()
    print(table(results))
    print(
        f"\nlatency in ms; +pXX = gateway pXX − direct pXX; ratio = gateway req/s ÷ direct req/s; "
        f"gw µs/req = gateway CPU per call. Streams: {args.chunks} chunks, {args.chunk_delay_ms} ms apart."
    )
    print(f"ledger: {metered} of {sent_through_gateway} gateway calls metered; errors: {errors}; "
          f"wall {report['wall_s']} s")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    ok = errors == 0 and metered == sent_through_gateway
    if not args.keep:
        import shutil

        shutil.rmtree(home, ignore_errors=True)
    return 0 if ok else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a fifth of the requests (~40 s)")
    p.add_argument("--json", metavar="FILE", help="write all figures as JSON")
    p.add_argument("--levels", default="1,10,100", help="concurrency levels (default 1,10,100)")
    p.add_argument("--kinds", default="json,stream", help="json, stream or both (default)")
    p.add_argument("--chunks", type=int, default=20, help="content chunks per stream (default 20)")
    p.add_argument("--chunk-delay-ms", type=float, default=20.0, help="upstream pause between SSE events (default 20)")
    p.add_argument(
        "--max-seconds", type=float, help="measured seconds per mode and level at most (default 12; quick 2.4)"
    )
    p.add_argument("--rounds", type=int, default=4, help="alternating direct/gateway rounds per level (default 4)")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    p.add_argument("--workdir", help="directory for the ledger and spool (default: the system temp directory)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (ledger, spool, server logs)")
    p.add_argument("--profile", metavar="FILE", help="run the gateway under cProfile and write its stats here")
    p.add_argument("--durability", choices=("fsync", "write"), default="fsync",
                   help="the gateway's gateway.durability (default fsync: survives a power loss)")
    p.add_argument("--writer", choices=("process", "thread"), default="process",
                   help="the gateway's gateway.writer: drains in a child process (default) or a thread")
    p.add_argument("--serve", choices=("fake", "gateway"), help=argparse.SUPPRESS)
    p.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args.serve, Path(args.workdir), args.cpu, args.profile)
        return 0
    return bench(args)


if __name__ == "__main__":
    sys.exit(main())
