"""The demo runs with no setup; a report in a second process sees calls a running gateway answered a moment ago."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import httpx

from harness import PROVIDER_KEY, create_key, free_port, start_gateway, write_config
from tokenops.fakeprovider import create_fake_provider
from tokenops.ledger import open_ledger
from tokenops.servers import BackgroundServer


def tokenops(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tokenops", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)  # fmt: skip


def test_demo_runs_without_setup(tmp_path: Path) -> None:
    r = tokenops("demo", "--no-wait", "--port", "0", "--days", "3", "--dir", str(tmp_path / "demo"))
    assert r.returncode == 0, r.stderr
    assert "Spend by team and model" in r.stdout and "sent 11 live calls" in r.stdout and "model_not_allowed" in r.stdout
    cfg = tmp_path / "demo" / "tokenops.yaml"
    out = json.loads(tokenops("report", "spend", "--by", "team", "--config", str(cfg), "--format", "json").stdout)
    assert {row["team"] for row in out["rows"]} == {"search", "support", "research"}
    assert Decimal(out["total_cost_usd"]) > 0 and out["unpriced_requests"] > 0
    live = json.loads(tokenops("report", "spend", "--by", "source,route", "--config", str(cfg), "--format",
                               "json").stdout)  # fmt: skip
    gateway_calls = sum(row["requests"] for row in live["rows"] if row["source"] == "gateway")
    assert gateway_calls == 11
    assert {row["route"] for row in live["rows"]} >= {"chat.completions", "messages", "embeddings"}
    # the demo's history as FOCUS: every priced dollar of it, the unpriced calls named
    r = tokenops("export", "focus", "--config", str(cfg), "-o", str(tmp_path / "focus.csv"), "--format", "json")
    assert r.returncode == 0, r.stderr
    export = json.loads(r.stdout)
    assert Decimal(export["billed_cost_usd"]) == Decimal(out["total_cost_usd"]) == Decimal(export["ledger_spend_usd"])
    assert export["unpriced_calls"] == out["unpriced_requests"] > 0 and "Not exported" in r.stderr


def test_demo_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "tokenops.yaml").write_text("ledger: duckdb:///./x.duckdb\n")
    r = tokenops("demo", "--no-wait", "--port", "0", "--dir", str(tmp_path / "project"))
    assert r.returncode == 2 and "was not made by `tokenops demo`" in r.stderr
    assert (tmp_path / "project" / "tokenops.yaml").exists()


def test_report_in_a_second_process_includes_calls_just_answered(tmp_path: Path) -> None:
    fake = BackgroundServer(create_fake_provider(api_key=PROVIDER_KEY)).start()
    # a writer that would not drain for a minute: the report must drain the spool itself
    cfg = write_config(tmp_path, "gateway: {writer_interval: 60}", upstream=fake.url)
    ledger = open_ledger(cfg.ledger, cfg.base_dir)
    _, key = create_key(ledger, tags={"team": "live"})
    ledger.close()  # the gateway and the report open it in their turn
    port = free_port()
    proc = start_gateway(tmp_path / "tokenops.yaml", port, tmp_path / "gw.log")
    try:
        costs = []
        for i in range(5):
            r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                           json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"q{i}"}]})  # fmt: skip
            costs.append(Decimal(r.headers["x-tokenops-cost-usd"]))
        out = tokenops("report", "spend", "--by", "team", "--config", str(tmp_path / "tokenops.yaml"), "--format", "json")
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        assert report["rows"] == [{"team": "live", "requests": 5, "input_tokens": report["rows"][0]["input_tokens"],
                                   "output_tokens": report["rows"][0]["output_tokens"],
                                   "cost_usd": report["total_cost_usd"], "unpriced_requests": 0}]  # fmt: skip
        assert Decimal(report["total_cost_usd"]) == sum(costs)
        # the gateway keeps serving and metering after the report took its turn on the ledger file
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                       json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "again"}]})  # fmt: skip
        assert r.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        fake.stop()
    assert ledger.count_events() == 6
    ledger.close()


def test_sigterm_to_the_whole_process_group_stops_the_gateway(tmp_path: Path) -> None:
    """`timeout`, systemd and shells signal a whole process group: the writer child gets SIGTERM too."""
    import os
    import time

    write_config(tmp_path, "")
    # writer: process (the default): the drains run in a child process
    (tmp_path / "tokenops.yaml").write_text((tmp_path / "tokenops.yaml").read_text().replace(", writer: thread", ""))
    port = free_port()
    with (tmp_path / "gw.log").open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tokenops", "serve", "--config", str(tmp_path / "tokenops.yaml"),
                                 "--port", str(port), "--log-level", "warning"], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        time.sleep(1.0)  # the writer child is up
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=20) is not None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError("the gateway hung on SIGTERM to its process group")
