"""SIGKILL the gateway in the middle of a burst of concurrent calls: every answered call is in the ledger
exactly once after a restart, and no call is recorded twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from harness import PROVIDER_KEY, create_key, free_port, start_gateway, write_config
from tokenops.fakeprovider import create_fake_provider
from tokenops.ledger.duckdb import DuckDBLedger
from tokenops.servers import BackgroundServer


async def burst(url: str, key: str, n: int, kill_after: int, proc: subprocess.Popen[bytes]) -> list[str]:
    answered: list[str] = []
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(base_url=url, timeout=20, limits=limits) as client:

        async def one(i: int) -> None:
            stream = i % 3 == 0
            body = {"model": "gpt-4o-mini", "stream": stream, "messages": [{"role": "user", "content": f"call {i}"}],
                    "fake": {"delay_ms": (i % 7) * 15}}  # fmt: skip
            try:
                r = await client.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})
                text = r.text
            except httpx.TransportError:
                return
            complete = "[DONE]" in text if stream else r.status_code == 200
            if r.status_code == 200 and complete:
                answered.append(r.headers["x-tokenops-request-id"])
                if len(answered) == kill_after:
                    os.kill(proc.pid, signal.SIGKILL)

        await asyncio.gather(*(one(i) for i in range(n)))
    return answered


@pytest.mark.parametrize("durability", ["fsync", "write"])
def test_sigkill_mid_burst_loses_no_answered_call_and_doubles_none(tmp_path: Path, durability: str) -> None:
    """Both durability settings survive the process being killed (only fsync also survives a power loss)."""
    fake = BackgroundServer(create_fake_provider(api_key=PROVIDER_KEY)).start()
    try:
        # a slow writer: most answered calls are still only in the spool when the process dies
        cfg = write_config(tmp_path, f"gateway: {{writer_interval: 0.3, durability: {durability}}}", upstream=fake.url)
        ledger = DuckDBLedger(cfg.ledger_path())
        _, key = create_key(ledger, tags={"team": "crash"})
        port = free_port()
        log = tmp_path / "gateway.log"
        cfg_path = tmp_path / "tokenops.yaml"
        proc = start_gateway(cfg_path, port, log)
        answered = asyncio.run(burst(f"http://127.0.0.1:{port}", key, 150, 90, proc))
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        assert len(answered) >= 90

        proc = start_gateway(cfg_path, port, log)  # the restart drains what the dead process left in the spool
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                r = httpx.get(f"http://127.0.0.1:{port}/v1/tokenops/requests/{answered[-1]}",
                              headers={"authorization": f"Bearer {key}"})  # fmt: skip
                if r.status_code == 200:
                    break
                time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
        with ledger.connect() as conn:
            rows = conn.execute("SELECT request_id, count(*) FROM events GROUP BY 1").fetchall()
        counts = dict(rows)
        assert all(c == 1 for c in counts.values()), "a call was recorded twice"
        missing = [rid for rid in answered if rid not in counts]
        assert not missing, f"{len(missing)} answered calls lost"
        assert not list(cfg.spool_path().glob("*.jsonl")), "a drained segment of a dead process was kept"
    finally:
        fake.stop()
