"""Helpers shared by the tests: config writing, key creation and the in-process gateway harness."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from tokenops import keys as keymod
from tokenops.config import Config, parse_config
from tokenops.gateway.app import Gateway
from tokenops.ledger.duckdb import DuckDBLedger
from tokenops.ledger.events import SpendEvent

PROVIDER_KEY = "sk-fake-provider-key-123"
FAKE_URL = "http://fake.test"

# The stack the gateway tests run on: TOKENOPS_TEST_STACK=duckdb-memory (the default: a DuckDB file in the
# test's folder, budgets counted in the process) or postgresql-redis (a fresh PostgreSQL database and a fresh
# Redis key prefix per test, made on first use by the conftest's ``stack`` fixture and dropped after it).
STACKS = ("duckdb-memory", "postgresql-redis")
STACK = os.environ.get("TOKENOPS_TEST_STACK", "duckdb-memory")
if STACK not in STACKS:
    raise SystemExit(f"TOKENOPS_TEST_STACK={STACK!r}: expected one of {', '.join(STACKS)}")


class Stack:
    """Where this test's gateways keep their ledger and state (see STACK)."""

    def __init__(self) -> None:
        self.cleanups: list[Callable[[], None]] = []
        self._lines: str | None = None
        MADE.append(self)

    def lines(self, tmp_path: Path) -> str:
        if STACK == "duckdb-memory":
            return f"ledger: duckdb:///{tmp_path}/ledger.duckdb\n"
        if self._lines is None:
            import redis_service
            import services

            db = services.fresh_database()
            url = db.__enter__()
            self.cleanups.append(lambda: db.__exit__(None, None, None))
            redis_url = redis_service.ensure_shared()
            prefix = f"test-{uuid.uuid4().hex[:12]}"
            self.cleanups.append(lambda: redis_service.delete_prefix(redis_url, prefix))
            # 10 s for a state operation: a loaded 2-core CI machine can starve an event loop driving hundreds of
            # concurrent calls past the default second (tests of Redis timeouts set their own)
            self._lines = f"ledger: {url}\nstate: {redis_url}\nstate_options: {{prefix: {prefix}, timeout: 10}}\n"
        return self._lines

    def close(self) -> None:
        self._lines = None
        while self.cleanups:
            self.cleanups.pop()()


MADE: list[Stack] = []  # every stack made, closed at the end of the session (a module's fixtures use one too)
CURRENT = Stack()


def write_config(tmp_path: Path, extra: str = "", *, upstream: str = FAKE_URL, gateway: str = "",
                 gemini: bool = False, providers: str = "") -> Config:  # fmt: skip
    """``providers``: more lines of the providers: mapping (``  name: {…}\n``)."""
    text = f"""
{CURRENT.lines(tmp_path)}providers:
  openai: {{base_url: "{upstream}/v1", api_key: {PROVIDER_KEY}}}
  anthropic: {{base_url: "{upstream}", api_key: {PROVIDER_KEY}}}
  local: {{base_url: "{upstream}/v1", kind: openai, api_key: {PROVIDER_KEY}}}
{f'  google: {{base_url: "{upstream}", kind: gemini, api_key: {PROVIDER_KEY}}}' + chr(10) if gemini else ""}{providers}gateway: {{writer_interval: 0.2, writer: thread{", " + gateway if gateway else ""}}}
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


def sql(ledger: Any, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of a query on the test's ledger, DuckDB or PostgreSQL (``?`` placeholders on both)."""
    if type(ledger).__name__ == "PostgresLedger":
        statement = statement.replace("%", "%%").replace("?", "%s")
    with ledger.connect() as conn:
        cur = conn.execute(statement, list(params) or None) if params else conn.execute(statement)
        return [tuple(r) for r in cur.fetchall()] if cur.description else []


def sql_value(ledger: Any, statement: str, params: Sequence[Any] = ()) -> Any:
    """The first column of the first row (None when there is no row)."""
    rows = sql(ledger, statement, params)
    return rows[0][0] if rows else None


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


class SocketStack:
    """The fake provider and a whole gateway (admin API included) each served by uvicorn on loopback, and a key:
    what an SDK or a captured client request meets in production."""

    def __init__(self, tmp: Path, *, tags: dict[str, str] | None = None, gateway: str = "", gemini: bool = False,
                 extra: str = ""):  # fmt: skip
        from tokenops.app import create_app
        from tokenops.fakeprovider import create_fake_provider
        from tokenops.servers import BackgroundServer

        self.fake = BackgroundServer(create_fake_provider(api_key=PROVIDER_KEY)).start()
        self.config = write_config(tmp, extra, upstream=self.fake.url, gateway=gateway, gemini=gemini)
        self.gateway = create_app(self.config)
        self.record, self.key = create_key(self.gateway.ledger, tags=tags)
        self.server = BackgroundServer(self.gateway).start()
        self.url = self.server.url

    def drain(self) -> None:
        self.gateway.ledger.drain(self.gateway.spool_dir, timeout=10)

    def event(self, request_id: str) -> SpendEvent:
        self.drain()
        ev = self.gateway.ledger.get_event(request_id)
        assert ev is not None, request_id
        return ev

    def close(self) -> None:
        self.server.stop()
        self.fake.stop()

