"""``tokenops demo``: the whole product on one machine with no setup and no network.

Starts the built-in fake provider, writes a config for it, creates keys for three teams, backfills history,
starts the real gateway, sends live calls through it (OpenAI and Anthropic shapes, JSON and streams, prompt
cache, an unpriced model), prints a spend report and leaves the gateway running for you to try.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from rich.console import Console

from tokenops.config import load_config
from tokenops.errors import UsageError

PROVIDER_KEY = "demo-provider-key"
MARKER = ".tokenops-demo"
TEAMS = {"search": "prod", "support": "prod", "research": "dev"}

CONFIG = """\
# Written by `tokenops demo`. The providers are the built-in fake provider on this machine.
ledger: duckdb:///./tokenops.duckdb
providers:
  openai:    {{base_url: "{fake}/v1", api_key: {key}}}
  anthropic: {{base_url: "{fake}", api_key: {key}}}
  local:     {{base_url: "{fake}/v1", kind: openai, api_key: {key}}}   # stands for a vLLM / Ollama server
  google:    {{base_url: "{fake}", kind: gemini, api_key: {key}}}      # Gemini's API, priced from Google's catalog
models:
  - {{name: cheap, provider: openai, model: gpt-4o-mini}}
  - {{name: llama, provider: local, model: llama-3.1-8b}}
prices:
  - {{provider: local, model: llama-3.1-8b, input_per_mtok: "0.05", output_per_mtok: "0.08", effective_from: 2025-01-01}}
tagging:
  required: [team, env]
  allowed: {{env: [dev, staging, prod]}}
  mode: warn
budgets:
  - {{name: search-monthly, scope: {{team: search}}, amount_usd: "100.00", period: month,
     thresholds: [{{at: 0.5}}, {{at: 0.9}}]}}
  - {{name: support-monthly, scope: {{team: support}}, amount_usd: "40.00", period: month, hard: true,
     thresholds: [{{at: 0.5}}, {{at: 0.8}}, {{at: 1.0, action: block}}]}}
  - {{name: research-monthly, scope: {{team: research}}, amount_usd: "70.00", period: month, hard: true,
     thresholds: [{{at: 0.5}}, {{at: 0.75, action: downgrade, model: gpt-4o-mini}}, {{at: 1.0, action: block}}]}}
rules:
  - {{name: dev-no-opus, scope: {{env: dev}}, deny_models: ["claude-opus-*"]}}
limits:
  - {{name: per-key, per: key, requests_per_minute: 600}}
gateway:
  port: {port}
  writer_interval: 0.5
