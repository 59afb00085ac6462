"""Several gateways as one, on PostgreSQL and Redis: real `tokenops serve` processes sharing one database and
one Redis (a fresh database and key prefix per test), and a gateway whose PostgreSQL goes away, comes back
and goes slow."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from harness import FAKE_URL, PROVIDER_KEY, create_key, free_port
from services import fresh_database
from tcp_proxy import TcpProxy
from tokenops.app import create_app
from tokenops.config import parse_config
from tokenops.fakeprovider import create_fake_provider
from tokenops.ledger.postgres import PostgresLedger
from tokenops.servers import BackgroundServer

pytest_plugins = ("redis_service",)

CHAT = "/v1/chat/completions"


def counts(pg_url: str) -> dict[str, int]:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        return dict(conn.execute("SELECT request_id, count(*) FROM events GROUP BY 1").fetchall())  # type: ignore[arg-type]


def wait_for(check: Callable[[], object], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.1)


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture
def fake() -> Iterator[BackgroundServer]:
    server = BackgroundServer(create_fake_provider(api_key=PROVIDER_KEY)).start()
    yield server
    server.stop()


class Serve:
    """`tokenops serve` processes on one ledger and one state, each with its own folder (config and spool)."""

    def __init__(self, root: Path, text: str):
        self.root = root
        self.text = text
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}

    def start(self, name: str, workers: int = 1) -> str:
        folder = self.root / name
        folder.mkdir(exist_ok=True)
        (folder / "tokenops.yaml").write_text(self.text.replace("{spool}", str(folder / "spool")))
        port = self.ports.setdefault(name, free_port())
        with (folder / "serve.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "tokenops", "serve", "--config", str(folder / "tokenops.yaml"), "--port",
                 str(port), "--workers", str(workers), "--log-level", "warning"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            if self.procs[name].poll() is not None:
                raise AssertionError(f"{name} exited: " + (folder / "serve.log").read_text()[-3000:])
            try:
                return httpx.get(url + "/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, 60, f"{name} ready")
        return url

    def kill(self, name: str) -> None:
        os.killpg(self.procs[name].pid, signal.SIGKILL)  # the process group: workers and the writer too
        self.procs[name].wait(10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[str], Serve]]:
    made: list[Serve] = []

    def make(text: str) -> Serve:
        made.append(Serve(tmp_path, text))
        return made[-1]

    yield make
    for s in made:
        s.stop_all()


def stack_config(pg_url: str, redis_url: str, prefix: str, upstream: str, extra: str = "") -> str:
    return f"""
ledger: {pg_url}
state: {redis_url}
state_options: {{prefix: {prefix}}}
providers:
  openai: {{base_url: "{upstream}/v1", api_key: {PROVIDER_KEY}}}
gateway: {{writer_interval: 0.3, spool_dir: "{{spool}}"}}
{extra}
"""


def test_two_serve_processes_one_killed_mid_burst_keep_the_budget_and_lose_nothing(
    pg_url: str, redis_url: str, redis_prefix: str, fake: BackgroundServer, serve: Callable[[str], Serve]
) -> None:
    """Two gateways (separate processes, each with its own spool) on one PostgreSQL and one Redis; one is killed
    with SIGKILL in the middle of a burst that also spends a hard budget dry, then started again. Every call a
    client got an answer for is in the ledger exactly once, and the budget was overshot by at most one call."""
    budget = Decimal("0.20")
    s = serve(stack_config(pg_url, redis_url, redis_prefix, fake.url, f"""
budgets:
  - {{name: team-hard, scope: {{team: search}}, amount_usd: "{budget}", period: month, hard: true}}
