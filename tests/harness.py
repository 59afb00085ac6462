"""Helpers shared by the tests: config writing, key creation and the in-process gateway harness."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from tokenops import keys as keymod
from tokenops.config import Config, parse_config
from tokenops.gateway.app import Gateway
from tokenops.ledger.duckdb import DuckDBLedger

PROVIDER_KEY = "sk-fake-provider-key-123"
FAKE_URL = "http://fake.test"


def write_config(tmp_path: Path, extra: str = "", *, upstream: str = FAKE_URL) -> Config:
    text = f"""
ledger: duckdb:///{tmp_path}/ledger.duckdb
providers:
  openai: {{base_url: "{upstream}/v1", api_key: {PROVIDER_KEY}}}
  anthropic: {{base_url: "{upstream}", api_key: {PROVIDER_KEY}}}
  local: {{base_url: "{upstream}/v1", kind: openai, api_key: {PROVIDER_KEY}}}
gateway: {{writer_interval: 0.2, writer: thread}}
{extra}
"""
    path = tmp_path / "tokenops.yaml"
    path.write_text(text)
    return parse_config(text, file=str(path))


def create_key(ledger: DuckDBLedger, name: str = "test", tags: dict[str, str] | None = None,
               locked: tuple[str, ...] = ()) -> tuple[keymod.KeyRecord, str]:  # fmt: skip
    key = keymod.generate()
    rec = keymod.KeyRecord(
        id=keymod.new_key_id(), name=name, key_hash=keymod.hash_key(key), key_prefix=key[:10],
        tags=tags or {}, locked_tags=locked, created_at=datetime.now(UTC),
    )  # fmt: skip
    ledger.insert_key(rec)
    return rec, key


class GatewayHarness:
    """A started in-process gateway, a client for it, and a key."""

    def __init__(self, gateway: Gateway, client: httpx.AsyncClient, key: str, key_record: keymod.KeyRecord):
        self.gateway = gateway
        self.client = client
        self.key = key
        self.key_record = key_record

    @property
    def ledger(self) -> DuckDBLedger:
        return self.gateway.ledger

    def auth(self, **extra: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}", **extra}

    def flush(self) -> None:
        """Drain the spool into the ledger now."""
        self.ledger.drain(self.gateway.spool_dir, self.gateway.catalog.get, timeout=10)

    def event(self, request_id: str) -> Any:
        self.flush()
        ev = self.ledger.get_event(request_id)
        assert ev is not None, f"{request_id} not in the ledger"
        return ev


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_gateway(cfg_path: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "tokenops", "serve", "--config", str(cfg_path), "--port", str(port),
             "--log-level", "warning"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("gateway did not start: " + log.read_text())