"""


def _free_port(preferred: int) -> int:
    if preferred:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", preferred))
                return preferred
            except OSError:
                pass
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_demo(*, directory: str, port: int, days: int, wait: bool, keep: bool) -> None:
    from tokenops.app import create_app
    from tokenops.demo.traffic import generate
    from tokenops.fakeprovider import create_fake_provider
    from tokenops.ledger import open_ledger
    from tokenops.servers import BackgroundServer
    from tokenops.services.keys import create_key
    from tokenops.services.reports import spend_report

    console = Console()
    t0 = time.perf_counter()
    home = Path(directory).resolve()
    marker = home / MARKER
    if home.exists() and any(home.iterdir()) and not marker.exists():
        raise UsageError(f"{home} exists and was not made by `tokenops demo`; choose another folder with --dir")
    if home.exists() and not keep:
        shutil.rmtree(home)  # only ever a folder the demo made itself (it holds the marker file)
    home.mkdir(parents=True, exist_ok=True)
    marker.write_text("This folder was made by `tokenops demo`, which deletes and recreates it on each run.\n")

    fake = BackgroundServer(create_fake_provider(api_key=PROVIDER_KEY)).start()
    gw_port = _free_port(port)
    cfg_path = home / "tokenops.yaml"
    cfg_path.write_text(CONFIG.format(fake=fake.url, key=PROVIDER_KEY, port=gw_port))
    cfg = load_config(cfg_path)
    ledger = open_ledger(cfg.ledger, cfg.base_dir)
    console.print(f"[bold]TokenOps demo[/bold] in {home}")
    console.print(f"  fake provider (OpenAI + Anthropic wire formats) on {fake.url}")

    team_keys: dict[str, tuple[str, str]] = {}
    for team, env in TEAMS.items():
        rec, key = create_key(ledger, f"{team}-app", {"team": team, "env": env}, ["team"])
        team_keys[team] = (rec.id, key)
    console.print(f"  created keys for teams: {', '.join(team_keys)}")

    gateway = create_app(cfg, ledger=ledger)
    if not keep or ledger.count_events() == 0:
        price_ids = {name: gateway.router.price_ids[name] for name in cfg.providers}
        pairs = list(generate(gateway.catalog, end=datetime.now(UTC), days=days,
                              keys={t: k[0] for t, k in team_keys.items()}, price_ids=price_ids))  # fmt: skip
        n = ledger.append([e for e, _ in pairs], [r for _, r in pairs if r is not None])
        console.print(f"  backfilled {n:,} calls over {days} days")

    server = BackgroundServer(gateway, port=gw_port).start()
    console.print(f"  gateway listening on {server.url}")
    live, notes = _live_calls(server.url, team_keys)
    console.print(f"  sent {live} live calls through the gateway (JSON, streams, prompt cache, an unpriced model)")
    for note in notes:
        console.print(f"    [yellow]governance[/yellow] {note}")
    gateway.drain_now()
    report = spend_report(ledger, by=["team", "model"])
    from rich.table import Table

    table = Table(title=f"Spend by team and model, last {days} days (USD)")
    # fits 80 columns: token counts are in `tokenops report spend`; "unpriced" where no call of a row had a price
    shown = [c for c in report.table_columns if c not in ("priced", "input_tokens", "output_tokens")]
    for col in shown:
        table.add_column(col, justify="left" if col in report.by else "right", no_wrap=col == "model")
    for r in report.table_rows():
        table.add_row(*(f"{v:,}" if isinstance(v, int) else str(v) for v in (r[c] for c in shown)))
    console.print(table)
    console.print(f"  {report.footer()}", soft_wrap=True)
    budgets = Table(title="Budgets this month (live, from the gateway)")
    for col in ("budget", "spent", "remaining", "forecast at month end", "thresholds reached"):
        budgets.add_column(col, justify="left" if col in ("budget", "thresholds reached") else "right")
    for st in asyncio.run(gateway.engine.status()):  # memory state: no loop of its own needed
        reached = ", ".join(f"{t['at']:g} {t['action']}" for t in st["thresholds"] if t["reached"]) or "-"
        budgets.add_row(st["name"], f"${st['spent']}", f"${st['remaining']}", f"${st['forecast_at_period_end']}", reached)
    console.print(budgets)
    console.print(f"  setup took {time.perf_counter() - t0:.1f}s")
    key = team_keys["search"][1]
    console.print(
        f"""
[bold]Try it[/bold] — the gateway at {server.url} speaks OpenAI, Anthropic and Gemini:

  from openai import OpenAI
  client = OpenAI(base_url="{server.url}/v1", api_key="{key}")
  r = client.chat.completions.with_raw_response.create(model="gpt-4o-mini",
          messages=[{{"role": "user", "content": "hello"}}], extra_headers={{"X-TokenOps-Tags": "feature=try-it"}})
  print(r.headers["x-tokenops-cost-usd"], r.parse().choices[0].message.content)

  curl {server.url}/v1/chat/completions -H "Authorization: Bearer {key}" \\
       -H "Content-Type: application/json" -d '{{"model": "cheap", "messages": [{{"role": "user", "content": "hi"}}]}}'