"""))  # fmt: skip
    ledger = PostgresLedger(pg_url)
    _, key = create_key(ledger, tags={"team": "search"})  # type: ignore[arg-type]
    urls = [s.start("gw0"), s.start("gw1")]
    answered: list[str] = []
    refused: list[str] = []
    killed = False

    async def burst() -> None:
        nonlocal killed
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=60)) as client:

            async def one(i: int) -> None:
                nonlocal killed
                stream = i % 3 == 0
                body = {"model": "gpt-4o", "max_tokens": 50, "stream": stream,
                        "messages": [{"role": "user", "content": f"call {i} " + "lorem ipsum " * 200}],
                        "fake": {"delay_ms": (i % 5) * 20}}  # fmt: skip
                try:
                    r = await client.post(urls[i % 2] + CHAT, json=body, headers={"authorization": f"Bearer {key}"})
                except httpx.TransportError:
                    return  # in flight on the killed gateway: never answered
                if r.status_code == 200 and (not stream or "[DONE]" in r.text):
                    answered.append(r.headers["x-tokenops-request-id"])
                    if len(answered) == 25 and not killed:
                        killed = True
                        s.kill("gw1")
                elif r.status_code == 429:
                    refused.append(r.json()["error"]["code"])

            await asyncio.gather(*(one(i) for i in range(150)))

    asyncio.run(burst())
    assert killed and refused and set(refused) == {"budget_exceeded"}, refused[:5]
    s.start("gw1")  # the restarted gateway drains what the killed one left in its spool
    wait_for(lambda: set(answered) <= set(counts(pg_url)), 30, "every answered call in the ledger")
    got = counts(pg_url)
    assert all(n == 1 for n in got.values()), "a call was recorded twice"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        spent, one_call = conn.execute(
            "SELECT sum(cost_usd), max(cost_usd) FROM events WHERE team = 'search'").fetchone()  # type: ignore[misc]
    assert spent <= budget + one_call, f"spent {spent} of a hard {budget}; one call {one_call}"
    ledger.close()


def test_serve_workers_share_one_budget_and_their_metrics_add_up(
    pg_url: str, redis_url: str, redis_prefix: str, fake: BackgroundServer, serve: Callable[[str], Serve]
) -> None:
    s = serve(stack_config(pg_url, redis_url, redis_prefix, fake.url))
    ledger = PostgresLedger(pg_url)
    _, key = create_key(ledger, tags={"team": "search"})  # type: ignore[arg-type]
    url = s.start("gw", workers=2)
    n = 40

    async def calls() -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            # a new connection per call, so the kernel spreads them over both workers' shared socket
            await asyncio.gather(*(
                client.post(url + CHAT, headers={"authorization": f"Bearer {key}", "connection": "close"},
                            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"c{i}"}]})
                for i in range(n)))  # fmt: skip

    asyncio.run(calls())
    text = httpx.get(url + "/metrics").text
    total = sum(float(m) for m in re.findall(r'^tokenops_requests_total\{[^}]*status="ok"[^}]*\} (\S+)$', text, re.M))
    assert total == n, f"/metrics counts {total} of {n} calls across the workers"
    wait_for(lambda: len(counts(pg_url)) == n, 20, "the calls in the ledger")
    ledger.close()


def test_serve_workers_refuse_memory_state(tmp_path: Path) -> None:
    (tmp_path / "tokenops.yaml").write_text("ledger: duckdb:///ledger.duckdb\n")
    done = subprocess.run([sys.executable, "-m", "tokenops", "serve", "--config", str(tmp_path / "tokenops.yaml"),
                           "--workers", "2"], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "shared state" in done.stderr and "Traceback" not in done.stderr


# --- one gateway, its PostgreSQL going away and coming back ------------------------------------------------
@pytest.fixture
def proxied(pg_url: str) -> Iterator[tuple[str, TcpProxy]]:
    """The test database reached through a proxy the test can cut."""
    PostgresLedger(pg_url).migrate()
    proxy = TcpProxy("127.0.0.1", int(re.search(r":(\d+)/", pg_url).group(1))).start()  # type: ignore[union-attr]
    yield re.sub(r":\d+/", f":{proxy.port}/", pg_url), proxy
    proxy.close()


async def gateway_on(url: str, tmp_path: Path, fake_app: Any, extra: str = "") -> tuple[Any, httpx.AsyncClient, str]:
    text = (f"ledger: {url}\nproviders:\n  openai: {{base_url: \"{FAKE_URL}/v1\", api_key: {PROVIDER_KEY}}}\n"
            f"gateway: {{writer_interval: 0.2, writer: thread, key_refresh: 0.2, spool_dir: {tmp_path}/spool}}\n"
            f"{extra}")  # fmt: skip
    gw = create_app(parse_config(text, file=str(tmp_path / "tokenops.yaml")), transport=httpx.ASGITransport(app=fake_app))
    _, key = create_key(gw.ledger, tags={"team": "search"})  # type: ignore[arg-type]
    await gw.start()
    return gw, httpx.AsyncClient(transport=httpx.ASGITransport(app=gw), base_url="http://gateway.test"), key


async def until(check: Callable[[], object], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_postgresql_unreachable_calls_flow_the_spool_holds_then_drains(
    pg_url: str, proxied: tuple[str, TcpProxy], tmp_path: Path, fake_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, proxy = proxied
    gw, client, key = await gateway_on(url, tmp_path, fake_app)
    sent: list[Any] = []
    monkeypatch.setattr(gw.watch, "submit", sent.append)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    auth = {"authorization": f"Bearer {key}"}
    try:
        first = [(await client.post(CHAT, json=body, headers=auth)).headers["x-tokenops-request-id"] for _ in range(3)]
        await until(lambda: set(first) <= set(counts(pg_url)), what="the first calls drained")
        before = (await client.get("/readyz")).json()["spool"]["bytes"]

        proxy.cut()  # PostgreSQL unreachable: connections cut, new ones closed at once
        during = []
        for _ in range(20):
            r = await client.post(CHAT, json=body, headers=auth)
            assert r.status_code == 200, r.text
            during.append(r.headers["x-tokenops-request-id"])
        await until(lambda: any(a.details["status"] == "down" and a.budget == "ledger" for a in sent), what="alert")
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and any("ledger" in p for p in ready.json()["problems"]), ready.text
        assert ready.json()["spool"]["bytes"] > before, "the spool holds what the ledger cannot take"
        assert not set(during) & set(counts(pg_url))
        await asyncio.sleep(1.0)  # several writer rounds fail meanwhile; calls still flow
        assert (await client.post(CHAT, json=body, headers=auth)).status_code == 200

        proxy.restore()
        await until(lambda: set(first + during) <= set(counts(pg_url)), what="the spool drained after the outage")
        assert all(n == 1 for n in counts(pg_url).values())
        await until(lambda: any(a.details["status"] == "recovered" and a.budget == "ledger" for a in sent),
                    what="recovered alert")  # fmt: skip
        assert (await client.get("/readyz")).status_code == 200
        assert [a.details["status"] for a in sent if a.budget == "ledger"] == ["down", "recovered"]
    finally:
        await client.aclose()
        await gw.close()


async def test_a_ledger_that_blocks_never_holds_up_a_call(pg_url: str, tmp_path: Path, fake_app: Any) -> None:
    """The events table locked by another session: the writer's drain waits on the lock while the calls go on,
    and once it is released every call is drained, those answered during the wait too (with no further traffic
    to wake the writer)."""
    gw, client, key = await gateway_on(pg_url, tmp_path, fake_app)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    auth = {"authorization": f"Bearer {key}"}
    blocker = psycopg.connect(pg_url)
    try:
        r = await client.post(CHAT, json=body, headers=auth)
        await until(lambda: r.headers["x-tokenops-request-id"] in counts(pg_url), what="first call drained")
        blocker.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")  # held until the rollback below

        def drain_waits() -> bool:
            with psycopg.connect(pg_url, autocommit=True) as conn:
                row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'tokenops' "
                                   "AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO events%'").fetchone()  # fmt: skip
            return bool(row and row[0])

        answered = []
        for _ in range(30):
            r = await client.post(CHAT, json=body, headers=auth)
            assert r.status_code == 200
            answered.append(r.headers["x-tokenops-request-id"])
        await until(drain_waits, what="the writer waiting on the lock")
        for _ in range(10):  # and while it waits
            r = await client.post(CHAT, json=body, headers=auth)
            assert r.status_code == 200
            answered.append(r.headers["x-tokenops-request-id"])
        assert drain_waits(), "the drain was still blocked while those calls were answered"
        blocker.rollback()
        await until(lambda: set(answered) <= set(counts(pg_url)), what="drained after the lock")
    finally:
        blocker.close()
        await client.aclose()
        await gw.close()