In a second terminal:
  tokenops report spend --config {cfg_path} --by team,model
  tokenops budgets status --config {cfg_path}
  tokenops report spend --config {cfg_path} --by day --where team=research
  tokenops prices list --config {cfg_path} --unpriced
  tokenops anomalies --config {cfg_path} --scan --since 12d --scope team=research --bucket 3600
  tokenops forecast --config {cfg_path} --scope team=search --horizon 90d
  tokenops report chargeback --config {cfg_path} --month {datetime.now(UTC).strftime("%Y-%m")}
  tokenops export focus --config {cfg_path} --since 30d -o {home / "focus.csv"}
"""
    )
    def stop_on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM stops the demo as cleanly as Ctrl-C: the spool drained, the writer ended

    signal.signal(signal.SIGTERM, stop_on_term)
    try:
        if wait:
            console.print("Gateway running; press Ctrl-C to stop.")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        console.print("stopping…")
    finally:
        server.stop()
        fake.stop()


def _live_calls(url: str, team_keys: dict[str, tuple[str, str]]) -> tuple[int, list[str]]:
    """A handful of real calls through the gateway, in every shape it meters; returns (calls, notes)."""
    calls = 0
    notes: list[str] = []
    long_doc = "Quarterly search-quality notes. " * 400  # long shared prompt: the fake caches it like OpenAI
    with httpx.Client(base_url=url, timeout=30) as client:
        def post(path: str, team: str, body: dict, tags: str = "", stream: bool = False) -> None:
            nonlocal calls
            headers = {"authorization": f"Bearer {team_keys[team][1]}", "x-tokenops-tags": tags}
            with client.stream("POST", path, json=body, headers=headers) as r:
                r.read()
            calls += 1
            model = body["model"]
            if r.status_code >= 400:
                err = r.json().get("error", {})
                notes.append(f"{team}: {model} refused with {r.status_code} {err.get('code')}: {err.get('message')}")
            elif r.headers.get("x-tokenops-downgraded-from"):
                notes.append(f"{team}: {model} downgraded to {r.headers['x-tokenops-model']} "
                             f"({r.headers.get('x-tokenops-downgrade-reason')})")  # fmt: skip

        for question in ("What changed in ranking?", "Summarise the notes."):
            post("/v1/chat/completions", "search", {"model": "gpt-4o-mini", "messages": [
                {"role": "system", "content": long_doc}, {"role": "user", "content": question}]},
                "feature=search-summary")  # fmt: skip
        post("/v1/chat/completions", "search", {"model": "cheap", "stream": True,
             "messages": [{"role": "user", "content": "rewrite: cheap flights"}]}, "feature=query-rewrite", True)
        post("/v1/embeddings", "search", {"model": "text-embedding-3-small", "input": ["a", "b"]}, "feature=embeddings")
        system = [{"type": "text", "text": "You are a support agent. " * 300, "cache_control": {"type": "ephemeral"}}]
        for i in range(2):
            post("/v1/messages", "support", {"model": "claude-3-5-haiku-20241022", "max_tokens": 200, "system": system,
                 "messages": [{"role": "user", "content": f"ticket {i}: refund please"}]}, "feature=ticket-reply")
        post("/v1/messages", "support", {"model": "claude-sonnet-4-5", "max_tokens": 300, "stream": True,
             "messages": [{"role": "user", "content": "draft a reply"}]}, "feature=ticket-reply", True)
        post("/v1/chat/completions", "research", {"model": "llama", "messages": [
            {"role": "user", "content": "prototype idea"}]}, "feature=prototype")  # fmt: skip
        post("/v1/chat/completions", "research", {"model": "local/mystery-model-7b", "messages": [
            {"role": "user", "content": "sandbox run"}]}, "feature=agent-sandbox")  # fmt: skip
        post("/v1/chat/completions", "research", {"model": "o3", "stream": True, "max_tokens": 500, "messages": [
            {"role": "user", "content": "evaluate"}]}, "feature=eval-runs", True)  # fmt: skip
        post("/v1/messages", "research", {"model": "claude-opus-4", "max_tokens": 100, "messages": [
            {"role": "user", "content": "label this"}]}, "feature=batch-labeling")  # fmt: skip
    return calls, notes
